"""The local strategy: one plain tensor on this process, reduced on its device.

θ, g and X = θ − g are reduced in one pass (:func:`reduce_components`), the
update and Σ Δ·g in another (:func:`reduce_update`), user quantities one pass
each (:func:`reduce_flat`). Under DDP only rank 0 reduces (replicated tensors).
"""

from __future__ import annotations

from collections.abc import Sequence

from goup_probe import schema
from goup_probe.capture import emit
from goup_probe.capture.guard import StepState
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.quantities import PHASE_AFTER, PHASE_BEFORE
from goup_probe.capture.reduce import flat_view, reduce_components, reduce_flat, reduce_update
from goup_probe.capture.strategy import CaptureContext, Strategy


class LocalTensor(Strategy):
    """Reduces one local tensor; also the fallback of a group member the grouped path could not take."""

    def __init__(self, tracked: TrackedParam) -> None:
        self.members = (tracked,)

    @property
    def tracked(self) -> TrackedParam:
        """The tensor."""
        return self.members[0]

    def before(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """Rows of θ, g, X and the user before-phase quantities; the snapshot for the update."""
        if ctx.dist.writes and state.captured:
            ctx.guard.run(state.step, self.tracked.name, "before step", self._before, ctx, state)
        return ()

    def _before(self, ctx: CaptureContext, state: StepState) -> None:
        tracked = self.tracked
        theta = flat_view(tracked.param)
        grad = tracked.param.grad
        g = state.unscale(flat_view(grad)) if grad is not None else None
        if g is None:
            red_theta = reduce_flat(theta, tracked.index, precision=ctx.precision, kernel=ctx.kernel)
            emit.components(ctx, state, tracked, red_theta, None, None, emit.NO_GRAD_LOCAL)
            self._custom_before(ctx, state, theta, None, red_theta.norm, float("nan"))
            return
        parts = reduce_components(theta, g, tracked.index, precision=ctx.precision, kernel=ctx.kernel)
        emit.components(ctx, state, tracked, parts.theta, parts.grad, parts.x, "")
        if emit.needs_snapshot(ctx, state):
            emit.keep_snapshot(
                state, tracked, parts, theta.clone(), tracked.param.numel(), parts.theta.sample
            )
        self._custom_before(ctx, state, theta, g, parts.theta.norm, parts.grad.norm)

    def _custom_before(self, ctx, state, theta, grad, param_norm: float, grad_norm: float) -> None:
        tracked = self.tracked
        for quantity in ctx.custom_due(state, PHASE_BEFORE):
            if quantity.needs_grad and grad is None:
                emit.custom_no_grad(ctx, state, tracked, quantity, emit.NO_GRAD_LOCAL)
                continue
            ctx.guard.run(
                state.step,
                tracked.name,
                f"quantity {quantity.name}",
                self._custom_row,
                ctx,
                state,
                quantity,
                ctx.inputs(tracked, state, theta, grad),
                param_norm,
                grad_norm,
            )

    def _custom_row(self, ctx, state, quantity, inputs, param_norm: float, grad_norm: float) -> None:
        values = quantity.compute(inputs)
        reduction = reduce_flat(values, self.tracked.index, precision=ctx.precision, kernel=ctx.kernel)
        emit.custom(ctx, state, self.tracked, quantity, reduction, param_norm, grad_norm)

    def after(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """The update row (with its shadow columns) and the user after-phase quantities."""
        if ctx.dist.writes and self.tracked.name in state.snapshots:
            ctx.guard.run(state.step, self.tracked.name, "after step", self._after, ctx, state)
        return ()

    def _after(self, ctx: CaptureContext, state: StepState) -> None:
        tracked = self.tracked
        snap = state.snapshots.pop(tracked.name)
        grad = tracked.param.grad
        theta_new = flat_view(tracked.param)
        with_shadow = grad is not None and ctx.has_optimizer
        g = state.unscale(flat_view(grad)) if grad is not None else None
        if schema.UPDATE in state.due:
            red_update, dot = reduce_update(
                theta_new,
                snap.theta,
                g if with_shadow else None,
                tracked.index,
                precision=ctx.precision,
                kernel=ctx.kernel,
                old_sample=snap.theta_sample,
            )
            emit.update(ctx, state, tracked, snap, red_update, dot if with_shadow else None)
        for quantity in ctx.custom_due(state, PHASE_AFTER):
            ctx.guard.run(
                state.step,
                tracked.name,
                f"quantity {quantity.name}",
                self._custom_row,
                ctx,
                state,
                quantity,
                ctx.inputs(tracked, state, theta_new, g, snap.theta),
                snap.param_norm,
                snap.grad_norm,
            )
