"""Windows of sub-token ids as flat numpy arrays, and their packing into padded batches.

The classifier stage and the GPU benchmark share these, so the benchmark measures
batches shaped exactly as the job shapes them. Pure numpy and pyarrow: no torch,
no Ray, and no Python object per token or per window, so host-side preparation
stays small next to the forward pass it feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ner.flat_columns import ListColumn, combined
from ner.layout import offsets_of


@dataclass
class Windows:
    """A ``list<list<int>>`` column as three flat arrays, offsets starting at 0.

    Document ``d`` owns windows ``doc_offsets[d]:doc_offsets[d + 1]``; window ``w``
    owns ``tokens[window_offsets[w]:window_offsets[w + 1]]``.
    """

    tokens: np.ndarray  # int32, every window's ids end to end
    doc_offsets: np.ndarray  # int64, n_docs + 1
    window_offsets: np.ndarray  # int64, n_windows + 1

    @property
    def n_docs(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def starts(self) -> np.ndarray:
        return self.window_offsets[:-1]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.window_offsets)

    @property
    def windows_per_doc(self) -> np.ndarray:
        return np.diff(self.doc_offsets)

    def doc_of_window(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_docs), self.windows_per_doc)

    def nested(self, values: np.ndarray, drop: np.ndarray | None = None) -> pa.ListArray:
        """``values`` (aligned with ``tokens``; rows of a 2-d array) shaped like the input column.

        Documents where ``drop`` is true get an empty list. Without drops the
        offsets are reused as they are, so the only copy is ``values``' own.
        """
        doc_offsets, window_offsets = self.doc_offsets, self.window_offsets
        if drop is not None and drop.any():
            keep_window = np.repeat(~drop, self.windows_per_doc)
            values = values[np.repeat(keep_window, self.lengths)]
            window_offsets = offsets_of(self.lengths[keep_window])
            doc_offsets = offsets_of(np.where(drop, 0, self.windows_per_doc))
        if values.ndim == 2:  # a vector per token (log-probabilities): fixed-size lists
            # From the buffer: pa.array converts float16 value by value (~100x slower).
            flat = np.ascontiguousarray(values).reshape(-1)
            numbers = pa.from_numpy_dtype(flat.dtype)
            leaves = pa.Array.from_buffers(numbers, len(flat), [None, pa.py_buffer(flat)])
            leaves = pa.FixedSizeListArray.from_arrays(leaves, values.shape[1])
        else:
            leaves = pa.array(values)
        inner = pa.ListArray.from_arrays(arrow_offsets(window_offsets), leaves)
        return pa.ListArray.from_arrays(arrow_offsets(doc_offsets), inner)


def windows_from_arrow(column: pa.Array | pa.ChunkedArray) -> Windows:
    """The flat arrays of a ``list<list<int>>`` column, from its Arrow buffers.

    :class:`ner.flat_columns.ListColumn` reads each level (chunks combined, a
    slice's offsets shifted to start at 0). A null document counts as one without
    windows.
    """
    column = combined(column)
    if column.null_count:
        column = pc.if_else(pc.is_valid(column), column, pa.scalar([], column.type))
    documents = ListColumn(column, "windows")
    windows = documents.child
    tokens = windows.values.to_numpy(zero_copy_only=False)
    return Windows(tokens.astype(np.int32, copy=False), documents.offsets, windows.offsets)


def arrow_offsets(offsets: np.ndarray) -> pa.Array:
    # ListArray takes int32 offsets; a batch of 2**31 tokens would not fit a device anyway.
    return pa.array(offsets.astype(np.int32, copy=False))


# (width, rows) multiples of the padded batch shape on CUDA: see batch_shape.
CUDA_SHAPE_MULTIPLES = (16, 8)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pack_windows(
    lengths: np.ndarray, token_budget: int, width_multiple: int = 1
) -> list[np.ndarray]:
    """Window indices in batches whose padded size ``rows * width`` stays within the budget.

    Windows are taken longest first (so the first batch shows at once whether
    memory suffices, and each batch's rows have similar lengths, which keeps
    padding small), and each batch takes as many of the next windows as fit: its
    first window is its widest, and its width is that length rounded up to
    ``width_multiple`` (see :func:`batch_shape`). A window longer than the budget
    forms a batch of its own. Windows of length 0 are left out: callers zero the
    lengths of windows they do not want run.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be at least 1, got {token_budget}")
    lengths = np.asarray(lengths)
    live = np.flatnonzero(lengths > 0)
    order = live[np.argsort(-lengths[live], kind="stable")]
    batches, start = [], 0
    while start < len(order):
        rows = max(1, token_budget // round_up(int(lengths[order[start]]), width_multiple))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def batch_shape(
    longest: int, rows: int, token_budget: int, width_multiple: int = 1, row_multiple: int = 1
) -> tuple[int, int]:
    """The (rows, width) a batch of ``rows`` windows is padded to, from :func:`pack_windows`.

    On a GPU every new input shape costs a one-off plan: cuDNN's attention took
    about 50 ms per shape on an H200 (benchmarks/results/2026-11-27-h200-after),
    and with exact shapes nearly every batch of a 10 M-token run was new. Widths
    rounded to ``width_multiple`` and row counts to ``row_multiple`` (never past
    what the budget allows at that width) leave a few hundred shapes in all, for a
    few percent of padding. Rows past ``rows`` are filler that callers drop.
    """
    width = round_up(longest, width_multiple)
    full = max(1, token_budget // width)
    return max(rows, min(round_up(rows, row_multiple), full)), width


def fill_batch(
    tokens: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    ids: np.ndarray,
    row_lengths: np.ndarray,
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill ``ids`` (rows x width, from :func:`batch_shape`) and ``row_lengths`` (rows).

    The first ``len(lengths)`` rows get the windows; the rest are filler rows of one
    attended pad token each, whose results callers drop. Returns
    :func:`gather_padded`'s (positions, mask) for the real rows.
    """
    real = len(lengths)
    row_lengths[:real] = lengths
    row_lengths[real:] = 1
    ids[real:] = pad_id
    return gather_padded(tokens, starts, lengths, ids[:real], pad_id)


def gather_padded(
    tokens: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    out: np.ndarray,
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill ``out`` (rows x width) with the windows, padded with ``pad_id``; one gather.

    Returns (positions, mask): the flat index in ``tokens`` of every cell and
    whether it holds a real token, which is also where its prediction goes back.
    """
    columns = np.arange(out.shape[1])
    positions = starts[:, None] + columns
    mask = columns < lengths[:, None]
    # mode="clip" keeps the padded cells' indices in range and lets take write into out directly.
    np.take(tokens, positions, out=out, mode="clip")
    out[~mask] = pad_id
    return positions, mask
