"""The span decoder as it was before vectorisation, frozen: one document at a time in Python.

Kept verbatim (``ner/decode.py`` at commit ebf661a) as the oracle that
``tests/test_decode_equivalence.py`` checks the vectorised ``ner.decode`` against
on random batches. Do not optimise or fix it: its value is being the old
behaviour. (Its helpers are the old module's; see ``ner.decode`` for the rules.)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from ner import columns as C
from ner.labels import ID2LABEL, OUTSIDE, entity_type

# Fields the entity struct gained in #31: no passages here, no abbreviation step.
NEW_FIELDS = {"section": None, "via_abbreviation": False}


@dataclass(frozen=True)
class Span:
    """One entity: ``text == document[start:end]``."""

    start: int
    end: int
    label: str
    text: str
    score: float
    column: str = ""


@dataclass(frozen=True)
class Word:
    start: int
    end: int
    label: str
    score: float


def merge_windows(
    owner: Sequence[int],
    window_starts: Sequence[int],
    window_label_ids: Sequence[Sequence[int]],
    window_scores: Sequence[Sequence[float]],
    content_offset: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Per document token: the label id and probability its owner window predicted.

    ``window_label_ids[w][content_offset + k]`` is the prediction for document
    token ``window_starts[w] + k`` (``content_offset`` skips ``[CLS]``).
    """
    owner = np.asarray(owner, dtype=np.int64)
    labels = np.zeros(len(owner), dtype=np.int64)
    scores = np.zeros(len(owner), dtype=np.float32)
    for w, start in enumerate(window_starts):
        tokens = np.nonzero(owner == w)[0]
        if len(tokens) == 0:
            continue
        index = content_offset + tokens - start
        window_labels = np.asarray(window_label_ids[w])
        if index.min() < 0 or index.max() >= len(window_labels):
            raise ValueError(
                f"window {w} (start {start}) has {len(window_labels)} predictions, "
                f"but owns tokens {tokens.min()}..{tokens.max()}"
            )
        labels[tokens] = window_labels[index]
        scores[tokens] = np.asarray(window_scores[w], dtype=np.float32)[index]
    return labels, scores


def to_words(
    labels: Sequence[int],
    scores: Sequence[float],
    word_ids: Sequence[int],
    token_starts: Sequence[int],
    token_ends: Sequence[int],
    id2label: Mapping[int, str] = ID2LABEL,
) -> list[Word]:
    """Group sub-tokens into words: the first sub-token's label and score, the word's full extent."""
    words: list[Word] = []
    previous = None
    for t, word in enumerate(word_ids):
        if word == previous and word != -1 and words:
            last = words[-1]
            words[-1] = Word(last.start, max(last.end, int(token_ends[t])), last.label, last.score)
            continue
        words.append(
            Word(
                int(token_starts[t]), int(token_ends[t]), id2label[int(labels[t])], float(scores[t])
            )
        )
        previous = word
    return words


def repair_bio(tags: Sequence[str], breaks: Sequence[bool] = ()) -> tuple[list[str], int]:
    """Valid IOB2: an ``I-X`` not continuing an ``X`` mention becomes ``B-X``.

    ``breaks[i]`` True means word ``i`` starts a new text column, so no mention
    continues into it. Returns the tags and how many were changed.
    """
    fixed: list[str] = []
    changes = 0
    previous = OUTSIDE
    for i, tag in enumerate(tags):
        new_column = i < len(breaks) and breaks[i]
        if tag.startswith("I-") and (new_column or entity_type(previous) != tag[2:]):
            tag = "B-" + tag[2:]
            changes += 1
        fixed.append(tag)
        previous = tag
    return fixed, changes


def _extend_over_marks(text: str, end: int) -> int:
    while end < len(text) and unicodedata.category(text[end]) in ("Mn", "Mc", "Me"):
        end += 1
    return end


def segment_of(position: int, segment_starts: Sequence[int]) -> int:
    """Index of the text column a character position falls in."""
    index = 0
    for k, start in enumerate(segment_starts):
        if position >= start:
            index = k
    return index


def words_to_spans(
    text: str,
    words: Sequence[Word],
    segments: Sequence[str] = ("",),
    segment_starts: Sequence[int] = (0,),
) -> tuple[list[Span], int]:
    """Character spans of the mentions in ``words`` (BIO repaired first); and the repair count."""
    if not segments:
        segments, segment_starts = ("",), (0,)
    word_segment = [segment_of(w.start, segment_starts) for w in words]
    breaks = [i > 0 and word_segment[i] != word_segment[i - 1] for i in range(len(words))]
    tags, repairs = repair_bio([w.label for w in words], breaks)
    spans: list[Span] = []
    i = 0
    while i < len(words):
        if not tags[i].startswith("B-"):
            i += 1
            continue
        kind = tags[i][2:]
        j = i + 1
        while j < len(words) and tags[j] == "I-" + kind:
            j += 1
        start = words[i].start
        end = _extend_over_marks(text, words[j - 1].end)
        score = float(np.mean([w.score for w in words[i:j]]))
        spans.append(Span(start, end, kind, text[start:end], score, segments[word_segment[i]]))
        i = j
    return spans, repairs


def decode_document(
    text: str,
    token_starts: Sequence[int],
    token_ends: Sequence[int],
    word_ids: Sequence[int],
    owner: Sequence[int],
    window_starts: Sequence[int],
    window_label_ids: Sequence[Sequence[int]],
    window_scores: Sequence[Sequence[float]],
    content_offset: int = 1,
    segments: Sequence[str] = ("",),
    segment_starts: Sequence[int] = (0,),
    id2label: Mapping[int, str] = ID2LABEL,
) -> tuple[list[Span], int]:
    """All steps for one document: its spans and the number of BIO repairs."""
    if len(token_starts) == 0:
        return [], 0
    labels, scores = merge_windows(
        owner, window_starts, window_label_ids, window_scores, content_offset
    )
    words = to_words(labels, scores, word_ids, token_starts, token_ends, id2label)
    return words_to_spans(text, words, segments, segment_starts)


class SpanDecodeStage:
    """Predictions in, one row per document out: ``doc_id``, ``entities``, ``status``, pass-through.

    Internal columns needed by the writer (``_reason``, ``_source_file``,
    ``_text``, ``_n_tokens``, ``_bio_repairs``) are kept; windows and offsets are dropped.
    """

    NEEDS = (
        C.DOC_ID,
        C.I_TEXT,
        C.I_STATUS,
        C.I_SEGMENTS,
        C.I_SEGMENT_STARTS,
        C.I_TOKEN_START,
        C.I_TOKEN_END,
        C.I_WORD_IDS,
        C.I_OWNER,
        C.I_WINDOW_STARTS,
        C.I_CONTENT_OFFSET,
        C.I_PRED_IDS,
        C.I_PRED_SCORES,
    )
    KEEP = (C.I_REASON, C.I_SOURCE, C.I_TEXT, C.I_N_TOKENS, C.ROW_HASH)

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(table, self.NEEDS, "SpanDecodeStage")
        col = {name: table.column(name).to_pylist() for name in self.NEEDS}
        status = col[C.I_STATUS]
        reason = (
            table.column(C.I_REASON).to_pylist()
            if C.I_REASON in table.column_names
            else [""] * table.num_rows
        )
        entities: list[list[dict]] = []
        repairs: list[int] = []
        for i in range(table.num_rows):
            if status[i] != C.STATUS_OK:
                entities.append([])
                repairs.append(0)
                continue
            try:
                spans, fixed = decode_document(
                    col[C.I_TEXT][i],
                    col[C.I_TOKEN_START][i],
                    col[C.I_TOKEN_END][i],
                    col[C.I_WORD_IDS][i],
                    col[C.I_OWNER][i],
                    col[C.I_WINDOW_STARTS][i],
                    col[C.I_PRED_IDS][i],
                    col[C.I_PRED_SCORES][i],
                    col[C.I_CONTENT_OFFSET][i],
                    col[C.I_SEGMENTS][i],
                    col[C.I_SEGMENT_STARTS][i],
                )
            except Exception as err:  # recorded per document, never dropped
                status[i] = C.STATUS_REJECTED
                reason[i] = f"decode error: {type(err).__name__}: {err}"
                spans, fixed = [], 0
            entities.append([asdict(span) | NEW_FIELDS for span in spans])
            repairs.append(fixed)
        result = {
            C.DOC_ID: table.column(C.DOC_ID),
            C.ENTITIES: pa.array(entities, pa.list_(C.ENTITY_TYPE)),
            C.STATUS: pa.array(status, pa.string()),
        }
        for name in table.column_names:
            if not C.internal(name) and name not in result:
                result[name] = table.column(name)
        result[C.I_REASON] = pa.array(reason, pa.string())
        for name in self.KEEP:
            if name in table.column_names and name not in result:
                result[name] = table.column(name)
        result["_bio_repairs"] = pa.array(repairs, pa.int32())
        return pa.table(result)
