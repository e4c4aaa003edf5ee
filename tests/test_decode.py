import numpy as np
import pyarrow as pa
import pytest

from ner import columns as C
from ner import spans as S
from ner.decode import SpanDecodeStage
from ner.labels import LABEL2ID, LABELS
from ner.windowing import TokenizeStage, assign_owners, window_starts

OUT, BC, IC = LABEL2ID["O"], LABEL2ID["B-Chemical"], LABEL2ID["I-Chemical"]
BP, IP, BT = LABEL2ID["B-Protein"], LABEL2ID["I-Protein"], LABEL2ID["B-Taxon"]

_I32 = pa.list_(pa.int32())


def decode_one(
    text,
    token_starts,
    token_ends,
    word_ids,
    owner,
    starts,
    window_ids,
    window_scores,
    content_offset=1,
    segments=(),
    segment_starts=(),
):
    """One document through the stage: its output row (entities, status, reason, repairs)."""
    batch = pa.table(
        {
            C.DOC_ID: ["d"],
            C.I_TEXT: [text],
            C.I_STATUS: ["ok"],
            C.I_SEGMENTS: pa.array([list(segments)], pa.list_(pa.string())),
            C.I_SEGMENT_STARTS: pa.array([list(segment_starts)], _I32),
            C.I_TOKEN_START: pa.array([list(token_starts)], _I32),
            C.I_TOKEN_END: pa.array([list(token_ends)], _I32),
            C.I_WORD_IDS: pa.array([list(word_ids)], _I32),
            C.I_OWNER: pa.array([[int(o) for o in owner]], _I32),
            C.I_WINDOW_STARTS: pa.array([list(starts)], _I32),
            C.I_CONTENT_OFFSET: pa.array([content_offset], pa.int32()),
            C.I_PRED_IDS: pa.array([window_ids], pa.list_(pa.list_(pa.int16()))),
            C.I_PRED_SCORES: pa.array([window_scores], pa.list_(pa.list_(pa.float32()))),
        }
    )
    return SpanDecodeStage("argmax")(batch).to_pylist()[0]


def decode_words(text, words, segments=(), segment_starts=()):
    """Words given as ``(start, end, tag, score)``, one sub-token each, in one window."""
    n = len(words)
    return decode_one(
        text,
        [w[0] for w in words],
        [w[1] for w in words],
        range(n),
        [0] * n,
        [0],
        [[OUT] + [LABEL2ID[w[2]] for w in words] + [OUT]],
        [[1.0] + [w[3] for w in words] + [1.0]],
        segments=segments,
        segment_starts=segment_starts,
    )


def _words(text):
    """One sub-token per space-separated word: starts, ends, word ids."""
    starts, ends, position = [], [], 0
    for piece in text.split(" "):
        starts.append(position)
        ends.append(position + len(piece))
        position += len(piece) + 1
    return starts, ends, list(range(len(starts)))


def test_merge_takes_each_token_from_its_owner_window():
    starts = [0, 2]  # content 4, stride 2, 6 tokens: windows [0,4) and [2,6)
    owner = assign_owners(starts, 6, 4)
    assert owner.tolist() == [0, 0, 0, 1, 1, 1]
    # [CLS] + 4 content + [SEP]; window 0 says Chemical, window 1 Protein, at every token.
    w0 = [OUT, BC, BC, BC, BC, OUT]
    w1 = [OUT, BP, BP, BP, BP, OUT]
    text = "a b c d e f"
    row = decode_one(text, *_words(text), owner, starts, [w0, w1], [[0.5] * 6, [0.9] * 6])
    assert [(e["text"], e["label"]) for e in row[C.ENTITIES]] == [
        ("a", "Chemical"),
        ("b", "Chemical"),
        ("c", "Chemical"),
        ("d", "Protein"),
        ("e", "Protein"),
        ("f", "Protein"),
    ]
    assert [e["score"] for e in row[C.ENTITIES]] == pytest.approx([0.5] * 3 + [0.9] * 3)


@pytest.mark.parametrize(
    "window_ids,window_scores,message",
    [
        ([[OUT, BC, OUT]], [[1.0] * 3], "window 0 (start 0) has 3 label predictions"),
        ([[OUT, BC, BC, BC]], [[1.0] * 3], "window 0 (start 0) has 3 scores"),
        ([], [], "window 0 (start 0) has 0 label predictions"),
        ([[OUT, 99, BC, BC]], [[1.0] * 4], "unknown label id 99"),
    ],
)
def test_predictions_that_do_not_fit_reject_the_document(window_ids, window_scores, message):
    row = decode_one("a b c", *_words("a b c"), [0, 0, 0], [0], window_ids, window_scores)
    assert row[C.STATUS] == C.STATUS_REJECTED and row[C.ENTITIES] == []
    assert row[C.I_REASON].startswith("decode error: ") and message in row[C.I_REASON]


def test_entity_across_a_window_boundary_is_one_span():
    text = "a b c d e f g h"
    starts, ends, word_ids = _words(text)
    wstarts = window_starts(8, 4, 2)  # [0, 2, 4, 6]
    owner = assign_owners(wstarts, 8, 4)
    # Mention "c d e f": each window sees its cut edges wrongly; the owners' views join.
    truth = [OUT, OUT, BC, IC, IC, IC, OUT, OUT]
    windows = []
    for k, s in enumerate(wstarts):
        content = [truth[t] if owner[t] == k else BT for t in range(s, min(s + 4, 8))]
        windows.append([OUT] + content + [OUT])
    scores = [[0.8] * len(w) for w in windows]
    row = decode_one(text, starts, ends, word_ids, owner, wstarts, windows, scores)
    spans = [(e["start"], e["end"], e["label"], e["text"]) for e in row[C.ENTITIES]]
    assert spans == [(4, 11, "Chemical", "c d e f")]
    assert row["_bio_repairs"] == 0


def test_a_word_of_many_subtokens_takes_its_first_subtokens_label():
    text = "x dihydroergocryptine y"
    # "dihydroergocryptine" as 5 sub-tokens; only the first carries B-Chemical.
    token_starts = [0, 2, 5, 9, 13, 17, 22]
    token_ends = [1, 5, 9, 13, 17, 21, 23]
    word_ids = [0, 1, 1, 1, 1, 1, 2]
    labels = [OUT, BC, OUT, LABEL2ID["I-Cell"], BT, OUT, OUT]
    scores = [0.1, 0.9, 0.2, 0.2, 0.2, 0.2, 0.1]
    row = decode_one(
        text, token_starts, token_ends, word_ids, [0] * 7, [0], [labels], [scores], content_offset=0
    )
    assert [(e["text"], e["label"], e["start"], e["end"]) for e in row[C.ENTITIES]] == [
        ("dihydroergocryptine", "Chemical", 2, 21)
    ]
    assert row[C.ENTITIES][0]["score"] == pytest.approx(0.9)


def test_a_word_ends_at_its_largest_subtoken_end():
    # Sub-token offsets need not grow (a tokenizer may map pieces back out of order).
    row = decode_one("abcdef", [0, 1], [5, 3], [0, 0], [0, 0], [0], [[BC, OUT]], [[0.9, 0.9]], 0)
    assert [(e["start"], e["end"]) for e in row[C.ENTITIES]] == [(0, 5)]


def test_tokens_outside_any_word_are_words_of_their_own():
    # word id -1 (no word): two such tokens in a row are two words, so I- after B- continues.
    text = "a b c"
    row = decode_one(
        text, *_words(text)[:2], [-1, -1, 0], [0] * 3, [0], [[BC, IC, IC]], [[1] * 3], 0
    )
    assert [e["text"] for e in row[C.ENTITIES]] == ["a b c"]
    row = decode_one(
        text, *_words(text)[:2], [-1, -1, 0], [0] * 3, [0], [[BC, BC, IC]], [[1] * 3], 0
    )
    assert [e["text"] for e in row[C.ENTITIES]] == ["a", "b c"]


def test_adjacent_entities_of_one_type_stay_apart():
    words = [
        (0, 3, "B-Protein", 0.9),
        (4, 7, "B-Protein", 0.7),
        (8, 12, "I-Protein", 0.5),
        (13, 16, "O", 0.9),
    ]
    row = decode_words("p53 and Mdm2 foo", words)
    spans = [(e["start"], e["end"], e["text"]) for e in row[C.ENTITIES]]
    assert spans == [(0, 3, "p53"), (4, 12, "and Mdm2")]
    assert row[C.ENTITIES][1]["score"] == pytest.approx(0.6)
    assert row["_bio_repairs"] == 0


def _fixed_tags(tags, breaks=None):
    labels = np.array([LABEL2ID[t] for t in tags])
    breaks = np.arange(len(tags)) == 0 if breaks is None else np.array(breaks)
    repaired = S.repair_bio(S.TYPE_OF[labels], S.IS_INSIDE[labels], breaks)
    fixed = [("B-" + t[2:]) if r else t for t, r in zip(tags, repaired, strict=True)]
    return fixed, int(repaired.sum())


@pytest.mark.parametrize(
    "tags,expected,changes",
    [
        (["I-Cell", "I-Cell"], ["B-Cell", "I-Cell"], 1),
        (["O", "I-Taxon"], ["O", "B-Taxon"], 1),
        (["B-Cell", "I-Taxon", "I-Taxon"], ["B-Cell", "B-Taxon", "I-Taxon"], 1),
        (["B-Gene", "I-Gene", "O"], ["B-Gene", "I-Gene", "O"], 0),
    ],
)
def test_orphan_inside_tags_open_a_mention(tags, expected, changes):
    assert _fixed_tags(tags) == (expected, changes)
    text = " ".join("w" * (k + 1) for k in range(len(tags)))
    words = [(s, e, tag, 0.5) for s, e, tag in zip(*_words(text)[:2], tags, strict=True)]
    row = decode_words(text, words)
    assert row["_bio_repairs"] == changes
    assert len(row[C.ENTITIES]) == sum(t.startswith("B-") for t in expected)


def test_repair_breaks_at_a_new_text_column():
    assert _fixed_tags(["B-Gene", "I-Gene", "I-Gene"], [True, False, True]) == (
        ["B-Gene", "I-Gene", "B-Gene"],
        1,
    )


def test_a_mention_never_runs_from_one_text_column_into_the_next():
    text = "Title ends. Abstract starts"
    words = [
        (0, 5, "O", 0.9),
        (6, 11, "B-Gene", 0.9),
        (12, 20, "I-Gene", 0.9),
        (21, 27, "I-Gene", 0.9),
    ]
    row = decode_words(text, words, ["title", "abstract"], [0, 12])
    assert [(e["text"], e["column"]) for e in row[C.ENTITIES]] == [
        ("ends.", "title"),
        ("Abstract starts", "abstract"),
    ]
    assert row["_bio_repairs"] == 1
    # Without segments the document is one unnamed column, and the mention runs on.
    row = decode_words(text, words)
    assert [(e["text"], e["column"]) for e in row[C.ENTITIES]] == [("ends. Abstract starts", "")]


def test_a_span_end_takes_the_combining_marks_after_it():
    text = "cafe\u0301\u0302 x"  # the tokenizer's offsets stop before the marks
    row = decode_words(text, [(0, 4, "B-Chemical", 0.5), (7, 8, "O", 0.5)])
    assert [(e["text"], e["end"]) for e in row[C.ENTITIES]] == [("cafe\u0301\u0302", 6)]


UNICODE_DOCS = [
    "TNF-α and β-catenin bind Ｃａ²⁺ ions",
    "cafe\u0301 au lait and nai\u0308ve T cells",  # decomposed accents
    "the 🧬 of 👩\u200d🔬 and 🐭 mice",
    "Ω-3 fatty acids; ﬁbrin (Δ9-THC)",
]


@pytest.mark.parametrize("text", UNICODE_DOCS)
def test_spans_index_the_original_string_through_unicode(tiny_model_dir, text):
    stage = TokenizeStage(str(tiny_model_dir), ["text"], "id", max_length=12, stride=3)
    batch = stage({"id": ["d"], "text": [text]})
    windows = batch.column(C.I_INPUT_IDS).to_pylist()[0]
    assert len(windows) >= 1
    # Every word is a mention of its own (B-), so every word becomes a span.
    ids = [[[BP] * len(w) for w in windows]]
    scores = [[[0.5] * len(w) for w in windows]]
    batch = batch.append_column(C.I_PRED_IDS, pa.array(ids, pa.list_(pa.list_(pa.int16()))))
    batch = batch.append_column(C.I_PRED_SCORES, pa.array(scores, pa.list_(pa.list_(pa.float32()))))
    spans = SpanDecodeStage("argmax")(batch).to_pylist()[0][C.ENTITIES]
    assert spans
    for span in spans:
        assert text[span["start"] : span["end"]] == span["text"]
        assert span["text"].strip() == span["text"] and span["text"]
    # Each non-space character outside a span is one normalisation removed.
    covered = set()
    for span in spans:
        covered.update(range(span["start"], span["end"]))
    for i, ch in enumerate(text):
        if not ch.isspace() and i not in covered:
            assert ch in "\u200d"  # zero-width joiner: dropped by the tokenizer
    if "cafe\u0301" in text:
        assert any(s["text"] == "cafe\u0301" for s in spans)  # the accent is not cut off


def test_decode_stage_on_five_rows(tiny_model_dir):
    tokenize = TokenizeStage(
        str(tiny_model_dir), ["text"], "id", max_length=10, stride=2, passthrough=["keep"]
    )
    texts = ["aspirin and ibuprofen", None, "   ", "p53 binds Mdm2 " * 5, "x"]
    batch = tokenize({"id": ["a", "b", "c", "d", None], "text": texts, "keep": [1, 2, 3, 4, 5]})
    # Synthetic predictions: every first content token of a window says B-Chemical.
    ids = [
        [[OUT] + [BC] + [IC] * (len(w) - 3) + [OUT] for w in doc]
        for doc in batch.column(C.I_INPUT_IDS).to_pylist()
    ]
    scores = [[[0.7] * len(w) for w in doc] for doc in batch.column(C.I_INPUT_IDS).to_pylist()]
    batch = batch.append_column(C.I_PRED_IDS, pa.array(ids, pa.list_(pa.list_(pa.int16()))))
    batch = batch.append_column(C.I_PRED_SCORES, pa.array(scores, pa.list_(pa.list_(pa.float32()))))
    out = SpanDecodeStage("argmax")(batch)
    rows = out.to_pylist()
    assert out.num_rows == 5
    assert out.schema.field(C.ENTITIES).type == pa.list_(C.ENTITY_TYPE)
    assert out.schema.field("_bio_repairs").type == pa.int32()
    assert out.column_names[:4] == [C.DOC_ID, C.ENTITIES, C.STATUS, "keep"]
    assert [r[C.STATUS] for r in rows] == ["ok", "empty_text", "empty_text", "ok", "rejected"]
    assert [r["keep"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1][C.ENTITIES] == [] and rows[4][C.ENTITIES] == []
    assert rows[0][C.ENTITIES][0]["text"] == "aspirin and ibuprofen"
    for row, text in zip(rows, texts, strict=True):
        for entity in row[C.ENTITIES]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
            assert 0 < entity["score"] <= 1
    assert not any(
        name.startswith("_input") or name.startswith("_pred") for name in out.column_names
    )


def test_decode_stage_names_missing_columns():
    with pytest.raises(C.MissingColumnError, match="_pred_ids"):
        SpanDecodeStage("argmax")({C.DOC_ID: ["a"], C.I_TEXT: ["x"]})


def test_no_tokens_no_spans():
    row = decode_one("", [], [], [], [], [0], [[]], [[]])
    assert (row[C.STATUS], row[C.ENTITIES], row["_bio_repairs"]) == ("ok", [], 0)
    # An ok document without tokens needs no predictions at all.
    assert decode_one("", [], [], [], [], [], [], [])[C.STATUS] == "ok"


def test_label_lookups_follow_the_label_scheme():
    for label_id, label in enumerate(LABELS):
        kind = S.TYPE_NAMES[S.TYPE_OF[label_id]].as_py() if S.TYPE_OF[label_id] >= 0 else None
        assert kind == (None if label == "O" else label[2:])
        assert S.IS_INSIDE[label_id] == label.startswith("I-")


def _table(**cells):
    """A batch of one ok document "a b c" (one window, B-Chemical I-Chemical O), cells overridden."""
    row = {
        C.DOC_ID: "d",
        C.I_TEXT: "a b c",
        C.I_STATUS: "ok",
        C.I_SEGMENTS: ["title", "abstract"],
        C.I_SEGMENT_STARTS: [0, 2],
        C.I_TOKEN_START: [0, 2, 4],
        C.I_TOKEN_END: [1, 3, 5],
        C.I_WORD_IDS: [0, 1, 2],
        C.I_OWNER: [0, 0, 0],
        C.I_WINDOW_STARTS: [0],
        C.I_CONTENT_OFFSET: 1,
        C.I_PRED_IDS: [[OUT, BC, IC, OUT, OUT]],
        C.I_PRED_SCORES: [[1.0, 0.9, 0.8, 0.7, 1.0]],
    }
    row.update(cells)
    types = {
        C.I_SEGMENTS: pa.list_(pa.string()),
        C.I_PRED_IDS: pa.list_(pa.list_(pa.int16())),
        C.I_PRED_SCORES: pa.list_(pa.list_(pa.float32())),
        C.I_CONTENT_OFFSET: pa.int32(),
    }
    return pa.table({k: pa.array([v], types.get(k, _I32 if isinstance(v, list) else None)) for k, v in row.items()})  # fmt: skip


def test_the_baseline_document():
    row = SpanDecodeStage("argmax")(_table()).to_pylist()[0]
    assert [(e["text"], e["column"]) for e in row[C.ENTITIES]] == [
        ("a", "title"),
        ("b", "abstract"),
    ]
    assert row["_bio_repairs"] == 1 and row[C.STATUS] == "ok"


@pytest.mark.parametrize(
    "cells,message",
    [
        ({C.I_PRED_IDS: None}, "no _pred_ids"),
        ({C.I_PRED_SCORES: [[1.0, 0.9, None, 0.7, 1.0]]}, "null in _pred_scores"),
        ({C.I_PRED_IDS: [[OUT, BC, IC, OUT, OUT], [OUT]]}, None),  # a window no token owns: fine
        ({C.I_OWNER: [0, 0, 1]}, "owned by window 1, but there are 1"),
        ({C.I_OWNER: [0, 0]}, "2 _owner for 3 tokens"),
        ({C.I_WORD_IDS: [0, None, 1]}, "null in _word_ids"),
        ({C.I_TOKEN_END: [1, 3, 6]}, "outside the text of 5 characters"),
        ({C.I_SEGMENT_STARTS: [2, 0]}, "segment starts are not in order"),
        ({C.I_SEGMENT_STARTS: [0]}, "1 segment starts for 2 segments"),
        ({C.I_CONTENT_OFFSET: 3}, "window 0 (start 0) has 5 label predictions"),
        ({C.I_TEXT: None}, "no _text"),
    ],
)
def test_cells_that_do_not_fit_reject_only_their_document(cells, message):
    good = _table()
    batch = pa.concat_tables([good, _table(**cells).cast(good.schema), good])
    rows = SpanDecodeStage("argmax")(batch).to_pylist()
    assert [r[C.STATUS] for r in rows] == ["ok", "ok" if message is None else "rejected", "ok"]
    assert rows[0][C.ENTITIES] == rows[2][C.ENTITIES] and len(rows[0][C.ENTITIES]) == 2
    if message is not None:
        assert rows[1][C.ENTITIES] == [] and rows[1]["_bio_repairs"] == 0
        assert rows[1][C.I_REASON].startswith("decode error: ") and message in rows[1][C.I_REASON]


def test_documents_not_ok_are_not_looked_at():
    broken = {C.I_SEGMENT_STARTS: [2, 0], C.I_PRED_IDS: [], C.I_OWNER: [5], C.I_TEXT: None}
    rows = SpanDecodeStage("argmax")(_table(**broken, **{C.I_STATUS: "rejected"})).to_pylist()
    assert (rows[0][C.STATUS], rows[0][C.ENTITIES], rows[0][C.I_REASON]) == ("rejected", [], "")


def test_a_batch_of_python_lists_decodes_as_a_typed_one():
    typed = _table()
    loose = {name: typed.column(name).to_pylist() for name in typed.column_names}
    assert (
        SpanDecodeStage("argmax")(loose).to_pylist() == SpanDecodeStage("argmax")(typed).to_pylist()
    )
