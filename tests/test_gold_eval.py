"""Gold corpora, matching and metrics on hand-built spans (no Ray, no model)."""

from __future__ import annotations

import pytest

from corpora.gold import GoldFormatError, Span, iob_documents, read_bioc_gold, read_pubtator_gold
from corpora.gold_metrics import (
    MICRO,
    TypeMapError,
    match,
    parse_type_map,
    pr_curve,
    project,
    resolve_type_map,
    score,
    threshold_for_precision,
)
from ner.labels import canonical_type

TITLE = "Naloxone reverses clonidine."
ABSTRACT = "In rats, clonidine lowered blood pressure."
PUBTATOR = f"""1|t|{TITLE}
1|a|{ABSTRACT}
1\t0\t8\tNaloxone\tChemical\tD009270
1\t18\t27\tclonidine\tChemical\tD003000
1\t56\t70\tblood pressure\tDisease\tD1|D2\tblood|pressure
1\tCID\tD009270\tD1

"""


def gold(start, end, kind="Chemical", doc="1"):
    return Span(doc, start, end, kind)


def pred(start, end, kind="Chemical", score_=0.9, doc="1"):
    return Span(doc, start, end, kind, score=score_)


# --- readers ---------------------------------------------------------------


def test_pubtator_reader_keeps_offsets_into_title_space_abstract(tmp_path):
    path = tmp_path / "gold.txt"
    path.write_text(PUBTATOR, encoding="utf-8")
    (doc,) = read_pubtator_gold(path)
    assert doc.text == TITLE + " " + ABSTRACT
    assert [(m.text, m.type) for m in doc.mentions] == [
        ("Naloxone", "Chemical"),
        ("clonidine", "Chemical"),
        ("blood pressure", "Disease"),  # a composite line: extra columns ignored
    ]
    for m in doc.mentions:
        assert doc.text[m.start : m.end] == m.text


@pytest.mark.parametrize(
    "line, reason",
    [
        ("1\tx\t8\tNaloxone\tChemical\tD1", "start 'x' is not an integer"),
        ("1\t8\t0\tNaloxone\tChemical\tD1", "end 0 is not after start 8"),
        ("1\t8\t8\t\tChemical\tD1", "end 8 is not after start 8"),  # empty
        ("1\t60\t999\tNaloxone\tChemical\tD1", "outside document 1"),
        ("1\t0\t8\tNalaxone\tChemical\tD1", "differs from the document text"),
        ("2\t0\t8\tNaloxone\tChemical\tD1", "unknown document '2'"),
        ("1\t0\t8", "expected 'PMID|t|'"),
        ("1|t|Second title", "second title for document 1"),
    ],
)
def test_malformed_pubtator_lines_name_file_and_line(tmp_path, line, reason):
    path = tmp_path / "bad.txt"
    lines = PUBTATOR.splitlines()
    lines.insert(4, line)  # line 5
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(GoldFormatError, match=reason) as info:
        read_pubtator_gold(path)
    assert str(info.value).startswith(f"{path}:5: ")


BIOC = """<?xml version="1.0" encoding="UTF-8"?>
<collection><source>test</source><date/><key/>
<document><id>7</id>
<passage><infon key="type">title</infon><offset>0</offset><text>Naloxone reverses clonidine.</text>
<annotation id="0"><infon key="type">Chemical</infon><location offset="0" length="8"/><text>Naloxone</text></annotation>
</passage>
<passage><infon key="type">abstract</infon><offset>29</offset><text>In rats, clonidine lowered blood pressure.</text>
<annotation id="1"><infon key="type">Chemical</infon><location offset="{offset}" length="9"/><text>clonidine</text></annotation>
</passage>
</document>
</collection>
"""


def test_bioc_reader_matches_the_pubtator_layout(tmp_path):
    path = tmp_path / "gold.xml"
    path.write_text(BIOC.format(offset=38), encoding="utf-8")
    (doc,) = read_bioc_gold(path)
    assert (doc.doc_id, doc.title, doc.abstract) == ("7", TITLE, ABSTRACT)
    assert [(m.start, m.end, m.text) for m in doc.mentions] == [
        (0, 8, "Naloxone"),
        (38, 47, "clonidine"),
    ]


@pytest.mark.parametrize("offset, reason", [("39", "differs from"), ("3x", "unreadable BioC")])
def test_malformed_bioc_names_file_and_line(tmp_path, offset, reason):
    path = tmp_path / "bad.xml"
    path.write_text(BIOC.format(offset=offset), encoding="utf-8")
    with pytest.raises(GoldFormatError, match=reason) as info:
        read_bioc_gold(path)
    assert str(info.value).startswith(f"{path}:8: ")  # the annotation's line


def test_iob_sentences_become_documents_with_character_offsets():
    sentences = [
        (["p53", "binds", "Mdm2", "."], ["B-Protein", "O", "B-Protein", "O"]),
        (["mouse", "liver", "cells"], ["B-Taxon", "B-Cell", "I-Cell"]),
    ]
    (doc,) = iob_documents(sentences, "devel", sentences_per_document=5)
    assert doc.text == "p53 binds Mdm2 . mouse liver cells"
    assert [(m.text, m.type) for m in doc.mentions] == [
        ("p53", "Protein"),
        ("Mdm2", "Protein"),
        ("mouse", "Taxon"),
        ("liver cells", "Cell"),
    ]


# --- type mapping ------------------------------------------------------------


def test_type_map_mapping_and_yaml(tmp_path):
    assert parse_type_map({"Chemical": "Chemical", "Disease": "-"}) == {
        "Chemical": "Chemical",
        "Disease": None,
    }
    path = tmp_path / "types.yaml"
    path.write_text("Chemical: CHEBI\nDisease: '-'\nSpecies: Taxon\n")
    resolved = resolve_type_map(parse_type_map(str(path)), ["Chemical", "Species"], canonical_type)
    assert resolved == {"Chemical": "Chemical", "Disease": None, "Species": "Taxon"}
    with pytest.raises(TypeMapError, match="type map file Chemical not found"):
        parse_type_map("Chemical")


def test_unmapped_gold_types_and_unknown_model_types_are_errors():
    with pytest.raises(TypeMapError, match="gold type 'Disease' is not mapped"):
        resolve_type_map(None, ["Chemical", "Disease"], canonical_type)
    with pytest.raises(TypeMapError, match="has no type 'Drug'"):
        resolve_type_map({"Chemical": "Drug"}, ["Chemical"], canonical_type)
    assert resolve_type_map(None, ["Chemical"], canonical_type) == {"Chemical": "Chemical"}


def test_projection_maps_gold_and_drops_unannotated_prediction_types():
    type_map = {"Drug": "Chemical", "Disease": None}
    golds = [gold(0, 4, "Drug"), gold(5, 9, "Disease")]
    preds = [pred(0, 4, "Chemical"), pred(5, 9, "Protein"), pred(20, 25, "Chemical")]
    g, p = project(golds, preds, type_map)
    assert g == [gold(0, 4, "Chemical")]
    assert [x.type for x in p] == ["Chemical", "Chemical"]  # Protein: not in the corpus
    scores = score(g, p)
    assert scores["strict"]["Chemical"].as_dict()["tp"] == 1
    assert set(scores["strict"]) == {"Chemical", MICRO}


# --- matching and metrics ----------------------------------------------------


@pytest.mark.parametrize(
    "predicted, strict_tp, lenient_tp",
    [
        ((10, 20), 1, 1),
        ((11, 20), 0, 1),  # start off by one
        ((10, 19), 0, 1),  # end off by one
        ((9, 21), 0, 1),  # both off by one
        ((12, 20), 0, 0),  # start off by two: neither
        ((10, 22), 0, 0),  # end off by two: neither
    ],
)
def test_strict_and_lenient_boundaries(predicted, strict_tp, lenient_tp):
    scores = score([gold(10, 20)], [pred(*predicted)])
    assert scores["strict"]["Chemical"].tp == strict_tp
    assert scores["lenient"]["Chemical"].tp == lenient_tp


def test_type_must_agree_and_documents_are_separate():
    assert match([gold(0, 5, "Chemical")], [pred(0, 5, "Cell")]) == [False]
    assert match([gold(0, 5, doc="1")], [pred(0, 5, doc="2")]) == [False]


def test_matching_is_one_to_one():
    # Two predictions within one character of the same gold span: one matches.
    flags = match([gold(10, 11)], [pred(9, 10), pred(10, 11)], tolerance=1)
    assert flags == [False, True]  # the one overlapping the gold span wins
    # A gold span annotated twice can match two predictions, no more.
    assert sum(match([gold(0, 5), gold(0, 5)], [pred(0, 5)])) == 1
    counts = score([gold(0, 5), gold(7, 9)], [pred(0, 5), pred(0, 6), pred(30, 31)])["lenient"]
    assert (counts[MICRO].tp, counts[MICRO].gold, counts[MICRO].predicted) == (1, 2, 3)
    assert counts[MICRO].precision == pytest.approx(1 / 3)
    assert counts[MICRO].recall == pytest.approx(1 / 2)
    assert counts[MICRO].f1 == pytest.approx(0.4)


def test_micro_average_pools_types():
    golds = [gold(0, 5), gold(10, 15, "Cell"), gold(20, 25, "Cell")]
    preds = [pred(0, 5), pred(10, 15, "Cell"), pred(40, 45, "Cell")]
    strict = score(golds, preds)["strict"]
    assert strict["Chemical"].f1 == 1.0
    assert strict["Cell"].precision == strict["Cell"].recall == 0.5
    assert (strict[MICRO].tp, strict[MICRO].gold, strict[MICRO].predicted) == (2, 3, 3)


def test_pr_curve_sweeps_thresholds_down_with_recall_never_falling():
    golds = [gold(0, 5), gold(10, 15), gold(20, 25), gold(30, 35)]
    preds = [
        pred(0, 5, score_=0.99),
        pred(10, 15, score_=0.95),
        pred(50, 55, score_=0.9),  # a false positive
        pred(20, 25, score_=0.6),
        pred(60, 65, score_=0.6),  # tied with a true positive: they enter together
        pred(31, 35, score_=0.5),  # lenient only
    ]
    rows = pr_curve(golds, preds)["Chemical"]
    thresholds = [r["threshold"] for r in rows]
    assert thresholds == sorted(thresholds, reverse=True) and len(set(thresholds)) == len(rows)
    assert thresholds == pytest.approx([0.99, 0.95, 0.9, 0.6, 0.5])
    recalls = [r["strict_recall"] for r in rows]
    assert recalls == sorted(recalls)
    assert [r["predicted"] for r in rows] == [1, 2, 3, 5, 6]
    assert [r["strict_tp"] for r in rows] == [1, 2, 2, 3, 3]
    assert [r["lenient_tp"] for r in rows] == [1, 2, 2, 3, 4]
    # the last row is the plain score of all predictions
    full = score(golds, preds)["strict"]["Chemical"]
    assert rows[-1]["strict_precision"] == pytest.approx(full.precision)
    assert rows[-1]["strict_recall"] == pytest.approx(full.recall)
    # lowest threshold still at precision >= 0.9: 0.95 (2/2); at 0.9 it is 2/3
    assert threshold_for_precision(rows, 0.9)["threshold"] == pytest.approx(0.95)
    assert threshold_for_precision(rows, 0.6)["threshold"] == pytest.approx(0.6)
    assert threshold_for_precision(rows, 1.01) is None
