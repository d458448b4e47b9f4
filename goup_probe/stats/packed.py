"""Rows of different lengths packed end to end, for iterations that run on all of them at once.

The shape fits of :mod:`goup_probe.stats.tail_effects` take a fixed number of
Newton/ECME steps, each a few vectorised passes plus scalar work per row. Their
cost per call is mostly that scalar work (about 1.5 ms however few values), so
the probe fits every tested subsample of a phase in one call, whatever its size
(a ResNet-20 step has seven sizes): the rows are packed into one flat array,
per-row sums are ``np.add.reduceat`` (accumulated in float64, as fast as a 2-D
``sum(axis=1)`` on these sizes) and per-row parameters are spread back with
``np.repeat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PackedRows:
    """Rows packed end to end: ``values`` holds row i at ``starts[i] : starts[i] + counts[i]``."""

    values: np.ndarray
    counts: np.ndarray
    """Length of each row (all >= 1), as int64."""
    starts: np.ndarray = field(init=False, repr=False)
    """Offset of each row in :attr:`values` (computed once: every row sum needs it)."""

    def __post_init__(self) -> None:
        if self.counts.ndim != 1 or (self.counts < 1).any() or int(self.counts.sum()) != self.values.size:
            raise ValueError("PackedRows needs rows of at least one value whose lengths add up to the values")
        object.__setattr__(self, "starts", np.concatenate([[0], np.cumsum(self.counts[:-1])]))

    @classmethod
    def from_blocks(cls, blocks: Sequence[np.ndarray]) -> PackedRows:
        """Pack 2-D blocks of rows (each block's rows of one length), in order."""
        counts = np.concatenate([np.full(len(b), b.shape[1], dtype=np.int64) for b in blocks])
        return cls(np.concatenate([np.ravel(b) for b in blocks]), counts)

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.counts)

    def with_values(self, values: np.ndarray) -> PackedRows:
        """The same layout over other values (elementwise functions of these)."""
        return PackedRows(values, self.counts)

    def row_sums(self, values: np.ndarray) -> np.ndarray:
        """Sum of each row of ``values`` (this layout), accumulated in float64."""
        return np.add.reduceat(values, self.starts, dtype=np.float64)

    def row_max(self, values: np.ndarray) -> np.ndarray:
        """Largest value of each row."""
        return np.maximum.reduceat(values, self.starts)

    def spread(self, per_row: np.ndarray, dtype: np.dtype | type = np.float64) -> np.ndarray:
        """Each row's value repeated over that row's positions, as ``dtype``."""
        return np.repeat(np.asarray(per_row).astype(dtype, copy=False), self.counts)


def split_rows(per_row: np.ndarray, blocks: Sequence[int]) -> list[np.ndarray]:
    """Per-row results cut back into consecutive blocks of ``blocks[i]`` rows."""
    return np.split(np.asarray(per_row), np.cumsum(blocks)[:-1])
