"""Tokenisation stage: documents -> sub-tokens with character offsets -> overlapping windows.

A document is its text columns joined with a separator (``title + " " + abstract``,
as PubTator counts offsets). Every character offset in the pipeline, and in the
output, is into that joined Python string; each entity also names the column it
falls in.

The whole document is tokenised once without truncation (a fast tokenizer gives
each sub-token's ``(start, end)`` into the ``str``, through lower-casing and accent
stripping), then cut into windows of ``max_length`` tokens (special tokens
included) that overlap by ``stride`` tokens. This is what
``return_overflowing_tokens=True, stride=...`` does, but with every window's
position in the document known, so no token is ever truncated away and merging
windows needs no bookkeeping from the tokenizer. Each document token is *owned*
by the window where it sits furthest from a window edge that cut context away
(the document's own start and end are not such edges); decoding takes each
token's prediction from its owner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ner import columns as C

WORD_UNITS = ("tokenizer", "whitespace")

_I32_LIST = pa.list_(pa.int32())
_I32_LIST2 = pa.list_(pa.list_(pa.int32()))


def window_starts(n_tokens: int, content_length: int, stride: int) -> list[int]:
    """First token of each window over ``n_tokens`` tokens (``[0]`` for a short document).

    Windows hold ``content_length`` tokens and consecutive windows share ``stride``
    tokens; the last one may be shorter. Every token is in at least one window.
    """
    if content_length <= 0:
        raise ValueError(f"content_length must be positive, got {content_length}")
    if not 0 <= stride < content_length:
        raise ValueError(f"stride must be in [0, {content_length}), got {stride}")
    step = content_length - stride
    starts = [0]
    while starts[-1] + content_length < n_tokens:
        starts.append(starts[-1] + step)
    return starts


def assign_owners(starts: Sequence[int], n_tokens: int, content_length: int) -> np.ndarray:
    """For each token, the window where it is furthest from an edge that cut context.

    A token's distance in window ``[s, e)`` is ``min(t - s, e - 1 - t)``, where a
    side that is the document's own start or end counts as infinitely far.
    Ties go to the earlier window.
    """
    owner = np.zeros(n_tokens, dtype=np.int32)
    best = np.full(n_tokens, -1.0)
    positions = np.arange(n_tokens)
    for w, start in enumerate(starts):
        end = min(start + content_length, n_tokens)
        inside = positions[start:end]
        left = inside - start if start > 0 else np.full(len(inside), np.inf)
        right = end - 1 - inside if end < n_tokens else np.full(len(inside), np.inf)
        distance = np.minimum(left, right)
        better = distance > best[start:end]
        owner[start:end][better] = w
        best[start:end][better] = distance[better]
    return owner


def whitespace_word_ids(text: str, starts: Sequence[int], ends: Sequence[int]) -> list[int]:
    """Word ids where a word is a whitespace-delimited chunk (``IL-2`` is one word).

    Use it when the model was trained on whitespace-separated tokens, as CRAFT
    sentences joined by spaces are; the tokenizer's own words split punctuation.
    """
    word_ids: list[int] = []
    word = -1
    previous_end = None
    for start, end in zip(starts, ends, strict=True):
        if previous_end is None or any(ch.isspace() for ch in text[previous_end:start]):
            word += 1
        word_ids.append(word)
        previous_end = end
    return word_ids


def join_text(
    values: Sequence[str | None], names: Sequence[str], separator: str
) -> tuple[str, list[str], list[int]]:
    """Join the non-empty text columns of a document; which columns, and where each starts."""
    parts, present, starts = [], [], []
    position = 0
    for value, name in zip(values, names, strict=True):
        if value is None or value == "":
            continue
        if parts:
            parts.append(separator)
            position += len(separator)
        present.append(name)
        starts.append(position)
        parts.append(value)
        position += len(value)
    return "".join(parts), present, starts


class TokenizeStage:
    """Documents in (id and text columns), one row per document out, with its windows.

    Output columns: ``doc_id`` (as a string), the pass-through columns, and the
    internal columns listed in :mod:`ner.columns`. Documents whose text is null,
    empty or whitespace get status ``empty_text`` and no windows; documents that
    cannot be processed get status ``rejected`` with a reason; neither is dropped.
    """

    def __init__(
        self,
        model: str,
        text_columns: Sequence[str],
        id_column: str = "doc_id",
        max_length: int = 512,
        stride: int = 128,
        separator: str = " ",
        passthrough: Sequence[str] = (),
        max_chars: int = 1_000_000,
        word_unit: str = "tokenizer",
    ):
        from ner.model import load_tokenizer

        if word_unit not in WORD_UNITS:
            raise ValueError(f"word_unit must be one of {WORD_UNITS}, got {word_unit!r}")
        if isinstance(text_columns, str):
            text_columns = [text_columns]
        self.tokenizer = load_tokenizer(model)
        self.text_columns = list(text_columns)
        self.id_column = id_column
        self.separator = separator
        self.passthrough = list(passthrough)
        self.max_chars = max_chars
        self.word_unit = word_unit
        self.prefix, self.suffix = self._special_tokens()
        self.max_length = max_length
        self.content_length = max_length - len(self.prefix) - len(self.suffix)
        self.stride = stride
        window_starts(1, self.content_length, stride)  # validates the two settings now

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids a single sequence gets before and after its content ([CLS] / [SEP])."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        at = full.index(bare[0])
        return list(full[:at]), list(full[at + len(bare) :])

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(table, [self.id_column, *self.text_columns], "TokenizeStage")
        C.require_columns(table, self.passthrough, "TokenizeStage (pass-through)")
        n = table.num_rows
        ids = table.column(self.id_column).to_pylist()
        texts: list[str] = [""] * n
        segments: list[list[str]] = [[] for _ in range(n)]
        segment_starts: list[list[int]] = [[] for _ in range(n)]
        status = [C.STATUS_OK] * n
        reason = [""] * n
        columns = [_text_cells(table.column(name)) for name in self.text_columns]
        for i in range(n):
            values = [column[i] for column in columns]
            try:
                values = [
                    _as_str(v, name) for v, name in zip(values, self.text_columns, strict=True)
                ]
            except ValueError as err:
                status[i], reason[i] = C.STATUS_REJECTED, str(err)
                continue
            texts[i], segments[i], segment_starts[i] = join_text(
                values, self.text_columns, self.separator
            )
            if ids[i] is None:
                status[i], reason[i] = C.STATUS_REJECTED, f"null {self.id_column}"
            elif len(texts[i]) > self.max_chars:
                status[i] = C.STATUS_REJECTED
                reason[i] = (
                    f"text of {len(texts[i]):,} characters exceeds max_chars={self.max_chars:,}"
                )
            elif not texts[i].strip():
                status[i] = C.STATUS_EMPTY

        todo = [i for i in range(n) if status[i] == C.STATUS_OK]
        encodings = self._encode([texts[i] for i in todo])
        out: dict[str, list] = {
            name: []
            for name in (
                C.I_INPUT_IDS,
                C.I_WINDOW_STARTS,
                C.I_TOKEN_START,
                C.I_TOKEN_END,
                C.I_WORD_IDS,
                C.I_OWNER,
            )
        }
        by_row = dict(zip(todo, encodings, strict=True))
        for i in range(n):
            encoding = by_row.get(i)
            if isinstance(encoding, Exception):
                status[i], reason[i] = C.STATUS_REJECTED, f"tokenizer error: {encoding}"
                encoding = None
            if encoding is not None and not encoding[0]:
                status[i] = C.STATUS_NO_TOKENS
                encoding = None
            if encoding is None:
                for values in out.values():
                    values.append([])
                continue
            token_ids, offsets, word_ids = encoding
            if self.word_unit == "whitespace":
                word_ids = whitespace_word_ids(
                    texts[i], [s for s, _ in offsets], [e for _, e in offsets]
                )
            starts = window_starts(len(token_ids), self.content_length, self.stride)
            out[C.I_INPUT_IDS].append(
                [self.prefix + token_ids[s : s + self.content_length] + self.suffix for s in starts]
            )
            out[C.I_WINDOW_STARTS].append(starts)
            out[C.I_TOKEN_START].append([s for s, _ in offsets])
            out[C.I_TOKEN_END].append([e for _, e in offsets])
            out[C.I_WORD_IDS].append(word_ids)
            out[C.I_OWNER].append(
                assign_owners(starts, len(token_ids), self.content_length).tolist()
            )

        id_strings = pa.array([None if v is None else str(v) for v in ids], pa.string())
        result = {C.DOC_ID: id_strings}
        for name in self.passthrough:
            result[name] = table.column(name)
        result[C.I_SOURCE] = (
            table.column(C.PATH) if C.PATH in table.column_names else pa.nulls(n, pa.string())
        )
        result[C.I_TEXT] = pa.array(texts, pa.string())
        result[C.I_SEGMENTS] = pa.array(segments, pa.list_(pa.string()))
        result[C.I_SEGMENT_STARTS] = pa.array(segment_starts, _I32_LIST)
        result[C.I_STATUS] = pa.array(status, pa.string())
        result[C.I_REASON] = pa.array(reason, pa.string())
        result[C.I_CONTENT_OFFSET] = pa.array([len(self.prefix)] * n, pa.int32())
        result[C.I_INPUT_IDS] = pa.array(out[C.I_INPUT_IDS], _I32_LIST2)
        for name in (C.I_WINDOW_STARTS, C.I_TOKEN_START, C.I_TOKEN_END, C.I_WORD_IDS, C.I_OWNER):
            result[name] = pa.array(out[name], _I32_LIST)
        result[C.I_N_TOKENS] = pa.array([len(v) for v in out[C.I_TOKEN_START]], pa.int32())
        return pa.table(result)

    def _encode(self, texts: list[str]) -> list:
        """(ids, offsets, word ids) per text, or the exception that text raised."""
        if not texts:
            return []
        kwargs = dict(
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # long documents are expected: they are windowed below
        )
        try:
            encoded = self.tokenizer(texts, **kwargs)
            return [
                (
                    list(encoded["input_ids"][k]),
                    [tuple(o) for o in encoded["offset_mapping"][k]],
                    [-1 if w is None else w for w in encoded.word_ids(k)],
                )
                for k in range(len(texts))
            ]
        except Exception:  # one bad text must not take the batch down: retry one by one
            return [self._encode_one(text, kwargs) for text in texts]

    def _encode_one(self, text: str, kwargs: dict):
        try:
            return _encode_single(self.tokenizer, text, kwargs)
        except Exception as err:  # the reason is recorded per document
            return err


def _encode_single(tokenizer, text: str, kwargs: dict):
    encoded = tokenizer(text, **kwargs)
    return (
        list(encoded["input_ids"]),
        [tuple(o) for o in encoded["offset_mapping"]],
        [-1 if w is None else w for w in encoded.word_ids()],
    )


def _text_cells(column: pa.ChunkedArray) -> list:
    """A text column's cells as Python objects, without decoding strings in bulk.

    Parquet does not guarantee valid UTF-8 in string columns (a writer that skips
    validation can store lone surrogates or truncated sequences), and one such cell
    makes ``to_pylist`` raise for the whole batch. Taking the bytes and decoding per
    cell in :func:`_as_str` rejects just that document, with the reason.
    """
    if pa.types.is_string(column.type):
        return column.cast(pa.binary()).to_pylist()
    if pa.types.is_large_string(column.type):
        return column.cast(pa.large_binary()).to_pylist()
    return column.to_pylist()


def _as_str(value, column: str) -> str | None:
    """A text cell as ``str``; bytes must be UTF-8 (else the document is rejected)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"column {column} is not valid UTF-8 ({err.reason})") from err
    raise ValueError(f"column {column} holds {type(value).__name__}, not text")
