"""Span decoding: window predictions -> document tokens -> words -> valid BIO -> character spans.

1. Merge windows: each document token takes the prediction of its owner window,
   the one where it sits furthest from an edge that cut context
   (:func:`ner.windowing.assign_owners`).
2. Words: a word takes the label and probability of its first sub-token (as the
   model was trained); a span always covers whole words, up to the largest end of
   their sub-tokens.
3. Valid BIO. An ``I-X`` that does not continue an ``X`` mention (after ``O``,
   after another type, at the start, or at the first word of another text column)
   is invalid. ``decoding="viterbi"`` (the default) re-decodes each text column
   holding one as its most probable valid label sequence (:mod:`ner.viterbi`,
   from every label's log-probability, column ``_pred_logp``); a column whose
   argmax is valid keeps it, as that is already the optimum. ``"argmax"`` reads
   such an ``I-X`` as ``B-X``. ``_bio_repairs`` counts the words changed either way.
4. Spans: ``[start, end)`` into the original Python string (code points), the
   entity text ``text[start:end]``, its type, the mean first-sub-token
   probability of its words, and the text column it starts in. Tokenizer offsets
   already skip what normalisation removes (accents, control characters); a span
   end is extended over combining marks that follow it, so ``cafe`` + U+0301 is
   not cut in half. A mention scoring below its type's ``min_score`` is dropped.
   With the input's passages (column ``_passages``), a passage start breaks a
   mention as a column start does, and each entity names its passage's section.

A batch is decoded as a whole: every list column is read as its flat Arrow values
and row offsets, and the steps are numpy passes over all sub-tokens of the batch
(:mod:`ner.spans`), because a loop per document and token in Python made this
stage the job's bottleneck on GPU nodes. A document with status ``ok`` whose
columns do not fit together (predictions missing or too short for the tokens its
windows own, an unknown label id, offsets outside its text, ...) becomes
``rejected`` with a ``decode error: ...`` reason; the rest of the batch is decoded.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ner import columns as C
from ner import flat_columns as F
from ner import spans as S
from ner import viterbi as V
from ner.labels import type_thresholds
from ner.rejections import Rejections
from ner.viterbi import DECODINGS


def decode_batch(
    table: pa.Table,
    ok: np.ndarray,
    decoding: str = "viterbi",
    min_scores: np.ndarray | None = None,
) -> tuple[pa.Array, np.ndarray, dict[int, str]]:
    """Per row of ``table``: its entities and BIO repairs; and the rows rejected, with why.

    Only rows where ``ok`` is set are decoded; the others get no entities.
    ``min_scores`` holds one threshold per entity type (ENTITY_TYPES order).
    """
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    batch = _Batch(table, viterbi=decoding == "viterbi")
    rejected = Rejections(table.num_rows)
    todo = batch.check_rows(ok, rejected)
    segments = batch.segments(todo, rejected)
    tokens = batch.tokens(todo & ~rejected.bad, rejected)
    words = batch.words(tokens, rejected)
    entities = batch.entities(words, segments, min_scores)
    return entities, words["repairs"], rejected.reasons


class _Batch:
    """The columns decoding reads, as flat numpy arrays and row offsets, and the decoding steps."""

    def __init__(self, table: pa.Table, viterbi: bool = False):
        self.n = table.num_rows
        text = F.combined(table.column(C.I_TEXT))
        self.texts = S.Texts(text)
        self.text_null = F.null_mask(text)
        self.starts, self.ends, self.word_ids, self.owner = (
            F.ListColumn(table.column(name), name)
            for name in (C.I_TOKEN_START, C.I_TOKEN_END, C.I_WORD_IDS, C.I_OWNER)
        )
        self.windows = F.ListColumn(table.column(C.I_WINDOW_STARTS), C.I_WINDOW_STARTS)
        self.ids = F.ListColumn(table.column(C.I_PRED_IDS), C.I_PRED_IDS)
        self.scores = F.ListColumn(table.column(C.I_PRED_SCORES), C.I_PRED_SCORES)
        self.logp = F.ListColumn(table.column(C.I_PRED_LOGP), C.I_PRED_LOGP) if viterbi else None
        self.segment_names = F.ListColumn(table.column(C.I_SEGMENTS), C.I_SEGMENTS)
        self.segment_starts = F.ListColumn(table.column(C.I_SEGMENT_STARTS), C.I_SEGMENT_STARTS)
        offset = F.combined(table.column(C.I_CONTENT_OFFSET))
        self.content_offset, self.content_null = F.numbers(offset)
        passages = table.column(C.I_PASSAGES) if C.I_PASSAGES in table.column_names else None
        self.passages = S.Passages(None if passages is None else F.combined(passages))

    def check_rows(self, ok: np.ndarray, rejected: Rejections) -> np.ndarray:
        """The rows to decode, once those whose cells are missing or of unequal lengths are rejected."""
        # An ok document without tokens has no entities and needs nothing else.
        todo = ok & ((self.starts.lengths > 0) | self.starts.null)
        token_lists = (self.starts, self.ends, self.word_ids, self.owner)
        nulls = [(C.I_TEXT, self.text_null), (C.I_CONTENT_OFFSET, self.content_null)]
        predictions = (self.ids, self.scores) + (() if self.logp is None else (self.logp,))
        nulls += [(x.name, x.null) for x in (*token_lists, self.windows, *predictions)]
        for name, null in nulls:
            if null is not None:
                rejected.rows(todo & null, lambda row, name=name: f"no {name}")
        for lists in token_lists[1:]:
            rejected.rows(
                todo & (lists.lengths != self.starts.lengths),
                lambda row, x=lists: (
                    f"{x.lengths[row]} {x.name} for {self.starts.lengths[row]} tokens"
                ),
            )
        if self.logp is not None:
            # As the classifier writes them: one index into the leaves serves both.
            aligned = _same_shape(self.ids, self.logp)
            rejected.rows(
                todo & (not aligned),
                lambda row: f"{C.I_PRED_LOGP} is not shaped like {C.I_PRED_IDS}",
            )
        names, starts = self.segment_names, self.segment_starts
        rejected.rows(
            todo & (names.lengths > 0) & (starts.null | (starts.lengths != names.lengths)),
            lambda row: f"{starts.lengths[row]} segment starts for {names.lengths[row]} segments",
        )
        return todo & ~rejected.bad

    def segments(self, todo: np.ndarray, rejected: Rejections) -> dict[str, np.ndarray]:
        """The text columns of the rows decoded: each one's start, row, and name index.

        A row without segment names is one unnamed column (no segments here).
        """
        named = todo & (self.segment_names.lengths > 0)
        counts = np.where(named, self.segment_starts.lengths, 0)
        row = np.repeat(np.arange(self.n), counts)
        start, _ = self.segment_starts.flat(named)
        unsorted = np.zeros(len(row), dtype=bool)
        unsorted[1:] = (start[1:] < start[:-1]) & (row[1:] == row[:-1])
        if unsorted.any():  # reject those rows, and leave them out: the lookup needs order
            rejected.items(unsorted, row, lambda k: "segment starts are not in order")
            return self.segments(todo & ~rejected.bad, rejected)
        first = np.cumsum(counts) - counts
        name = self.segment_names.offsets[row] + (np.arange(len(row)) - first[row])
        return {"start": start, "first": first, "count": counts, "name": name}

    def tokens(self, todo: np.ndarray, rejected: Rejections) -> dict[str, np.ndarray]:
        """One entry per sub-token of the rows decoded, with where its prediction is.

        Rejects the rows where a token is outside its text, owned by no window, or
        owned by a window without a prediction at its position.
        """
        lengths = np.where(todo, self.starts.lengths, 0)
        row = np.repeat(np.arange(self.n), lengths)
        local = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        values = {}
        for key, lists in (
            ("start", self.starts),
            ("end", self.ends),
            ("word", self.word_ids),
            ("owner", self.owner),
        ):
            values[key], null = lists.flat(todo)
            if null is not None:
                rejected.items(null, row, lambda t, x=lists: f"null in {x.name} (token {local[t]})")
        start, end, own = values["start"], values["end"], values["owner"]

        size = self.texts.lengths[row]
        outside = (start < 0) | (start > size) | (end < 0) | (end > size)
        rejected.items(
            outside,
            row,
            lambda t: (
                f"token {local[t]} at [{start[t]}, {end[t]}) is outside the text of "
                f"{size[t]} characters"
            ),
        )
        n_windows = self.windows.lengths[row]
        no_window = (own < 0) | (own >= n_windows)
        rejected.items(
            no_window,
            row,
            lambda t: f"token {local[t]} is owned by window {own[t]}, but there are {n_windows[t]}",
        )
        own = np.where(no_window, 0, own)
        window_start, window_null = self.windows.numbers
        at = self.windows.offsets[row] + own
        if window_null is not None:
            null = F.take(window_null, at, no_window, False)
            rejected.items(null, row, lambda t: f"null in {C.I_WINDOW_STARTS}")
        window_start = F.take(window_start, at, no_window, 0)
        position = self.content_offset[row] + local - window_start
        where = (row, local, own, position, window_start)
        values["label_at"] = _predictions(self.ids, rejected, *where)
        if _same_shape(self.ids, self.scores):  # as the classifier writes them: one index serves
            values["score_at"] = values["label_at"]
            _no_nulls(self.scores, values["score_at"], row, rejected)
        else:
            values["score_at"] = _predictions(self.scores, rejected, *where)
        values.update(row=row, local=local)
        return _rows_kept(values, values["row"], rejected)

    def words(self, tokens: dict[str, np.ndarray], rejected: Rejections) -> dict[str, np.ndarray]:
        """One entry per word: the first sub-token's label and score, the largest end of all."""
        first = np.flatnonzero(S.word_starts(tokens["word"], tokens["local"] == 0))
        end = tokens["end"]
        labels = self.ids.child.numbers[0][tokens["label_at"][first]].astype(np.int64)
        unknown = (labels < 0) | (labels >= S.N_LABELS)
        rejected.items(unknown, tokens["row"][first], lambda w: f"unknown label id {labels[w]}")
        words = {
            "at": tokens["label_at"][first],
            "row": tokens["row"][first],
            "start": tokens["start"][first],
            "end": np.maximum.reduceat(end, first) if len(first) else end[:0],
            "label": labels,
            "score": self.scores.child.numbers[0][tokens["score_at"][first]].astype(np.float32),
        }
        return _rows_kept(words, words["row"], rejected)

    def entities(
        self,
        words: dict[str, np.ndarray],
        segments: dict[str, np.ndarray],
        min_scores: np.ndarray | None = None,
    ) -> pa.Array:
        """The mentions of ``words`` as a ``list<entity>`` per row; sets ``words["repairs"]``."""
        row = words["row"]
        segment = S.segment_of_words(
            row, words["start"], segments["start"], segments["first"], segments["count"]
        )
        breaks = np.ones(len(row), dtype=bool)
        breaks[1:] = (row[1:] != row[:-1]) | (segment[1:] != segment[:-1])
        passage = self.passages.of(row, words["start"])  # -1 for all without passages
        breaks[1:] |= passage[1:] != passage[:-1]  # a passage breaks mentions as a column does
        changed = None  # words relabelled to make BIO valid
        if self.logp is not None:
            words["label"], words["score"], changed = V.constrain(
                words["label"], words["score"], breaks, self.logp_rows(words["at"])
            )
        types, inside = S.TYPE_OF[words["label"]], S.IS_INSIDE[words["label"]]
        repaired = S.repair_bio(types, inside, breaks)  # none left after Viterbi
        changed = repaired if changed is None else changed
        words["repairs"] = np.bincount(row[changed], minlength=self.n).astype(np.int32)

        members, first_member, first_word, last_word = S.mention_words(types, inside, repaired)
        score = S.mean_scores(words["score"], members, first_member)
        if min_scores is not None:
            kept = score >= min_scores[types[first_word]]
            first_word, last_word, score = first_word[kept], last_word[kept], score[kept]
        span_row = row[first_word]
        span_start = words["start"][first_word]
        span_end = self.texts.extend_over_marks(span_row, words["end"][last_word])
        # Column names: the segment's, or "" (appended last) for a row without segments.
        names = self.segment_names.values.cast(pa.string())
        names = pa.concat_arrays([names, pa.array([""])])
        span_segment = segment[first_word]
        column = F.take(segments["name"], span_segment, span_segment < 0, len(names) - 1)
        struct = pa.StructArray.from_arrays(
            [
                pa.array(span_start.astype(np.int32)),
                pa.array(span_end.astype(np.int32)),
                S.TYPE_NAMES.take(pa.array(types[first_word])),
                self.texts.slices(span_row, span_start, span_end),
                pa.array(score.astype(np.float32)),
                names.take(pa.array(column)),
                self.passages.sections(passage[first_word]),
                pa.array(np.zeros(len(first_word), dtype=bool)),  # set by #31 point 3's step
            ],
            fields=list(C.ENTITY_TYPE),
        )
        offsets = np.zeros(self.n + 1, dtype=np.int32)
        np.cumsum(np.bincount(span_row, minlength=self.n), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), struct, type=pa.list_(C.ENTITY_TYPE))

    def logp_rows(self, at: np.ndarray):
        """``rows(k)``: the log-probabilities of words ``k``, read only when asked for."""

        def rows(k: np.ndarray) -> np.ndarray:
            leaves = F.vectors(self.logp.child.values, V.N_LABELS, C.I_PRED_LOGP)
            return leaves[at[k]]

        return rows


def _predictions(lists, rejected, row, local, own, position, window_start) -> np.ndarray:
    """Each token's index into the leaf values of a ``list<list<>>`` prediction column.

    Rejects the rows where a token's owner window has no prediction at its position.
    """
    what = "label predictions" if lists.name == C.I_PRED_IDS else "scores"
    inner = lists.child
    missing = own >= lists.lengths[row]
    window = lists.offsets[row] + own
    size = F.take(inner.lengths, window, missing, 0)
    short = (
        missing | F.take(inner.null, window, missing, True) | (position < 0) | (position >= size)
    )
    rejected.items(
        short,
        row,
        lambda t: (
            f"window {own[t]} (start {window_start[t]}) has {size[t]} {what}, "
            f"but owns token {local[t]} (at {position[t]})"
        ),
    )
    index = np.where(short, 0, F.take(inner.offsets, window, missing, 0) + position)
    _no_nulls(lists, np.where(short, -1, index), row, rejected)
    return index


def _same_shape(a: F.ListColumn, b: F.ListColumn) -> bool:
    """True when both ``list<list<>>`` columns hold lists of the same sizes at the same offsets."""
    a_inner, b_inner = a.child, b.child
    return (
        np.array_equal(a.offsets, b.offsets)
        and np.array_equal(a_inner.offsets, b_inner.offsets)
        and np.array_equal(a_inner.null, b_inner.null)
    )


def _no_nulls(
    lists: F.ListColumn, index: np.ndarray, row: np.ndarray, rejected: Rejections
) -> None:
    """Rejects the rows where a token's prediction (``index`` into the leaves, -1: none) is null."""
    null = lists.child.numbers[1]
    if null is not None:
        used = index >= 0
        rejected.items(F.take(null, index, ~used, False), row, lambda t: f"null in {lists.name}")


def _rows_kept(arrays: dict[str, np.ndarray], row: np.ndarray, rejected: Rejections):
    """``arrays`` (one entry per item of ``row``) without the items of rejected rows."""
    keep = ~rejected.bad[row]
    return arrays if keep.all() else {key: value[keep] for key, value in arrays.items()}


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

    def __init__(self, decoding: str = "viterbi", min_score: dict[str, float] | None = None):
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        self.decoding = decoding
        self.min_scores = type_thresholds(min_score or {})
        self.needs = (*self.NEEDS, C.I_PRED_LOGP) if decoding == "viterbi" else self.NEEDS

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(table, self.needs, "SpanDecodeStage")
        n = table.num_rows
        status = F.combined(table.column(C.I_STATUS)).cast(pa.string())
        ok = pc.fill_null(pc.equal(status, C.STATUS_OK), False).to_numpy(zero_copy_only=False)
        entities, repairs, rejected = decode_batch(
            table, np.asarray(ok, dtype=bool), self.decoding, self.min_scores
        )
        if C.I_REASON in table.column_names:
            reason = F.combined(table.column(C.I_REASON)).cast(pa.string())
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
