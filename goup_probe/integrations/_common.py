"""What both trainer integrations share: unwrapping optimizers, schedules that start at a resumed step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from goup_probe import schedule as _schedule
from goup_probe.capture import plan

_RESERVED_OPTIONS = ("hooks", "schedule_offset")


def unwrap_optimizer(optimizer: Any) -> tuple[torch.optim.Optimizer, list[str]]:
    """The ``torch.optim.Optimizer`` inside trainer wrappers, and the wrappers' class names (outermost first).

    :func:`goup_probe.capture.plan.unwrap_optimizer`, which the probe applies too,
    and a refusal when no optimizer is inside.

    Raises
    ------
    TypeError
        When no ``torch.optim.Optimizer`` is found.
    """
    current, wrappers = plan.unwrap_optimizer(optimizer)
    if not isinstance(current, torch.optim.Optimizer):
        raise TypeError(f"no torch.optim.Optimizer found inside {type(optimizer).__name__}")
    return current, wrappers


class _OffsetSchedule:
    """A schedule read at ``step + offset``: a resumed fit captures the steps an uninterrupted one would."""

    def __init__(self, base: Callable[[int], bool], offset: int) -> None:
        self._base = base
        self.offset = offset
        self.description = f"{_schedule.describe(base)} from step {offset}"

    def __call__(self, step: int) -> bool:
        return bool(self._base(step + self.offset))

    def __repr__(self) -> str:
        return self.description


def offset_schedule(every: int | None, schedule: Any, offset: int) -> Callable[[int], bool]:
    """The schedule of ``every=`` / ``schedule=``, shifted so that probe step 0 is step ``offset``."""
    base = _schedule.resolve(every, schedule)
    return base if offset == 0 else _OffsetSchedule(base, offset)


def check_options(options: dict[str, Any], where: str) -> None:
    """Refuse probe options that the integration sets itself."""
    for name in _RESERVED_OPTIONS:
        if name in options:
            raise TypeError(f"{where} sets {name!r} itself; remove it from the probe options")
