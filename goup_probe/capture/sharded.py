"""The sharded strategy: a DTensor (FSDP2) parameter, each rank reducing its own shard.

Every rank joins the same collectives in the same order (one ``all_gather`` per
tensor and phase, plus one per user quantity), every rank merges the gathered
sums into the same global result, and rank 0 writes. Everything that decides
which collectives follow (tracer values, the snapshot) is settled before rank 0
alone does any work. User quantities are computed on each rank's shard, so
only elementwise ones are accepted (checked at attach).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from goup_probe import schema
from goup_probe.capture import emit
from goup_probe.capture.distributed import local_sums, reduce_after, reduce_before
from goup_probe.capture.guard import StepState
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.quantities import PHASE_AFTER, PHASE_BEFORE, Quantity, QuantityInputs
from goup_probe.capture.reduce import Reduction
from goup_probe.capture.shadow import Snapshot
from goup_probe.capture.strategy import CaptureContext, Strategy
from goup_probe.dist.layout import ShardedTensor as ShardLayout
from goup_probe.dist.wire import exchange, raise_if_failed
from goup_probe.stats.moments import SUMS_WIDTH, CentralSums, combine


def reduce_sharded_values(layout: ShardLayout, compute: Callable[[], torch.Tensor]) -> tuple[Reduction, int]:
    """Global moments and subsample of a quantity computed on each rank's shard; one ``all_gather``.

    ``compute()`` returns the flat local values; if it raises on any rank, every
    rank raises :class:`~goup_probe.dist.wire.ShardCaptureError` after the
    collective, so none is left waiting.
    """
    widths = {"sums": SUMS_WIDTH, "sample": layout.index.width}
    fields, error = None, None
    device = layout.index.local.device
    try:
        values = compute()
        sample = values.index_select(0, layout.index.local).to(torch.float64).cpu().numpy()
        fields = {"sums": local_sums(values, sample).to_array(), "sample": sample}
    except Exception as exc:  # joined below
        error = exc
    parts, oks, nbytes = exchange(fields, widths, device)
    raise_if_failed(oks, error, "reduction of a user quantity")
    sums = combine([CentralSums.from_array(p["sums"]) for p in parts], layout.numel)
    return Reduction(sums, layout.index.assemble([p["sample"] for p in parts])), nbytes


class ShardedTensor(Strategy):
    """Reduces one DTensor parameter across ranks (every rank calls it, rank 0 writes)."""

    def __init__(self, tracked: TrackedParam) -> None:
        self.members = (tracked,)

    @property
    def tracked(self) -> TrackedParam:
        """The tensor."""
        return self.members[0]

    @property
    def every_step(self) -> bool:
        """Tracers of a sharded tensor need every rank at every step."""
        return self.tracked.tracers is not None

    def before(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """Reduce θ, g and X of the local shard (and tracer values); rank 0 writes the rows."""
        ctx.guard.run(state.step, self.tracked.name, "before step", self._before, ctx, state)
        return ()

    def _before(self, ctx: CaptureContext, state: StepState) -> None:
        tracked = self.tracked
        shard = tracked.shard
        theta = shard.local(tracked.param)
        grad = tracked.param.grad
        g = state.unscale(shard.local(grad)) if grad is not None else None
        res = reduce_before(
            shard, theta, g, captured=state.captured, tracers=tracked.tracers is not None and state.tracers
        )
        ctx.count_bytes(res.bytes_received)
        if res.tracer_theta is not None:
            state.pending[(id(self), "tracers")] = (res.tracer_theta, res.tracer_grad)
        if not state.captured:
            return
        if res.grad is not None and emit.needs_snapshot(ctx, state):
            state.snapshots[tracked.name] = Snapshot(
                theta=theta.clone(),
                lr=state.lrs.get(tracked.name, math.nan),
                grad_norm=res.grad.norm,
                param_norm=res.theta.norm,
                x_std=res.x.moments.std,
                numel=shard.numel,
                grad_sample=res.grad.sample,
            )
        if ctx.dist.writes:
            emit.components(ctx, state, tracked, res.theta, res.grad, res.x, emit.NO_GRAD_SHARDED)
        norms = (res.theta.norm, res.grad.norm if res.grad is not None else math.nan)
        for quantity in ctx.custom_due(state, PHASE_BEFORE):
            if quantity.needs_grad and res.grad is None:  # the same decision on every rank
                if ctx.dist.writes:
                    emit.custom_no_grad(ctx, state, tracked, quantity, emit.NO_GRAD_SHARDED)
                continue
            self._custom(ctx, state, quantity, ctx.inputs(tracked, state, theta, g), norms)

    def _custom(self, ctx, state, quantity: Quantity, inputs: QuantityInputs, norms) -> None:
        reduction, nbytes = reduce_sharded_values(self.tracked.shard, lambda: quantity.compute(inputs))
        ctx.count_bytes(nbytes)
        if ctx.dist.writes:
            emit.custom(ctx, state, self.tracked, quantity, reduction, norms[0], norms[1])

    def after(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """Reduce the update of the local shard (and the tracers' θ'); rank 0 writes."""
        ctx.guard.run(state.step, self.tracked.name, "after step", self._after, ctx, state)
        return ()

    def _after(self, ctx: CaptureContext, state: StepState) -> None:
        tracked = self.tracked
        shard = tracked.shard
        tracer = state.pending.pop((id(self), "tracers"), None)
        snap = state.snapshots.pop(tracked.name, None)
        grad = tracked.param.grad
        theta_new = shard.local(tracked.param)
        g = state.unscale(shard.local(grad)) if grad is not None else None
        want_update = snap is not None and schema.UPDATE in state.due
        res = reduce_after(
            shard, theta_new, snap.theta if want_update else None, g, tracers=tracer is not None
        )
        ctx.count_bytes(res.bytes_received)
        stopped = ctx.guard.capture_disabled
        if tracer is not None and ctx.dist.writes and not stopped:
            ctx.writer.append(
                "trajectories",
                [
                    {
                        "step": state.step,
                        "param": tracked.name,
                        "lr": state.lrs.get(tracked.name, math.nan),
                        "theta": tracer[0].tolist(),
                        "grad": tracer[1].tolist(),
                        "theta_next": res.tracer_next.tolist(),
                    }
                ],
            )
        if snap is None:
            return
        if want_update and ctx.dist.writes and not stopped:
            with_shadow = grad is not None and ctx.has_optimizer
            emit.update(ctx, state, tracked, snap, res.update, res.dot if with_shadow else None)
        for quantity in ctx.custom_due(state, PHASE_AFTER):
            inputs = ctx.inputs(tracked, state, theta_new, g, snap.theta)
            self._custom(ctx, state, quantity, inputs, (snap.param_norm, snap.grad_norm))
