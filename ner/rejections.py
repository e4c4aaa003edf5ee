"""The rows of a batch that a stage rejects, each with the first problem found."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class Rejections:
    """Rows that must become ``rejected``: a mask, and a reason per row."""

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
