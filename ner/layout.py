"""Where windows and words fall in a batch of tokenised documents, with numpy only.

Every function takes the batch as flat arrays: the sub-tokens of all documents one
after the other, and ``lengths`` (sub-tokens per document). The tokenize stage calls
them once per batch, so their cost does not grow with Python objects per token; the
per-document forms (:func:`window_starts`, :func:`assign_owners`) are the same code
on a batch of one, kept for tests and readers.

Windows hold ``content_length`` sub-tokens and consecutive windows of a document
share ``stride`` of them; the last may be shorter. A document of ``n`` sub-tokens
has ``1 + ceil(max(0, n - content_length) / step)`` windows (``step = content_length
- stride``), or none when ``n == 0``. Each sub-token is *owned* by the window where
it sits furthest from an edge that cut context away (the document's own start and
end are not such edges); ties go to the earlier window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# str.isspace for every code point up to U+3000, the last whitespace code point.
_SPACE = np.array([chr(c).isspace() for c in range(0x3001)] + [False])


def check_window_settings(content_length: int, stride: int) -> int:
    """The step between window starts; the settings' error if they make no windows."""
    if content_length <= 0:
        raise ValueError(f"content_length must be positive, got {content_length}")
    if not 0 <= stride < content_length:
        raise ValueError(f"stride must be in [0, {content_length}), got {stride}")
    return content_length - stride


def window_counts(lengths: np.ndarray, content_length: int, stride: int) -> np.ndarray:
    """Windows per document: 0 for an empty one, else enough to cover every sub-token."""
    step = check_window_settings(content_length, stride)
    lengths = np.asarray(lengths, dtype=np.int64)
    extra = -(-np.maximum(lengths - content_length, 0) // step)  # ceiling division
    return np.where(lengths > 0, 1 + extra, 0)


def ranges(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments of ``counts`` items: each item's segment, and its index inside it."""
    counts = np.asarray(counts, dtype=np.int64)
    segment = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return segment, np.arange(int(counts.sum())) - starts[segment]


def offsets_of(counts: np.ndarray) -> np.ndarray:
    """Arrow-style offsets (``len + 1`` entries, from 0) of segments of ``counts`` items."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


def window_layout(
    lengths: np.ndarray, content_length: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of a batch: per document their count; per window its document and first token."""
    step = check_window_settings(content_length, stride)
    counts = window_counts(lengths, content_length, stride)
    document, k = ranges(counts)
    return counts, document, k * step


def owners(lengths: np.ndarray, content_length: int, stride: int) -> np.ndarray:
    """Per sub-token of the batch, the index (within its document) of its owner window."""
    step = check_window_settings(content_length, stride)
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = window_counts(lengths, content_length, stride)
    document, t = ranges(lengths)
    n, last = lengths[document], counts[document] - 1
    # Window k holds tokens [k*step, k*step + content_length); at most this many hold t.
    first = np.maximum(0, -(-(t - content_length + 1) // step))
    owner = first.copy()
    best = np.full(len(t), -1.0)
    for j in range(-(-content_length // step)):
        k = first + j
        start = k * step
        end = np.minimum(start + content_length, n)
        holds = (k <= last) & (start <= t) & (t < end)
        left = np.where(k > 0, t - start, np.inf)
        right = np.where(end < n, end - 1 - t, np.inf)
        distance = np.minimum(left, right)
        better = holds & (distance > best)
        owner[better], best[better] = k[better], distance[better]
    return owner.astype(np.int32)


def window_starts(n_tokens: int, content_length: int, stride: int) -> list[int]:
    """First token of each window of one document (``[0]`` for a short or empty one)."""
    _, _, starts = window_layout(np.array([max(n_tokens, 1)]), content_length, stride)
    return starts.tolist()


def assign_owners(starts: Sequence[int], n_tokens: int, content_length: int) -> np.ndarray:
    """Owner windows of one document's tokens, for windows ``starts`` as laid out above."""
    stride = content_length - (starts[1] - starts[0]) if len(starts) > 1 else 0
    return owners(np.array([n_tokens]), content_length, stride)


def window_token_ids(
    ids: np.ndarray,
    lengths: np.ndarray,
    content_length: int,
    stride: int,
    prefix: Sequence[int],
    suffix: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The model's inputs: each window's sub-tokens between ``prefix`` and ``suffix``.

    Returns the flat ids of all windows, the windows' offsets into them, the
    documents' offsets into the windows, and each window's first document token.
    """
    counts, document, starts = window_layout(lengths, content_length, stride)
    lengths = np.asarray(lengths, dtype=np.int64)
    content = np.minimum(content_length, lengths[document] - starts)
    sizes = len(prefix) + content + len(suffix)
    window, j = ranges(sizes)
    position = j - len(prefix)  # inside the window's content
    head = position < 0
    tail = position >= content[window]
    source = offsets_of(lengths)[document[window]] + starts[window] + position
    out = np.empty(len(j), dtype=np.int32)
    body = ~head & ~tail
    out[body] = ids[source[body]]
    out[head] = np.asarray(prefix, dtype=np.int32)[j[head]]
    out[tail] = np.asarray(suffix, dtype=np.int32)[(position - content[window])[tail]]
    return out, offsets_of(sizes), offsets_of(counts), starts.astype(np.int32)


def continuation_word_ids(is_continuation: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Word ids (from 0 in each document) where a word is a first sub-token and its ``##`` pieces."""
    starts_word = ~is_continuation
    document, t = ranges(lengths)
    starts_word[t == 0] = True  # a document never starts inside a word
    return _number_within(starts_word, lengths, document)


def whitespace_word_ids(
    codes: np.ndarray,
    text_offsets: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    lengths: np.ndarray,
) -> np.ndarray:
    """Word ids where a word is a whitespace-delimited chunk (``IL-2`` is one word).

    ``codes`` are the code points of the batch's texts end to end, ``text_offsets``
    where each text begins; ``starts``/``ends`` are the sub-tokens' offsets into
    their own text. Use it when the model was trained on whitespace-separated tokens,
    as CRAFT sentences joined by spaces are; the tokenizer's own words split
    punctuation.
    """
    space = np.cumsum(np.concatenate([[0], _SPACE[np.minimum(codes, len(_SPACE) - 1)]]))
    document, t = ranges(lengths)
    base = np.asarray(text_offsets, dtype=np.int64)[document]
    previous_end = np.concatenate([[0], ends[:-1]])
    previous_end[t == 0] = 0  # the previous token is in another document
    new_word = (t == 0) | (space[base + starts] > space[base + previous_end])
    return _number_within(new_word, lengths, document)


def _number_within(starts: np.ndarray, lengths: np.ndarray, document: np.ndarray) -> np.ndarray:
    """Number the runs that ``starts`` opens, from 0 in each document."""
    count = np.concatenate([[0], np.cumsum(starts)])
    before = count[offsets_of(lengths)[:-1]]  # runs opened in earlier documents
    return (count[1:] - 1 - before[document]).astype(np.int32)


def code_points(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The texts' code points end to end, and where each text starts among them."""
    joined = "".join(texts)
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    return codes, offsets_of(np.fromiter(map(len, texts), np.int64, count=len(texts)))
