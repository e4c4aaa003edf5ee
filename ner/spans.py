"""Span decoding kernels over a whole batch: flat numpy arrays in, spans out.

Every function works on the concatenation of all documents of a batch (one entry
per sub-token or per word, with the row it belongs to), so the cost per token is a
few numpy passes and never a Python object. The rules are the ones in
:mod:`ner.decode`; :mod:`ner.decode` turns Arrow columns into these arrays.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ner.labels import ENTITY_TYPES, LABELS, OUTSIDE

# Lookups by canonical label id (ner.labels fixes the ids, so these are constants).
N_LABELS = len(LABELS)
TYPE_OF = np.array(
    [-1 if label == OUTSIDE else ENTITY_TYPES.index(label[2:]) for label in LABELS], np.int64
)
IS_INSIDE = np.array([label.startswith("I-") for label in LABELS])
TYPE_NAMES = pa.array(ENTITY_TYPES, pa.string())

_MARKS = ("Mn", "Mc", "Me")


def word_starts(word_ids: np.ndarray, row_start: np.ndarray) -> np.ndarray:
    """Mask of the sub-tokens that open a word.

    A word is a run of equal word ids within a row; every ``-1`` (a token the
    tokenizer puts in no word) is a word of its own.
    """
    first = np.ones(len(word_ids), dtype=bool)
    np.not_equal(word_ids[1:], word_ids[:-1], out=first[1:])
    first |= word_ids == -1
    first |= row_start
    return first


def repair_bio(types: np.ndarray, inside: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """Mask of the words whose ``I-X`` must be read as ``B-X``.

    ``types`` is each word's entity type (-1 for ``O``), ``inside`` whether its tag
    is ``I-``, ``breaks`` whether no mention may continue into it (first word of a
    document or of a text column). Repairing keeps a word's type, so whether ``I-X``
    continues depends only on the previous word's raw type: no sequential scan.
    """
    continues = np.zeros(len(types), dtype=bool)
    np.equal(types[1:], types[:-1], out=continues[1:])
    return inside & (breaks | ~continues)


def mention_words(
    types: np.ndarray, inside: np.ndarray, repaired: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The words in mentions, where each mention starts among them, its first and last word.

    After repair every ``I-`` word continues the mention of the word before it, so
    the non-``O`` words split into mentions exactly where a ``B-`` (or repaired) word
    opens one.
    """
    members = np.flatnonzero(types >= 0)
    opens = ~inside[members] | repaired[members]
    first_member = np.flatnonzero(opens)
    last_member = np.empty_like(first_member)
    last_member[:-1] = first_member[1:] - 1
    last_member[-1:] = len(members) - 1
    return members, first_member, members[first_member], members[last_member]


def mean_scores(scores: np.ndarray, members: np.ndarray, first_member: np.ndarray) -> np.ndarray:
    """Mean word score of each mention, averaged in float64 (the output stores float32)."""
    if len(first_member) == 0:
        return np.zeros(0, dtype=np.float64)
    values = scores[members].astype(np.float64)
    counts = np.diff(np.append(first_member, len(members)))
    return np.add.reduceat(values, first_member) / counts


def segment_of_words(
    word_row: np.ndarray,
    word_start: np.ndarray,
    segment_start: np.ndarray,
    row_first: np.ndarray,
    row_count: np.ndarray,
) -> np.ndarray:
    """Per word, the index into ``segment_start`` of the text column it starts in; -1 if none.

    Row ``r`` has the columns ``row_first[r]`` to ``row_first[r] + row_count[r] - 1``,
    sorted by start. A word falls in the last one that starts at or before it (the
    first one if it starts before all of them).
    """
    count = row_count[word_row]
    base = row_first[word_row]
    segment = np.where(count > 0, base, -1)
    # The columns are the job's text columns (title, abstract, ...): one pass per column.
    for k in range(1, int(count.max(initial=0))):
        has = count > k
        segment += has & (word_start >= segment_start[np.where(has, base + k, 0)])
    return segment


class Passages:
    """The passages of a batch's documents (``list<struct<section_type, ..., start, end>>``).

    A position falls in the last passage of its row that starts at or before it:
    one ``searchsorted`` over (row, start) keys serves the whole batch. Passages
    are separated by a blank line that no token covers, so a word's start decides.
    """

    SHIFT = np.int64(1) << 32  # text offsets fit 32 bits (tokens' offsets are int32)

    def __init__(self, lists: pa.Array | None):
        """``lists``: one list per row of the batch; None: no passages (sections are null)."""
        if lists is None:
            lists = pa.array(
                [], pa.list_(pa.struct([("start", pa.int64()), ("section_type", pa.string())]))
            )
        values = lists.flatten()
        row = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
        start = values.field("start").to_numpy(zero_copy_only=False).astype(np.int64)
        keys = row * self.SHIFT + start
        self.order = np.argsort(keys, kind="stable")
        self.keys, self.row = keys[self.order], row[self.order]
        self.types = values.field("section_type").cast(pa.string()).take(pa.array(self.order))

    def of(self, row: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Per (row, position), the passage it falls in (sorted index); -1 before the first."""
        if len(self.keys) == 0:
            return np.full(len(row), -1, dtype=np.int64)
        found = np.searchsorted(self.keys, row * self.SHIFT + position, side="right") - 1
        inside = (found >= 0) & (self.row[np.maximum(found, 0)] == row)
        return np.where(inside, found, -1)

    def sections(self, passage: np.ndarray) -> pa.Array:
        """The section types of passages found by :meth:`of`; null for -1."""
        if len(self.types) == 0:
            return pa.nulls(len(passage), pa.string())
        return self.types.take(pa.array(np.maximum(passage, 0), mask=passage < 0))


class Texts:
    """The batch's texts as one UTF-8 buffer, addressed by code point as Python strings are.

    Tokenizer offsets count code points; the buffer holds bytes. A text with only
    ASCII needs no mapping; otherwise the byte position of every code point is found
    once for the batch (the bytes that do not continue a UTF-8 sequence).
    """

    def __init__(self, array: pa.Array):
        if pa.types.is_large_string(array.type):
            offset_type = np.int64
        elif pa.types.is_string(array.type):
            offset_type = np.int32
        else:
            array = array.cast(pa.string())
            offset_type = np.int32
        n = len(array)
        buffers = array.buffers()
        if n == 0 or buffers[1] is None:
            offsets = np.zeros(n + 1, dtype=offset_type)
        else:
            offsets = np.frombuffer(buffers[1], offset_type)[array.offset : array.offset + n + 1]
        data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0)
        self.data = data[offsets[0] : offsets[-1]].astype(np.uint8, copy=False)
        byte_offsets = offsets.astype(np.int64) - offsets[0]
        self.ascii = not bool((self.data >= 0x80).any())
        if self.ascii:
            self._cp_byte = None
            cp_offsets = byte_offsets
        else:
            lead = (self.data & 0xC0) != 0x80
            self._cp_byte = np.append(np.flatnonzero(lead), len(self.data))
            cp_offsets = np.searchsorted(self._cp_byte, byte_offsets)
        self.row_start = cp_offsets[:-1]
        self.lengths = np.diff(cp_offsets)

    def byte_of(self, row: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Byte index in :attr:`data` of code point ``position`` of each row's text."""
        index = self.row_start[row] + position
        return index if self._cp_byte is None else self._cp_byte[index]

    def extend_over_marks(self, row: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Each ``end`` moved past the combining marks (Mn, Mc, Me) that follow it.

        Marks are never ASCII, so only ends before a non-ASCII character are looked
        at, one by one (few per batch).
        """
        if self.ascii or len(end) == 0:
            return end
        inside = end < self.lengths[row]
        at = self.byte_of(row, np.where(inside, end, 0))
        candidates = np.flatnonzero(
            inside & (self.data[np.minimum(at, len(self.data) - 1)] >= 0x80)
        )
        if len(candidates) == 0:
            return end
        end = end.copy()
        for k in candidates:
            r, e = int(row[k]), int(end[k])
            while e < self.lengths[r] and unicodedata.category(self.char(r, e)) in _MARKS:
                e += 1
            end[k] = e
        return end

    def char(self, row: int, position: int) -> str:
        at = int(self.byte_of(np.array([row]), np.array([position]))[0])
        lead = int(self.data[at])
        size = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        return bytes(self.data[at : at + size]).decode("utf-8")

    def slices(self, row: np.ndarray, start: np.ndarray, end: np.ndarray) -> pa.Array:
        """``text[start:end]`` of each (row, start, end) as one Arrow string array."""
        first = self.byte_of(row, start)
        sizes = np.maximum(self.byte_of(row, end) - first, 0)
        offsets = np.zeros(len(row) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        total = int(offsets[-1])
        # Byte k of slice i is data[first[i] + k]: one gather for all slices.
        index = np.arange(total, dtype=np.int64) + np.repeat(first - offsets[:-1], sizes)
        values = self.data[index]
        return pa.StringArray.from_buffers(
            len(row), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(values)
        )
