"""The grouped strategy: small same-size tensors reduced together, a fixed number of operations per group.

Members the grouped reduction cannot take at a step (a gradient is missing, a
subsample holds NaN/Inf, the reduction fails) are returned to the core, which
reduces each with its local strategy, so every member still gets its rows or
its own error.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from goup_probe import schema
from goup_probe.capture import emit
from goup_probe.capture.batch import (
    GroupState,
    reduce_group_components,
    reduce_group_update,
    reduce_group_values,
)
from goup_probe.capture.guard import StepState
from goup_probe.capture.plan import Group, TrackedParam
from goup_probe.capture.quantities import PHASE_AFTER, PHASE_BEFORE, Quantity
from goup_probe.capture.reduce import Reduction, flat_view, reduce_flat
from goup_probe.capture.strategy import CaptureContext, Strategy


class GroupedTensors(Strategy):
    """Reduces a :class:`~goup_probe.capture.plan.Group` of same-size local tensors at once."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.members = group.members

    def before(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """Rows of θ, g, X (tests run for all members at once) and the user before-phase quantities."""
        if not (ctx.dist.writes and state.captured):
            return ()
        grads = [m.param.grad for m in self.members]
        if any(g is None for g in grads):
            return self.members
        grads = [state.unscale(flat_view(g)) for g in grads]
        result = ctx.guard.run(
            state.step,
            None,
            f"grouped reduction ({self.group.label})",
            functools.partial(reduce_group_components, precision=ctx.precision),
            [m.param for m in self.members],
            grads,
            self.group.index,
        )
        if result is None:
            return self.members
        components, group_state = result
        if not ctx.has_optimizer:  # no shadow columns without an optimizer: do not hold g
            group_state.grad = None
        keep = emit.needs_snapshot(ctx, state)
        for i, (tracked, parts) in enumerate(zip(self.members, components, strict=True)):
            ctx.guard.run(
                state.step, tracked.name, "before step", self._member_rows, ctx, state, i, parts,
                group_state if keep else None,
            )  # fmt: skip
        norms = [(c.theta.norm, c.grad.norm) for c in components]
        for quantity in ctx.custom_due(state, PHASE_BEFORE):
            thetas = [flat_view(m.param) for m in self.members]
            self._custom(ctx, state, quantity, thetas, grads, None, norms)
        if keep:
            state.pending[id(self)] = group_state
        return ()

    def _member_rows(self, ctx, state, i: int, parts, group_state: GroupState | None) -> None:
        tracked = self.members[i]
        emit.components(ctx, state, tracked, parts.theta, parts.grad, parts.x, "")
        if group_state is not None:
            numel = tracked.param.numel()
            emit.keep_snapshot(state, tracked, parts, group_state.theta[i], numel, parts.theta.sample)

    def _custom(
        self,
        ctx: CaptureContext,
        state: StepState,
        quantity: Quantity,
        thetas: Sequence,
        grads: Sequence,
        befores: Sequence | None,
        norms: Sequence[tuple[float, float]],
    ) -> None:
        """One user quantity of every member: computed per member, reduced together, tested with the phase."""
        values = []
        for i, tracked in enumerate(self.members):
            inputs = ctx.inputs(tracked, state, thetas[i], grads[i], None if befores is None else befores[i])
            where = f"quantity {quantity.name}"
            values.append(ctx.guard.run(state.step, tracked.name, where, quantity.compute, inputs))
        if any(v is None for v in values):  # a member's fn failed (recorded): the others alone
            reductions = [
                None if v is None else self._reduce_one(ctx, state, i, v) for i, v in enumerate(values)
            ]
        else:
            reductions = ctx.guard.run(
                state.step,
                None,
                f"grouped quantity {quantity.name} ({self.group.label})",
                functools.partial(reduce_group_values, precision=ctx.precision),
                values,
                self.group.index,
            )
            if reductions is None:  # NaN/Inf in a subsample: the masked per-member path
                reductions = [self._reduce_one(ctx, state, i, v) for i, v in enumerate(values)]
        for i, reduction in enumerate(reductions):
            if reduction is not None:
                tracked = self.members[i]
                ctx.guard.run(
                    state.step, tracked.name, f"quantity {quantity.name}", emit.custom, ctx, state, tracked,
                    quantity, reduction, norms[i][0], norms[i][1],
                )  # fmt: skip

    def _reduce_one(self, ctx: CaptureContext, state: StepState, i: int, values) -> Reduction | None:
        tracked = self.members[i]
        return ctx.guard.run(
            state.step,
            tracked.name,
            "quantity reduction",
            functools.partial(reduce_flat, precision=ctx.precision, kernel=ctx.kernel),
            values,
            tracked.index,
        )

    def after(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """The members' update rows, reduced together, and the user after-phase quantities.

        The shadow columns use g as the optimizer used it: the copy taken before
        the step (the per-member fallback reads ``param.grad`` after it, which is
        the same unless the optimizer rewrites ``.grad`` in place).
        """
        group_state = state.pending.pop(id(self), None)
        if group_state is None or not all(m.name in state.snapshots for m in self.members):
            return self.members  # the before phase went member by member (or a member failed)
        news = [flat_view(m.param) for m in self.members]
        if schema.UPDATE in state.due:
            result = ctx.guard.run(
                state.step,
                None,
                f"grouped update ({self.group.label})",
                reduce_group_update,
                [m.param for m in self.members],
                group_state,
                self.group.index,
            )
            if result is None:
                return self.members
            self._update_rows(ctx, state, group_state, result)
        snaps = [state.snapshots.pop(m.name) for m in self.members]
        for quantity in ctx.custom_due(state, PHASE_AFTER):
            grads = [
                None if m.param.grad is None else state.unscale(flat_view(m.param.grad)) for m in self.members
            ]
            norms = [(s.param_norm, s.grad_norm) for s in snaps]
            self._custom(ctx, state, quantity, news, grads, [s.theta for s in snaps], norms)
        return ()

    def _update_rows(self, ctx, state, group_state: GroupState, result) -> None:
        for tracked, (red_update, dot) in zip(self.members, result, strict=True):
            snap = state.snapshots[tracked.name]
            shadow_dot = dot if group_state.grad is not None else None
            ctx.guard.run(
                state.step, tracked.name, "after step", emit.update, ctx, state, tracked, snap, red_update,
                shadow_dot,
            )  # fmt: skip
