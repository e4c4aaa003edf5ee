"""Abbreviation definitions (Schwartz & Hearst) and their resolution after span decoding."""

import numpy as np
import pyarrow as pa
import pytest

from ner import columns as C
from ner.abbreviation_resolution import DecodeWithAbbreviationsStage, resolve_abbreviations
from ner.abbreviations import find_definitions
from ner.decode import SpanDecodeStage
from ner.labels import LABEL2ID


def pairs(text):
    """{short form: long form} of ``text``, checked against the offsets returned."""
    found = {}
    for d in find_definitions(text):
        assert all(text[s:e] == d.short for s, e in d.occurrences)
        found[d.short] = text[d.long_start : d.long_end]
    return found


@pytest.mark.parametrize(
    "text, short, long",
    [
        # The paper's examples (Schwartz & Hearst 2003, and its slides).
        (
            "Heat shock transcription factor (HSF) binds DNA.",
            "HSF",
            "Heat shock transcription factor",
        ),
        (
            "Heat-shock protein 40 (Hsp40) enables Hsp70 to play roles",
            "Hsp40",
            "Heat-shock protein 40",
        ),
        (
            "with Cbf1p, a basic region helix-loop-helix zipper protein (bHLHzip) that binds",
            "bHLHzip",
            "basic region helix-loop-helix zipper protein",
        ),
        (
            "Hpa2 is a member of the Gcn5-related N-acetyltransferase (GNAT) superfamily",
            "GNAT",
            "Gcn5-related N-acetyltransferase",
        ),
        # Digits and Greek letters.
        ("Patients received 5-fluorouracil (5-FU) daily.", "5-FU", "5-fluorouracil"),
        (
            "Levels of transforming growth factor β (TGF-β) rose.",
            "TGF-β",
            "transforming growth factor β",
        ),
        (
            "Levels of transforming growth factor beta (TGF-β) rose.",
            "TGF-β",
            "transforming growth factor beta",
        ),
        ("We measured interleukin 2 (IL-2) in serum.", "IL-2", "interleukin 2"),
        # Short form first: the long form in the parenthesis.
        ("Patients received 5-FU (5-fluorouracil) daily.", "5-FU", "5-fluorouracil"),
        ("after DOX (doxorubicin) treatment", "DOX", "doxorubicin"),
        # Nested parentheses: the inner one ends the short form, and defines nothing itself.
        (
            "granulocyte colony-stimulating factor (G-CSF (filgrastim)) was given",
            "G-CSF",
            "granulocyte colony-stimulating factor",
        ),
        (
            "angiotensin-converting enzyme (ACE; EC 3.4.15.1) inhibitors",
            "ACE",
            "angiotensin-converting enzyme",
        ),
    ],
)
def test_definitions_of_the_classic_examples(text, short, long):
    assert pairs(text) == {short: long}


@pytest.mark.parametrize(
    "text",
    [
        "No parentheses at all.",
        "in 12 patients (n = 12), P < 0.05 (P<0.05) and in 1995 (1995)",
        "the liver (Fig. 2) and the kidney (see below)",
        "an unbalanced ( parenthesis and a 5-FU-like drug",
        "a long form too far: cells were treated and washed and then (CTW)",
        "the short form is a word of the long form: the ACE inhibitor (ACE)",
        "mid-word parentheses: N-(2-hydroxyethyl)amine",
    ],
)
def test_no_definition(text):
    assert pairs(text) == {}


def test_occurrences_are_whole_words_and_the_first_definition_wins():
    text = "5-fluorouracil (5-FU) then 5-FU, 5-FUx, x5-FU, (5-FU) and 5-FU-based; 5-fluorouracil (5-FU)"
    [definition] = find_definitions(text)
    assert (text[definition.long_start : definition.long_end], definition.long_start) == (
        "5-fluorouracil",
        0,
    )
    assert [text[s - 1 : e + 1] for s, e in definition.occurrences] == [
        "(5-FU)",
        " 5-FU,",
        "(5-FU)",
        " 5-FU-",
        "(5-FU)",
    ]


# --- resolution ----------------------------------------------------------------

TEXT = "Patients received 5-fluorouracil (5-FU) daily. 5-FU toxicity and 5-FU-treated mice"
# 5-fluorouracil at [18, 32); 5-FU at [34, 38), [47, 51) and [65, 69) (in "5-FU-treated")


def entity(text, start, end, label, score=0.875, column="text", via=False):
    return dict(
        start=start,
        end=end,
        label=label,
        text=text[start:end],
        score=score,
        column=column,
        section=None,
        via_abbreviation=via,
    )


def resolve(texts, entities, rows=None, segments=None):
    array = pa.array(entities, pa.list_(C.ENTITY_TYPE))
    rows = np.ones(len(texts), dtype=bool) if rows is None else np.asarray(rows)
    out, counts = resolve_abbreviations(array, pa.array(texts, pa.string()), rows, segments)
    assert out.type == array.type
    return out.to_pylist(), counts


def test_the_short_form_takes_the_long_forms_type():
    long_form = entity(TEXT, 18, 32, "Chemical", score=0.75)
    first = entity(TEXT, 34, 38, "Protein", score=0.5)
    [out], counts = resolve([TEXT], [[long_form, first]])
    assert out == [
        long_form,  # untouched, via_abbreviation false
        {**first, "label": "Chemical", "via_abbreviation": True},  # relabelled, score kept
        # Added where no entity was: the short form's text, the long form's score (no
        # segments given: column "").
        {**entity(TEXT, 47, 51, "Chemical", column="", via=True), "score": 0.75},
        {**entity(TEXT, 65, 69, "Chemical", column="", via=True), "score": 0.75},
    ]
    assert counts == dict(definitions=1, long_forms_typed=1, relabelled=1, added=2, removed=0)


def test_a_label_the_long_form_contradicts_is_removed():
    text = "The mean arterial pressure (MAP) fell; MAP and aspirin."
    others = [entity(text, 47, 54, "Chemical")]
    [out], counts = resolve(
        [text], [[entity(text, 28, 31, "Protein"), entity(text, 39, 42, "Gene"), *others]]
    )
    assert out == others
    assert counts["removed"] == 2


def test_an_entity_only_partly_on_a_short_form_is_left_as_it_is():
    partial = entity(TEXT, 65, 77, "Protein")  # "5-FU-treated"
    [out], counts = resolve([TEXT], [[entity(TEXT, 18, 32, "Chemical"), partial]])
    assert partial in out and [e["start"] for e in out] == [18, 34, 47, 65]
    assert counts["added"] == 2


def test_a_long_form_of_two_types_changes_nothing():
    text = "cisplatin and tumour necrosis factor (CTNF) then CTNF"
    entities = [
        entity(text, 0, 9, "Chemical"),
        entity(text, 14, 36, "Protein"),
        entity(text, 49, 53, "Gene"),
    ]
    [out], counts = resolve([text], [entities])
    assert out == entities and counts["long_forms_typed"] == 0


def test_other_rows_and_rows_left_out_are_untouched():
    plain = "Aspirin (no definition here) was given."
    rows = [
        [entity(plain, 0, 7, "Chemical")],
        [entity(TEXT, 18, 32, "Chemical")],
        [],
        [entity(TEXT, 34, 38, "Gene")],
    ]
    out, _ = resolve([plain, TEXT, None, TEXT], rows, rows=[True, True, True, False])
    assert out[0] == rows[0] and out[2] == [] and out[3] == rows[3]
    assert [e["text"] for e in out[1]] == ["5-fluorouracil", "5-FU", "5-FU", "5-FU"]


def test_offsets_of_a_sliced_batch_and_the_column_of_an_added_entity():
    title = "5-FU in mice."
    text = title + " " + TEXT
    shift = len(title) + 1
    entities = pa.array(
        [[], [entity(text, 18 + shift, 32 + shift, "Chemical", column="abstract")]],
        pa.list_(C.ENTITY_TYPE),
    )
    segments = (
        pa.array([[], ["title", "abstract"]], pa.list_(pa.string())).slice(1),
        pa.array([[], [0, shift]], pa.list_(pa.int32())).slice(1),
    )
    out, _ = resolve_abbreviations(entities.slice(1), pa.array([text]), np.array([True]), segments)
    [row] = out.to_pylist()
    assert [(e["start"], e["column"], e["via_abbreviation"]) for e in row] == [
        (0, "title", True),
        (18 + shift, "abstract", False),
        (34 + shift, "abstract", True),
        (47 + shift, "abstract", True),
        (65 + shift, "abstract", True),
    ]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in row)


def test_an_added_entity_takes_the_section_of_its_passage():
    text = "Intro on 5-fluorouracil (5-FU).\n\nMethods: 5-FU was given."
    passage = pa.struct([("section_type", pa.string()), ("start", pa.int64()), ("end", pa.int64())])
    passages = pa.array([[("INTRO", 0, 31), ("METHODS", 33, len(text))]], pa.list_(passage))
    entities = pa.array([[entity(text, 9, 23, "Chemical")]], pa.list_(C.ENTITY_TYPE))
    out, _ = resolve_abbreviations(entities, pa.array([text]), np.array([True]), None, passages)
    assert [(e["text"], e["section"]) for e in out.to_pylist()[0]] == [
        ("5-fluorouracil", None),  # kept as it came
        ("5-FU", "INTRO"),
        ("5-FU", "METHODS"),
    ]


def test_added_short_forms_do_not_overlap_each_other():
    text = "fluorouracil (FU) and 5-fluorouracil (5-FU): 5-FU"
    [out], _ = resolve(
        [text], [[entity(text, 0, 12, "Chemical"), entity(text, 22, 36, "Chemical")]]
    )
    spans = [(e["start"], e["end"]) for e in out]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


# --- the stage ------------------------------------------------------------------


def decode_batch(text, tags):
    """One document, one sub-token per space-separated word tagged ``tags``, as the decoder reads it."""
    starts, ends, position = [], [], 0
    for piece in text.split(" "):
        starts.append(position)
        ends.append(position + len(piece))
        position += len(piece) + 1
    ids = [0] + [LABEL2ID[t] for t in tags] + [0]
    i32 = pa.list_(pa.int32())
    return pa.table(
        {
            C.DOC_ID: ["d"],
            C.I_TEXT: [text],
            C.I_STATUS: ["ok"],
            C.I_SEGMENTS: pa.array([["text"]], pa.list_(pa.string())),
            C.I_SEGMENT_STARTS: pa.array([[0]], i32),
            C.I_TOKEN_START: pa.array([starts], i32),
            C.I_TOKEN_END: pa.array([ends], i32),
            C.I_WORD_IDS: pa.array([list(range(len(starts)))], i32),
            C.I_OWNER: pa.array([[0] * len(starts)], i32),
            C.I_WINDOW_STARTS: pa.array([[0]], i32),
            C.I_CONTENT_OFFSET: pa.array([1], pa.int32()),
            C.I_PRED_IDS: pa.array([[ids]], pa.list_(pa.list_(pa.int16()))),
            C.I_PRED_SCORES: pa.array([[[0.9] * len(ids)]], pa.list_(pa.list_(pa.float32()))),
        }
    )


def test_the_stage_decodes_then_resolves():
    text = "Give 5-fluorouracil (5-FU) ; 5-FU"
    batch = decode_batch(text, ["O", "B-Chemical", "B-Protein", "O", "O"])
    plain = SpanDecodeStage("argmax")(batch)
    resolved = DecodeWithAbbreviationsStage(decoding="argmax")(batch)
    assert resolved.drop_columns([C.ENTITIES]).equals(plain.drop_columns([C.ENTITIES]))
    [before] = plain.column(C.ENTITIES).to_pylist()
    [after] = resolved.column(C.ENTITIES).to_pylist()
    assert [(e["text"], e["label"], e["via_abbreviation"]) for e in before] == [
        ("5-fluorouracil", "Chemical", False),
        ("(5-FU)", "Protein", False),  # a word: the one sub-token holds the parentheses
    ]
    # "(5-FU)" only partly overlaps the short form: left; the free occurrence gains Chemical.
    assert [(e["text"], e["label"], e["via_abbreviation"], e["column"]) for e in after] == [
        ("5-fluorouracil", "Chemical", False, "text"),
        ("(5-FU)", "Protein", False, "text"),
        ("5-FU", "Chemical", True, "text"),
    ]


# --- the job's config key, through the real pipeline ---------------------------

DOCUMENTS = [
    (
        "a",
        "5-fluorouracil (5-FU) in colon cancer.",
        "Patients given 5-FU and 5-FU with leucovorin (LV) or LV alone.",
    ),
    (
        "b",
        "Mean arterial pressure (MAP) after aspirin.",
        "MAP fell; MAP rose with nitric oxide (NO) and NO donors.",
    ),
    ("c", "No abbreviations here.", "Only cisplatin and p53 in human cells."),
]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_config_key_switches_resolution_in_the_job(ray_local, tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq

    from annotation.config import AnnotateConfig
    from annotation.run import run_annotate

    source = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            dict(zip(("pmid", "title", "abstract"), zip(*DOCUMENTS, strict=True), strict=True))
        ),
        source,
    )

    def annotate(abbreviations: bool) -> pa.Table:
        config = AnnotateConfig(
            input=[str(source)],
            output=str(tmp_path / str(abbreviations)),
            model=str(tiny_model_dir),
            id_column="pmid",
            text_columns=["title", "abstract"],
            include_text=True,
            abbreviations=abbreviations,
            progress_bars=False,
            dashboard=False,
        )
        summary = run_annotate(config)
        return pa.concat_tables(pq.read_table(f) for f in summary.files).sort_by("doc_id")

    off, on = annotate(False), annotate(True)
    assert off.column("doc_id").to_pylist() == on.column("doc_id").to_pylist() == ["a", "b", "c"]
    off_entities = off.column(C.ENTITIES).to_pylist()
    assert not any(e["via_abbreviation"] for row in off_entities for e in row)
    # On: exactly what resolution makes of the entities decoded without it.
    titles = [len(title) + 1 for _, title, _ in DOCUMENTS]
    expected, counts = resolve_abbreviations(
        off.column(C.ENTITIES),
        off.column(C.TEXT),
        np.ones(3, dtype=bool),
        (pa.array([["title", "abstract"]] * 3), pa.array([[0, start] for start in titles])),
    )
    assert on.column(C.ENTITIES).to_pylist() == expected.to_pylist()
    assert (
        counts["relabelled"] + counts["added"] + counts["removed"] > 0
    )  # the switch did something
    assert any(e["via_abbreviation"] for row in expected.to_pylist() for e in row)
