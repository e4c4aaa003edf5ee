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
    """A list column of the batch: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

    ``values`` holds the batch's values only, also when the column is a slice of a
    larger array (as Ray hands batches out), so the work stays proportional to the batch.
    """

    def __init__(self, column: pa.Array | pa.ChunkedArray, name: str):
        array = combined(column)
        if pa.types.is_null(array.type):  # every cell null (a column built from Nones)
            array = pa.nulls(len(array), pa.list_(pa.null()))
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            raise TypeError(f"column {name} is {array.type}, not a list")
        self.name = name
        offsets = array.offsets.to_numpy().astype(np.int64)
        begin, end = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
        self.values = array.values.slice(begin, end - begin)
        self.offsets = offsets - begin if len(offsets) else np.zeros(1, dtype=np.int64)
        self.lengths = np.diff(self.offsets)
        self.null = null_mask(array)

    @cached_property
    def child(self) -> ListColumn:
        """The lists inside (``list<list<...>>``): one row per inner list."""
        return ListColumn(self.values, self.name)

    @cached_property
    def numbers(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The values as numbers (nulls as 0) and their null mask, None without nulls."""
        return numbers(self.values)

    def flat(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The values of ``rows`` (a row mask) concatenated, and their null mask."""
        values, null = self.numbers
        if np.any(self.lengths[~rows]):
            keep = np.repeat(rows, self.lengths)
            values = values[keep]
            null = None if null is None else null[keep]
        return values, null


def vectors(array: pa.Array, size: int, name: str) -> np.ndarray:
    """A ``fixed_size_list`` array of ``size`` numbers per item as a (items, size) numpy array."""
    if not pa.types.is_fixed_size_list(array.type) or array.type.list_size != size:
        raise TypeError(f"column {name} must hold fixed-size lists of {size}, got {array.type}")
    return array.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)


def take(values: np.ndarray, index: np.ndarray, invalid: np.ndarray, fill) -> np.ndarray:
    """``values[index]``, and ``fill`` where ``invalid`` (there ``index`` may be out of bounds)."""
    if not invalid.any():
        return values[index]
    out = np.full(len(index), fill, dtype=values.dtype)
    out[~invalid] = values[index[~invalid]]
    return out


def combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array; a single chunk as it is (a slice of a larger array, often: no copy)."""
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


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
