"""Per-step dispatch over the capture strategies, and the plan that gives each tensor its strategy.

The probe's capture points call :meth:`StepDispatcher.open` (the gradient is
final) and :meth:`StepDispatcher.finish` (θ was updated); the dispatcher
decides what is due at the step, runs every strategy in model order, hands
members a grouped strategy returns to their local strategy, records the
tracers, and counts steps and the probe's own time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from goup_probe import schema
from goup_probe.capture.backward import MicroBatchCapture
from goup_probe.capture.config import ProbeConfig
from goup_probe.capture.grouped import GroupedTensors
from goup_probe.capture.guard import StepState
from goup_probe.capture.local import LocalTensor
from goup_probe.capture.plan import Group, TrackedParam, plan_groups, resample_indices
from goup_probe.capture.sharded import ShardedTensor
from goup_probe.capture.strategy import CaptureContext, SkippedTensor, Strategy
from goup_probe.capture.timing import ProbeTime
from goup_probe.capture.tracers import LocalTracers
from goup_probe.dist.context import any_rank


def plan_strategies(
    tracked: Sequence[TrackedParam],
) -> tuple[list[Group], list[Strategy], dict[str, LocalTensor]]:
    """One strategy per tensor or group, in model order (a group stands where its first member does).

    Returns the groups, the strategies, and every active local tensor's local
    strategy (a group member's fallback).
    """
    groups = plan_groups(tracked)
    group_of = {m.name: g for g in groups for m in g.members}
    local = {t.name: LocalTensor(t) for t in tracked if t.active and t.shard is None}
    strategies: list[Strategy] = []
    for t in tracked:
        if not t.active:
            strategies.append(SkippedTensor(t, schema.THETA_MINUS_GRAD))
        elif t.shard is not None:
            strategies.append(ShardedTensor(t))
        elif t.name in group_of:
            if group_of[t.name].members[0] is t:
                strategies.append(GroupedTensors(group_of[t.name]))
        else:
            strategies.append(local[t.name])
    return groups, strategies, local


class StepDispatcher:
    """Runs the strategies at each step's capture point and end.

    Parameters
    ----------
    tracked : sequence of TrackedParam
        The probe's tensors in model order.
    ctx : CaptureContext
        What the strategies are handed.
    config : ProbeConfig
        Schedules and quantities.
    tracers : LocalTracers or None
        Tracer coordinates of the local tensors (None on ranks that write nothing).
    time : ProbeTime
        Where the probe's own seconds are added.
    """

    def __init__(
        self,
        tracked: Sequence[TrackedParam],
        ctx: CaptureContext,
        config: ProbeConfig,
        tracers: LocalTracers | None,
        time: ProbeTime,
    ) -> None:
        self.tracked = list(tracked)
        self.groups, self.strategies, self.local = plan_strategies(tracked)
        self.ctx = ctx
        self.config = config
        self.tracers = tracers
        self.time = time
        self.micro: MicroBatchCapture | None = None
        self.at_open: list[Callable[[int, int | None], None]] = []
        """Called with ``(step, global_step)`` at each capture point, before any strategy (a NoiseProbe)."""
        self.step = 0
        self.captured_steps = 0
        self.state: StepState | None = None
        self.last_global_step: dict[str, int] | None = None
        self._backward: StepState | None = None
        self._indexed_step: int | None = None
        """The step the subsample indices were drawn for (``resample="step"``)."""

    @property
    def guard(self) -> Any:
        """The error guard."""
        return self.ctx.guard

    def open(self, lrs: dict[str, float], global_step: int | None = None, grad_scale: float = 1.0) -> None:
        """The capture point of the next step: run every due strategy's before phase.

        ``grad_scale`` is the factor the gradients are still scaled by (GradScaler
        with a fused optimizer); every quantity sees them divided by it.
        """
        for listener in self.at_open:  # its own time, not the capture's
            listener(self.step, global_step)
        started = time.perf_counter()
        state = self._open(lrs, global_step, grad_scale)
        self._charge(state.captured, started, count=False)

    def _open(self, lrs: dict[str, float], global_step: int | None, grad_scale: float) -> StepState:
        step, ctx = self.step, self.ctx
        if ctx.dist.sharded:  # a rank whose writing failed stops every rank, together
            self.guard.capture_disabled = any_rank(self.guard.capture_disabled, ctx.dist)
        disabled = self.guard.capture_disabled
        due = frozenset() if disabled else self.guard.run(step, None, "schedule", self.config.due, step)
        due = due if due is not None else frozenset()  # a failing schedule: recorded, nothing captured
        tracers = not disabled and bool(self.config.tracer_schedule(step))
        state = StepState(
            step=step, due=due, tracers=tracers, lrs=lrs, global_step=global_step, grad_scale=grad_scale
        )
        self.state = state
        ctx.rows.global_step = global_step
        if disabled:
            return state
        if state.captured:
            self._draw_indices(step)
        if self.tracers is not None and tracers:
            self.guard.run(step, None, "tracers", self.tracers.before, step, grad_scale)
        with ctx.rows.batched(self._guarded_rows):
            for strategy in self.strategies:
                if state.captured or (strategy.every_step and tracers):
                    for member in strategy.before(ctx, state):
                        self.local[member.name].before(ctx, state)
        if state.captured:
            self.captured_steps += 1
            if global_step is not None:
                self.last_global_step = {"step": step, "global_step": int(global_step)}
        return state

    def _guarded_rows(self, step: int, param: str, fn: Any, *args: Any) -> Any:
        """The guard for the rows a phase held back (:meth:`RowSink.batched`)."""
        return self.guard.run(step, param, "stats row", fn, *args)

    def finish(self) -> None:
        """The end of the open step: every strategy's after phase, tracers, a flush when due."""
        state, self.state = self.state, None
        if state is None:
            return
        started = time.perf_counter()
        ctx = self.ctx
        try:
            running = not self.guard.capture_disabled
            with ctx.rows.batched(self._guarded_rows):
                for strategy in self.strategies:
                    # sharded: rank 0 may have stopped mid-step; every rank still joins the collectives
                    if (state.captured and running) or isinstance(strategy, ShardedTensor):
                        for member in strategy.after(ctx, state):
                            self.local[member.name].after(ctx, state)
            if running and state.captured and ctx.rows.listeners:
                self.guard.run(state.step, None, "listeners", ctx.rows.end_step, state.step)
            if running and self.tracers is not None and state.tracers:
                self.guard.run(state.step, None, "tracers", self.tracers.after, state.lrs)
            if running:
                self.guard.run(state.step, None, "writing", self.flush_if_due)
        finally:
            self._end(state.step)
            self._charge(state.captured, started, count=True)

    def abandon(self) -> None:
        """Close the open step without its after phase (``optimizer.step()`` raised after its pre hook).

        Its rows from before the step stay; the step keeps its index, so the next
        step's rows do not collide with it.
        """
        state, self.state = self.state, None
        if self.tracers is not None:
            self.tracers.discard()
        self.guard.record(
            state.step, None, "optimizer.step", RuntimeError("optimizer.step() raised after the pre hook")
        )
        self._end(state.step)

    def skip(self) -> None:
        """Count a step that reached no capture point (a closure the optimizer never called)."""
        self._end(self.step)

    def _end(self, step: int) -> None:
        if self.micro is not None:
            self.micro.end_step()
        self.step = step + 1

    def backward_state(self, lrs: dict[str, float]) -> StepState:
        """The state of the step whose gradients are being accumulated (for backward-phase quantities)."""
        if self._backward is None or self._backward.step != self.step:
            due = frozenset()
            if not self.guard.capture_disabled:
                due = self.guard.run(self.step, None, "schedule", self.config.due, self.step) or frozenset()
            self._backward = StepState(step=self.step, due=due, tracers=False, lrs=lrs)
            self.ctx.rows.global_step = None
            if due:
                self._draw_indices(self.step)
        return self._backward

    def _draw_indices(self, step: int) -> None:
        """With ``resample="step"``, the subsample indices of ``step`` (once per step, before any capture)."""
        if self.config.resample == "step" and self._indexed_step != step:
            self.guard.run(
                step,
                None,
                "subsample indices",
                resample_indices,
                self.tracked,
                self.groups,
                self.config,
                step,
            )
            self._indexed_step = step

    def drain_tracers(self) -> None:
        """Hand the kept tracer steps to the writer."""
        if self.tracers is not None:
            self.tracers.drain()

    def flush_if_due(self) -> None:
        """Write every buffered table when ``flush_seconds`` have passed."""
        if self.ctx.writer.flush_due():
            self.drain_tracers()
            self.ctx.writer.flush()

    def _charge(self, captured: bool, started: float, *, count: bool) -> None:
        """Add the seconds since ``started`` to the probe's own time."""
        elapsed = time.perf_counter() - started
        if captured:
            self.time.captured_seconds += elapsed
            self.time.captured_steps += count
        else:
            self.time.other_seconds += elapsed
            self.time.other_steps += count
