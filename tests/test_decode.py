import numpy as np
import pytest

from ner import columns as C
from ner.decode import (
    SpanDecodeStage,
    Word,
    decode_document,
    merge_windows,
    repair_bio,
    to_words,
    words_to_spans,
)
from ner.labels import LABEL2ID
from ner.windowing import TokenizeStage, assign_owners, window_starts

OUT = LABEL2ID["O"]
BC, IC = LABEL2ID["B-Chemical"], LABEL2ID["I-Chemical"]
BP, IP = LABEL2ID["B-Protein"], LABEL2ID["I-Protein"]
BT = LABEL2ID["B-Taxon"]


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
    # [CLS] + 4 content + [SEP]; window 0 says 10+k, window 1 says 20+k.
    w0 = [-1, 10, 11, 12, 13, -1]
    w1 = [-1, 20, 21, 22, 23, -1]
    labels, scores = merge_windows(owner, starts, [w0, w1], [[0.5] * 6, [0.9] * 6])
    assert labels.tolist() == [10, 11, 12, 21, 22, 23]
    assert scores.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.9, 0.9, 0.9])


def test_merge_rejects_windows_too_short_for_their_tokens():
    with pytest.raises(ValueError, match="window 0"):
        merge_windows([0, 0, 0], [0], [[-1, 1, -1]], [[1.0, 1.0, 1.0]])


def test_entity_across_a_window_boundary_is_one_span():
    text = "a b c d e f g h"
    starts, ends, word_ids = _words(text)
    wstarts = window_starts(8, 4, 2)  # [0, 2, 4, 6]
    owner = assign_owners(wstarts, 8, 4)
    # The mention is "c d e f". Each window sees it differently at its cut edges;
    # only the owners' views are right, and they must join into one span.
    truth = [OUT, OUT, BC, IC, IC, IC, OUT, OUT]
    windows = []
    for k, s in enumerate(wstarts):
        content = [truth[t] if owner[t] == k else BT for t in range(s, min(s + 4, 8))]
        windows.append([OUT] + content + [OUT])
    scores = [[0.8] * len(w) for w in windows]
    spans, repairs = decode_document(text, starts, ends, word_ids, owner, wstarts, windows, scores)
    assert [(s.start, s.end, s.label, s.text) for s in spans] == [(4, 11, "Chemical", "c d e f")]
    assert repairs == 0


def test_a_word_of_many_subtokens_takes_its_first_subtokens_label():
    text = "x dihydroergocryptine y"
    # "dihydroergocryptine" as 5 sub-tokens; only the first carries B-Chemical.
    token_starts = [0, 2, 5, 9, 13, 17, 22]
    token_ends = [1, 5, 9, 13, 17, 21, 23]
    word_ids = [0, 1, 1, 1, 1, 1, 2]
    labels = [OUT, BC, OUT, LABEL2ID["I-Cell"], BT, OUT, OUT]
    words = to_words(labels, [0.9] * 7, word_ids, token_starts, token_ends)
    assert [(w.start, w.end, w.label) for w in words] == [
        (0, 1, "O"),
        (2, 21, "B-Chemical"),
        (22, 23, "O"),
    ]
    spans, _ = words_to_spans(text, words)
    assert [(s.text, s.label) for s in spans] == [("dihydroergocryptine", "Chemical")]


def test_adjacent_entities_of_one_type_stay_apart():
    words = [
        Word(0, 3, "B-Protein", 0.9),
        Word(4, 7, "B-Protein", 0.7),
        Word(8, 12, "I-Protein", 0.5),
        Word(13, 16, "O", 0.9),
    ]
    spans, repairs = words_to_spans("p53 and Mdm2 foo", words)
    assert [(s.start, s.end, s.text) for s in spans] == [(0, 3, "p53"), (4, 12, "and Mdm2")]
    assert spans[1].score == pytest.approx(0.6)
    assert repairs == 0


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
    assert repair_bio(tags) == (expected, changes)


def test_a_mention_never_runs_from_one_text_column_into_the_next():
    text = "Title ends. Abstract starts"
    words = [
        Word(0, 5, "O", 0.9),
        Word(6, 11, "B-Gene", 0.9),
        Word(12, 20, "I-Gene", 0.9),
        Word(21, 27, "I-Gene", 0.9),
    ]
    spans, repairs = words_to_spans(text, words, ["title", "abstract"], [0, 12])
    assert [(s.text, s.column) for s in spans] == [
        ("ends.", "title"),
        ("Abstract starts", "abstract"),
    ]
    assert repairs == 1


UNICODE_DOCS = [
    "TNF-α and β-catenin bind Ｃａ²⁺ ions",
    "cafe\u0301 au lait and nai\u0308ve T cells",  # decomposed accents
    "the 🧬 of 👩\u200d🔬 and 🐭 mice",
    "Ω-3 fatty acids; ﬁbrin (Δ9-THC)",
]


@pytest.mark.parametrize("text", UNICODE_DOCS)
def test_spans_index_the_original_string_through_unicode(tiny_model_dir, text):
    stage = TokenizeStage(str(tiny_model_dir), ["text"], "id", max_length=12, stride=3)
    row = stage({"id": ["d"], "text": [text]}).to_pylist()[0]
    n_windows = len(row[C.I_INPUT_IDS])
    # Every word is a mention of its own (B-), so every word becomes a span.
    windows = [[BP] * len(w) for w in row[C.I_INPUT_IDS]]
    scores = [[0.5] * len(w) for w in row[C.I_INPUT_IDS]]
    spans, _ = decode_document(
        text,
        row[C.I_TOKEN_START],
        row[C.I_TOKEN_END],
        row[C.I_WORD_IDS],
        row[C.I_OWNER],
        row[C.I_WINDOW_STARTS],
        windows,
        scores,
        row[C.I_CONTENT_OFFSET],
    )
    assert n_windows >= 1 and spans
    for span in spans:
        assert text[span.start : span.end] == span.text
        assert span.text.strip() == span.text and span.text
    # Each non-space character outside a span is one normalisation removed.
    covered = set()
    for span in spans:
        covered.update(range(span.start, span.end))
    for i, ch in enumerate(text):
        if not ch.isspace() and i not in covered:
            assert ch in "\u200d"  # zero-width joiner: dropped by the tokenizer
    if "cafe\u0301" in text:
        assert any(s.text == "cafe\u0301" for s in spans)  # the accent is not cut off


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
    import pyarrow as pa

    batch = batch.append_column(C.I_PRED_IDS, pa.array(ids, pa.list_(pa.list_(pa.int16()))))
    batch = batch.append_column(C.I_PRED_SCORES, pa.array(scores, pa.list_(pa.list_(pa.float32()))))
    out = SpanDecodeStage()(batch)
    rows = out.to_pylist()
    assert out.num_rows == 5
    assert out.schema.field(C.ENTITIES).type == pa.list_(C.ENTITY_TYPE)
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
        SpanDecodeStage()({C.DOC_ID: ["a"], C.I_TEXT: ["x"]})


def test_no_tokens_no_spans():
    assert decode_document("", [], [], [], [], [0], [[]], [[]]) == ([], 0)
    assert np.array_equal(merge_windows([], [0], [[0, 0]], [[1, 1]])[0], np.array([]))
