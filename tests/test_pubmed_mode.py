"""jobs.reprocess pubmed=true: a baseline plus update files resolved to PubMed's current state."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import annotation.reprocess as reprocess
from annotation.config import ReprocessConfig
from annotation.hashing import table_digest
from annotation.pubmed import PubmedFileStage
from annotation.reprocess import run_reprocess
from annotation.store import read_store
from corpora.corpus import InputError
from corpora.pubmed_updates import file_order, load_current, read_current, resolve_current
from ner import columns as C
from plumbing.config import ConfigError
from tests.test_pubmed_xml import write_gz

HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n'


def _article(pmid: int, title: str, abstract: str, version: int = 1) -> str:
    return f"""<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM">
  <PMID Version="{version}">{pmid}</PMID>
  <Article><Journal><Title>J Tests</Title></Journal><ArticleTitle>{title}</ArticleTitle>
    <Abstract><AbstractText>{abstract}</AbstractText></Abstract></Article>
</MedlineCitation></PubmedArticle>
"""


def _file(articles: list[str], deleted: list[int] = ()) -> str:
    deletions = "".join(f'<PMID Version="1">{pmid}</PMID>' for pmid in deleted)
    tail = f"<DeleteCitation>{deletions}</DeleteCitation>\n" if deleted else ""
    return HEAD + "".join(articles) + tail + "</PubmedArticleSet>\n"


BASE_TEXT = {
    str(i): (f"Title {i} on p53.", f"Aspirin inhibits COX-{i} in human cells.") for i in range(1, 6)
}
REVISED = ("Title 2 on p53.", "Revised: ibuprofen inhibits COX-2 in mice.")
NEW = ("Title 6 on BRCA1.", "Tamoxifen binds the estrogen receptor.")
# PubMed's state after the update: 1, 4, 5 unchanged; 2 revised; 3 deleted; 6 new.
MERGED = {**BASE_TEXT, "2": REVISED, "6": NEW}
del MERGED["3"]


def _convert(tmp_path: Path, name: str, xml: str) -> Path:
    out = tmp_path / name.split(".")[0]
    report = PubmedFileStage(str(out)).convert(str(write_gz(tmp_path / name, xml)))
    assert report["error"] is None
    return out


@pytest.fixture
def converted(tmp_path) -> tuple[Path, Path]:
    """A baseline (5 records) and an update (1 new, 1 revised, 1 DeleteCitation), converted."""
    baseline = _file([_article(int(p), *text) for p, text in BASE_TEXT.items()])
    update = _file([_article(6, *NEW), _article(2, *REVISED, version=2)], deleted=[3])
    return (
        _convert(tmp_path, "pubmed26n0001.xml.gz", baseline),
        _convert(tmp_path, "pubmed26n0002.xml.gz", update),
    )


def _texts(table: pa.Table) -> dict[str, tuple[str, str]]:
    rows = table.to_pylist()
    return {r["pmid"]: (r["title"], r["abstract"]) for r in rows}


def test_baseline_plus_update_resolve_to_pubmeds_current_state(converted):
    state = load_current([str(d) for d in converted])
    assert (state.records, state.deletions, state.current) == (7, 1, 5)
    current = read_current(state, ["pmid", "title", "abstract"])
    assert current.num_rows == 5 and _texts(current) == MERGED
    assert _texts(
        read_current(load_current([str(converted[0])]), ["pmid", "title", "abstract"])
    ) == (BASE_TEXT)


def _resolve(citations: list[tuple[int, int, int]], deletions: list[tuple[int, int]]) -> list:
    cited = pa.Table.from_pylist(
        [dict(zip(["pmid", "file_rank", "record_index"], row, strict=True)) for row in citations]
    )
    schema = pa.schema([("pmid", pa.int64()), ("file_rank", pa.int64())])
    withdrawn = pa.Table.from_pylist(
        [dict(zip(schema.names, row, strict=True)) for row in deletions], schema=schema
    )
    return sorted(tuple(r.values()) for r in resolve_current(cited, withdrawn).to_pylist())


def test_resolution_rules_latest_file_last_record_deletions_and_readdition():
    citations = [
        (1, 0, 0),
        (1, 2, 5),  # a later file wins
        (2, 1, 3),
        (2, 1, 7),  # within a file, the last record wins
        (3, 0, 1),  # deleted in a later file
        (4, 1, 0),  # deleted by its own file (deletions close a file)
        (5, 0, 2),
        (5, 2, 0),  # re-added after its deletion in file 1: kept
    ]
    deletions = [(3, 2), (4, 1), (5, 1), (99, 0)]
    assert _resolve(citations, deletions) == [(1, 2, 5), (2, 1, 7), (5, 2, 0)]


def test_files_are_ordered_by_year_then_number():
    # A new annual baseline (26n0001) replaces the last year's updates (25n1400); a
    # number past 9999 still sorts by value.
    names = ["pubmed26n10000", "pubmed26n0001", "pubmed25n1400", "medline16n0902", "pubmed26n9999"]
    assert sorted(names, key=file_order) == [
        "medline16n0902",
        "pubmed25n1400",
        "pubmed26n0001",
        "pubmed26n9999",
        "pubmed26n10000",
    ]
    with pytest.raises(InputError, match="not a PubMed file name"):
        file_order("part-0001")


def _config(inputs: list[Path], store: Path, model: Path, **overrides) -> ReprocessConfig:
    values = dict(
        input=[str(d) for d in inputs],
        store=str(store),
        model=str(model),
        pubmed=True,
        id_column="pmid",
        text_columns=["title", "abstract"],
        max_length=32,
        stride=8,
        tokenize_batch_size=4,
        classify_batch_size=4,
        token_budget=256,
        write_batch_size=4,
        tokenize_concurrency=[1, 1],
        classifier_concurrency=[1, 1],
        progress_bars=False,
    )
    values.update(overrides)
    return ReprocessConfig(**values)


def _fake_store(store: Path, texts: dict[str, tuple[str, str]], fingerprint: str) -> None:
    """A store as a baseline run leaves it, written without Ray or a model."""
    from annotation.hashing import content_hash, settings_fingerprint
    from annotation.store import table_rows

    config = _config([], store, Path("unused"))
    settings = {name: getattr(config, name) for name in reprocess.ROW_SETTINGS}
    ids = sorted(texts)
    annotated = pa.table(
        {
            C.DOC_ID: ids,
            C.ENTITIES: pa.array([[]] * len(ids), pa.list_(C.ENTITY_TYPE)),
            C.STATUS: ["ok"] * len(ids),
            C.MODEL_FINGERPRINT: [fingerprint] * len(ids),
            "content_hash": [content_hash(texts[i]) for i in ids],
            "settings_fingerprint": [settings_fingerprint(settings)] * len(ids),
        }
    )
    rows = table_rows(annotated, None, "tiny", fingerprint)
    reprocess.commit(str(store), None, rows, metadata={})


def test_plan_only_prints_the_update_in_pubmeds_words(converted, tiny_model_dir, tmp_path, capsys):
    from ner.model import model_fingerprint

    store = tmp_path / "store"
    _fake_store(store, BASE_TEXT, model_fingerprint(tiny_model_dir))
    plan = run_reprocess(_config(converted, store, tiny_model_dir, plan_only=True))
    out = capsys.readouterr().out
    assert "new 1, revised 1, deleted 1, unchanged 3, model-changed 0, annotated 2" in out
    assert "PubMed: 2 file(s) pubmed26n0001 .. pubmed26n0002; 7 records" in out
    assert (plan.new, plan.changed, plan.deleted, plan.carried, plan.documents) == (1, 1, 1, 3, 5)
    assert plan.version is None and read_store(str(store)).num_rows == 5  # nothing committed


def test_pubmed_mode_needs_pmid_ids(tmp_path):
    with pytest.raises(ConfigError, match="pmid"):
        _config([tmp_path], tmp_path / "s", tmp_path, id_column="doc")


def _content(store: Path) -> str:
    """The store's digest without the run's provenance (run id, time, staging file)."""
    rows = read_store(str(store))
    rejected = read_store(str(store), rejected=True)
    assert rejected.num_rows == 0
    return table_digest(rows.drop_columns([C.RUN_ID, C.ANNOTATED_AT, C.SOURCE_FILE]))


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_baseline_then_update_equals_a_store_built_from_both_at_once(
    ray_local, tiny_model_dir, converted, tmp_path
):
    baseline, update = converted
    incremental, scratch = tmp_path / "incremental", tmp_path / "scratch"
    first = run_reprocess(_config([baseline], incremental, tiny_model_dir, run_id="b"))
    assert (first.new, first.annotated) == (5, 5)
    second = run_reprocess(_config([baseline, update], incremental, tiny_model_dir, run_id="u"))
    assert (second.new, second.changed, second.deleted, second.carried) == (1, 1, 1, 3)
    assert second.annotated == 2 and second.version == 1
    whole = run_reprocess(_config([baseline, update], scratch, tiny_model_dir, run_id="s"))
    assert whole.new == 5
    rows = read_store(str(incremental))
    assert sorted(rows.column(C.DOC_ID).to_pylist()) == sorted(MERGED)
    assert {r[C.DOC_ID]: r[C.RUN_ID] for r in rows.to_pylist()} == {
        "1": "b",
        "2": "u",
        "4": "b",
        "5": "b",
        "6": "u",
    }
    assert _content(incremental) == _content(scratch)
