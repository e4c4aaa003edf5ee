"""Resume state from footers alone, the row-hash skip stage, and stale-file removal (no Ray)."""

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from annotation.resume import ResumeState, SkipWrittenRows, remove_stale
from corpora.writer import ParquetShardWriter, list_written
from ner import columns as C

LOCAL = pafs.LocalFileSystem()


def _decoded(ids, statuses, hashes):
    return pa.table(
        {
            C.DOC_ID: pa.array(ids, pa.string()),
            C.ENTITIES: pa.array([[] for _ in ids], pa.list_(C.ENTITY_TYPE)),
            C.STATUS: pa.array(statuses, pa.string()),
            C.I_SOURCE: pa.array(["/in/part-1.parquet"] * len(ids)),
            C.I_N_TOKENS: pa.array([3] * len(ids), pa.int32()),
            C.ROW_HASH: pa.array(hashes, pa.uint64()),
        }
    )


def _write(root, run_id, fingerprint, ids, statuses, hashes):
    writer = ParquetShardWriter(str(root), "m", fingerprint, run_id)
    return writer(_decoded(ids, statuses, hashes)).to_pylist()[0]


def test_only_this_runs_files_with_this_model_count_as_done(tmp_path):
    mine = _write(tmp_path, "r1", "fp1", ["1", "2", "3"], ["ok", "rejected", "ok"], [30, 10, 20])
    _write(tmp_path, "r0", "fp1", ["4"], ["ok"], [40])  # another run
    _write(tmp_path, "r1", "fp2", ["5"], ["ok"], [50])  # another model
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not parquet")  # unreadable: not done

    state = ResumeState.load(LOCAL, str(tmp_path), "r1", "fp1")
    assert sorted(state.paths(False)) == [mine["file"]]
    assert state.paths(True) == [mine["rejected_file"]]
    assert state.documents == 3
    assert (state.stats["rows"], state.stats["rejected"], state.stats["tokens"]) == (2, 1, 6)
    assert state.row_hashes.tolist() == [10, 20, 30]
    assert ResumeState.load(LOCAL, str(tmp_path), "r9", "fp1").documents == 0


def test_skip_stage_drops_exactly_the_written_rows():
    stage = SkipWrittenRows(np.array([10, 30], np.uint64))
    batch = pa.table(
        {C.DOC_ID: ["a", "b", "c", "d"], C.ROW_HASH: pa.array([10, 20, 30, 40], pa.uint64())}
    )
    assert stage(batch).column(C.DOC_ID).to_pylist() == ["b", "d"]
    assert SkipWrittenRows(np.array([], np.uint64))(batch).num_rows == 4


def test_remove_stale_keeps_this_runs_files_and_drops_leftovers(tmp_path):
    kept = _write(tmp_path, "r1", "fp", ["1"], ["ok"], [1])["file"]
    old = _write(tmp_path, "r0", "fp", ["2"], ["ok"], [2])["file"]
    leftover = tmp_path / ".tmp-abc-part.parquet"  # a killed writer's temporary file
    leftover.write_bytes(b"")
    assert list_written(LOCAL, str(tmp_path)) == sorted([kept, old])
    removed = remove_stale(LOCAL, str(tmp_path), {kept})
    assert sorted(removed) == sorted([old, str(leftover)])
    assert list_written(LOCAL, str(tmp_path), temporary=True) == [kept]
