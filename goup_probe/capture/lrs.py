"""Learning rates per tensor, from the optimizer's param groups or from the caller's ``lr=``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from goup_probe.capture.plan import TrackedParam, to_float

LearningRates = float | Mapping[str, float] | Sequence[float] | None
"""What ``begin_step(lr=...)`` and ``capture(lr=...)`` accept."""


def optimizer_lrs(
    optimizers: Sequence[torch.optim.Optimizer], tracked: Sequence[TrackedParam]
) -> dict[str, float]:
    """Each tensor's learning rate as its optimizer's param group holds it now (NaN where none)."""
    return {
        t.name: to_float(optimizers[t.owner].param_groups[t.group].get("lr"))
        for t in tracked
        if t.owner is not None
    }


def resolve_lrs(
    lr: LearningRates, optimizers: Sequence[torch.optim.Optimizer], tracked: Sequence[TrackedParam]
) -> dict[str, float]:
    """Per-tensor learning rates from ``lr``: None (the optimizer's), one number, by name, or by param group.

    Raises
    ------
    ValueError, TypeError
        For unknown names, a sequence of the wrong length, or a value that is not a number.
    """
    if lr is None:
        return optimizer_lrs(optimizers, tracked)
    if isinstance(lr, Mapping):
        unknown = set(lr) - {t.name for t in tracked}
        if unknown:
            raise ValueError(f"lr: unknown parameter name(s) {sorted(unknown)[:3]}")
        return {name: to_float(value) for name, value in lr.items()}
    if isinstance(lr, Sequence) and not isinstance(lr, str):
        if len(optimizers) != 1:
            raise ValueError("lr: a sequence of per-group values needs exactly one optimizer")
        groups = len(optimizers[0].param_groups)
        if len(lr) != groups:
            raise ValueError(f"lr: a sequence needs one value per param group ({groups}), got {len(lr)}")
        return {t.name: to_float(lr[t.group]) for t in tracked if t.group is not None}
    value = to_float(lr)
    if isinstance(lr, bool) or (math.isnan(value) and not isinstance(lr, float)):
        raise TypeError(f"lr must be a number, a mapping or a sequence, got {lr!r}")
    return {t.name: value for t in tracked}
