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
    """Capture exactly ``num`` steps spaced logarithmically in ``[0, max_step)``.

    Dense early in training, where distributions change fastest, sparse later.
    ``max_step`` is the number of optimizer steps of the run, as in
    ``range(max_step)``: the schedule captures step 0 and the last step
    ``max_step - 1``, and ``num`` distinct steps in all. Where rounding the
    geometric grid would make early steps coincide, consecutive steps are taken
    instead, so the count is exact.

    Parameters
    ----------
    max_step : int
        Number of optimizer steps (steps ``0 .. max_step - 1`` may be captured), at least 1.
    num : int
        Number of distinct steps captured, from 1 to ``max_step``; with 1, step 0 only.

    Returns
    -------
    Schedule
        A ``step -> bool`` predicate with a readable description.

    Raises
    ------
    ValueError
        If ``max_step`` or ``num`` is not a positive integer, or ``num > max_step``
        (there are only ``max_step`` steps to capture; use :func:`every` with 1).

    Examples
    --------
    >>> s = log_spaced(800, 25)
    >>> steps = [t for t in range(800) if s(t)]
    >>> len(steps), steps[0], steps[-1]
    (25, 0, 799)
    """
    for name, value in (("max_step", max_step), ("num", num)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"log_spaced: {name} must be a positive integer, got {value!r}")
    max_step, num = int(max_step), int(num)
    if num > max_step:
        raise ValueError(
            f"log_spaced: num={num} exceeds max_step={max_step}: only steps 0..{max_step - 1} exist; "
            f"pass num <= {max_step} (or every(1) to capture every step)"
        )
    points = log_spaced_steps(max_step, num)
    steps = frozenset(points)
    return _DescribedSchedule(lambda step: step in steps, f"log_spaced({max_step}, {num})")


def log_spaced_steps(max_step: int, num: int) -> list[int]:
    """The ``num`` strictly increasing steps of :func:`log_spaced`, from 0 to ``max_step - 1``.

    Rounds ``geomspace(1, max_step, num) - 1``, then moves each step up to at
    least one past its predecessor (early steps that rounded alike) and down to
    at most one before its successor, keeping the last step at ``max_step - 1``.
    Needs ``1 <= num <= max_step``.
    """
    grid = np.round(np.geomspace(1, max_step, num)).astype(np.int64) - 1
    grid[-1] = max_step - 1
    grid[0] = 0  # after the end: with num == 1, step 0 only
    for i in range(1, num):
        grid[i] = max(grid[i], grid[i - 1] + 1)
    for i in range(num - 2, -1, -1):
        grid[i] = min(grid[i], grid[i + 1] - 1)
    return [int(s) for s in grid]


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
