"""Rows every strategy writes the same way: θ/g/X of a step, its update, user quantities.

Strategies differ in how they reduce; once they hold :class:`Reduction` objects
they call these functions, so the rows and snapshots are built by one rule.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from goup_probe import schema
from goup_probe.capture.guard import StepState
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.quantities import Quantity
from goup_probe.capture.reduce import Components, Reduction
from goup_probe.capture.shadow import Snapshot, shadow_from_dot
from goup_probe.capture.strategy import CaptureContext

NO_GRAD_LOCAL = "grad is None at this step (parameter unused in the forward pass?)"
NO_GRAD_SHARDED = "grad is None at this step on at least one rank"


def needs_snapshot(ctx: CaptureContext, state: StepState) -> bool:
    """Whether θ must be kept from before the step: the update or a user after-phase quantity is due."""
    return (schema.UPDATE in state.due and ctx.rows.wants(schema.UPDATE)) or bool(
        ctx.custom_due(state, "after")
    )


def components(
    ctx: CaptureContext,
    state: StepState,
    tracked: TrackedParam,
    theta: Reduction,
    grad: Reduction | None,
    x: Reduction | None,
    no_grad_reason: str,
) -> None:
    """Rows of X = θ − g, θ and g at a captured step; X and g get a status row without a gradient."""
    rows, step = ctx.rows, state.step
    lr = state.lrs.get(tracked.name, math.nan)
    due = state.due
    if grad is None or x is None:
        if schema.THETA in due:
            rows.stats(step, tracked, schema.THETA, lr, theta, theta.norm, math.nan)
        for quantity in (schema.THETA_MINUS_GRAD, schema.GRAD):
            if quantity in due:
                rows.status(step, tracked, quantity, lr, schema.STATUS_NO_GRAD, no_grad_reason)
        return
    param_norm, grad_norm = theta.norm, grad.norm
    for quantity, reduction in ((schema.THETA_MINUS_GRAD, x), (schema.THETA, theta), (schema.GRAD, grad)):
        if quantity in due:
            rows.stats(step, tracked, quantity, lr, reduction, param_norm, grad_norm)


def keep_snapshot(
    state: StepState,
    tracked: TrackedParam,
    parts: Components,
    theta_before: torch.Tensor,
    numel: int,
    theta_sample: np.ndarray | None = None,
) -> None:
    """Keep what the after phase needs: θ before the step and the norms of this step."""
    state.snapshots[tracked.name] = Snapshot(
        theta=theta_before,
        lr=state.lrs.get(tracked.name, math.nan),
        grad_norm=parts.grad.norm,
        param_norm=parts.theta.norm,
        x_std=parts.x.moments.std,
        numel=numel,
        theta_sample=theta_sample,
        grad_sample=parts.grad.sample,
    )


def update(
    ctx: CaptureContext,
    state: StepState,
    tracked: TrackedParam,
    snap: Snapshot,
    reduction: Reduction,
    dot: float | None,
) -> None:
    """The update row of a captured step; with Σ Δ·g (``dot``), its shadow-fidelity columns."""
    if schema.UPDATE not in state.due:
        return
    shadow = shadow_from_dot(dot, snap, reduction.norm, reduction.sample) if dot is not None else {}
    ctx.rows.stats(
        state.step,
        tracked,
        schema.UPDATE,
        snap.lr,
        reduction,
        snap.param_norm,
        snap.grad_norm,
        extra=shadow,
    )


def custom(
    ctx: CaptureContext,
    state: StepState,
    tracked: TrackedParam,
    quantity: Quantity,
    reduction: Reduction,
    param_norm: float,
    grad_norm: float,
) -> None:
    """The row of a user quantity."""
    ctx.rows.stats(
        state.step,
        tracked,
        quantity.name,
        state.lrs.get(tracked.name, math.nan),
        reduction,
        param_norm,
        grad_norm,
    )


def custom_no_grad(
    ctx: CaptureContext, state: StepState, tracked: TrackedParam, quantity: Quantity, reason: str
) -> None:
    """The status row of a user quantity that needs a gradient the tensor does not have."""
    lr = state.lrs.get(tracked.name, math.nan)
    ctx.rows.status(state.step, tracked, quantity.name, lr, schema.STATUS_NO_GRAD, reason)
