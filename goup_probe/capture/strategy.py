"""The one interface every capture strategy implements, and what the core hands them.

A strategy reduces one tensor (local, sharded) or a group of same-size tensors
(grouped) at the two moments of a step: :meth:`Strategy.before` at the capture
point, where the gradient is final, and :meth:`Strategy.after`, once the
optimizer has updated θ. Strategies never call one another: when the grouped
strategy cannot reduce a member, it returns that member and the core hands it
to the member's local strategy.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from goup_probe.capture.fused import resolve_kernel
from goup_probe.capture.guard import ErrorGuard, StepState
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.quantities import Quantity, QuantityInputs
from goup_probe.capture.rows import RowSink
from goup_probe.dist.context import DistInfo


@dataclass(frozen=True)
class CaptureContext:
    """What the capture core hands every strategy: where rows go, how errors are handled, the options."""

    rows: RowSink
    guard: ErrorGuard
    dist: DistInfo
    precision: str
    kernel: str
    """"numba" or "eager" (:func:`goup_probe.capture.fused.resolve_kernel`)."""
    custom: tuple[Quantity, ...]
    """User quantities of the before and after phases."""
    has_optimizer: bool
    optimizer_state: Callable[[torch.Tensor], Mapping[str, Any]]
    writer: Any
    count_bytes: Callable[[int], None]

    def custom_due(self, state: StepState, phase: str) -> list[Quantity]:
        """The user quantities of ``phase`` captured at this step."""
        return [q for q in self.custom if q.phase == phase and q.name in state.due]

    def inputs(
        self,
        tracked: TrackedParam,
        state: StepState,
        theta: torch.Tensor,
        grad: torch.Tensor | None,
        theta_before: torch.Tensor | None = None,
    ) -> QuantityInputs:
        """What a user quantity's ``fn`` receives for ``tracked`` at this step."""
        return QuantityInputs(
            name=tracked.name,
            theta=theta,
            grad=grad,
            lr=state.lrs.get(tracked.name, math.nan),
            state=self.optimizer_state(tracked.param),
            theta_before=theta_before,
        )


def build_context(
    config: Any,
    writer: Any,
    guard: ErrorGuard,
    dist: DistInfo,
    optimizers: Sequence[torch.optim.Optimizer],
    count_bytes: Callable[[int], None],
) -> CaptureContext:
    """The context a probe hands its strategies, from its :class:`~goup_probe.capture.config.ProbeConfig`."""
    rows = RowSink(
        writer,
        recorded=config.names,
        tested=config.tested,
        thresholds=config.thresholds,
        keep_samples=config.keep_samples,
        keep_sample_steps=config.keep_sample_steps,
        statistics=config.statistics,
        on_error=guard.record,
    )
    states = [o.state for o in optimizers]
    return CaptureContext(
        rows=rows,
        guard=guard,
        dist=dist,
        precision=config.precision,
        kernel=resolve_kernel(config.kernel),
        custom=tuple(q for q in config.custom if q.phase != "backward"),
        has_optimizer=bool(optimizers),
        optimizer_state=lambda p: next((state[p] for state in states if p in state), {}),
        writer=writer,
        count_bytes=count_bytes,
    )


class Strategy(ABC):
    """How one tensor, or one group of tensors, is reduced at a step."""

    members: tuple[TrackedParam, ...]

    @abstractmethod
    def before(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """Reduce at the capture point; returns the members it could not handle (reduced alone)."""

    @abstractmethod
    def after(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """Reduce after the optimizer step; returns the members it could not handle."""

    @property
    def every_step(self) -> bool:
        """Whether :meth:`before`/:meth:`after` must run at every step (collectives of sharded tracers)."""
        return False


class SkippedTensor(Strategy):
    """A frozen or unsupported tensor: one status row per captured step saying why."""

    def __init__(self, tracked: TrackedParam, quantity: str) -> None:
        self.members = (tracked,)
        self.quantity = quantity

    def before(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """Record the skip row of a captured step."""
        tracked = self.members[0]
        if state.captured and ctx.dist.writes:
            ctx.guard.run(
                state.step,
                tracked.name,
                "skip row",
                ctx.rows.status,
                state.step,
                tracked,
                self.quantity,
                state.lrs.get(tracked.name, math.nan),
                tracked.skip_status,
                tracked.skip_reason,
            )
        return ()

    def after(self, ctx: CaptureContext, state: StepState) -> Sequence[TrackedParam]:
        """Nothing to do."""
        return ()
