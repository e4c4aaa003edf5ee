"""Incremental reprocessing into a store, on a real local Ray cluster with the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import annotation.reprocess as reprocess
from annotation.config import CONTENT_HASH, ReprocessConfig
from annotation.hashing import table_checksum
from annotation.reprocess import run_reprocess
from annotation.snapshots import MANIFESTS, SNAPSHOTS, STAGING, latest_snapshot, read_snapshot
from ner import columns as C
from ner.model import model_fingerprint

pytestmark = [pytest.mark.timeout(600)]

SCHEMA = pa.schema([("pmid", pa.string()), ("title", pa.string()), ("abstract", pa.string())])


def _docs(start: int, count: int) -> list[tuple[str, str, str]]:
    return [
        (str(i), f"Title {i} on p53.", f"Aspirin inhibits COX-{i} in human cells.")
        for i in range(start, start + count)
    ]


# 30 documents: one too long (rejected), one empty; both must be carried like the others.
BASE = {
    "part-a.parquet": _docs(0, 13) + [("13", "", ""), ("14", "x" * 400, "too long")],
    "part-b.parquet": _docs(15, 15),
}


def _write_corpus(root: Path, files: dict[str, list[tuple]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        pq.write_table(
            pa.table([list(c) for c in zip(*rows, strict=True)], schema=SCHEMA), root / name
        )
    return root


def _config(corpus: Path, store: Path, model: Path, **overrides) -> ReprocessConfig:
    values = dict(
        input=[str(corpus)],
        store=str(store),
        model=str(model),
        id_column="pmid",
        text_columns=["title", "abstract"],
        max_length=32,
        stride=8,
        max_chars=300,
        tokenize_batch_size=4,
        classify_batch_size=4,
        token_budget=256,  # 8 windows of 32
        write_batch_size=4,  # several files per run, so a crash can land between them
        tokenize_concurrency=[1, 1],
        classifier_concurrency=[1, 1],
        progress_bars=False,
    )
    values.update(overrides)
    return ReprocessConfig(**values)


def _rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r[C.DOC_ID])


def _assert_exactly_once(store: Path, expected_ids: set[str]) -> tuple[pa.Table, pa.Table]:
    rows, rejected = read_snapshot(store), read_snapshot(store, rejected=True)
    ids = rows.column(C.DOC_ID).to_pylist() + rejected.column(C.DOC_ID).to_pylist()
    assert len(ids) == len(set(ids)), "a document appears twice"
    assert set(ids) == expected_ids
    return rows, rejected


def _copy_store(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "store"))


@pytest.fixture(scope="module")
def base(ray_local, tiny_model_dir, tmp_path_factory):
    """A store after one run (snapshot r1) over the 30 base documents."""
    root = tmp_path_factory.mktemp("reprocess")
    corpus = _write_corpus(root / "corpus", BASE)
    store = root / "store"
    summary = run_reprocess(_config(corpus, store, tiny_model_dir, run_id="r1"))
    return store, summary


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the annotation pipeline (Ray, model actors) is started at all."""

    def refuse(*args, **kwargs):
        raise AssertionError("run_annotate called: model work on a run with nothing to do")

    monkeypatch.setattr(reprocess, "run_annotate", refuse)


@pytest.mark.integration
def test_first_run_publishes_one_row_per_document(base, tiny_model_dir):
    store, summary = base
    assert (summary.new, summary.changed, summary.carried, summary.deleted) == (30, 0, 0, 0)
    assert summary.annotated == 30 and summary.annotate.balanced
    manifest = latest_snapshot(store)
    assert manifest["snapshot_id"] == "r1" and manifest["sequence"] == 1
    assert manifest["counts"]["new"] == 30 and manifest["rows"] + manifest["rejected_rows"] == 30
    rows, rejected = _assert_exactly_once(store, {str(i) for i in range(30)})
    assert rejected.column(C.DOC_ID).to_pylist() == ["14"]
    assert rejected.column(CONTENT_HASH).null_count == 0
    by_id = {r[C.DOC_ID]: r for r in rows.to_pylist()}
    assert by_id["13"][C.STATUS] == C.STATUS_EMPTY
    fingerprint = model_fingerprint(tiny_model_dir)
    assert {r[C.MODEL_FINGERPRINT] for r in by_id.values()} == {fingerprint}
    assert {r[C.RUN_ID] for r in by_id.values()} == {"r1"}
    assert all(len(r[CONTENT_HASH]) == 32 for r in by_id.values())
    assert not (store / STAGING / "r1").exists()  # staging removed after publishing
    listed = {e["path"] for e in manifest["files"] + manifest["rejected_files"]}
    on_disk = {str(p.relative_to(store)) for p in (store / SNAPSHOTS / "r1").rglob("*.parquet")}
    assert listed == on_disk


@pytest.mark.integration
def test_unchanged_corpus_does_no_model_work_and_keeps_the_content(
    base, tiny_model_dir, tmp_path, no_model, capsys
):
    store = _copy_store(base[0], tmp_path)
    corpus = _write_corpus(tmp_path / "corpus", BASE)
    before = latest_snapshot(store)
    summary = run_reprocess(_config(corpus, store, tiny_model_dir, run_id="r2"))
    assert "0 to annotate" in capsys.readouterr().out
    assert (summary.carried, summary.annotated, summary.new, summary.changed) == (30, 0, 0, 0)
    after = latest_snapshot(store)
    assert after["snapshot_id"] == "r2" and after["previous"] == "r1"
    assert after["content_checksum"] == before["content_checksum"]
    # Same rows, provenance included: carried rows keep run_id r1 and annotated_at.
    assert _rows(read_snapshot(store)) == _rows(read_snapshot(store, "r1"))
    assert table_checksum(read_snapshot(store)) == table_checksum(read_snapshot(store, "r1"))
    assert {r[C.RUN_ID] for r in read_snapshot(store).to_pylist()} == {"r1"}
    # Whole files are shared with the previous snapshot by hard link, not copied.
    assert all((store / e["path"]).stat().st_nlink == 2 for e in after["files"])


@pytest.mark.integration
def test_ten_new_and_five_edited_documents_are_the_only_ones_annotated(
    base, tiny_model_dir, tmp_path, monkeypatch
):
    store = _copy_store(base[0], tmp_path)
    files = {name: list(rows) for name, rows in BASE.items()}
    edited = {"0", "3", "16", "20", "29"}
    for name, rows in files.items():
        files[name] = [(i, t, a + " Edited." if i in edited else a) for i, t, a in rows]
    files["part-c.parquet"] = _docs(100, 10)
    corpus = _write_corpus(tmp_path / "corpus", files)
    summary = run_reprocess(_config(corpus, store, tiny_model_dir, run_id="r2"))
    assert (summary.new, summary.changed, summary.model_changed) == (10, 5, 0)
    assert (summary.carried, summary.deleted, summary.annotated) == (25, 0, 15)
    assert summary.annotate.rows_in == 15
    expected = {str(i) for i in range(30)} | {str(i) for i in range(100, 110)}
    rows, _ = _assert_exactly_once(store, expected)
    reannotated = {r[C.DOC_ID] for r in rows.to_pylist() if r[C.RUN_ID] == "r2"}
    assert reannotated == edited | {str(i) for i in range(100, 110)}

    # Then three documents disappear from the corpus: dropped, counted, no model work.
    del files["part-c.parquet"]
    files["part-b.parquet"] = files["part-b.parquet"][3:]  # ids 15, 16, 17
    shutil.rmtree(corpus)
    corpus = _write_corpus(corpus, files)
    monkeypatch.setattr(reprocess, "run_annotate", lambda *a, **k: pytest.fail("model work"))
    summary = run_reprocess(_config(corpus, store, tiny_model_dir, run_id="r3"))
    assert (summary.deleted, summary.annotated, summary.carried) == (13, 0, 27)
    _assert_exactly_once(store, {str(i) for i in range(30)} - {"15", "16", "17"})


def _other_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model with a changed config: another model fingerprint."""
    other = Path(shutil.copytree(tiny_model_dir, tmp_path / "model-v2"))
    config = json.loads((other / "config.json").read_text())
    config["reprocess_test_version"] = 2
    (other / "config.json").write_text(json.dumps(config))
    return other


@pytest.mark.integration
def test_a_new_model_reannotates_every_document(base, tiny_model_dir, tmp_path):
    store = _copy_store(base[0], tmp_path)
    corpus = _write_corpus(tmp_path / "corpus", BASE)
    model = _other_model(tiny_model_dir, tmp_path)
    summary = run_reprocess(_config(corpus, store, model, run_id="r2"))
    assert (summary.model_changed, summary.carried, summary.annotated) == (30, 0, 30)
    assert "model changed" in summary.reason
    rows, rejected = _assert_exactly_once(store, {str(i) for i in range(30)})
    assert {r[C.MODEL_FINGERPRINT] for r in rows.to_pylist()} == {model_fingerprint(model)}
    assert rejected.column(C.RUN_ID).to_pylist() == ["r2"]


class _Crash(RuntimeError):
    pass


@pytest.mark.integration
def test_a_crashed_run_publishes_nothing_and_its_rerun_is_exactly_once(
    base, tiny_model_dir, tmp_path
):
    store = _copy_store(base[0], tmp_path)
    corpus = _write_corpus(tmp_path / "corpus", BASE)
    model = _other_model(tiny_model_dir, tmp_path)  # all 30 documents need work
    before = read_snapshot(store)
    written: list[str] = []

    def crash_after_two(path: str) -> None:
        written.append(path)
        if len(written) == 2:
            raise _Crash("simulated crash after 2 files")

    with pytest.raises(_Crash):
        run_reprocess(_config(corpus, store, model, run_id="r2"), after_file=crash_after_two)

    # Readers still see r1, untouched; the crashed run has data but no manifest.
    assert latest_snapshot(store)["snapshot_id"] == "r1"
    assert not (store / MANIFESTS / "r2.json").exists()
    assert _rows(read_snapshot(store)) == _rows(before)
    partial = [p for p in (store / SNAPSHOTS / "r2").rglob("*.parquet")]
    assert len(partial) >= 2
    done = sum(pq.read_metadata(p).num_rows for p in partial)

    summary = run_reprocess(_config(corpus, store, model, run_id="r2"))
    assert summary.resumed >= done and summary.resumed + summary.annotated == 30
    assert summary.model_changed == 30
    manifest = latest_snapshot(store)
    assert manifest["snapshot_id"] == "r2" and manifest["counts"]["resumed"] == done
    rows, rejected = _assert_exactly_once(store, {str(i) for i in range(30)})
    assert {r[C.MODEL_FINGERPRINT] for r in rows.to_pylist()} == {model_fingerprint(model)}
    assert not (store / STAGING / "r2").exists()


def test_config_rejects_output_and_reserved_columns():
    from ner.config import ConfigError

    with pytest.raises(ConfigError, match="output"):
        ReprocessConfig(input=["x"], output="elsewhere").check()
    with pytest.raises(ConfigError, match="reserved"):
        ReprocessConfig(input=["x"], passthrough=[CONTENT_HASH]).check()
    with pytest.raises(ConfigError, match="run_id"):
        ReprocessConfig(input=["x"], run_id="../escape").check()
