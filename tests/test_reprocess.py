"""Incremental reprocessing into a store, on a real local Ray cluster with the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

import annotation.reprocess as reprocess
from annotation.config import CONTENT_HASH, ReprocessConfig
from annotation.hashing import table_digest
from annotation.reprocess import run_reprocess
from annotation.store import history, read_store
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


def _read(store: Path, version: int | None = None) -> pa.Table:
    return read_store(str(store), version)


def _version(store: Path) -> int:
    return DeltaTable(str(store)).version()


def _assert_exactly_once(store: Path, expected_ids: set[str]) -> tuple[pa.Table, pa.Table]:
    rows, rejected = _read(store), read_store(str(store), rejected=True)
    ids = rows.column(C.DOC_ID).to_pylist() + rejected.column(C.DOC_ID).to_pylist()
    assert len(ids) == len(set(ids)), "a document appears twice"
    assert set(ids) == expected_ids
    return rows, rejected


def _copy_store(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "store"))


@pytest.fixture(scope="module")
def base(ray_local, tiny_model_dir, tmp_path_factory):
    """A store after one run (r1, table version 0) over the 30 base documents."""
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
    assert summary.version == 0 and summary.previous_version is None
    (run,) = history(str(store))
    assert run["run_id"] == "r1" and run["counts"]["new"] == 30 and summary.rows == 30
    rows, rejected = _assert_exactly_once(store, {str(i) for i in range(30)})
    assert rejected.column(C.DOC_ID).to_pylist() == ["14"]
    assert rejected.column(CONTENT_HASH).null_count == 0
    by_id = {r[C.DOC_ID]: r for r in rows.to_pylist()}
    assert by_id["13"][C.STATUS] == C.STATUS_EMPTY
    fingerprint = model_fingerprint(tiny_model_dir)
    assert {r[C.MODEL_FINGERPRINT] for r in by_id.values()} == {fingerprint}
    assert {r[C.RUN_ID] for r in by_id.values()} == {"r1"}
    assert all(len(r[CONTENT_HASH]) == 32 for r in by_id.values())
    assert not (store / "_staging" / "r1").exists()  # staging removed after the commit


@pytest.mark.integration
def test_unchanged_corpus_does_no_model_work_and_keeps_the_content(
    base, tiny_model_dir, tmp_path, no_model, capsys
):
    store = _copy_store(base[0], tmp_path)
    corpus = _write_corpus(tmp_path / "corpus", BASE)
    before = table_digest(_read(store))
    summary = run_reprocess(_config(corpus, store, tiny_model_dir, run_id="r2"))
    assert "0 to annotate" in capsys.readouterr().out
    assert (summary.carried, summary.annotated, summary.new, summary.changed) == (30, 0, 0, 0)
    # Nothing to commit: the table stays at version 0, rows and provenance unchanged.
    assert summary.version == summary.previous_version == 0 == _version(store)
    assert table_digest(_read(store)) == before
    assert {r[C.RUN_ID] for r in _read(store).to_pylist()} == {"r1"}

    # plan_only prints the same plan and stops: no staging, no commit.
    plan = run_reprocess(_config(corpus, store, tiny_model_dir, plan_only=True))
    assert plan.plan_only and (plan.carried, plan.annotated) == (30, 0)
    assert _version(store) == 0 and not (store / "_staging" / "r2").exists()


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
    plan = run_reprocess(_config(corpus, store, tiny_model_dir, plan_only=True))
    assert (plan.new, plan.changed, plan.carried, plan.annotated) == (10, 5, 25, 15)
    summary = run_reprocess(_config(corpus, store, tiny_model_dir, run_id="r2"))
    assert summary.version == 1  # one commit for the whole run
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
    assert summary.version == 2
    _assert_exactly_once(store, {str(i) for i in range(30)} - {"15", "16", "17"})
    # Time travel: version 1 still holds the 40 documents.
    assert len(_read(store, 1)) + len(read_store(str(store), 1, rejected=True)) == 40


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
    before = _read(store)
    written: list[str] = []

    def crash_after_two(path: str) -> None:
        written.append(path)
        if len(written) == 2:
            raise _Crash("simulated crash after 2 files")

    with pytest.raises(_Crash):
        run_reprocess(_config(corpus, store, model, run_id="r2"), after_file=crash_after_two)

    # Readers still see version 0, untouched; the crashed run's files are only staged.
    assert _version(store) == 0
    assert _rows(_read(store)) == _rows(before)
    partial = [p for p in (store / "_staging" / "r2" / "out").rglob("*.parquet")]
    assert len(partial) >= 2
    done = sum(pq.read_metadata(p).num_rows for p in partial)

    summary = run_reprocess(_config(corpus, store, model, run_id="r2"))
    assert summary.resumed >= done and summary.resumed + summary.annotated == 30
    assert summary.model_changed == 30
    assert summary.version == 1 == _version(store)
    assert history(str(store))[0]["counts"]["resumed"] == done
    rows, rejected = _assert_exactly_once(store, {str(i) for i in range(30)})
    assert {r[C.MODEL_FINGERPRINT] for r in rows.to_pylist()} == {model_fingerprint(model)}
    assert not (store / "_staging" / "r2").exists()


def test_config_rejects_output_and_reserved_columns():
    from plumbing.config import ConfigError

    with pytest.raises(ConfigError, match="output"):
        ReprocessConfig(input=["x"], output="elsewhere")
    with pytest.raises(ConfigError, match="reserved"):
        ReprocessConfig(input=["x"], passthrough=[CONTENT_HASH])
    with pytest.raises(ConfigError, match="run_id"):
        ReprocessConfig(input=["x"], run_id="../escape")
    ReprocessConfig(input=["x"], store="s3://bucket/table")  # staging: in the store


@pytest.mark.integration
def test_an_empty_corpus_deletes_every_row_and_keeps_the_table_usable(
    base, tiny_model_dir, tmp_path, no_model
):
    store = _copy_store(base[0], tmp_path)
    schema_before = DeltaTable(str(store)).schema().to_arrow()
    (tmp_path / "empty").mkdir()
    pq.write_table(SCHEMA.empty_table(), tmp_path / "empty" / "part-a.parquet")
    empty = tmp_path / "empty"
    summary = run_reprocess(_config(empty, store, tiny_model_dir, run_id="r2"))
    assert (summary.deleted, summary.annotated, summary.version) == (30, 0, 1)
    assert _read(store).num_rows == 0 and read_store(str(store), rejected=True).num_rows == 0
    # The table keeps its columns (an overwrite with the doc_id column alone broke the next plan).
    assert DeltaTable(str(store)).schema().to_arrow() == schema_before
    plan = run_reprocess(
        _config(_write_corpus(tmp_path / "c", BASE), store, tiny_model_dir, plan_only=True)
    )
    assert (plan.new, plan.annotated) == (30, 30)


def test_the_commit_check_refuses_a_missing_or_repeated_document(tmp_path):
    import pyarrow.fs as pafs

    from annotation.commit import ConcurrentCommitError
    from annotation.staging import Staging
    from tests.test_store import _rows

    staging = Staging(pafs.LocalFileSystem(), str(tmp_path))
    pq.write_table(_rows(["1", "2"]), tmp_path / "a.parquet")
    pq.write_table(_rows(["3"]), tmp_path / "b.parquet")
    files = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    needed = pa.table({C.DOC_ID: ["1", "2", "3"], CONTENT_HASH: ["h1", "h2", "h3"]})
    assert reprocess._check_files(staging, files, needed) == (3, 0)
    with pytest.raises(reprocess.ReprocessError, match=r"1 document\(s\) missing .*'4'"):
        more = pa.concat_tables([needed, pa.table({C.DOC_ID: ["4"], CONTENT_HASH: ["h4"]})])
        reprocess._check_files(staging, files, more)
    pq.write_table(_rows(["2"]), tmp_path / "c.parquet")  # two attempts wrote 2
    with pytest.raises(ConcurrentCommitError, match="twice"):
        reprocess._check_files(staging, [*files, str(tmp_path / "c.parquet")], needed)
