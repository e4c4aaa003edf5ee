"""Reprocessing on a cluster whose nodes share no disk, with the store and the corpus on S3.

The cluster is cluster.yaml's shape (:mod:`tests.multinode`): a head with no CPUs
that runs the drivers, and a 2-CPU worker node in a mount namespace of its own,
which cannot see the head's temporary folders. The store and the corpus are on a
local S3 server; ``jobs.reprocess`` runs as a driver on the head, with no
``staging=``. A first run, an update (new, revised and deleted documents), a
model change, a run killed mid-way and resumed, and two runs started at once each
end with every id exactly once and the clean run's content.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from annotation.store import read_store
from ner import columns as C
from ner.model import model_fingerprint, save_tiny_model
from tests import multinode
from tests.failure_support import content_checksum

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
multinode_cluster = multinode.multinode_cluster  # the module-scoped fixture, by name

SCHEMA = pa.schema([("pmid", pa.string()), ("title", pa.string()), ("abstract", pa.string())])
CORPUS, STORE = "cluster-store/corpus", "cluster-store/store"


def _docs(ids, edit: str = "") -> list[tuple[str, str, str]]:
    return [
        (str(i), f"Title {i} on p53.", f"Aspirin inhibits COX-{i} in human cells.{edit}")
        for i in ids
    ]


def _write_corpus(s3, files: dict[str, list[tuple]]) -> None:
    fs = s3.filesystem()
    fs.delete_dir_contents(f"{s3.bucket}/{CORPUS}", missing_dir_ok=True)
    for name, rows in files.items():
        table = pa.table([list(c) for c in zip(*rows, strict=True)], schema=SCHEMA)
        pq.write_table(table, f"{s3.bucket}/{CORPUS}/{name}", filesystem=fs)


@pytest.fixture(scope="module")
def models():
    """Two tiny models where every node sees them (as in an image, or on a shared disk)."""
    root = Path(tempfile.mkdtemp(prefix="craft-ner-cluster-models-"))
    first = save_tiny_model(root / "a")
    second = Path(shutil.copytree(first, root / "b"))
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps(config | {"cluster_store_test": 2}))
    yield first, second
    shutil.rmtree(root, ignore_errors=True)


def _args(cluster, model: Path, *extra: str) -> list[str]:
    s3 = cluster.s3
    return [
        sys.executable, "-m", "jobs.reprocess", "--config", "configs/reprocess_cpu.yaml",
        f"input={s3.uri(CORPUS)}", f"store={s3.uri(STORE)}", f"model={model}",
        "max_length=32", "stride=8", "max_chars=300", "tokenize_batch_size=4",
        "classify_batch_size=4", "token_budget=256", "write_batch_size=4",
        "progress_bars=false", f"storage_options={json.dumps(s3.storage_options)}", *extra,
    ]  # fmt: skip


def _start(cluster, model: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        _args(cluster, model, *extra),
        cwd=multinode.ROOT,
        env=cluster.env | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(cluster, model: Path, *extra: str, env: dict | None = None, code: int = 0) -> str:
    proc = _start(cluster, model, *extra, env=env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == code, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out


def _store(cluster) -> tuple[pa.Table, str]:
    """The store's rows, each id checked to be there once, and its content checksum."""
    rows = read_store(cluster.s3.uri(STORE), storage_options=cluster.s3.storage_options)
    rejected = read_store(
        cluster.s3.uri(STORE), rejected=True, storage_options=cluster.s3.storage_options
    )
    ids = rows[C.DOC_ID].to_pylist() + rejected[C.DOC_ID].to_pylist()
    assert len(ids) == len(set(ids)), "a document is in the store twice"
    both = [t.drop_columns([C.SOURCE_FILE]) for t in (rows, rejected)]
    return pa.concat_tables([rows, rejected]), content_checksum(both)


def _ids(table: pa.Table) -> set[str]:
    return set(table[C.DOC_ID].to_pylist())


def _staging_left(cluster) -> list[str]:
    fs = cluster.s3.filesystem()
    folder = f"{cluster.s3.bucket}/{STORE}/_staging"
    if fs.get_file_info(folder).type.name != "Directory":
        return []
    return [e.path for e in fs.get_file_info(pafs.FileSelector(folder))]


def test_reprocessing_on_a_cluster_without_a_shared_disk(multinode_cluster, models, tmp_path):
    cluster, (model_a, model_b) = multinode_cluster, models
    base = {"part-a.parquet": _docs(range(0, 15)), "part-b.parquet": _docs(range(15, 30))}
    base["part-a.parquet"][14] = ("14", "x" * 400, "too long")  # rejected, and kept so

    # 1. First run: the workers' files become the table; nothing is left in staging.
    _write_corpus(cluster.s3, base)
    out = _run(cluster, model_a)
    assert "30 to annotate: new 30" in out
    first, _ = _store(cluster)
    assert _ids(first) == {str(i) for i in range(30)}
    assert first.filter(pc.equal(first[C.STATUS], C.STATUS_REJECTED))[C.DOC_ID].to_pylist() == [
        "14"
    ]
    assert _staging_left(cluster) == []

    # 2. An update: 3 revised, 4 new, 2 deleted; only those 7 reach the model.
    update = {
        "part-a.parquet": _docs(range(0, 3), " Revised.") + base["part-a.parquet"][3:],
        "part-b.parquet": _docs(range(15, 28)) + _docs(range(100, 104)),
    }
    _write_corpus(cluster.s3, update)
    out = _run(cluster, model_a)
    assert "7 to annotate: new 4, changed 3, model_changed 0, carried 25, deleted 2" in out
    updated, clean_a = _store(cluster)
    expected = {str(i) for i in range(28)} | {str(i) for i in range(100, 104)}
    assert _ids(updated) == expected
    by_id = {r[C.DOC_ID]: r for r in updated.to_pylist()}
    kept = {r[C.DOC_ID]: r for r in first.to_pylist() if r[C.DOC_ID] in expected}
    assert all(by_id[i] == kept[i] for i in map(str, range(3, 28))), "a carried row changed"

    # 3. A model change re-annotates everything: every row by model B.
    out = _run(cluster, model_b)
    assert "32 to annotate: new 0, changed 0, model_changed 32" in out
    rows_b, _ = _store(cluster)
    assert _ids(rows_b) == expected
    assert set(rows_b[C.MODEL_FINGERPRINT].to_pylist()) == {model_fingerprint(model_b)}

    # 4. Back to model A, the driver killed after two files: nothing committed; the
    # rerun resumes and ends with the content of the incremental run of step 2.
    killed = _start(cluster, model_a, env={"NER_FAILPOINTS": "annotate.after_file:2"})
    killed.communicate(timeout=600)
    assert killed.returncode == -9
    assert set(_store(cluster)[0][C.MODEL_FINGERPRINT].to_pylist()) == {model_fingerprint(model_b)}
    out = _run(cluster, model_a)
    resumed = int(out.split("resumed ")[1].split()[0].rstrip(","))
    assert resumed >= 8 and "resuming" in out
    assert _store(cluster)[1] == clean_a, "the resumed run's content differs from the clean run's"
    assert _staging_left(cluster) == []

    # 5. Two runs started at once (both planned before either commits): one commits,
    # the other commits nothing and exits 3; every document is there once.
    update["part-c.parquet"] = _docs(range(200, 202))
    _write_corpus(cluster.s3, update)
    barrier = tmp_path / "markers"
    barrier.mkdir()
    env = {"NER_FAILPOINTS": "reprocess.before_annotate:1:wait", "NER_FAILPOINTS_DIR": str(barrier)}
    # Both pipelines fit the worker's 2 CPUs side by side (Ray would otherwise hold
    # one's tasks until the other's actors go, and it waits for the barrier).
    light = ("classifier_num_cpus=0.25", "cpu_stage_num_cpus=0.1")
    both = [_start(cluster, model_a, *light, env=env) for _ in range(2)]
    deadline = time.monotonic() + 300
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        assert all(p.poll() is None for p in both), [p.communicate() for p in both]
        time.sleep(0.2)
    for marker in barrier.iterdir():
        marker.unlink()
    outputs = [p.communicate(timeout=600) for p in both]
    assert sorted(p.returncode for p in both) == [0, 3], outputs
    loser = outputs[[p.returncode for p in both].index(3)]
    assert "another run committed" in loser[1]
    assert _ids(_store(cluster)[0]) == expected | {"200", "201"}


def test_a_local_store_the_worker_cannot_see_is_refused_in_one_line(
    multinode_cluster, models, tmp_path
):
    cluster, (model_a, _) = multinode_cluster, models
    corpus = tmp_path / "corpus"  # the head's disk: hidden from the worker
    corpus.mkdir()
    table = pa.table([list(c) for c in zip(*_docs(range(4)), strict=True)], schema=SCHEMA)
    pq.write_table(table, corpus / "part.parquet")
    args = _args(cluster, model_a, f"input={corpus}", f"store={tmp_path / 'store'}")
    done = subprocess.run(
        args, cwd=multinode.ROOT, env=cluster.env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert str(tmp_path) in errors[0] and "is not on node" in errors[0], errors[0]
    assert os.path.isdir(tmp_path / "store" / "_staging")  # staged on the head only
