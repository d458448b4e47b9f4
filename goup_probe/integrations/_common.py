"""What both trainer integrations share: unwrapping optimizers, schedules, where a resumed run continues."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from goup_probe import schedule as _schedule
from goup_probe.capture import plan
from goup_probe.store import RUN_JSON, read_table

_RESERVED_OPTIONS = ("hooks", "resume")


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


def resolve_schedule(every: int | None, schedule: Any) -> Callable[[int], bool]:
    """The schedule of ``every=`` / ``schedule=`` (validated now: a callback refuses bad ones when built)."""
    return _schedule.resolve(every, schedule)


def resume_step_from_global_step(run_dir: str | os.PathLike[str], global_step: int) -> int | bool:
    """The probe step at which a trainer resumed at ``global_step`` continues the run in ``run_dir``.

    False when there is nothing to resume (a fresh directory, or training starts
    at step 0). The probe counts the optimizer steps taken and the trainer counts
    steps skipped by a ``GradScaler`` too, so the probe step is read from the
    run's last captured row before ``global_step``: its ``step`` plus the steps
    since its ``global_step`` (no skipped step is assumed after it).
    """
    if global_step <= 0 or not (Path(run_dir) / RUN_JSON).is_file():
        return False
    rows = read_table(
        run_dir, "stats", columns=["step", "global_step"], filters=[("global_step", "<", global_step)]
    )
    rows = rows.dropna()
    if rows.empty:
        return int(global_step)
    last = rows.loc[rows["global_step"].idxmax()]
    return int(last["step"]) + int(global_step - last["global_step"])


def check_options(options: dict[str, Any], where: str) -> None:
    """Refuse probe options that the integration sets itself."""
    for name in _RESERVED_OPTIONS:
        if name in options:
            raise TypeError(f"{where} sets {name!r} itself; remove it from the probe options")
