"""Span decoding: window predictions -> document tokens -> words -> valid BIO -> character spans.

1. Merge windows: each document token takes the prediction of its owner window,
   the one where it sits furthest from an edge that cut context
   (:func:`ner.windowing.assign_owners`).
2. Words: a word takes the label and probability of its first sub-token (as the
   model was trained); a span always covers whole words, up to the largest end of
   their sub-tokens.
3. BIO repair: an ``I-X`` that does not continue an ``X`` mention (after ``O``,
   after another type, at the start, or at the first word of another text column)
   is read as ``B-X`` and counted in ``_bio_repairs``. This keeps the model's type
   and boundary where a transition-constrained decode would have to pick one of
   them to drop.
4. Spans: ``[start, end)`` into the original Python string (code points), the
   entity text ``text[start:end]``, its type, the mean first-sub-token
   probability of its words, and the text column it starts in. Tokenizer offsets
   already skip what normalisation removes (accents, control characters); a span
   end is extended over combining marks that follow it, so ``cafe`` + U+0301 is
   not cut in half.

A batch is decoded as a whole: every list column is read as its flat Arrow values
and row offsets, and the steps are numpy passes over all sub-tokens of the batch
(:mod:`ner.spans`), because a loop per document and token in Python made this
stage the job's bottleneck on GPU nodes. A document with status ``ok`` whose
columns do not fit together (predictions missing or too short for the tokens its
windows own, an unknown label id, offsets outside its text, ...) becomes
``rejected`` with a ``decode error: ...`` reason; the rest of the batch is decoded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ner import columns as C
from ner import spans as S


class _Lists:
    """A list column of the batch: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, column: pa.Array | pa.ChunkedArray, name: str):
        array = _combined(column)
        if pa.types.is_null(array.type):  # every cell null (a column built from Nones)
            array = pa.nulls(len(array), pa.list_(pa.null()))
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            raise TypeError(f"SpanDecodeStage: column {name} is {array.type}, not a list")
        self.name = name
        self.array = array
        self.offsets = array.offsets.to_numpy().astype(np.int64)
        self.lengths = np.diff(self.offsets)
        self.null = _nulls(array)

    def child(self) -> _Lists:
        """The lists inside (``list<list<...>>``): one row per inner list."""
        return _Lists(self.array.values, self.name)

    def numbers(self) -> tuple[np.ndarray, np.ndarray | None]:
        """All values (nulls as 0) and their null mask, None when there are no nulls."""
        return _numbers(self.array.values)

    def flat(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The values of ``rows`` (a row mask) concatenated, and their null mask."""
        values, null = self.numbers()
        begin, end = self.offsets[0], self.offsets[-1]
        values = values[begin:end]
        null = None if null is None else null[begin:end]
        if np.any(self.lengths[~rows]):
            keep = np.repeat(rows, self.lengths)
            values = values[keep]
            null = None if null is None else null[keep]
        return values, null


class _Rejections:
    """Rows that must become ``rejected``, each with the first problem found."""

    def __init__(self, n: int):
        self.bad = np.zeros(n, dtype=bool)
        self.reasons: dict[int, str] = {}

    def rows(self, mask: np.ndarray, describe: Callable[[int], str]) -> None:
        for row in np.flatnonzero(mask & ~self.bad):
            self.reasons[int(row)] = "decode error: " + describe(int(row))
        self.bad |= mask

    def items(self, mask: np.ndarray, row_of: np.ndarray, describe: Callable[[int], str]) -> None:
        """Reject the rows of the flagged items (tokens or words), named by their first one."""
        flagged = np.flatnonzero(mask)
        if len(flagged) == 0:
            return
        rows, first = np.unique(row_of[flagged], return_index=True)
        for row, item in zip(rows.tolist(), flagged[first].tolist(), strict=True):
            if not self.bad[row]:
                self.reasons[row] = "decode error: " + describe(item)
        self.bad[rows] = True


def decode_batch(table: pa.Table, ok: np.ndarray) -> tuple[pa.Array, np.ndarray, dict[int, str]]:
    """Per row of ``table``: its entities and BIO repairs; and the rows rejected, with why.

    Only rows where ``ok`` is set are decoded; the others get no entities.
    """
    n = table.num_rows
    rejected = _Rejections(n)
    texts = S.Texts(_combined(table.column(C.I_TEXT)))
    starts, ends, word_ids, owner = (
        _Lists(table.column(name), name)
        for name in (C.I_TOKEN_START, C.I_TOKEN_END, C.I_WORD_IDS, C.I_OWNER)
    )
    windows = _Lists(table.column(C.I_WINDOW_STARTS), C.I_WINDOW_STARTS)
    predictions = [_Lists(table.column(name), name) for name in (C.I_PRED_IDS, C.I_PRED_SCORES)]
    segments = _Lists(table.column(C.I_SEGMENTS), C.I_SEGMENTS)
    segment_starts = _Lists(table.column(C.I_SEGMENT_STARTS), C.I_SEGMENT_STARTS)
    content_offset, content_null = _numbers(_combined(table.column(C.I_CONTENT_OFFSET)))

    # Rows: an ok document without tokens has no entities and needs nothing else.
    todo = ok & ((starts.lengths > 0) | starts.null)
    nulls = [
        (C.I_TEXT, _nulls(_combined(table.column(C.I_TEXT)))),
        (C.I_CONTENT_OFFSET, content_null),
    ]
    nulls += [(x.name, x.null) for x in (starts, ends, word_ids, owner, windows, *predictions)]
    for name, null in nulls:
        if null is not None:
            rejected.rows(todo & null, lambda row, name=name: f"no {name}")
    for lists in (ends, word_ids, owner):
        rejected.rows(
            todo & (lists.lengths != starts.lengths),
            lambda row, x=lists: f"{x.lengths[row]} {x.name} for {starts.lengths[row]} tokens",
        )
    with_segments = segments.lengths > 0  # without any, the document is one unnamed column
    rejected.rows(
        todo & with_segments & (segment_starts.null | (segment_starts.lengths != segments.lengths)),
        lambda row: (
            f"{segment_starts.lengths[row]} segment starts for {segments.lengths[row]} segments"
        ),
    )
    segment_row = np.repeat(np.arange(n), np.where(with_segments, segment_starts.lengths, 0))
    segment_start, _ = segment_starts.flat(with_segments)
    unsorted = np.zeros(len(segment_row), dtype=bool)
    unsorted[1:] = (segment_start[1:] < segment_start[:-1]) & (segment_row[1:] == segment_row[:-1])
    rejected.items(unsorted, segment_row, lambda k: "segment starts are not in order")
    todo &= ~rejected.bad
    # Only the rows decoded: the lookup needs every row's starts sorted.
    segment_row = np.repeat(np.arange(n), np.where(todo & with_segments, segment_starts.lengths, 0))
    segment_start, _ = segment_starts.flat(todo & with_segments)

    # Tokens of the rows to decode, one entry each, in row order.
    lengths = np.where(todo, starts.lengths, 0)
    row = np.repeat(np.arange(n), lengths)
    local = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tok_start, tok_end, word, own = (x.flat(todo) for x in (starts, ends, word_ids, owner))
    for (_, null), lists in zip(
        (tok_start, tok_end, word, own), (starts, ends, word_ids, owner), strict=True
    ):
        if null is not None:
            rejected.items(null, row, lambda t, x=lists: f"null in {x.name} (token {local[t]})")
    tok_start, tok_end, word, own = (values for values, _ in (tok_start, tok_end, word, own))

    text_length = texts.lengths[row]
    outside = (tok_start < 0) | (tok_start > text_length) | (tok_end < 0) | (tok_end > text_length)
    rejected.items(
        outside,
        row,
        lambda t: (
            f"token {local[t]} at [{tok_start[t]}, {tok_end[t]}) is outside the text "
            f"of {text_length[t]} characters"
        ),
    )
    n_windows = windows.lengths[row]
    no_window = (own < 0) | (own >= n_windows)
    rejected.items(
        no_window,
        row,
        lambda t: f"token {local[t]} is owned by window {own[t]}, but there are {n_windows[t]}",
    )
    own = np.where(no_window, 0, own)
    window_start, window_null = windows.numbers()
    at = windows.offsets[row] + own
    if window_null is not None:
        null = _take(window_null, at, no_window, False)
        rejected.items(null, row, lambda t: "null in _window_starts")
    window_start = _take(window_start, at, no_window, 0)
    position = content_offset[row] + local - window_start
    leaves = []
    for lists in predictions:
        leaves.append(_predictions(lists, rejected, row, local, own, position, window_start))

    keep = ~rejected.bad[row]
    if not keep.all():
        row, local, tok_start, tok_end, word = (
            x[keep] for x in (row, local, tok_start, tok_end, word)
        )
        leaves = [(values, index[keep]) for values, index in leaves]

    # Words: the first sub-token's label and score, the largest end of their sub-tokens.
    first = np.flatnonzero(S.word_starts(word, local == 0))
    word_row = row[first]
    word_start = tok_start[first]
    word_end = np.maximum.reduceat(tok_end, first) if len(first) else tok_end[:0]
    (label_leaf, label_at), (score_leaf, score_at) = leaves
    labels = label_leaf[label_at[first]].astype(np.int64)
    scores = score_leaf[score_at[first]].astype(np.float32)
    unknown = (labels < 0) | (labels >= S.N_LABELS)
    rejected.items(unknown, word_row, lambda w: f"unknown label id {labels[w]}")
    if unknown.any():
        keep = ~rejected.bad[word_row]
        word_row, word_start, word_end, labels, scores = (
            x[keep] for x in (word_row, word_start, word_end, labels, scores)
        )

    segment = S.segment_of_words(word_row, word_start, segment_row, segment_start)
    breaks = np.ones(len(word_row), dtype=bool)
    breaks[1:] = (word_row[1:] != word_row[:-1]) | (segment[1:] != segment[:-1])
    types, inside = S.TYPE_OF[labels], S.IS_INSIDE[labels]
    repaired = S.repair_bio(types, inside, breaks)
    repairs = np.bincount(word_row[repaired], minlength=n).astype(np.int32)

    first_word, last_word, first_member = S.mention_words(types, inside, repaired)
    members = np.flatnonzero(types >= 0)
    span_row = word_row[first_word]
    span_start = word_start[first_word]
    span_end = texts.extend_over_marks(span_row, word_end[last_word])
    # Column names: the segment's name, or "" (appended last) for a document without any.
    names = pa.concat_arrays([segments.array.values.cast(pa.string()), pa.array([""])])
    column = _column_index(segment[first_word], span_row, segment_row, segments, len(names) - 1)
    struct = pa.StructArray.from_arrays(
        [
            pa.array(span_start.astype(np.int32)),
            pa.array(span_end.astype(np.int32)),
            S.TYPE_NAMES.take(pa.array(types[first_word])),
            texts.slices(span_row, span_start, span_end),
            pa.array(S.mean_scores(scores, members, first_member).astype(np.float32)),
            names.take(pa.array(column)),
        ],
        fields=list(C.ENTITY_TYPE),
    )
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(span_row, minlength=n), out=offsets[1:])
    entities = pa.ListArray.from_arrays(pa.array(offsets), struct, type=pa.list_(C.ENTITY_TYPE))
    return entities, repairs, rejected.reasons


def _predictions(lists, rejected, row, local, own, position, window_start):
    """Leaf values of a ``list<list<>>`` prediction column and each token's index into them.

    Rejects the rows where a token's owner window has no prediction at its position.
    """
    what = "label predictions" if lists.name == C.I_PRED_IDS else "scores"
    inner = lists.child()
    leaf, leaf_null = inner.numbers()
    missing = own >= lists.lengths[row]
    window = lists.offsets[row] + own
    size = _take(inner.lengths, window, missing, 0)
    short = missing | _take(inner.null, window, missing, True) | (position < 0) | (position >= size)
    rejected.items(
        short,
        row,
        lambda t: (
            f"window {own[t]} (start {window_start[t]}) has {size[t]} {what}, "
            f"but owns token {local[t]} (at {position[t]})"
        ),
    )
    index = np.where(short, 0, _take(inner.offsets, window, missing, 0) + position)
    if leaf_null is not None:
        null = _take(leaf_null, index, short, False)
        rejected.items(null, row, lambda t: f"null in {lists.name}")
    return leaf, index


def _column_index(segment, span_row, segment_row, segments, default):
    """Index into the segment names (then ``default``) of the column each span starts in."""
    if len(segment) == 0:
        return np.zeros(0, dtype=np.int64)
    row_first = np.searchsorted(segment_row, span_row, side="left")
    found = segment >= 0
    return np.where(found, segments.offsets[span_row] + (segment - row_first), default)


def _take(values: np.ndarray, index: np.ndarray, invalid: np.ndarray, fill) -> np.ndarray:
    """``values[index]``, and ``fill`` where ``invalid`` (there ``index`` may be out of bounds)."""
    if not invalid.any():
        return values[index]
    out = np.full(len(index), fill, dtype=values.dtype)
    out[~invalid] = values[index[~invalid]]
    return out


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _nulls(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.zeros(len(array), dtype=bool)
    return array.is_null().to_numpy(zero_copy_only=False)


def _numbers(array: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """Numeric values as numpy (zero-copy where Arrow allows), nulls as 0, and the null mask."""
    if pa.types.is_null(array.type):
        return np.zeros(len(array), dtype=np.int64), np.ones(len(array), dtype=bool)
    if array.null_count == 0:
        return array.to_numpy(zero_copy_only=False), None
    null = _nulls(array)
    return pc.fill_null(array, 0).to_numpy(zero_copy_only=False), null


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
        n = table.num_rows
        status = _combined(table.column(C.I_STATUS)).cast(pa.string())
        ok = pc.fill_null(pc.equal(status, C.STATUS_OK), False).to_numpy(zero_copy_only=False)
        entities, repairs, rejected = decode_batch(table, np.asarray(ok, dtype=bool))
        if C.I_REASON in table.column_names:
            reason = _combined(table.column(C.I_REASON)).cast(pa.string())
        else:
            reason = pa.array([""] * n, pa.string())
        if rejected:
            rows = sorted(rejected)
            mask = np.zeros(n, dtype=bool)
            mask[rows] = True
            status = pc.replace_with_mask(
                status, pa.array(mask), pa.array([C.STATUS_REJECTED] * len(rows), pa.string())
            )
            reason = pc.replace_with_mask(
                reason, pa.array(mask), pa.array([rejected[r] for r in rows], pa.string())
            )
        result = {C.DOC_ID: table.column(C.DOC_ID), C.ENTITIES: entities, C.STATUS: status}
        for name in table.column_names:
            if not C.internal(name) and name not in result:
                result[name] = table.column(name)
        result[C.I_REASON] = reason
        for name in self.KEEP:
            if name in table.column_names and name not in result:
                result[name] = table.column(name)
        result["_bio_repairs"] = pa.array(repairs, pa.int32())
        return pa.table(result)
