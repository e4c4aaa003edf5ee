"""The store on S3: write, update, time travel and read against a local S3 server (moto).

The server is :func:`tests.multinode.s3_server`'s: a child process on 127.0.0.1
and a free port (``python -m moto.server``); in this process (``ThreadedMotoServer``)
it deadlocks, because ``DeltaTable.history`` holds the GIL while it waits for the
server's answer. delta-rs talks to it over plain HTTP with dummy credentials. Commits are made safe
for concurrent writers with ``aws_conditional_put: etag``: the commit file is put
with ``If-None-Match``, so of two writers of one version only the first succeeds
(S3, R2, MinIO and moto all honour it), with no DynamoDB lock table.
"""

import pyarrow as pa
import pytest

from annotation import commit as K
from annotation import store
from tests import multinode
from tests.test_store import _rows

pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = multinode.BUCKET


@pytest.fixture(scope="module")
def s3_options():
    with multinode.s3_server() as s3:
        yield s3.storage_options


def _commit(uri, options, rows, deleted=(), run_id="r1"):
    base = store.open_table(uri, options)
    meta = {store.RUN_KEY: run_id}
    return K.commit(uri, base, rows, list(deleted), metadata=meta, storage_options=options)


def test_s3_round_trip_write_update_time_travel_read(s3_options):
    uri = f"s3://{BUCKET}/stores/round-trip"
    assert store.open_table(uri, s3_options) is None
    assert _commit(uri, s3_options, _rows(["1", "2", "3"])) == 0
    new = _rows(["2", "4"], run_id="r2", text="x")
    assert _commit(uri, s3_options, new, deleted=["3"], run_id="r2") == 1

    latest = store.read_store(uri, storage_options=s3_options)
    assert sorted(latest.column("doc_id").to_pylist()) == ["1", "2", "4"]
    hashes = dict(
        zip(*(latest.column(c).to_pylist() for c in ("doc_id", "content_hash")), strict=True)
    )
    assert hashes == {"1": "h1", "2": "x2", "4": "x4"}
    first = store.read_store(uri, 0, storage_options=s3_options)
    assert sorted(first.column("doc_id").to_pylist()) == ["1", "2", "3"]
    assert [r["run_id"] for r in store.history(uri, s3_options)] == ["r2", "r1"]

    # A writer that planned against version 1 loses to one that committed first.
    stale = store.open_table(uri, s3_options)
    _commit(uri, s3_options, _rows(["5"], run_id="r3"), run_id="r3")
    with pytest.raises(K.ConcurrentCommitError):
        K.commit(
            uri, stale, _rows(["6"], run_id="r4"), [],
            metadata={store.RUN_KEY: "r4"}, storage_options=s3_options,
        )  # fmt: skip
    ids = store.read_store(uri, storage_options=s3_options).column("doc_id").to_pylist()
    assert sorted(ids) == ["1", "2", "4", "5"]

    # Expiry: only the newest run version's files stay.
    store.expire(uri, 1, s3_options)
    assert len(store.read_store(uri, storage_options=s3_options)) == 4
    with pytest.raises((FileNotFoundError, OSError)):
        pa.Table.validate(store.read_store(uri, 0, storage_options=s3_options))
