"""annotation.planning: the vectorised plan equals a row-by-row reference, and reads less."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from annotation import planning as P
from annotation.config import CONTENT_HASH, ReprocessConfig
from annotation.hashing import HASHED_COLUMNS_KEY, content_hash
from annotation.reprocess import ReprocessSummary
from corpora.corpus import InputError
from ner import columns as C

FP, SETTINGS = "model-a", "settings-a"


def _config(**overrides) -> ReprocessConfig:
    values = dict(input=["unused"], store="unused", model="unused", id_column="pmid")
    values.update(text_columns=["title", "abstract"], passthrough=["journal"])
    values.update(overrides)
    return ReprocessConfig(**values)


def _state(rows: list[tuple[str, str, str]]) -> pa.Table:
    """Stored rows: (doc_id, text hash, model fingerprint); settings are SETTINGS."""
    return pa.table(
        {
            C.DOC_ID: [r[0] for r in rows],
            CONTENT_HASH: [r[1] for r in rows],
            C.MODEL_FINGERPRINT: [r[2] for r in rows],
            "settings_fingerprint": [SETTINGS] * len(rows),
        }
    )


def _write(path, docs: list[tuple], own_hash: list[str] | None = None, hash_of=None) -> str:
    """docs: (pmid, title, abstract). ``own_hash`` writes a content_hash column over those."""
    table = pa.table(
        {
            "pmid": [d[0] for d in docs],
            "title": [d[1] for d in docs],
            "abstract": [d[2] for d in docs],
            "journal": ["J"] * len(docs),
        }
    )
    if own_hash is not None:
        hashes = [(hash_of or (lambda d: content_hash([d[1], d[2]])))(d) for d in docs]
        table = table.append_column(CONTENT_HASH, pa.array(hashes, pa.string()))
        table = table.replace_schema_metadata({HASHED_COLUMNS_KEY: json.dumps(own_hash)})
    pq.write_table(table, path, row_group_size=3)
    return str(path)


def _reference(files: list[list[tuple]], state: pa.Table, done: set[tuple[str, str]]):
    """The first planner's rules, one Python row at a time."""
    previous = {r[C.DOC_ID]: r for r in state.to_pylist()}
    counts = dict.fromkeys(["null", "dup", "new", "changed", "stale", "carried"], 0)
    seen, needed, todo, conflicts = {}, {}, [], []
    for docs in files:
        for doc_id, title, abstract in docs:
            if doc_id is None:
                counts["null"] += 1
                continue
            digest = content_hash([title, abstract])
            if doc_id in seen:
                if seen[doc_id] == digest:
                    counts["dup"] += 1
                else:
                    conflicts.append(doc_id)
                continue
            seen[doc_id] = digest
            before = previous.get(doc_id)
            if before is None:
                counts["new"] += 1
            elif before[CONTENT_HASH] != digest:
                counts["changed"] += 1
            elif before[C.MODEL_FINGERPRINT] != FP:
                counts["stale"] += 1
            else:
                counts["carried"] += 1
                continue
            needed[doc_id] = digest
            if (doc_id, digest) not in done:
                todo.append(doc_id)
    deleted = sorted(set(previous) - set(seen))
    return counts, needed, todo, deleted, conflicts


def _plan(tmp_path, files, state, done=(), config=None, stage=True):
    paths = [_write(tmp_path / f"f{k}.parquet", docs) for k, docs in enumerate(files)]
    return _plan_paths(tmp_path, paths, state, done, config, stage)


def _plan_paths(tmp_path, paths, state, done=(), config=None, stage=True):
    summary = ReprocessSummary(run_id="r")
    previous = P.load_previous(state.to_batches(), FP, SETTINGS)
    done_table = pa.table(
        {C.DOC_ID: [d[0] for d in done], CONTENT_HASH: [d[1] for d in done]},
        schema=P.empty_done().schema,
    )
    todo_dir = tmp_path / "todo"
    todo_dir.mkdir(exist_ok=True)
    config = config or _config()
    plan = P.classify(config, pafs.LocalFileSystem(), paths, previous, summary)
    P.stage(config, pafs.LocalFileSystem(), paths, plan, done_table, todo_dir if stage else None)
    return plan, summary


def _staged_ids(plan) -> list[str]:
    return [i for f in plan.todo_files for i in pq.read_table(f)["pmid"].to_pylist()]


@pytest.mark.parametrize("seed", range(8))
def test_random_corpora_plan_as_the_row_by_row_reference(tmp_path, seed):
    rng = random.Random(seed)
    ids = [str(i) for i in range(40)]
    text = {i: (f"t{i}", rng.choice([f"a{i}", None, ""])) for i in ids}
    files = []
    for _ in range(rng.randint(1, 4)):
        docs = []
        for _ in range(rng.randint(0, 25)):
            doc_id = rng.choice([*ids, None])
            docs.append((doc_id, *(text[doc_id] if doc_id else ("x", "y"))))
        files.append(docs)
    stored = rng.sample(ids, 25)
    state = _state(
        [
            (i, content_hash(list(text[i])) if rng.random() < 0.7 else "old", rng.choice([FP, "b"]))
            for i in stored
        ]
    )
    done = {(i, content_hash(list(text[i]))) for i in rng.sample(ids, 10)}
    counts, needed, todo, deleted, _ = _reference(files, state, done)
    plan, summary = _plan(tmp_path, files, state, done)
    assert summary.null_ids == counts["null"] and summary.duplicate_ids == counts["dup"]
    assert (summary.new, summary.changed, summary.model_changed, summary.carried) == (
        counts["new"], counts["changed"], counts["stale"], counts["carried"],
    )  # fmt: skip
    assert summary.deleted == len(deleted) and plan.deleted.to_pylist() == deleted
    assert (
        dict(zip(*(plan.needed[c].to_pylist() for c in (C.DOC_ID, CONTENT_HASH)), strict=True))
        == needed
    )
    assert _staged_ids(plan) == todo  # in corpus order, each once
    assert plan.resumed == len(needed) - len(todo) and plan.todo_rows == len(todo)


def test_a_staged_file_holds_the_documents_text_passthrough_and_hash(tmp_path):
    files = [[("1", "Alpha", "beta."), ("2", "Gamma", None)]]
    plan, _ = _plan(tmp_path, files, _state([]))
    (staged,) = plan.todo_files
    table = pq.read_table(staged)
    assert table.column_names == ["pmid", "title", "abstract", "journal", CONTENT_HASH]
    assert table.to_pylist() == [
        {"pmid": "1", "title": "Alpha", "abstract": "beta.", "journal": "J",
         CONTENT_HASH: content_hash(["Alpha", "beta."])},
        {"pmid": "2", "title": "Gamma", "abstract": None, "journal": "J",
         CONTENT_HASH: content_hash(["Gamma", None])},
    ]  # fmt: skip


def test_an_id_with_two_texts_is_refused_with_examples(tmp_path):
    files = [[("1", "a", "b"), ("2", "c", "d")], [("2", "c", "changed"), ("1", "a", "b")]]
    with pytest.raises(InputError, match=r"1 doc_id\(s\) occur more than once .* e\.g\. 2;"):
        _plan(tmp_path, files, _state([]))


def test_a_file_with_its_own_hash_is_planned_without_reading_its_text(tmp_path):
    # The file's hash column says the text is unchanged although the text differs:
    # the plan must take the column (reading no text), so the document is carried.
    docs = [("1", "new title", "new abstract"), ("2", "two", "")]
    stored = _state([("1", content_hash(["old", "old"]), FP)])
    path = _write(
        tmp_path / "own.parquet", docs, ["title", "abstract"],
        hash_of=lambda d: content_hash(["old", "old"]) if d[0] == "1" else content_hash([d[1], d[2]]),
    )  # fmt: skip
    plan, summary = _plan_paths(tmp_path, [path], stored)
    assert (summary.carried, summary.new) == (1, 1) and _staged_ids(plan) == ["2"]
    assert pq.read_table(plan.todo_files[0])[CONTENT_HASH].to_pylist() == [
        content_hash(["two", ""])
    ]
    # A hash over other columns than the configured ones is not trusted: recomputed.
    plan, summary = _plan_paths(tmp_path, [path], stored, config=_config(text_columns=["title"]))
    assert (summary.carried, summary.new) == (0, 1) and summary.changed == 1


def test_a_model_change_makes_every_stored_document_stale(tmp_path):
    docs = [("1", "a", "b"), ("2", "c", "d")]
    state = _state([(d[0], content_hash([d[1], d[2]]), "old-model") for d in docs])
    previous = P.load_previous(state.to_batches(), FP, SETTINGS)
    assert previous.reason == "model changed (old-model -> model-a)"
    plan, summary = _plan(tmp_path, [docs], state, stage=False)
    assert (summary.model_changed, summary.carried) == (2, 0) and plan.todo_files == []
    assert plan.needed.num_rows == 2


def test_pubmed_state_reads_only_the_current_records(tmp_path):
    # With CurrentState, rows other than each PMID's current record are skipped.
    docs = [("1", "old", "x"), ("1", "new", "x"), ("2", "b", "c")]
    path = _write(tmp_path / "pubmed26n0001.parquet", docs)
    table = pq.read_table(path).append_column("record_index", pa.array([0, 1, 2], pa.int64()))
    pq.write_table(table, path)
    current = SimpleNamespace(
        columns=lambda wanted: [*wanted, "record_index"],
        rows=lambda p, batch, wanted: batch.filter(
            pa.compute.is_in(batch.column("record_index"), value_set=pa.array([1, 2], pa.int64()))
        ).select(wanted),
    )
    summary = ReprocessSummary(run_id="r")
    previous = P.load_previous(_state([]).to_batches(), FP, SETTINGS)
    (tmp_path / "todo").mkdir()
    plan = P.classify(_config(), pafs.LocalFileSystem(), [path], previous, summary, current)
    P.stage(
        _config(), pafs.LocalFileSystem(), [path], plan, P.empty_done(), tmp_path / "todo", current
    )
    staged = pq.read_table(plan.todo_files[0])
    assert staged["title"].to_pylist() == ["new", "b"] and summary.duplicate_ids == 0
