"""The probe: attach to a model and its optimizer, capture per-tensor quantities at explicit capture points.

Capture points, each a moment at which the gradient of step t is final:

* the optimizer's step pre/post hooks (with an optimizer): the probe sees what
  the optimizer uses — accumulated, clipped and unscaled gradients, each
  parameter's own learning rate, and only the steps that were taken;
* a wrapped ``closure``, for optimizers whose ``step(closure)`` runs backward
  inside the step (LBFGS, Lightning's automatic optimization): capture happens
  right after the closure's first evaluation, at θ_t;
* :meth:`Probe.begin_step` / :meth:`Probe.end_step`, for a trainer callback or
  a hand-written loop (:meth:`Probe.capture` is the one-call form);
* during backward, once per micro-batch, for quantities declared with
  ``phase="backward"``.

The probe is the dispatcher: it owns the lifecycle (attach, hooks, schedule,
detach) and hands each step to one strategy per tensor or group (local, grouped,
sharded: :mod:`goup_probe.capture.strategy`).
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import time
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import torch
from torch import nn

from goup_probe.capture.amp import scaler_handoff
from goup_probe.capture.backward import MicroBatchCapture
from goup_probe.capture.config import LayerSelector, ProbeConfig, check_run_dir
from goup_probe.capture.dispatch import StepDispatcher
from goup_probe.capture.guard import ErrorGuard, StepState
from goup_probe.capture.hooks import HookSet, weak_callback
from goup_probe.capture.lrs import LearningRates, optimizer_lrs, resolve_lrs
from goup_probe.capture.meta import probe_meta
from goup_probe.capture.plan import (
    Group,
    TrackedParam,
    refuse_unshardable,
    track_parameters,
    unwrap,
)
from goup_probe.capture.points import optimizer_list, wrap_step_closure
from goup_probe.capture.record import RunRecord
from goup_probe.capture.signals import SigtermGuard, Terminated, warn_if_not_main_thread
from goup_probe.capture.strategy import CaptureContext, build_context
from goup_probe.capture.timing import ProbeTime
from goup_probe.capture.tracers import LocalTracers
from goup_probe.capture.writer import RankError, open_writer
from goup_probe.dist.context import DistInfo, detect
from goup_probe.noise.ddp import install_rank_noise
from goup_probe.store import NullWriter, RunDirectoryError, RunWriter

_ATTACHED_FLAG = "_goup_probe_attached"


class ProbeError(RuntimeError):
    """Misuse of a probe: attaching twice, capturing on a detached probe, and similar."""


class Probe:
    """Captures the distribution of X = θ − g (and θ, g, the update, user quantities) per parameter tensor.

    Use :func:`attach` to create and attach one. The probe is a context manager;
    leaving the ``with`` block, or calling :meth:`detach`, removes every hook,
    flushes the data and records the final status in ``run.json``.

    Parameters
    ----------
    model : nn.Module
        The model; parameter names come from ``model.named_parameters()``
        (for ``DistributedDataParallel``, from the wrapped module, without ``module.``).
    optimizer : torch.optim.Optimizer, optional
        When given, capture happens in its step hooks. When omitted, call
        :meth:`capture` (or :meth:`begin_step` / :meth:`end_step`) once per step.
    run_dir : path
        Where the run is written; refused if not empty unless ``overwrite`` or
        ``resume``. The probe holds the directory's lock until it detaches: a
        second writer (another process, or ``overwrite=True`` while this one
        writes) is refused with :class:`~goup_probe.store.RunLockedError`.
    every : int, optional
        Capture every ``every``-th optimizer step (default 10). Exclusive with ``schedule``.
    schedule : callable, optional
        ``step -> bool``; see :mod:`goup_probe.schedule`.
    layers : str, sequence of str or callable, optional
        Glob patterns on parameter names (``"layer1.*"``) or a predicate; default all.
    quantities : sequence of str or Quantity
        Which of ``theta_minus_grad``, ``theta``, ``grad``, ``update`` to record,
        plus any :class:`~goup_probe.Quantity` of your own.
    tested : sequence of str
        Quantities that get the full test battery (default X = θ − g only); the
        others get moments, norms and stored samples, which costs far less.
    statistics : sequence of Statistic
        User statistics added to the rows of tested quantities.
    sample_size : int
        Size of the seeded subsample the tests run on; above 5000 it warns
        (Shapiro-Wilk then runs on a seeded 5000 of it).
    keep_samples : int
        How many values of each subsample are stored for histograms and QQ plots.
    keep_sample_steps : int or None
        Sample retention: every captured step stores its samples until this
        many have, then about this many log-spaced steps per tenfold of the
        step count, always the first and the last captured step; None stores
        them at every captured step (:mod:`goup_probe.capture.retention`).
    tracers : int
        Tracer coordinates per tensor recorded at every step for the OU analysis (0: off).
    trajectory_dtype : {"float32", "float64"}
        How tracer trajectories are stored (default float32); the OU fit is float64 either way.
    seed : int
        Seed of the subsample and tracer indices.
    resample : {"fixed", "step"}
        ``"fixed"`` (default): each tensor is tested on the same subsample
        indices at every step, so its per-step results repeat one test;
        ``"step"``: fresh indices per step, seeded by (seed, tensor, step).
    thresholds : VerdictThresholds
        Effect-size thresholds of the verdict.
    overwrite : bool
        Replace an existing run in ``run_dir`` (only what a run consists of).
    resume : bool or int
        Continue the run in ``run_dir`` (a job restarted from a checkpoint):
        ``True`` after its last recorded step, an int N at step N (rows at N or
        later, written after the checkpoint, are dropped first). The step
        counter and schedules continue; ``run.json`` lists each resume.
    strict : bool
        Re-raise errors inside capture instead of recording them and carrying on.
    flush_rows, flush_seconds : int, float
        Buffered rows are written when a table holds ``flush_rows`` of them, and
        all tables at least every ``flush_seconds``.
    precision : {"fast", "float64"}
        How whole-tensor moments are reduced. ``"fast"`` (default) reduces float32
        and 16-bit tensors of 2¹² elements or more in float32, with chunk sums
        added in float64: std within 10⁻⁶ relative, skewness and excess kurtosis
        within 10⁻⁵ of float64 (10⁻⁴ relative on heavy tails), about twice as fast.
        ``"float64"`` converts every value first. The tests on the subsample are
        always float64, and sharded (FSDP2) tensors are always reduced in float64.
    kernel : {"auto", "numba", "eager"}
        Who computes the power sums of CPU float32/float64 tensors. ``"auto"``
        (default): the compiled loop of :mod:`goup_probe.capture.fused` when numba
        is installed (``pip install "goup_probe[fast]"``; float64 sums whatever
        ``precision`` says, about a third of the eager time), else torch operations;
        ``"numba"`` requires it; ``"eager"`` never uses it. ``run.json`` records the one used.
    metadata : mapping, optional
        Extra JSON-serialisable information stored in ``run.json`` under ``"user"``.
    tensorboard : path or SummaryWriter, optional
        Mirror per-layer effect sizes and verdict counts into TensorBoard at each
        captured step (:mod:`goup_probe.integrations.tensorboard`).
    hooks : bool
        With an optimizer, capture in its step hooks (default). ``False`` leaves
        the optimizer alone: a trainer callback calls :meth:`begin_step` and
        :meth:`end_step`, and learning rates are read from its param groups.
    noise : NoiseProbe, optional
        Gradient noise (and curvature) at θ_t on its own schedule, into the ``noise_probe`` table.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
        *,
        run_dir: str | os.PathLike[str],
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.optimizers, self.optimizer_wrappers = optimizer_list(optimizer)
        self.config = ProbeConfig.from_options(**options)
        self.model = model
        self.optimizer = self.optimizers[0] if self.optimizers else None
        """The (first) optimizer; :attr:`optimizers` holds them all."""
        self._run_dir_arg = check_run_dir(run_dir)
        self._hooks = HookSet()
        self._writer: RunWriter | NullWriter | None = None
        self._record: RunRecord | None = None
        self._tracked: list[TrackedParam] = []
        self._groups: list[Group] = []
        self._dispatchers: list[StepDispatcher] = []
        self._detached_at: tuple[int, list[str]] | None = None
        """Steps seen and tensors captured, kept when detaching drops the tensors."""
        self._attached = False
        self._guard = ErrorGuard(
            strict=self.config.strict,
            on_error=weak_callback(self._write_meta),
            describe_target=weak_callback(self._target),
        )
        self._sigterm = SigtermGuard()
        self._dist = DistInfo()
        self._skipping: set[int] = set()
        self._scaler_skips = 0
        self.time = ProbeTime()
        """Seconds spent in the probe so far (see :class:`ProbeTime`)."""

    # ------------------------------------------------------------------ properties
    @property
    def run_dir(self) -> os.PathLike[str] | str:
        """The run directory."""
        return self._writer.path if self._writer is not None else self._run_dir_arg

    @property
    def step(self) -> int:
        """Index of the next optimizer step (number of steps seen so far)."""
        if self._detached_at is not None:
            return self._detached_at[0]
        return max((d.step for d in self._dispatchers), default=0)

    @property
    def tracked(self) -> list[str]:
        """Names of the parameter tensors being captured."""
        if self._detached_at is not None:
            return list(self._detached_at[1])
        return [t.name for t in self._tracked if t.active]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The first errors recorded during capture (also in ``run.json``)."""
        return self._guard.errors

    @property
    def error_count(self) -> int:
        """How many errors were recorded during capture."""
        return self._guard.count

    @property
    def capture_stopped(self) -> bool:
        """Whether capture stopped for good (writing failed, or a passive DDP rank)."""
        return self._guard.capture_disabled

    def _target(self) -> object:
        return self.run_dir

    # ------------------------------------------------------------------ lifecycle
    def attach(self) -> Probe:
        """Validate the model and optimizer, create the run directory, add the hooks."""
        if self._attached:
            raise ProbeError("this probe is already attached")
        if getattr(self.model, _ATTACHED_FLAG, False):
            raise ProbeError(
                f"a goup_probe Probe is already attached to this {type(self.model).__name__}; detach it first"
            )
        self.config.check_schedules()
        self._detached_at = None
        self._dist = detect(unwrap(self.model))
        self._tracked = track_parameters(self.model, self.optimizers, self.config)
        refuse_unshardable(self._tracked, self.config.custom)
        try:
            opened = open_writer(self._run_dir_arg, self.config, self._dist, self._tracked)
        except RankError as exc:
            raise ProbeError(str(exc)) from exc
        self._writer, self._record = opened.writer, RunRecord(opened, self._dist)
        try:
            self._start()
        except BaseException as exc:
            self._hooks.remove()
            self._record.abort()
            self._writer = None
            if isinstance(exc, OSError):  # a full disk, a quota: no half-made run is left behind
                raise RunDirectoryError(
                    f"cannot start a run in {str(self._run_dir_arg)!r}: {exc}; nothing was written there"
                ) from exc
            raise
        object.__setattr__(self.model, _ATTACHED_FLAG, True)
        self._attached = True
        self._thread_warning()
        atexit.register(self._at_exit)
        return self

    def _start(self) -> None:
        """Everything attach does once the run directory is open: strategies, run.json, hooks."""
        if self._dist.passive:  # a replicated (DDP) run's ranks > 0 capture nothing
            self._guard.capture_disabled = True
        ctx = self._context()
        if self.config.tensorboard is not None and self._dist.writes:
            from goup_probe.integrations.tensorboard import TensorBoardMirror

            ctx.rows.listeners.append(TensorBoardMirror(self.config.tensorboard))
        self._dispatchers = [
            StepDispatcher(
                part,
                ctx,
                self.config,
                LocalTracers(part, self._writer) if self._dist.writes else None,
                self.time,
            )
            for part in self._partition()
        ]
        self._groups = [g for d in self._dispatchers for g in d.groups]
        if self.config.noise is not None:  # once per step: on the first optimizer's capture point
            noise = self.config.noise.bind(self.model, self.optimizers, self._writer, self._guard)
            self._dispatchers[0].at_open.append(noise)
        self._record.start(self._initial_meta(), self._tracked, self._dispatchers, self.config.resume)
        if self._uses_hooks:  # never traced: under torch.compile(optimizer.step) the hooks run eagerly
            for index, optimizer in enumerate(self.optimizers):
                pre, post = (
                    functools.partial(self._pre_hook, index),
                    functools.partial(self._post_hook, index),
                )
                self._hooks.add(optimizer.register_step_pre_hook(torch.compiler.disable(pre)))
                self._hooks.add(optimizer.register_step_post_hook(torch.compiler.disable(post)))
        if self.config.backward:
            for steps in self._dispatchers:
                local = [t for t in steps.tracked if t.active and t.shard is None]
                steps.micro = MicroBatchCapture(
                    local, self.config.backward, functools.partial(self._backward_state, steps)
                )
                steps.micro.install(ctx, self._hooks)
            install_rank_noise(self.model, self._steps, self.config)  # DDP: the ranks are the micro-batches

    def _thread_warning(self) -> None:
        """Claim the SIGTERM handler; from a non-main thread it cannot be: warn and record it."""
        if not self._sigterm.install() and (note := warn_if_not_main_thread()) is not None:
            self._record.meta["capture"]["sigterm_handler"] = note
            self._write_meta()

    def _partition(self) -> list[list[TrackedParam]]:
        """The tensors of each dispatcher: one per optimizer with hooks (each steps its own), else one."""
        if not self._uses_hooks or len(self.optimizers) == 1:
            return [self._tracked]
        return [
            [t for t in self._tracked if t.owner == i or (i == 0 and t.owner is None)]
            for i in range(len(self.optimizers))
        ]

    @property
    def _steps(self) -> StepDispatcher:
        """The dispatcher of the manual capture points (the only one without hooks)."""
        return self._dispatchers[0]

    def _context(self) -> CaptureContext:
        return build_context(
            self.config,
            self._writer,
            self._guard,
            self._dist,
            self.optimizers,
            weak_callback(self._count_bytes),
        )

    def detach(self, status: str = "completed", reason: str = "") -> None:
        """Remove every hook, flush all data, record ``status`` in ``run.json``.

        Safe to call more than once; later calls do nothing.
        """
        if not self._attached:
            return
        self._attached = False
        atexit.unregister(self._at_exit)
        self._sigterm.restore()
        try:
            self._hooks.remove()
        finally:
            if getattr(self.model, _ATTACHED_FLAG, False):
                object.__delattr__(self.model, _ATTACHED_FLAG)
            for steps in self._dispatchers:
                if steps.state is not None and not self._uses_hooks:
                    steps.finish()
                steps.state = None  # a step whose post hook never came: drop its snapshots
            try:
                self._close(status, reason)
            finally:
                self._forget_tensors()

    def _forget_tensors(self) -> None:
        """Drop every reference to the model's tensors (strategies, snapshots, tracked parameters).

        Without it the probe's internal reference cycles keep the parameters and
        the optimizer alive until the next garbage collection, after the caller
        dropped them (under DDP the reducer, and with it the process group).
        """
        self._detached_at = (self.step, self.tracked)
        self._dispatchers, self._groups, self._tracked = [], [], []

    def __enter__(self) -> Probe:
        if not self._attached:
            self.attach()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.detach("completed")
        elif issubclass(exc_type, Terminated):
            self.detach("interrupted", "SIGTERM")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.detach("interrupted", "KeyboardInterrupt")
        else:
            self.detach("failed", f"{exc_type.__name__}: {exc}")

    def _at_exit(self) -> None:
        uncaught = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
        if uncaught is not None and not isinstance(uncaught, KeyboardInterrupt | SystemExit):
            self.detach("failed", f"{type(uncaught).__name__}: {uncaught} (uncaught; the interpreter exited)")
        else:
            self.detach("interrupted", "the interpreter exited while the probe was attached")

    def _initial_meta(self) -> dict[str, Any]:
        return probe_meta(
            unwrap(self.model),
            self.optimizers,
            self._tracked,
            mode="hooks" if self._uses_hooks else "manual",
            wrappers=self.optimizer_wrappers,
            config=self.config.describe(),
            dist=self._dist,
            user=self.config.metadata,
        )

    @property
    def _uses_hooks(self) -> bool:
        return bool(self.optimizers) and self.config.hooks

    # ------------------------------------------------------------------ capture points
    def _pre_hook(self, index: int, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> Any:
        """Step pre hook of optimizer ``index``: capture now, or after the closure's first evaluation."""
        steps = self._dispatchers[index] if len(self._dispatchers) > 1 else self._steps
        if steps.state is not None:  # the last optimizer.step() raised after its pre hook
            steps.abandon()
        handoff = scaler_handoff(optimizer)
        if handoff.skipped:  # GradScaler found Inf/NaN: the fused optimizer skips this step
            self._scaler_skips += 1
            self._skipping.add(index)
            return None
        lrs = optimizer_lrs(self.optimizers, steps.tracked)
        wrapped = wrap_step_closure(args, kwargs, lambda: steps.open(lrs, grad_scale=handoff.grad_scale))
        if wrapped is None:  # no closure: the gradient is final now
            steps.open(lrs, grad_scale=handoff.grad_scale)
        return wrapped

    def _post_hook(self, index: int, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        steps = self._dispatchers[index] if len(self._dispatchers) > 1 else self._steps
        if index in self._skipping:  # a step the optimizer skipped is not a step
            self._skipping.discard(index)
            return
        if steps.state is None:  # a closure the optimizer never called: a step without capture
            steps.skip()
            return
        steps.finish()

    def begin_step(self, lr: LearningRates = None, *, global_step: int | None = None) -> None:
        """Capture point of a step, called where the gradient is final (after backward, clipping, unscaling).

        For trainer callbacks and hand-written loops; pair each call with
        :meth:`end_step` after the parameters were updated.

        Parameters
        ----------
        lr : float, mapping or sequence, optional
            The learning rate of this step: one for every tensor, a mapping from
            parameter name, or one per param group of the optimizer. Default: read
            from the optimizer's param groups (NaN without one).
        global_step : int, optional
            The training framework's own step counter, recorded in ``run.json``.

        Raises
        ------
        ProbeError
            When the probe is not attached, captures through the optimizer's
            hooks, or the previous step was not ended.
        """
        self._check_manual("begin_step()")
        if self._steps.state is not None:
            raise ProbeError(f"begin_step() while step {self._steps.step} is open: call end_step() first")
        self._steps.open(resolve_lrs(lr, self.optimizers, self._tracked), global_step)

    def skip_step(self) -> None:
        """Record that the optimizer skips this step (``GradScaler`` found Inf/NaN): not captured or counted.

        For trainer callbacks (instead of :meth:`begin_step`): a skipped step
        updates nothing, so, as with the optimizer-hook capture point, it gets
        no probe step; ``run.json`` counts it in ``scaler_skipped_steps``.
        """
        self._check_manual("skip_step()")
        if self._steps.state is not None:
            raise ProbeError(f"skip_step() while step {self._steps.step} is open: call end_step() first")
        self._scaler_skips += 1

    def end_step(self) -> None:
        """End the step opened by :meth:`begin_step`: measure the update the parameters took."""
        self._check_manual("end_step()")
        if self._steps.state is None:
            raise ProbeError("end_step() without begin_step()")
        self._steps.finish()

    def capture(self, lr: LearningRates = None) -> None:
        """Capture this step by hand (loops without an optimizer), after ``backward()``.

        Call it once per training step, after ``backward()`` and before the
        parameters are updated. The update of a step is measured at the next
        call (or at :meth:`detach`), from the parameters' change in between.

        Parameters
        ----------
        lr : float, mapping or sequence, optional
            The learning rate used for this step (see :meth:`begin_step`).
        """
        self._check_manual("capture()")
        if self._steps.state is not None:
            self._steps.finish()
        self._steps.open(resolve_lrs(lr, self.optimizers, self._tracked))

    def _check_manual(self, what: str) -> None:
        if not self._attached:
            raise ProbeError(f"{what} on a probe that is not attached")
        if self._uses_hooks:
            raise ProbeError(
                f"this probe captures through the optimizer's step hooks; {what} is for loops "
                "without an optimizer, or a probe attached with hooks=False"
            )

    def _backward_state(self, steps: StepDispatcher) -> StepState:
        return steps.backward_state(optimizer_lrs(self.optimizers, steps.tracked))

    def _count_bytes(self, nbytes: int) -> None:
        meta = self._record.meta if self._record is not None else {}
        if nbytes and "distributed" in meta:
            info = meta["distributed"]
            info["bytes_received"] = info.get("bytes_received", 0) + nbytes

    # ------------------------------------------------------------------ closing
    def _progress(self) -> dict[str, Any]:
        """What ``run.json`` says of the run so far: steps, time, errors."""
        progress: dict[str, Any] = {
            "steps": self.step,
            "captured_steps": max((d.captured_steps for d in self._dispatchers), default=0),
            "probe_time": self.time.to_dict(),
            "errors": self._guard.errors,
            "error_count": self._guard.count,
        }
        if self._scaler_skips:
            progress["scaler_skipped_steps"] = self._scaler_skips
        if len(self._dispatchers) > 1:
            progress["steps_per_optimizer"] = [d.step for d in self._dispatchers]
        last = [d.last_global_step for d in self._dispatchers if d.last_global_step is not None]
        if last:
            progress["last_global_step"] = last[-1]
        if self._guard.capture_stopped is not None:
            progress["capture_stopped"] = self._guard.capture_stopped
        notes = [d.micro.noise_note for d in self._dispatchers if d.micro is not None and d.micro.noise_note]
        if notes and self._record is not None:
            self._record.meta["capture"]["grad_noise"] = notes[0]
        return progress

    def _write_meta(self) -> None:
        if self._record is not None and self._writer is not None:
            self._record.update(self._progress())

    def _close_listeners(self) -> None:
        rows = self._dispatchers[0].ctx.rows if self._dispatchers else None
        for listener in rows.listeners if rows is not None else ():
            self._guard.run(self.step, None, "closing listeners", listener.close)

    def _close(self, status: str, reason: str) -> None:
        started = time.perf_counter()
        try:
            if not self._guard.capture_disabled:
                if self._dispatchers:
                    self._dispatchers[0].ctx.rows.flush_held()  # the last captured step's samples
                for steps in self._dispatchers:
                    steps.drain_tracers()
                self._writer.flush()
                if self._dist.writes:
                    self._guard.run(self.step, None, "compacting", self._record.compact)
        except OSError as exc:
            self._guard.record(self.step, None, "final flush", exc)
            status, reason = "failed", f"final flush failed: {exc}"
            warnings.warn(f"goup_probe: {reason}", RuntimeWarning, stacklevel=3)
        finally:
            self._close_listeners()
            self.time.close_seconds += time.perf_counter() - started
            self._record.close(status, reason, self._progress())


def attach(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    run_dir: str | os.PathLike[str],
    every: int | None = None,
    schedule: Any = None,
    layers: LayerSelector = None,
    **options: Any,
) -> Probe:
    """Attach a probe to ``model`` (and its ``optimizer``) and return it, attached.

    Use it as a context manager around the unchanged training loop::

        with gp.attach(model, optimizer, run_dir="runs/exp1", every=10):
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()

    See :class:`Probe` for every option.
    """
    probe = Probe(model, optimizer, run_dir=run_dir, every=every, schedule=schedule, layers=layers, **options)
    return probe.attach()
