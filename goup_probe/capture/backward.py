"""The backward capture point: each micro-batch's gradient contribution, as autograd accumulates it.

``Tensor.register_post_accumulate_grad_hook`` runs after a backward pass has
added its gradient into ``param.grad``. The contribution of that pass is
``param.grad`` minus what it held before, so the probe keeps one copy of each
probed gradient between the passes of a captured step (one gradient-sized
buffer per tensor, only at steps where a backward-phase quantity is due, and
only when one is declared). The copies are dropped when the step ends; a loop
that does not zero the gradients between optimizer steps would have its first
contribution counted from the end of the previous step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from goup_probe.capture.guard import ErrorGuard, StepState
from goup_probe.capture.hooks import HookSet
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.quantities import Quantity, QuantityInputs
from goup_probe.capture.reduce import flat_view, reduce_flat
from goup_probe.capture.strategy import CaptureContext


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
        contribution = grad.clone() if previous is None else grad - previous
        self._previous[tracked.name] = grad.clone()
        micro = self._count.get(tracked.name, 0)
        self._count[tracked.name] = micro + 1
        if not ctx.dist.writes:
            return
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
            reduction = reduce_flat(quantity.compute(inputs), tracked.index, precision=ctx.precision)
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
        """Drop the copies kept for this step's micro-batches."""
        self._previous.clear()
        self._count.clear()
