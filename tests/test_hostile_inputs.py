"""Hostile inputs to the annotation job, each with its expected outcome.

Every case ends in one of three ways, written beside it: a row with a status
(annotated, ``empty_text`` or ``no_tokens``), a rejected-record row with a reason,
or a clear ``InputError`` before any model work. Never a silent drop, a hang, or a
crash that loses finished work. The row-level cases run in one job over one
corpus; the file-level cases each stop the job before it starts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.config import AnnotateConfig
from annotation.run import run_annotate
from corpora.corpus import InputError, SkippedInputWarning
from corpora.writer import REJECTED_DIR
from ner import columns as C

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCHEMA = pa.schema([("pmid", pa.string()), ("title", pa.string()), ("abstract", pa.string())])
MAX_CHARS = 1_000_000
ONE_MB = ("p53 binds MDM2 in human cells. " * 40_000)[:MAX_CHARS]  # exactly max_chars
TOKENS_200K = "of p53 in mice " * 50_000  # 4 sub-tokens a repeat: 200,000 tokens
LONE_SURROGATE = "Aspirin \ud800 and ibuprofen.".encode("utf-8", "surrogatepass")

# doc_id -> (title, abstract, expected status, expected reason fragment or None)
ROWS = {
    "null-text": (None, None, "empty_text", None),
    "empty-text": ("", "", "empty_text", None),
    "whitespace-only": ("  \t", "\n\u2003 \u00a0", "empty_text", None),
    "one-megabyte": (None, ONE_MB, "ok", None),
    "over-max-chars": (None, ONE_MB + "x", "rejected", "max_chars"),
    "200k-tokens": (None, TOKENS_200K, "ok", None),
    "punctuation-only": ("?!...", ";:,--()[]{}''\"\"", "ok", None),
    "control-and-nul": ("IL-2\x00 and\x07 TNF\x1b", "Ca\x00\x00 in cells\x0c.", "ok", None),
    "only-control": ("\x00\x01\x02", "\x7f\x1f", "no_tokens", None),
    "non-latin": ("белок p53 与 人类 細胞", "البروتين TP53 में αβ T cells 🧬", "ok", None),
    "duplicate-id": ("First copy.", "Cells.", "ok", None),
}
DUPLICATE = ("Second copy.", "Mouse cells.", "ok", None)


def _write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _rows_table(rows: list[tuple]) -> pa.Table:
    return pa.table([list(c) for c in zip(*rows, strict=True)], schema=SCHEMA)


def _invalid_utf8_table() -> pa.Table:
    """A string column holding a lone surrogate, as a writer that skips validation leaves it."""
    raw = pa.array([LONE_SURROGATE, b"Valid text about p53."], pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    return pa.table(
        {"pmid": ["lone-surrogate", "valid-neighbour"], "title": [None, None], "abstract": text}
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    rows = [(doc_id, t, a) for doc_id, (t, a, _, _) in ROWS.items()]
    _write(root / "main.parquet", _rows_table(rows))
    _write(
        root / "more.parquet",
        _rows_table([("duplicate-id", *DUPLICATE[:2]), (None, "No id here.", "p53.")]),
    )
    _write(root / "invalid-utf8.parquet", _invalid_utf8_table())
    _write(root / "zero-rows.parquet", SCHEMA.empty_table())
    # Schema drift that the job absorbs: other column order, large_string and binary
    # text columns, and an extra column it does not read.
    _write(
        root / "drift.parquet",
        pa.table(
            {
                "abstract": pa.array(["Binary abstract on insulin."], pa.binary()),
                "extra": [1],
                "title": pa.array(["Large-string title."], pa.large_string()),
                "pmid": ["drifted-schema"],
            }
        ),
    )
    (root / "README.txt").write_text("not data")
    (root / "_SUCCESS").write_text("")
    return root


@pytest.fixture(scope="module")
def result(ray_local, corpus, tiny_model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("hostile-out")
    config = AnnotateConfig(
        input=[str(corpus)],
        output=str(output),
        model=str(tiny_model_dir),
        id_column="pmid",
        text_columns=["title", "abstract"],
        include_text=True,
        max_chars=MAX_CHARS,
        progress_bars=False,
        run_id="hostile",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_annotate(config)
    kept = pq.read_table(output, columns=None).to_pylist() if summary.files else []
    rejected = pq.read_table(output / REJECTED_DIR).to_pylist()
    return summary, kept, rejected, caught


def _by_id(rows: list[dict]) -> dict:
    out: dict = {}
    for row in rows:
        out.setdefault(row[C.DOC_ID], []).append(row)
    return out


def test_every_input_row_is_accounted_for(result):
    summary, kept, rejected, _ = result
    expected_rows = len(ROWS) + 2 + 2 + 0 + 1  # main, more, invalid-utf8, zero-rows, drift
    assert summary.rows_in == expected_rows
    assert summary.balanced and len(kept) + len(rejected) == expected_rows


@pytest.mark.parametrize("doc_id", sorted(ROWS))
def test_row_level_case_has_its_expected_outcome(result, doc_id):
    _, kept, rejected, _ = result
    _, _, status, reason = ROWS[doc_id]
    if status == "rejected":
        [row] = _by_id(rejected)[doc_id]
        assert reason in row[C.REASON]
        assert doc_id not in _by_id(kept)
        return
    rows = _by_id(kept)[doc_id]
    assert {r[C.STATUS] for r in rows} == {status}
    for row in rows:
        if status != "ok":
            assert row[C.ENTITIES] == []
        for entity in row[C.ENTITIES]:  # offsets index the original Python string
            assert row[C.TEXT][entity["start"] : entity["end"]] == entity["text"]


def test_long_documents_are_annotated_whole(result):
    summary, kept, _, _ = result
    rows = _by_id(kept)
    assert rows["one-megabyte"][0][C.TEXT] == ONE_MB  # one title-less column: no separator
    assert summary.tokens >= 200_000 + 250_000
    for doc_id, text in (("one-megabyte", ONE_MB), ("200k-tokens", TOKENS_200K)):
        entities = rows[doc_id][0][C.ENTITIES]
        if entities:  # windows reach the end: no part of the document is cut away
            assert max(e["end"] for e in entities) <= len(text)


def test_duplicate_and_null_ids(result):
    summary, kept, rejected, _ = result
    assert len(_by_id(kept)["duplicate-id"]) == 2
    assert summary.duplicate_ids == 1 and "duplicate-id" in summary.duplicate_examples
    [null_id] = _by_id(rejected)[None]
    assert "null pmid" in null_id[C.REASON] and null_id[C.SOURCE_FILE].endswith("more.parquet")


def test_invalid_utf8_rejects_only_that_document(result):
    _, kept, rejected, _ = result
    [row] = _by_id(rejected)["lone-surrogate"]
    assert "not valid UTF-8" in row[C.REASON]
    assert _by_id(kept)["valid-neighbour"][0][C.STATUS] == "ok"


def test_schema_drift_and_other_types_of_string_are_read(result):
    _, kept, _, _ = result
    [row] = _by_id(kept)["drifted-schema"]
    assert row[C.STATUS] == "ok"
    assert row[C.TEXT] == "Large-string title. Binary abstract on insulin."


def test_non_parquet_files_in_a_directory_are_named_not_silently_skipped(result):
    *_, caught = result
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedInputWarning)]
    assert len(messages) == 1 and "README.txt" in messages[0]
    assert "_SUCCESS" not in messages[0]  # bookkeeping files are expected there


# --- file-level cases: a clear error before any model work -----------------------
# The model path does not exist: reaching the model check would raise
# FileNotFoundError instead, so each InputError below proves the job stopped first.


def _fail(tmp_path: Path, files: dict[str, pa.Table | bytes], **overrides) -> str:
    for name, content in files.items():
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            pq.write_table(content, path)
    settings = dict(
        input=[str(tmp_path / "in")],
        output=str(tmp_path / "out"),
        model=str(tmp_path / "no-model-here"),
        id_column="pmid",
        text_columns=["title", "abstract"],
        progress_bars=False,
    )
    settings.update(overrides)
    with pytest.raises(InputError) as err:
        run_annotate(AnnotateConfig(**settings))
    assert not (tmp_path / "out").exists()  # nothing written
    return str(err.value)


GOOD = _rows_table([("1", "Title.", "Abstract.")])


def test_integer_text_column(tmp_path):
    bad = pa.table({"pmid": ["1"], "title": ["t"], "abstract": [42]})
    message = _fail(tmp_path, {"a.parquet": GOOD, "b.parquet": bad})
    assert "b.parquet" in message and "'abstract'" in message and "int64" in message


def test_missing_text_column(tmp_path):
    bad = pa.table({"pmid": ["1"], "title": ["t"]})
    message = _fail(tmp_path, {"a.parquet": GOOD, "b.parquet": bad})
    assert "b.parquet" in message and "no text column 'abstract'" in message


def test_missing_id_column(tmp_path):
    bad = pa.table({"title": ["t"], "abstract": ["a"]})
    message = _fail(tmp_path, {"b.parquet": bad})
    assert "b.parquet" in message and "no id column 'pmid'" in message


def test_empty_file(tmp_path):
    message = _fail(tmp_path, {"a.parquet": GOOD, "empty.parquet": b""})
    assert "empty.parquet" in message and "not readable Parquet" in message


def test_corrupt_parquet_file(tmp_path):
    valid = pa.BufferOutputStream()
    pq.write_table(GOOD, valid)
    truncated = valid.getvalue().to_pybytes()[:-20]
    message = _fail(tmp_path, {"a.parquet": GOOD, "corrupt.parquet": truncated})
    assert "corrupt.parquet" in message and "not readable Parquet" in message


def test_garbage_bytes_named_parquet(tmp_path):
    message = _fail(tmp_path, {"garbage.parquet": b"PAR1" + bytes(range(256)) * 8})
    assert "garbage.parquet" in message


def test_directory_of_non_parquet_files(tmp_path):
    message = _fail(tmp_path, {"notes.txt": b"hello", "data.csv": b"pmid,title\n1,x\n"})
    assert "holds no .parquet files" in message and "notes.txt" in message
