"""Capture schedules: plain functions ``step -> bool``.

A schedule decides which optimizer steps the probe captures. Steps are counted
from 0 (the first ``optimizer.step()``), so every schedule here captures step 0,
the initialisation, which is where many verdicts come from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

Schedule = Callable[[int], bool]


class _DescribedSchedule:
    """A schedule with a readable description, recorded in ``run.json``."""

    def __init__(self, predicate: Callable[[int], bool], description: str) -> None:
        self._predicate = predicate
        self.description = description

    def __call__(self, step: int) -> bool:
        return self._predicate(step)

    def __repr__(self) -> str:
        return self.description


def every(k: int) -> Schedule:
    """Capture every ``k``-th step: 0, k, 2k, ...

    Parameters
    ----------
    k : int
        Period in optimizer steps, at least 1.
    """
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise ValueError(f"every: k must be a positive integer, got {k!r}")
    k = int(k)
    return _DescribedSchedule(lambda step: step % k == 0, f"every({k})")


def explicit(steps: Iterable[int]) -> Schedule:
    """Capture exactly the given steps."""
    wanted = frozenset(int(s) for s in steps)
    if any(s < 0 for s in wanted):
        raise ValueError("explicit: steps must be >= 0")
    return _DescribedSchedule(lambda step: step in wanted, f"explicit({sorted(wanted)})")


def log_spaced(max_step: int, num: int = 50) -> Schedule:
    """Capture about ``num`` steps spaced logarithmically in ``[0, max_step]``.

    Dense early in training, where distributions change fastest, sparse later.

    Parameters
    ----------
    max_step : int
        Last step that may be captured.
    num : int
        Number of distinct steps wanted (fewer when ``max_step`` is small).
    """
    if max_step < 0 or num < 1:
        raise ValueError(f"log_spaced: need max_step >= 0 and num >= 1, got {max_step}, {num}")
    points = np.unique(np.round(np.geomspace(1, max_step + 1, num)).astype(int) - 1)
    steps = frozenset(int(s) for s in points) | {0}
    return _DescribedSchedule(lambda step: step in steps, f"log_spaced({max_step}, {num})")


def describe(schedule: Schedule) -> str:
    """Readable description of a schedule, for ``run.json``."""
    return getattr(schedule, "description", None) or getattr(schedule, "__name__", repr(schedule))


def resolve(every_k: int | None, schedule: Schedule | None) -> Schedule:
    """Turn the ``every=`` / ``schedule=`` arguments of :func:`attach` into one schedule."""
    if every_k is not None and schedule is not None:
        raise ValueError("pass either every= or schedule=, not both")
    if schedule is not None:
        if not callable(schedule):
            raise TypeError(f"schedule must be callable step -> bool, got {type(schedule)!r}")
        return schedule
    return every(10 if every_k is None else every_k)
