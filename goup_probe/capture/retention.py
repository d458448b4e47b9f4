"""Which captured steps keep their stored samples: :class:`SampleRetention`.

Stats rows are written at every captured step; the stored subsamples (the
``samples`` table, for histograms and QQ plots) are what makes a long run
large, so they are thinned on a fixed, documented rule (``keep_sample_steps``
= N):

* every captured step keeps its samples until N captured steps have;
* after that, a captured step keeps them when it is the first captured step in
  its bin, the bins being ``floor(N · log10(step + 1))``: about N steps per
  tenfold of the step count, log-spaced, so their number grows with the
  logarithm of the run's length (N = 25: 66 of 1000 and 98 of 20 000 steps
  captured at every=1, 35 of the demo's 60 at every=25, the last step added);
* the first captured step always keeps its samples, and so does the last:
  the newest captured step off the grid is held in memory (one step's rows)
  and written when the probe detaches. A crash loses only that held step's
  samples (the run stays readable, its stats rows are all there).

``keep_sample_steps=None`` stores the samples of every captured step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

DEFAULT_KEEP_SAMPLE_STEPS = 25
"""Captured steps that keep their samples before thinning starts, and bins per tenfold of steps after."""

_REMEMBERED = 64
"""Recent steps whose decision is remembered (several optimizers may write the same step in turn)."""


def sample_bin(step: int, keep_steps: int) -> int:
    """The log-spaced bin of ``step``: ``floor(keep_steps · log10(step + 1))``."""
    return math.floor(keep_steps * math.log10(step + 1))


class SampleRetention:
    """Decides, step by step, which captured steps' sample rows are written (see the module docstring).

    Parameters
    ----------
    keep_steps : int or None
        N of the rule; None keeps every captured step's samples.
    """

    def __init__(self, keep_steps: int | None) -> None:
        if keep_steps is not None and (isinstance(keep_steps, bool) or int(keep_steps) < 1):
            raise ValueError(f"keep_sample_steps must be an integer >= 1 or None, got {keep_steps!r}")
        self.keep_steps = None if keep_steps is None else int(keep_steps)
        self._steps_seen = 0
        self._bins: set[int] = set()
        self._decided: OrderedDict[int, bool] = OrderedDict()
        self._held_step: int | None = None
        self._held: list[Mapping[str, Any]] = []

    def keeps(self, step: int) -> bool:
        """Whether ``step`` is on the grid (its samples are written at once); decided when first asked."""
        if self.keep_steps is None:
            return True
        decided = self._decided.get(step)
        if decided is not None:
            return decided
        bin_ = sample_bin(step, self.keep_steps)
        keep = self._steps_seen < self.keep_steps or bin_ not in self._bins
        self._steps_seen += 1
        self._bins.add(bin_)
        self._decided[step] = keep
        if len(self._decided) > _REMEMBERED:
            self._decided.popitem(last=False)
        return keep

    def admit(self, step: int, row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The rows to write now for one sample row of ``step`` (the row, or none: held or dropped)."""
        keep = self.keeps(step)
        newest = self._held_step is None or step > self._held_step
        if keep:
            if newest:  # a later step is on the grid: the held one is no longer the last
                self._held_step, self._held = None, []
            return [row]
        if newest:
            self._held_step, self._held = step, [row]
        elif step == self._held_step:
            self._held.append(row)
        return []  # an older step off the grid: dropped

    def release(self) -> list[Mapping[str, Any]]:
        """The held rows of the newest captured step off the grid (written at detach); forgets them."""
        rows, self._held_step, self._held = self._held, None, []
        return rows

    @property
    def held_step(self) -> int | None:
        """The step whose rows are held, if any."""
        return self._held_step
