"""The Delta Lake store and the run staging area, without Ray: commit, time travel, expiry, conflicts."""

import json
import re
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from annotation import commit as K
from annotation import staging as S
from annotation import store
from annotation.config import CONTENT_HASH
from ner import columns as C
from plumbing.config import ConfigError


def _rows(ids, model="fp1", run_id="r1", text="h"):
    """Annotation rows as the writer makes them, plus the store's settings column."""
    n = len(ids)
    annotated = pa.table(
        {
            C.DOC_ID: pa.array(ids, pa.string()),
            C.ENTITIES: pa.array([[]] * n, pa.list_(C.ENTITY_TYPE)),
            C.STATUS: pa.array([C.STATUS_OK] * n),
            C.MODEL_NAME: pa.array(["tiny"] * n),
            C.MODEL_FINGERPRINT: pa.array([model] * n),
            C.RUN_ID: pa.array([run_id] * n),
            C.ANNOTATED_AT: pa.array([None] * n, pa.timestamp("us", tz="UTC")),
            CONTENT_HASH: pa.array([f"{text}{i}" for i in ids]),
            store.SETTINGS_FINGERPRINT: pa.array(["s1"] * n),
        }
    )
    return store.table_rows(annotated, None, "tiny", model)


def _ids(path, version=None):
    return sorted(store.read_store(str(path), version).column(C.DOC_ID).to_pylist())


def _commit(path, rows, deleted=(), run_id="r1", replace_all=False):
    base = store.open_table(str(path))
    meta = {store.RUN_KEY: run_id, store.COUNTS_KEY: "{}"}
    return K.commit(str(path), base, rows, list(deleted), replace_all=replace_all, metadata=meta)


def test_a_run_replaces_adds_and_deletes_in_one_version_and_old_versions_stay_readable(tmp_path):
    assert _commit(tmp_path, _rows(["1", "2", "3", "o'brien"])) == 0
    new = _rows(["2", "4"], run_id="r2", text="x")
    version = _commit(tmp_path, new, deleted=["3", "o'brien"], run_id="r2")
    assert version == 1  # one commit: replace 2, add 4, delete 3 and a quoted id
    assert _ids(tmp_path) == ["1", "2", "4"]
    by_id = {r[C.DOC_ID]: r for r in store.read_store(str(tmp_path)).to_pylist()}
    assert (by_id["1"][C.RUN_ID], by_id["2"][C.RUN_ID], by_id["2"][CONTENT_HASH]) == (
        "r1",
        "r2",
        "x2",
    )
    assert _ids(tmp_path, version=0) == ["1", "2", "3", "o'brien"]  # time travel
    assert store.committed_runs(store.open_table(str(tmp_path))) == {"r1": 0, "r2": 1}
    # The plan reads four columns, never the annotations.
    batches = list(store.read_state(store.open_table(str(tmp_path))))
    assert batches and all(b.schema.names == list(store.STATE_COLUMNS) for b in batches)


def test_rejected_documents_are_rows_with_a_reason(tmp_path):
    rejected = pa.table(
        {
            C.DOC_ID: ["9"],
            C.REASON: ["too long"],
            C.SOURCE_FILE: ["a.parquet"],
            C.RUN_ID: ["r1"],
            CONTENT_HASH: ["h9"],
            store.SETTINGS_FINGERPRINT: ["s1"],
        }
    )
    annotated = _rows(["1"]).drop_columns([C.REASON, C.SOURCE_FILE])
    _commit(tmp_path, store.table_rows(annotated, rejected, "tiny", "fp1"))
    assert _ids(tmp_path) == ["1"]
    row = store.read_store(str(tmp_path), rejected=True).to_pylist()[0]
    assert (row[C.DOC_ID], row[C.STATUS], row[C.REASON]) == ("9", C.STATUS_REJECTED, "too long")


def test_a_commit_based_on_a_stale_version_fails_and_leaves_the_table_whole(tmp_path):
    _commit(tmp_path, _rows(["1", "2"]))
    first, second = store.open_table(str(tmp_path)), store.open_table(str(tmp_path))
    meta = {store.RUN_KEY: "a"}
    K.commit(str(tmp_path), first, _rows(["1"], text="a"), [], metadata=meta)
    with pytest.raises(K.ConcurrentCommitError, match="nothing committed"):
        K.commit(str(tmp_path), second, _rows(["2"], text="b"), [], metadata=meta)
    table = store.read_store(str(tmp_path))
    assert sorted(table.column(CONTENT_HASH).to_pylist()) == ["a1", "h2"]
    assert DeltaTable(str(tmp_path)).version() == 1


def test_expire_keeps_the_last_run_versions_and_vacuums_the_rest(tmp_path):
    for k in range(4):
        _commit(tmp_path, _rows([str(k)]), run_id=f"r{k}", replace_all=k > 0)
    removed = store.expire(str(tmp_path), keep_versions=2)
    assert len(removed) == 2  # the files of versions 0 and 1
    assert _ids(tmp_path, version=2) == ["2"] and _ids(tmp_path) == ["3"]
    with pytest.raises(FileNotFoundError):
        _ids(tmp_path, version=0)
    store.expire(str(tmp_path), keep_versions=2)  # again: the kept versions stay readable
    assert _ids(tmp_path, version=2) == ["2"] and _ids(tmp_path) == ["3"]


def test_an_old_snapshot_store_is_refused_with_how_to_migrate(tmp_path):
    (tmp_path / "manifests").mkdir()
    with pytest.raises(store.StoreFormatError, match="run reprocess into a new, empty store"):
        store.open_table(str(tmp_path))


def test_run_ids_resume_the_newest_crashed_run_and_refuse_committed_ones(tmp_path):
    staging = S.Staging(pafs.LocalFileSystem(), str(tmp_path))
    with pytest.raises(ConfigError, match="already committed"):
        staging.choose_run_id("r1", {"r1": 0})
    assert staging.choose_run_id("r5", {}) == ("r5", False)
    fresh, resuming = staging.choose_run_id("", {})
    assert not resuming and re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", fresh)
    first = staging.open_run("r2", "fp1", "s1")
    # In progress (a fresh heartbeat): not taken for a crashed run, not run twice.
    assert staging.choose_run_id("", {})[0] != "r2"
    with pytest.raises(S.RunInProgressError, match="in progress elsewhere"):
        staging.choose_run_id("r2", {})
    _crash(tmp_path / "r2")
    assert staging.choose_run_id("", {}) == ("r2", True)
    again = staging.open_run("r2", "fp1", "s1")
    # each attempt stages its input in a folder of its own
    assert re.fullmatch(r".*/r2/in-001-[0-9a-f]{8}", first) and "/r2/in-002-" in again
    pq.write_table(_rows(["1"]), tmp_path / "r2" / S.OUT / "x.parquet")
    assert staging.written("r2") == [f"{tmp_path}/r2/{S.OUT}/x.parquet"]
    staging.open_run("r2", "fp2", "s1")  # another model: the crashed output is dropped
    assert staging.written("r2") == []
    state = json.loads((tmp_path / "r2" / S.RUN_STATE).read_text())
    assert state["model_fingerprint"] == "fp2" and state["attempts"] == 1
    # A run that crashed after its commit is not resumed; its folder goes.
    staging.open_run("r3", "fp1", "s1")
    _crash(tmp_path / "r2")
    assert staging.choose_run_id("", {"r2": 0, "r3": 1})[1] is False
    assert not (tmp_path / "r3").exists()


def _crash(folder):
    """Age a run's heartbeat past LIVE_S, as a run whose driver died leaves it."""
    state = json.loads((folder / S.RUN_STATE).read_text())
    (folder / S.RUN_STATE).write_text(json.dumps(state | {"heartbeat": 0}))


def test_a_run_in_progress_keeps_its_heartbeat_fresh(tmp_path):
    staging = S.Staging(pafs.LocalFileSystem(), str(tmp_path))
    staging.open_run("r", "fp1", "s1")
    _crash(tmp_path / "r")
    with S.Heartbeat(staging, "r", interval_s=0.05):
        deadline = time.monotonic() + 10
        while staging.choose_run_id("", {})[0] == "r" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert staging.choose_run_id("", {})[0] != "r"  # beating again: in progress
        state = json.loads((tmp_path / "r" / S.RUN_STATE).read_text())
        assert state["model_fingerprint"] == "fp1" and time.time() - state["heartbeat"] < S.LIVE_S
    # Stopped in this process (it failed): resumable at once.
    assert staging.choose_run_id("", {}) == ("r", True)


def test_files_with_an_unneeded_or_repeated_document_are_dropped_whole(tmp_path):
    staging = S.Staging(pafs.LocalFileSystem(), str(tmp_path))
    staging.open_run("r", "fp1", "s1")
    out = tmp_path / "r" / S.OUT
    pq.write_table(_rows(["1", "3"]), out / "a.parquet")
    pq.write_table(_rows(["1"]), out / "b.parquet")  # 1 again: overlapping attempts
    pq.write_table(_rows(["2", "5"]), out / "c.parquet")  # 2's text changed since
    pq.write_table(_rows(["4"]), out / "d.parquet")
    needed = pa.table({C.DOC_ID: ["1", "2", "3", "4"], CONTENT_HASH: ["h1", "new", "h3", "h4"]})
    kept = staging.keep_needed("r", staging.already_written("r"), needed)
    assert sorted(kept[C.DOC_ID].to_pylist()) == ["1", "3", "4"]
    assert sorted(p.rsplit("/", 1)[1] for p in staging.written("r")) == ["a.parquet", "d.parquet"]
