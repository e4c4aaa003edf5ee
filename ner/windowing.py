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
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa

from ner import columns as C
from ner import layout as L
from ner.layout import assign_owners as assign_owners  # re-exported: per-document forms
from ner.layout import window_starts as window_starts
from ner.packing import arrow_offsets

WORD_UNITS = ("tokenizer", "whitespace")

_I32_LIST = pa.list_(pa.int32())


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
    internal columns listed in :mod:`ner.columns` (``_passages``: the column named by
    ``passages_column``, whose offsets index the text, so one text column). Documents whose text is null,
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
        passages_column: str = "",
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
        self.passages_column = passages_column
        self.prefix, self.suffix = self._special_tokens()
        self.max_length = max_length
        self.content_length = max_length - len(self.prefix) - len(self.suffix)
        self.stride = stride
        L.check_window_settings(self.content_length, stride)  # fail at start-up, not per batch
        self.backend, self.is_continuation = _backend(self.tokenizer)

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
        if self.passages_column:
            C.require_columns(table, [self.passages_column], "TokenizeStage (passages)")
        n = table.num_rows
        ids = table.column(self.id_column).to_pylist()
        texts, segments, segment_starts, status, reason = self._join(table, ids)
        todo = [i for i in range(n) if status[i] == C.STATUS_OK]
        encoded = self._encode([texts[i] for i in todo])
        lengths = np.zeros(n, dtype=np.int64)
        lengths[todo] = encoded.lengths
        for k, err in encoded.errors.items():
            status[todo[k]], reason[todo[k]] = C.STATUS_REJECTED, f"tokenizer error: {err}"
        for i in todo:
            if status[i] == C.STATUS_OK and lengths[i] == 0:
                status[i] = C.STATUS_NO_TOKENS
        if self.word_unit == "whitespace":
            codes, text_offsets = L.code_points(texts)
            words = L.whitespace_word_ids(
                codes, text_offsets, encoded.starts, encoded.ends, lengths
            )
        else:
            words = encoded.words
        window_ids, window_offsets, document_windows, starts = L.window_token_ids(
            encoded.ids, lengths, self.content_length, self.stride, self.prefix, self.suffix
        )
        tokens = arrow_offsets(L.offsets_of(lengths))
        per_token = {
            C.I_TOKEN_START: encoded.starts,
            C.I_TOKEN_END: encoded.ends,
            C.I_WORD_IDS: words,
            C.I_OWNER: L.owners(lengths, self.content_length, self.stride),
        }
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
        result[C.I_CONTENT_OFFSET] = pa.array(np.full(n, len(self.prefix), dtype=np.int32))
        windows = pa.ListArray.from_arrays(arrow_offsets(window_offsets), pa.array(window_ids))
        result[C.I_INPUT_IDS] = pa.ListArray.from_arrays(arrow_offsets(document_windows), windows)
        result[C.I_WINDOW_STARTS] = pa.ListArray.from_arrays(
            arrow_offsets(document_windows), pa.array(starts)
        )
        for name, values in per_token.items():
            result[name] = pa.ListArray.from_arrays(tokens, pa.array(values, pa.int32()))
        result[C.I_N_TOKENS] = pa.array(lengths.astype(np.int32))
        if self.passages_column:  # the Arrow column as it is, for decoding's sections
            result[C.I_PASSAGES] = table.column(self.passages_column)
        return pa.table(result)

    def _join(self, table: pa.Table, ids: list) -> tuple[list, list, list, list, list]:
        """Per document: joined text, its columns and their starts, status and reason."""
        n = table.num_rows
        texts: list[str] = [""] * n
        segments: list[list[str]] = [[] for _ in range(n)]
        segment_starts: list[list[int]] = [[] for _ in range(n)]
        status = [C.STATUS_OK] * n
        reason = [""] * n
        columns = [_text_cells(table.column(name)) for name in self.text_columns]
        for i in range(n):
            try:
                values = [
                    _as_str(column[i], name)
                    for column, name in zip(columns, self.text_columns, strict=True)
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
        return texts, segments, segment_starts, status, reason

    def _encode(self, texts: list[str]) -> Encoded:
        """The texts' sub-tokens as flat arrays; a text the tokenizer fails on gets none."""
        try:
            return self._flatten(self.backend.encode_batch(texts, add_special_tokens=False), {})
        except Exception:  # one bad text must not take the batch down: retry one by one
            encodings, errors = [], {}
            for k, text in enumerate(texts):
                try:
                    encodings.append(self.backend.encode(text, add_special_tokens=False))
                except Exception as err:  # the reason is recorded per document
                    encodings.append(None)
                    errors[k] = err
            return self._flatten(encodings, errors)

    def _flatten(self, encodings: list, errors: dict) -> Encoded:
        # The Rust tokenizer hands each document's ids and offsets over as Python lists;
        # they are copied straight into numpy, and everything after works on the arrays.
        present = [e for e in encodings if e is not None]
        lengths = np.fromiter(
            (0 if e is None else len(e.ids) for e in encodings), np.int64, count=len(encodings)
        )
        total = int(lengths.sum())
        ids = np.fromiter(chain.from_iterable(e.ids for e in present), np.int32, count=total)
        offsets = np.fromiter(
            chain.from_iterable(chain.from_iterable(e.offsets for e in present)),
            np.int32,
            count=2 * total,
        ).reshape(total, 2)
        if self.is_continuation is not None:
            words = L.continuation_word_ids(self.is_continuation[ids], lengths)
        else:
            words = np.fromiter(
                (-1 if w is None else w for e in present for w in e.word_ids),
                np.int32,
                count=total,
            )
        return Encoded(ids, offsets[:, 0].copy(), offsets[:, 1].copy(), words, lengths, errors)


def _backend(tokenizer) -> tuple:
    """The Rust tokenizer without padding or truncation; WordPiece's continuation pieces.

    A private copy, so that settings made by other calls cannot leak in. For
    WordPiece (BERT, BioBERT) a word is its first piece and the ``##`` pieces after
    it, so word ids follow from the ids alone, without a Python object per token.
    """
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    prefix = getattr(backend.model, "continuing_subword_prefix", None)
    if type(backend.model).__name__ != "WordPiece" or not prefix:
        return backend, None
    is_continuation = np.zeros(backend.get_vocab_size(with_added_tokens=True), dtype=bool)
    for token, index in backend.get_vocab(with_added_tokens=True).items():
        is_continuation[index] = token.startswith(prefix)
    return backend, is_continuation


@dataclass
class Encoded:
    """A batch's sub-tokens end to end, and how many each document has."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    words: np.ndarray
    lengths: np.ndarray
    errors: dict


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
