"""The snapshot store without Ray: run ids, carrying, the exactly-once check, publish, clean-up, lock."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation import snapshots as S
from annotation.config import CONTENT_HASH
from annotation.hashing import table_checksum
from ner import columns as C
from ner.config import ConfigError


def _rows(ids, model="fp1"):
    return pa.table(
        {
            C.DOC_ID: pa.array(ids, pa.string()),
            CONTENT_HASH: pa.array([f"h{i}" for i in ids], pa.string()),
            C.MODEL_FINGERPRINT: pa.array([model] * len(ids), pa.string()),
        }
    )


def _publish(store, snapshot_id, files, previous=None, sequence=1):
    """Publish a snapshot whose data files are ``{name: ids}`` under snapshots/<id>/."""
    run_dir = store / S.SNAPSHOTS / snapshot_id
    paths = {}
    for name, ids in files.items():
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_rows(ids), path)
        paths[path] = None
    ids = {i for values in files.values() for i in values}
    entries = S.check_and_list(store, paths, ids)
    manifest = {
        "snapshot_id": snapshot_id,
        "sequence": sequence,
        "previous": previous,
        "published_at": f"2026-01-0{sequence}T00:00:00",
        "files": entries["files"],
        "rejected_files": entries["rejected_files"],
    }
    return S.publish(store, paths, manifest)


def test_published_snapshots_are_read_through_their_manifests_only(tmp_path):
    _publish(tmp_path, "r1", {"a.parquet": ["1", "2"], "_rejected/a.parquet": ["3"]})
    (tmp_path / S.SNAPSHOTS / "r2").mkdir()  # a run in progress: no manifest, never read
    pq.write_table(_rows(["9"]), tmp_path / S.SNAPSHOTS / "r2" / "x.parquet")
    assert S.latest_snapshot(tmp_path)["snapshot_id"] == "r1"
    assert S.latest_snapshot(tmp_path)["format"] == S.FORMAT
    assert sorted(S.read_snapshot(tmp_path).column(C.DOC_ID).to_pylist()) == ["1", "2"]
    assert S.read_snapshot(tmp_path, rejected=True).column(C.DOC_ID).to_pylist() == ["3"]
    with pytest.raises(S.NoSnapshotError):
        S.get_snapshot(tmp_path, "r2")


def test_a_crash_before_the_manifest_publishes_nothing(tmp_path, monkeypatch):
    _publish(tmp_path, "r1", {"a.parquet": ["1"]})

    def killed(name):  # the driver dies at this failpoint (a real SIGKILL in test_failure_driver)
        if name == "reprocess.before_manifest":
            raise SystemExit(9)

    monkeypatch.setattr(S, "failpoint", killed)
    with pytest.raises(SystemExit):
        _publish(tmp_path, "r2", {"b.parquet": ["1"]}, previous="r1", sequence=2)
    assert S.latest_snapshot(tmp_path)["snapshot_id"] == "r1"
    assert not (tmp_path / S.MANIFESTS / "r2.json").exists()


def test_the_exactly_once_check_refuses_duplicates_and_missing_documents(tmp_path):
    folder = tmp_path / S.SNAPSHOTS / "r1"
    folder.mkdir(parents=True)
    pq.write_table(_rows(["1", "2"]), folder / "a.parquet")
    pq.write_table(_rows(["2"]), folder / "b.parquet")
    files = dict.fromkeys([folder / "a.parquet", folder / "b.parquet"])
    with pytest.raises(S.SnapshotCheckError, match="1 duplicate"):
        S.check_and_list(tmp_path, files, {"1", "2"})
    with pytest.raises(S.SnapshotCheckError, match="1 missing"):
        S.check_and_list(tmp_path, {folder / "a.parquet": None}, {"1", "2", "3"})
    entries = S.check_and_list(tmp_path, {folder / "a.parquet": None}, {"1", "2"})
    assert entries["checksum"] == table_checksum(pq.read_table(folder / "a.parquet"))


def test_carry_links_whole_files_and_filters_the_others(tmp_path):
    _publish(tmp_path, "r1", {"a.parquet": ["1", "2"], "b.parquet": ["3", "4"]})
    previous = S.latest_snapshot(tmp_path)
    run_dir = tmp_path / S.SNAPSHOTS / "r2"
    run_dir.mkdir(parents=True)
    carried = S.carry(tmp_path, run_dir, previous, {"1", "2", "3"})
    by_ids = {tuple(pq.read_table(p).column(C.DOC_ID).to_pylist()): p for p in carried}
    whole, part = by_ids[("1", "2")], by_ids[("3",)]
    assert whole.stat().st_nlink == 2 and carried[whole] is not None  # shared, checksum reused
    assert part.stat().st_nlink == 1 and carried[part] is None
    # Carried files are not this run's own output (a resumed run must not count them).
    assert S.written_files(run_dir) == []


def test_run_ids_resume_the_newest_crashed_run_and_refuse_published_ones(tmp_path):
    _publish(tmp_path, "r1", {"a.parquet": ["1"]})
    with pytest.raises(ConfigError, match="already published"):
        S.choose_run_id(tmp_path, "r1")
    assert S.choose_run_id(tmp_path, "r5") == ("r5", False)
    fresh, resuming = S.choose_run_id(tmp_path, "")
    assert not resuming and re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", fresh)
    first = S.open_run(tmp_path, "r2", "fp1", "s1")
    assert S.choose_run_id(tmp_path, "") == ("r2", True)
    again = S.open_run(tmp_path, "r2", "fp1", "s1")
    assert (first.name, again.name) == ("a001", "a002")
    pq.write_table(_rows(["1"]), tmp_path / S.SNAPSHOTS / "r2" / "x.parquet")
    S.open_run(tmp_path, "r2", "fp2", "s1")  # another model: the crashed output is dropped
    assert S.written_files(tmp_path / S.SNAPSHOTS / "r2") == []
    state = json.loads((tmp_path / S.STAGING / "r2" / S.RUN_STATE).read_text())
    assert state["model_fingerprint"] == "fp2" and state["attempts"] == 1


def test_clean_up_keeps_the_newest_snapshots_and_drops_crashed_runs(tmp_path):
    for k in (1, 2, 3):
        _publish(tmp_path, f"r{k}", {"a.parquet": [str(k)]}, sequence=k)
    S.open_run(tmp_path, "crashed", "fp", "s")
    S.clean_up(tmp_path, "r3", keep=2)
    assert [m["snapshot_id"] for m in S.list_snapshots(tmp_path)] == ["r2", "r3"]
    assert sorted(p.name for p in (tmp_path / S.SNAPSHOTS).iterdir()) == ["r2", "r3"]
    assert not (tmp_path / S.STAGING / "crashed").exists()


def test_a_second_run_on_a_locked_store_is_refused(tmp_path):
    with S.StoreLock(tmp_path), pytest.raises(S.StoreLockedError, match="locked by another run"):
        S.StoreLock(tmp_path).__enter__()
    with S.StoreLock(tmp_path):  # released on exit; a crash releases it too (flock)
        pass
