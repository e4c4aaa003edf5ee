import pyarrow as pa
import pyarrow.parquet as pq

from corpora.writer import REJECTED_DIR, ParquetShardWriter, shard_name
from ner import columns as C


def _decoded(ids, statuses, source="/data/in/part-7.parquet"):
    n = len(ids)
    entity = {"start": 0, "end": 1, "label": "Cell", "text": "x", "score": 0.5, "column": "text"}
    return pa.table(
        {
            C.DOC_ID: pa.array(ids, pa.string()),
            C.ENTITIES: pa.array(
                [[entity] if s == "ok" else [] for s in statuses], pa.list_(C.ENTITY_TYPE)
            ),
            C.STATUS: pa.array(statuses, pa.string()),
            "journal": pa.array([f"j{i}" for i in range(n)]),
            C.I_REASON: pa.array(["" if s != "rejected" else "too long" for s in statuses]),
            C.I_SOURCE: pa.array([source] * n),
            C.I_TEXT: pa.array(["x y"] * n),
            C.I_N_TOKENS: pa.array([2] * n, pa.int32()),
        }
    )


def test_names_are_deterministic_and_follow_the_input():
    a = _decoded(["1", "2"], ["ok", "ok"])
    assert shard_name(a) == shard_name(_decoded(["1", "2"], ["ok", "ok"]))
    assert shard_name(a).startswith("part-7-")
    assert shard_name(a) != shard_name(_decoded(["1", "3"], ["ok", "ok"]))
    assert shard_name(a) != shard_name(
        _decoded(["1", "2"], ["ok", "ok"], source="/other/p.parquet")
    )


def test_writer_splits_rejected_rows_and_a_retry_overwrites(tmp_path):
    writer = ParquetShardWriter(
        str(tmp_path), "m", "sha256:abc", "run-1", passthrough=["journal"], include_text=True
    )
    batch = _decoded(["1", "2", "3", "4"], ["ok", "empty_text", "rejected", "ok"])
    stats = writer(batch).to_pylist()[0]
    assert (stats["rows"], stats["rejected"], stats["tokens"]) == (3, 1, 6)
    again = writer(batch).to_pylist()[0]  # a retried task
    assert again["file"] == stats["file"]
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == [stats["file"].rsplit("/", 1)[1]]
    out = pq.read_table(stats["file"])
    expected = list(C.OUTPUT_HEAD.names) + ["journal", C.TEXT] + list(C.PROVENANCE.names)
    assert out.column_names == expected
    assert out.schema.field(C.ENTITIES).type == pa.list_(C.ENTITY_TYPE)
    assert out.column(C.DOC_ID).to_pylist() == ["1", "2", "4"]
    assert set(out.column(C.MODEL_FINGERPRINT).to_pylist()) == {"sha256:abc"}
    rejected = pq.read_table(tmp_path / REJECTED_DIR)
    assert rejected.schema == C.REJECTED_SCHEMA
    assert rejected.to_pylist() == [
        {
            C.DOC_ID: "3",
            C.REASON: "too long",
            C.SOURCE_FILE: "/data/in/part-7.parquet",
            C.RUN_ID: "run-1",
        }
    ]
    assert not list(tmp_path.rglob(".tmp-*"))
