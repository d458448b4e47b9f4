"""The backward capture point: each micro-batch's gradient contribution, as autograd accumulates it.

``Tensor.register_post_accumulate_grad_hook`` runs after a backward pass has
added its gradient into ``param.grad``. The contribution of that pass is
``param.grad`` minus what it held before, so the probe keeps one copy of each
probed gradient between the passes of a captured step (one gradient-sized
buffer per tensor, only at steps where a backward-phase quantity is due, and
only when one is declared). The copies are dropped when the step ends; a loop
that does not zero the gradients between optimizer steps would have its first
contribution counted from the end of the previous step.

The opt-in quantity ``grad_noise`` (:data:`~goup_probe.capture.quantities.GRAD_NOISE`)
keeps *every* pass's copy of a captured step instead of the last one (k
gradient-sized buffers per tensor for k micro-batches), and when the step ends
records, per micro-batch i, the row of ξ_i = g_i − ḡ (g_i = k·c_i, see
:mod:`goup_probe.noise.micro`) and per tensor one ``noise`` table row (variance
across micro-batches, tr Σ, |G|², B_simple, tail index). A step with a single
micro-batch records nothing for it (:attr:`MicroBatchCapture.noise_note` says
so). Under DDP the micro-batches are the ranks: a communication hook hands
each rank's gradient before the all-reduce (:mod:`goup_probe.noise.ddp`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from goup_probe import schema
from goup_probe.capture.guard import ErrorGuard, StepState
from goup_probe.capture.hooks import HookSet
from goup_probe.capture.plan import TrackedParam, stable_seed
from goup_probe.capture.quantities import Quantity, QuantityInputs
from goup_probe.capture.reduce import flat_view, reduce_flat
from goup_probe.capture.strategy import CaptureContext
from goup_probe.noise.ddp import RankGradients, cumulative_snapshots
from goup_probe.noise.micro import micro_noise, noise_summary

SINGLE_MICRO_BATCH = (
    "grad_noise: a captured step accumulated 1 micro-batch, so it has no micro-batch noise "
    "(it needs >= 2 backward passes per optimizer step)"
)


class MicroBatchCapture:
    """Delivers each micro-batch's gradient contribution to the backward-phase quantities.

    Parameters
    ----------
    tracked : sequence of TrackedParam
        The active local tensors (sharded ones are refused at attach).
    quantities : sequence of Quantity
        The backward-phase quantities.
    open_state : callable
        ``() -> StepState`` for the step the gradients belong to (the probe's next step).
    """

    def __init__(
        self,
        tracked: Sequence[TrackedParam],
        quantities: Sequence[Quantity],
        open_state: Callable[[], StepState],
    ) -> None:
        self.tracked = list(tracked)
        self.quantities = tuple(quantities)
        self._open_state = open_state
        self._previous: dict[str, torch.Tensor] = {}
        self._count: dict[str, int] = {}
        self._ctx: CaptureContext | None = None
        self._noise = next((q for q in self.quantities if q.name == schema.GRAD_NOISE), None)
        self._snapshots: dict[str, list[torch.Tensor]] = {}
        """grad_noise: ``param.grad`` after each pass of the captured step, per tensor."""
        self._noise_state: StepState | None = None
        self.noise_note: str | None = None
        """Why a captured step recorded no grad_noise rows (set once), else None."""
        self.ranks: RankGradients | None = None
        """Under DDP, the communication hook whose per-rank gradients are the step's micro-batches."""

    def install(self, ctx: CaptureContext, hooks: HookSet) -> None:
        """Register one post-accumulate-grad hook per tensor (kept in ``hooks`` for removal)."""
        self._ctx = ctx
        for tracked in self.tracked:
            hook = self._hook_for(tracked, ctx.guard)
            hooks.add(tracked.param.register_post_accumulate_grad_hook(hook))

    def _hook_for(self, tracked: TrackedParam, guard: ErrorGuard) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            if guard.capture_disabled:
                return
            state = self._open_state()
            due = [q for q in self.quantities if q.name in state.due]
            if due:
                guard.run(state.step, tracked.name, "backward", self._record, tracked, state, due)

        return hook

    def _record(self, tracked: TrackedParam, state: StepState, due: Sequence[Quantity]) -> None:
        ctx = self._ctx
        grad = flat_view(tracked.param.grad)
        previous = self._previous.get(tracked.name)
        snapshot = grad.clone()
        self._previous[tracked.name] = snapshot
        micro = self._count.get(tracked.name, 0)
        self._count[tracked.name] = micro + 1
        if not ctx.dist.writes:
            return
        if self._noise is not None and self._noise in due:
            if self.ranks is None:  # under DDP the ranks' gradients are the micro-batches
                self._snapshots.setdefault(tracked.name, []).append(snapshot)
            self._noise_state = state
            due = [q for q in due if q is not self._noise]
            if not due:
                return
        contribution = snapshot if previous is None else grad - previous
        theta = flat_view(tracked.param)
        inputs = QuantityInputs(
            name=tracked.name,
            theta=theta,
            grad=contribution,
            lr=state.lrs.get(tracked.name, math.nan),
            state=ctx.optimizer_state(tracked.param),
            micro_batch=micro,
        )
        for quantity in due:
            reduction = reduce_flat(
                quantity.compute(inputs), tracked.index, precision=ctx.precision, kernel=ctx.kernel
            )
            ctx.rows.stats(
                state.step,
                tracked,
                quantity.name,
                inputs.lr,
                reduction,
                math.nan,
                math.nan,
                extra={"micro_batch": micro},
            )

    def end_step(self) -> None:
        """Record the step's grad_noise rows (when due), then drop the copies kept for its micro-batches."""
        try:
            if self.ranks is not None and self._noise_state is not None:
                gathered = self.ranks.take(self._noise_state.step)
                self._snapshots = {name: cumulative_snapshots(g) for name, g in gathered.items()}
            if self._snapshots and self._noise_state is not None:
                self._record_noise(self._noise_state)
        finally:
            self._previous.clear()
            self._count.clear()
            self._snapshots.clear()
            self._noise_state = None

    def _record_noise(self, state: StepState) -> None:
        ctx = self._ctx
        recorded = False
        for tracked in self.tracked:
            snapshots = self._snapshots.get(tracked.name)
            if not snapshots:
                continue
            if len(snapshots) < 2:
                self.noise_note = self.noise_note or SINGLE_MICRO_BATCH
                continue
            ctx.guard.run(state.step, tracked.name, "grad_noise", self._noise_rows, tracked, state, snapshots)
            recorded = True
        if recorded and ctx.rows.listeners:
            ctx.guard.run(state.step, None, "listeners", ctx.rows.end_step, state.step)

    def _noise_rows(self, tracked: TrackedParam, state: StepState, snapshots: list[torch.Tensor]) -> None:
        ctx = self._ctx
        lr = state.lrs.get(tracked.name, math.nan)
        xis, mean = micro_noise(snapshots)
        samples = []
        for micro, xi in enumerate(xis):
            reduction = reduce_flat(xi, tracked.index, precision=ctx.precision, kernel=ctx.kernel)
            samples.append(reduction.sample)
            ctx.rows.stats(
                state.step,
                tracked,
                schema.GRAD_NOISE,
                lr,
                reduction,
                math.nan,
                math.nan,
                extra={"micro_batch": micro},
            )
        summary = noise_summary(xis, mean, np.stack(samples), seed=stable_seed(state.step, tracked.name))
        row = {"step": state.step, "global_step": ctx.rows.global_step, "param": tracked.name, **summary}
        ctx.writer.append(schema.NOISE, [row])
