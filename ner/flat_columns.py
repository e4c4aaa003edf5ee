"""Arrow columns as flat numpy arrays: values and row offsets, no Python object per value.

A batch's list column (chunked, sliced, or with null cells) is read as one values
array and one offsets array, so that a stage can work on all rows at once.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class ListColumn:
    """A list column of the batch: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, column: pa.Array | pa.ChunkedArray, name: str):
        array = combined(column)
        if pa.types.is_null(array.type):  # every cell null (a column built from Nones)
            array = pa.nulls(len(array), pa.list_(pa.null()))
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            raise TypeError(f"column {name} is {array.type}, not a list")
        self.name = name
        self.array = array
        self.offsets = array.offsets.to_numpy().astype(np.int64)
        self.lengths = np.diff(self.offsets)
        self.null = null_mask(array)

    @cached_property
    def child(self) -> ListColumn:
        """The lists inside (``list<list<...>>``): one row per inner list."""
        return ListColumn(self.array.values, self.name)

    @cached_property
    def numbers(self) -> tuple[np.ndarray, np.ndarray | None]:
        """All values (nulls as 0) and their null mask, None when there are no nulls."""
        return numbers(self.array.values)

    def flat(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The values of ``rows`` (a row mask) concatenated, and their null mask."""
        values, null = self.numbers
        begin, end = self.offsets[0], self.offsets[-1]
        values = values[begin:end]
        null = None if null is None else null[begin:end]
        if np.any(self.lengths[~rows]):
            keep = np.repeat(rows, self.lengths)
            values = values[keep]
            null = None if null is None else null[keep]
        return values, null


def take(values: np.ndarray, index: np.ndarray, invalid: np.ndarray, fill) -> np.ndarray:
    """``values[index]``, and ``fill`` where ``invalid`` (there ``index`` may be out of bounds)."""
    if not invalid.any():
        return values[index]
    out = np.full(len(index), fill, dtype=values.dtype)
    out[~invalid] = values[index[~invalid]]
    return out


def combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def null_mask(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.zeros(len(array), dtype=bool)
    return array.is_null().to_numpy(zero_copy_only=False)


def numbers(array: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """Numeric values as numpy (zero-copy where Arrow allows), nulls as 0, and the null mask."""
    if pa.types.is_null(array.type):
        return np.zeros(len(array), dtype=np.int64), np.ones(len(array), dtype=bool)
    if array.null_count == 0:
        return array.to_numpy(zero_copy_only=False), None
    null = null_mask(array)
    return pc.fill_null(array, 0).to_numpy(zero_copy_only=False), null
