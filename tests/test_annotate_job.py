"""The whole annotation job on a real local Ray cluster, with the tiny random model."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.config import AnnotateConfig
from annotation.run import run_annotate
from corpora.writer import REJECTED_DIR
from ner import columns as C
from ner.model import model_fingerprint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LONG = " ".join(f"Protein{i} binds α-synuclein in cells." for i in range(12))  # many windows
FILES = {
    "part-a.parquet": [
        ("1", "Aspirin and ibuprofen.", "They inhibit COX-1 in humans.", 2001),
        ("2", None, "Only an abstract about p53 and Mdm2.", 2002),
        ("3", "A long one.", LONG, 2003),
        ("4", "TNF-α 🧬 café\u0301.", "Ca²⁺ signalling in naïve T cells.", 2004),
    ],
    "part-b.parquet": [
        ("5", "", "", 2005),
        ("6", "   ", "\n\t ", 2006),
        ("7", None, None, 2007),
        ("8", "\x00\x01", None, 2008),
    ],
    "sub/part-c.parquet": [
        (None, "An id is missing.", "Still text.", 2009),
        ("9", "x" * 2500, "too long", 2010),
        ("1", "Duplicate id.", "Same id as in part-a.", 2011),
    ],
}


@pytest.fixture(scope="module")
def ray_local(_ray_session):
    """Its own instance with a small object store, so streaming back-pressure is exercised."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=150 * 1024 * 1024, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    schema = pa.schema(
        [
            ("pmid", pa.string()),
            ("title", pa.string()),
            ("abstract", pa.string()),
            ("year", pa.int64()),
        ]
    )
    for name, rows in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = list(zip(*rows, strict=True))
        pq.write_table(pa.table([list(c) for c in columns], schema=schema), path)
    return root


@pytest.fixture(scope="module")
def annotated(ray_local, corpus, tiny_model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("annotated")
    # A file left by an earlier run that this run does not write: removed at the end.
    (output / "stale-0000000000000000.parquet").write_bytes(b"old")
    config = AnnotateConfig(
        input=[str(corpus / "part-a.parquet"), str(corpus / "part-b.parquet"), str(corpus / "sub")],
        output=str(output),
        model=str(tiny_model_dir),
        id_column="pmid",
        text_columns=["title", "abstract"],
        passthrough=["year"],
        include_text=True,
        max_length=16,
        stride=4,
        max_chars=2000,
        tokenize_batch_size=3,
        classify_batch_size=3,
        token_budget=64,  # 4 windows of 16
        write_batch_size=4,
        tokenize_concurrency=[1, 1],
        classifier_concurrency=[1, 2],
        progress_bars=False,
        run_id="test-run",
    )
    summary = run_annotate(config)
    return config, summary, output


def test_row_balance_and_summary(annotated):
    _, summary, _ = annotated
    assert summary.rows_in == 11
    assert (summary.rows_out, summary.rows_rejected) == (9, 2)
    assert summary.balanced
    assert summary.statuses == {"ok": 5, "empty_text": 3, "no_tokens": 1, "rejected": 2}
    assert summary.tokens > 0 and sum(summary.entity_types.values()) > 0
    assert summary.duplicate_ids == 1 and summary.duplicate_examples == ["1"]
    assert "rows_in 11 == rows_out 9 + rows_rejected 2: OK" in summary.format()


def test_one_row_per_document_with_valid_spans(annotated, tiny_model_dir):
    _, summary, output = annotated
    table = pa.concat_tables([pq.read_table(path) for path in summary.files])
    rows = table.to_pylist()
    assert Counter(r[C.DOC_ID] for r in rows) == Counter(
        ["1", "1", "2", "3", "4", "5", "6", "7", "8"]
    )
    status = {r[C.DOC_ID]: r[C.STATUS] for r in rows}
    assert [status[i] for i in "2345678"] == ["ok", "ok", "ok"] + ["empty_text"] * 3 + ["no_tokens"]
    expected_year = {row[0]: row[3] for rows_ in FILES.values() for row in rows_ if row[0] != "1"}
    fingerprint = model_fingerprint(tiny_model_dir)
    spans = 0
    for row in rows:
        if row[C.DOC_ID] != "1":
            assert row["year"] == expected_year[row[C.DOC_ID]]
        assert row[C.MODEL_FINGERPRINT] == fingerprint
        assert row[C.MODEL_NAME] == str(tiny_model_dir)
        assert row[C.RUN_ID] == "test-run" and row[C.ANNOTATED_AT] is not None
        if row[C.STATUS] != "ok":
            assert row[C.ENTITIES] == []
        for entity in row[C.ENTITIES]:
            spans += 1
            assert row[C.TEXT][entity["start"] : entity["end"]] == entity["text"]
            assert entity["column"] in ("title", "abstract")
            assert entity["label"] in ("Chemical", "Cell", "Protein", "Gene", "Sequence", "Taxon")
    assert spans > 0
    long_doc = next(r for r in rows if r[C.DOC_ID] == "3")
    assert long_doc[C.TEXT].endswith(LONG)  # windowed, nothing cut away
    assert max(e["end"] for e in long_doc[C.ENTITIES]) > len(long_doc[C.TEXT]) - 40


def test_rejected_rows_have_reasons(annotated):
    _, summary, output = annotated
    rejected = pq.read_table(output / REJECTED_DIR).to_pylist()
    reasons = {r[C.DOC_ID]: r[C.REASON] for r in rejected}
    assert set(reasons) == {None, "9"}
    assert "null pmid" in reasons[None] and "max_chars" in reasons["9"]
    assert all(r[C.SOURCE_FILE].endswith("part-c.parquet") for r in rejected)


def test_files_are_named_from_inputs_and_the_manifest_lists_them(annotated):
    _, summary, output = annotated
    on_disk = sorted(str(p) for p in output.glob("*.parquet"))
    on_disk += sorted(str(p) for p in (output / REJECTED_DIR).glob("*.parquet"))
    assert sorted(summary.files + summary.rejected_files) == sorted(on_disk)  # stale one removed
    for path in on_disk:
        assert path.rsplit("/", 1)[1].startswith(("part-a-", "part-b-", "part-c-"))
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["balanced"] is True
    assert manifest["files"] == summary.files
    assert [i["num_rows"] for i in manifest["inputs"]] == [4, 4, 3]


def test_decoding_is_not_fused_into_the_write_tasks(ray_local, corpus, tiny_model_dir, tmp_path):
    """Fused, decoding would run a file's worth of rows (write_batch_size) per task, the
    last of them alone after the classifier finished; Ray Data fuses task-pool maps."""
    import contextlib
    import io

    import pyarrow.fs as pafs

    from annotation.pipeline import build_pipeline

    config = AnnotateConfig(model=str(tiny_model_dir), output=str(tmp_path), id_column="pmid",
                            text_columns=["title", "abstract"])  # fmt: skip
    files = [str(corpus / "part-a.parquet")]
    ds = build_pipeline(config, pafs.LocalFileSystem(), files, "fingerprint", "run")
    plan = io.StringIO()
    with contextlib.redirect_stdout(plan):
        ds.explain()
    physical = plan.getvalue().split("Physical Plan (Optimized)")[1]
    # Decoding, then abbreviation resolution (on by default), in one actor pool.
    assert "ActorPoolMapOperator[MapBatches(DecodeWithAbbreviationsStage)]" in physical
    assert "TaskPoolMapOperator[MapBatches(_write)]" in physical
