"""The probe: attach to a model and its optimizer, capture X = θ − g per tensor.

With an optimizer, the probe hooks ``optimizer.step`` (pre and post hooks), so
it sees exactly what the optimizer uses: accumulated, clipped and unscaled
gradients, each parameter's own learning rate, and only the steps that were
taken (a step skipped by ``GradScaler`` never calls ``optimizer.step``).
Without one, call :meth:`Probe.capture` after ``backward()``.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import functools
import math
import os
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from goup_probe import schedule as schedules
from goup_probe import schema
from goup_probe.capture import distributed as _dist
from goup_probe.capture.batch import (
    MIN_GROUP,
    GroupState,
    group_key,
    reduce_group_components,
    reduce_group_update,
    split_group,
)
from goup_probe.capture.hooks import HookSet
from goup_probe.capture.meta import initial_meta, utc_now
from goup_probe.capture.reduce import (
    Components,
    Reduction,
    flat_view,
    reduce_components,
    reduce_flat,
    reduce_update,
)
from goup_probe.capture.shadow import Snapshot, shadow_from_dot
from goup_probe.capture.signals import SigtermGuard, Terminated
from goup_probe.capture.sums import PRECISIONS
from goup_probe.capture.timing import ProbeTime
from goup_probe.capture.tracers import TracerRecorder, TracerSet
from goup_probe.stats.normality import (
    DEFAULT_THRESHOLDS,
    MAX_TESTED,
    NormalityResult,
    VerdictThresholds,
    assess_sample,
    assess_samples,
)
from goup_probe.store import RunWriter, prepare_run_dir

LayerSelector = str | Sequence[str] | Callable[[str], bool] | None
_MAX_ERRORS_KEPT = 100
_ATTACHED_FLAG = "_goup_probe_attached"


class ProbeError(RuntimeError):
    """Misuse of a probe: attaching twice, capturing on a detached probe, and similar."""


@dataclass
class TrackedParam:
    """One parameter tensor the probe follows, with its fixed seeded indices."""

    name: str
    param: torch.Tensor
    group: int | None
    index: torch.Tensor
    keep: np.ndarray
    tracers: torch.Tensor | None
    skip_status: str | None = None
    skip_reason: str = ""
    shard: _dist.ShardedTensor | None = None
    """Layout of a DTensor (FSDP2) parameter; None for plain tensors."""


@dataclass(frozen=True)
class _Group:
    """Same-size tensors reduced together (see :mod:`goup_probe.capture.batch`)."""

    members: tuple[TrackedParam, ...]
    index: torch.Tensor
    """Members' subsample indices, one row each."""

    @property
    def label(self) -> str:
        names = [m.name for m in self.members]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


@dataclass
class _StepState:
    step: int
    captured: bool
    lrs: dict[str, float] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    groups: list[tuple[_Group, GroupState]] = field(default_factory=list)
    tracer_values: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _stable_seed(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**32)


def _select(names: Iterable[str], layers: LayerSelector) -> set[str]:
    names = list(names)
    if layers is None:
        return set(names)
    if callable(layers):
        return {n for n in names if layers(n)}
    patterns = [layers] if isinstance(layers, str) else list(layers)
    return {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose parameter names are recorded.

    Unwraps ``DistributedDataParallel`` and ``DataParallel`` (``.module``) and
    ``torch.compile``'s wrapper (``._orig_mod``), so names match the plain model.
    """
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _to_float(value: Any) -> float:
    """A learning rate as a float; NaN when the group has none (``lr=None``, no key)."""
    try:
        if isinstance(value, torch.Tensor):
            return float(value.detach().cpu().item())
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return math.nan


class Probe:
    """Captures the distribution of X = θ − g (and θ, g, the update) per parameter tensor.

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
        :meth:`capture` once per step, after ``backward()``.
    run_dir : path
        Where the run is written; refused if not empty unless ``overwrite``.
    every : int, optional
        Capture every ``every``-th optimizer step (default 10). Exclusive with ``schedule``.
    schedule : callable, optional
        ``step -> bool``; see :mod:`goup_probe.schedule`.
    layers : str, sequence of str or callable, optional
        Glob patterns on parameter names (``"layer1.*"``) or a predicate; default all.
    quantities : sequence of str
        Which of ``theta_minus_grad``, ``theta``, ``grad``, ``update`` to record.
    tested : sequence of str
        Quantities that get the full test battery (default X = θ − g only); the
        others get moments, norms and stored samples, which costs far less.
    sample_size : int
        Size of the seeded subsample the tests run on (at most 5000 for Shapiro-Wilk).
    keep_samples : int
        How many values of each subsample are stored for histograms and QQ plots.
    tracers : int
        Tracer coordinates per tensor recorded at every step for the OU analysis (0: off).
    seed : int
        Seed of the subsample and tracer indices.
    thresholds : VerdictThresholds
        Effect-size thresholds of the verdict.
    overwrite : bool
        Replace an existing run in ``run_dir``.
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
    metadata : mapping, optional
        Extra JSON-serialisable information stored in ``run.json`` under ``"user"``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        run_dir: str | os.PathLike[str],
        every: int | None = None,
        schedule: schedules.Schedule | None = None,
        layers: LayerSelector = None,
        quantities: Sequence[str] = schema.QUANTITIES,
        tested: Sequence[str] = (schema.THETA_MINUS_GRAD,),
        sample_size: int = MAX_TESTED,
        keep_samples: int = 1000,
        tracers: int = 256,
        seed: int = 0,
        thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
        overwrite: bool = False,
        strict: bool = False,
        flush_rows: int = 2000,
        flush_seconds: float = 10.0,
        precision: str = "fast",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}"
            )
        unknown = set(quantities) - set(schema.QUANTITIES)
        if unknown or not quantities:
            raise ValueError(f"quantities must be a non-empty subset of {schema.QUANTITIES}")
        if set(tested) - set(schema.QUANTITIES):
            raise ValueError(f"tested must be a subset of {schema.QUANTITIES}")
        if not sample_size >= 8:
            raise ValueError(f"sample_size must be >= 8, got {sample_size}")
        if keep_samples < 0 or tracers < 0:
            raise ValueError("keep_samples and tracers must be >= 0")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedules.resolve(every, schedule)
        self.layers = layers
        self.quantities = tuple(q for q in schema.QUANTITIES if q in quantities)
        self.tested = frozenset(tested)
        self.sample_size = int(sample_size)
        self.keep_samples = int(min(keep_samples, sample_size))
        self.n_tracers = int(tracers)
        self.seed = int(seed)
        self.thresholds = thresholds
        self.precision = precision
        self.strict = strict
        self._run_dir_arg = run_dir
        self._overwrite = overwrite
        self._flush = (flush_rows, flush_seconds)
        self._user_meta = dict(metadata or {})
        self._hooks = HookSet()
        self._writer: RunWriter | None = None
        self._tracked: list[TrackedParam] = []
        self._groups: list[_Group] = []
        self._group_of: dict[str, _Group] = {}
        self._meta: dict[str, Any] = {}
        self._step = 0
        self._captured_steps = 0
        self._state: _StepState | None = None
        self._attached = False
        self._capture_disabled = False
        self.errors: list[dict[str, Any]] = []
        self._error_count = 0
        self._warned: set[tuple[str | None, str, str]] = set()
        self._sigterm = SigtermGuard()
        self._dist = _dist.DistInfo()
        self._tracer_recorder: TracerRecorder | None = None
        self.time = ProbeTime()
        """Seconds spent in the probe so far (see :class:`ProbeTime`)."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def run_dir(self) -> os.PathLike[str] | str:
        """The run directory."""
        return self._writer.path if self._writer is not None else self._run_dir_arg

    @property
    def step(self) -> int:
        """Index of the next optimizer step (number of steps seen so far)."""
        return self._step

    @property
    def tracked(self) -> list[str]:
        """Names of the parameter tensors being captured."""
        return [t.name for t in self._tracked if t.skip_status is None]

    def attach(self) -> Probe:
        """Validate the model and optimizer, create the run directory, add the hooks."""
        if self._attached:
            raise ProbeError("this probe is already attached")
        if getattr(self.model, _ATTACHED_FLAG, False):
            raise ProbeError(
                f"a goup_probe Probe is already attached to this {type(self.model).__name__}; detach it first"
            )
        self._dist = _dist.detect(_unwrap(self.model))
        self._tracked = self._build_tracked()
        self._groups = self._plan_groups()
        self._group_of = {m.name: g for g in self._groups for m in g.members}
        self._writer = self._open_writer()
        local_tracers = [
            TracerSet(t.name, t.param, t.tracers)
            for t in self._tracked
            if t.tracers is not None and t.shard is None
        ]
        if local_tracers and self._dist.writes:
            self._tracer_recorder = TracerRecorder(local_tracers)
        self._meta = self._initial_meta()
        self._writer.write_meta(self._meta)
        self._write_tracer_table()
        if self.optimizer is not None:
            self._hooks.add(self.optimizer.register_step_pre_hook(self._pre_hook))
            self._hooks.add(self.optimizer.register_step_post_hook(self._post_hook))
        object.__setattr__(self.model, _ATTACHED_FLAG, True)
        self._attached = True
        self._sigterm.install()
        atexit.register(self._at_exit)
        return self

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
            if self.optimizer is None and self._state is not None:
                self._finish_step()
            self._state = None  # a step whose post hook never came: drop its snapshots
            self._close(status, reason)

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

    def _open_writer(self) -> RunWriter | _dist.NullWriter:
        """Rank 0 creates the run directory; other ranks get a writer that writes nothing.

        Under ``torch.distributed`` every rank agrees on the outcome (and on which
        sharded layouts are usable), so a failure raises on every rank instead of
        leaving one waiting in a collective. A replicated (DDP) run's ranks > 0 stay
        passive: they capture nothing.
        """
        writer, error = None, None
        if self._dist.writes:
            try:
                path = prepare_run_dir(self._run_dir_arg, overwrite=self._overwrite)
                writer = RunWriter(path, flush_rows=self._flush[0], flush_seconds=self._flush[1])
            except Exception as exc:
                error = exc
        sharded = [t for t in self._tracked if t.shard is not None]
        flags = _dist.agree([error is None] + [t.shard.check(t.param) for t in sharded], self._dist)
        for tracked, ok in zip(sharded, flags[1:], strict=True):
            if not ok:
                tracked.skip_status = schema.STATUS_UNSUPPORTED
                tracked.skip_reason = "the DTensor's local shard does not match its placements"
                tracked.shard, tracked.tracers = None, None
        if error is not None:
            raise error
        if not flags[0]:
            raise ProbeError(f"rank 0 could not create the run directory {self._run_dir_arg}")
        if self._dist.passive:
            self._capture_disabled = True
        return writer if writer is not None else _dist.NullWriter(self._run_dir_arg)

    def _at_exit(self) -> None:
        self.detach("interrupted", "the interpreter exited while the probe was attached")

    # ------------------------------------------------------------------ set-up
    def _build_tracked(self) -> list[TrackedParam]:
        module = _unwrap(self.model)
        named = list(module.named_parameters())  # tied parameters appear once
        if not named:
            raise ValueError(f"{type(module).__name__} has no parameters to probe")
        selected = _select((n for n, _ in named), self.layers)
        if not selected:
            raise ValueError(f"layers={self.layers!r} matches none of the model's parameter names")
        group_of: dict[int, int] = {}
        if self.optimizer is not None:
            for gi, group in enumerate(self.optimizer.param_groups):
                for p in group["params"]:
                    group_of[id(p)] = gi
            model_ids = {id(p) for _, p in named}
            foreign = [p for p in group_of if p not in model_ids]
            if foreign:
                raise ValueError(
                    f"the optimizer holds {len(foreign)} parameter tensor(s) that are not "
                    f"parameters of {type(module).__name__}; attach the probe to the model "
                    "the optimizer trains"
                )
        tracked = []
        for name, param in named:
            if name not in selected:
                continue
            tracked.append(self._track(name, param, group_of.get(id(param))))
        if not any(t.skip_status is None for t in tracked):
            raise ValueError(
                f"{type(module).__name__} has no trainable parameter tensors"
                + ("" if self.layers is None else f" matching layers={self.layers!r}")
                + " (all have requires_grad=False or are not in the optimizer)"
            )
        return tracked

    def _plan_groups(self) -> list[_Group]:
        """Group the small local tensors of equal size, dtype and device."""
        by_key: dict[Any, list[TrackedParam]] = {}
        for tracked in self._tracked:
            if tracked.skip_status is None and tracked.shard is None:
                key = group_key(tracked.param)
                if key is not None:
                    by_key.setdefault(key, []).append(tracked)
        return [
            _Group(tuple(part), torch.stack([m.index for m in part]))
            for key, members in by_key.items()
            for part in split_group(members, key.numel)
            if len(part) >= MIN_GROUP
        ]

    def _track(self, name: str, param: torch.Tensor, group: int | None) -> TrackedParam:
        numel = param.numel()
        rng = np.random.default_rng(_stable_seed(self.seed, name))
        index_np = np.sort(rng.choice(numel, size=min(numel, self.sample_size), replace=False)).astype(
            np.int64
        )
        keep = np.sort(rng.choice(index_np.size, size=min(index_np.size, self.keep_samples), replace=False))
        n_tr = min(numel, self.n_tracers)
        tracers = None
        if n_tr:
            tracers_np = np.sort(rng.choice(numel, size=n_tr, replace=False)).astype(np.int64)
            tracers = torch.from_numpy(tracers_np).to(param.device)
        shard, shard_error = None, ""
        if _dist.is_dtensor(param) and param.requires_grad:
            try:
                shard = _dist.shard_layout(param, index_np, tracers_np if n_tr else None)
            except _dist.UnsupportedLayout as exc:
                shard_error = str(exc)
        status, reason = None, ""
        if not param.requires_grad:
            status, reason = schema.STATUS_FROZEN, "requires_grad is False"
        elif self.optimizer is not None and group is None:
            status, reason = schema.STATUS_FROZEN, "not in the optimizer's param groups"
        elif param.is_complex():
            status, reason = schema.STATUS_UNSUPPORTED, f"complex dtype {param.dtype} is not tested"
        elif shard_error:
            status, reason = schema.STATUS_UNSUPPORTED, shard_error
        return TrackedParam(
            name=name,
            param=param,
            group=group,
            index=torch.from_numpy(index_np).to(param.device),
            keep=keep,
            tracers=tracers if status is None else None,
            skip_status=status,
            skip_reason=reason,
            shard=shard if status is None else None,
        )

    def _initial_meta(self) -> dict[str, Any]:
        capture = {
            "mode": "hooks" if self.optimizer is not None else "manual",
            "schedule": schedules.describe(self.schedule),
            "layers": repr(self.layers) if self.layers is not None else None,
            "quantities": list(self.quantities),
            "tested": sorted(self.tested),
            "sample_size": self.sample_size,
            "keep_samples": self.keep_samples,
            "tracers": self.n_tracers,
            "seed": self.seed,
            "precision": self.precision,
            "thresholds": vars(self.thresholds),
        }
        return initial_meta(
            _unwrap(self.model),
            self.optimizer,
            tracked={t.name for t in self._tracked if t.skip_status is None},
            skipped={t.name: t.skip_reason for t in self._tracked if t.skip_status is not None},
            capture=capture,
            world_size=self._dist.world_size,
            distributed=self._dist.describe(),
            user=self._user_meta,
        )

    def _write_tracer_table(self) -> None:
        rows = [
            {"param": t.name, "coord": t.tracers.cpu().tolist()}
            for t in self._tracked
            if t.tracers is not None
        ]
        if rows:
            self._writer.append("tracers", rows)
            self._writer.flush("tracers")

    # ------------------------------------------------------------------ hooks
    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._state is not None:
            self._abandon_step()
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0] is the optimizer
        if callable(closure) and "closure" not in self._meta.get("warnings", {}):
            message = (
                f"{type(optimizer).__name__}.step(closure) computes its gradient inside step(), after the "
                "probe's pre hook: captured gradients are those left by the previous closure call"
            )
            self._meta.setdefault("warnings", {})["closure"] = message
            warnings.warn(f"goup_probe: {message}", RuntimeWarning, stacklevel=3)
        lrs = {
            t.name: _to_float(optimizer.param_groups[t.group].get("lr"))
            for t in self._tracked
            if t.group is not None
        }
        self._begin_step(lrs)

    def _abandon_step(self) -> None:
        """The last ``optimizer.step()`` raised after its pre hook: close that step without an update.

        Its θ, g and X rows stay (they describe that step's gradient); the update
        was never measured. The step keeps its index, so the next step's rows do
        not collide with it.
        """
        state, self._state = self._state, None
        if self._tracer_recorder is not None:
            self._tracer_recorder.discard()
        self._record_error(
            state.step, None, "optimizer.step", RuntimeError("optimizer.step() raised after the pre hook")
        )
        self._step += 1

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._finish_step()

    def capture(self, lr: float | None = None) -> None:
        """Capture this step by hand (loops without an optimizer), after ``backward()``.

        Call it once per training step, after ``backward()`` and before the
        parameters are updated. The update of a step is measured at the next
        call (or at :meth:`detach`), from the parameters' change in between.

        Parameters
        ----------
        lr : float, optional
            The learning rate used for this step (recorded; no statistic depends on it).
        """
        if not self._attached:
            raise ProbeError("capture() on a probe that is not attached")
        if self.optimizer is not None:
            raise ProbeError(
                "this probe captures through the optimizer's step hooks; capture() is for "
                "loops without an optimizer"
            )
        if self._state is not None:
            self._finish_step()
        value = float("nan") if lr is None else float(lr)
        self._begin_step({t.name: value for t in self._tracked})

    def _charge(self, captured: bool, started: float, *, count: bool) -> None:
        """Add the seconds since ``started`` to the probe's own time."""
        elapsed = time.perf_counter() - started
        if captured:
            self.time.captured_seconds += elapsed
            self.time.captured_steps += count
        else:
            self.time.other_seconds += elapsed
            self.time.other_steps += count

    def _begin_step(self, lrs: dict[str, float]) -> None:
        started = time.perf_counter()
        state = self._open_step(lrs)
        self._charge(state.captured, started, count=False)

    def _open_step(self, lrs: dict[str, float]) -> _StepState:
        step = self._step
        if self._dist.sharded:  # a rank whose writing failed stops every rank, together
            self._capture_disabled = _dist.any_rank(self._capture_disabled, self._dist)
        captured = (not self._capture_disabled) and bool(self.schedule(step))
        state = _StepState(step=step, captured=captured, lrs=lrs)
        self._state = state
        if self._capture_disabled:
            return state
        if self._tracer_recorder is not None:
            self._guard(step, None, "tracers", self._tracer_recorder.before, step)
        if not (captured or self._dist.sharded):  # sharded tracers need every rank every step
            return state
        for tracked in self._tracked:  # model order; a group where its first member stands
            if tracked.skip_status is not None:
                if captured:
                    self._emit_skip(step, tracked, lrs.get(tracked.name, math.nan))
            elif tracked.name in self._group_of:
                if (group := self._group_of[tracked.name]).members[0] is tracked:
                    self._before_group(state, group)
            else:
                self._guard(step, tracked.name, "before step", self._before, state, tracked)
        if captured:
            self._captured_steps += 1
        return state

    def _finish_step(self) -> None:
        state, self._state = self._state, None
        if state is None:
            return
        started = time.perf_counter()
        try:
            # sharded: rank 0 may have stopped mid-step; it still joins this step's collectives
            if state.captured and not self._capture_disabled:
                for group, group_state in state.groups:
                    self._guard(
                        state.step,
                        None,
                        f"grouped update ({group.label})",
                        self._after_group,
                        state,
                        group,
                        group_state,
                    )
            if (state.captured and not self._capture_disabled) or self._dist.sharded:
                for tracked in self._tracked:
                    if tracked.skip_status is None:
                        self._guard(state.step, tracked.name, "after step", self._after, state, tracked)
            if not self._capture_disabled and self._tracer_recorder is not None:
                self._guard(state.step, None, "tracers", self._record_tracers, state)
            if not self._capture_disabled:
                self._guard(state.step, None, "writing", self._maybe_flush)
        finally:
            self._step += 1
            self._charge(state.captured, started, count=True)

    def _record_tracers(self, state: _StepState) -> None:
        self._tracer_recorder.after(state.lrs)
        if self._tracer_recorder.rows >= self._writer.flush_rows:
            self._drain_tracers()

    def _drain_tracers(self) -> None:
        if self._tracer_recorder is not None:
            table = self._tracer_recorder.drain()
            if table is not None:
                self._writer.append_arrow("trajectories", table)

    def _maybe_flush(self) -> None:
        if self._writer.flush_due():
            self._drain_tracers()
            self._writer.flush()

    def _guard(self, step: int, param: str | None, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; an error is recorded (and warned once) and None returned, unless strict."""
        try:
            return fn(*args)
        except OSError as exc:
            if self.strict:
                raise
            self._capture_disabled = True
            self._meta["capture_stopped"] = {"step": step, "reason": f"{type(exc).__name__}: {exc}"}
            self._record_error(step, param, where, exc)
            warnings.warn(
                f"goup_probe: writing to {self.run_dir} failed at step {step} ({exc}); capture "
                "stopped, training continues",
                RuntimeWarning,
                stacklevel=4,
            )
        except Exception as exc:
            if self.strict:
                raise
            self._record_error(step, param, where, exc)
            key = (param, where, type(exc).__name__)
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(
                    f"goup_probe: capture of {param!r} ({where}) at step {step} failed "
                    f"({type(exc).__name__}: {exc}); recorded in run.json, training continues "
                    "(further failures of the same kind are recorded without a warning)",
                    RuntimeWarning,
                    stacklevel=4,
                )

    def _record_error(self, step: int, param: str | None, where: str, exc: BaseException) -> None:
        self._error_count += 1
        if len(self.errors) < _MAX_ERRORS_KEPT:
            self.errors.append(
                {"step": step, "param": param, "where": where, "error": f"{type(exc).__name__}: {exc}"}
            )
        with contextlib.suppress(OSError):
            self._write_meta()

    # ------------------------------------------------------------------ capture
    def _before(self, state: _StepState, tracked: TrackedParam) -> None:
        if tracked.shard is not None:
            self._before_sharded(state, tracked)
            return
        if not self._dist.writes or not state.captured:  # replicated tensors: rank 0 alone
            return
        theta = flat_view(tracked.param)
        grad = tracked.param.grad
        g = flat_view(grad) if grad is not None else None
        lr = state.lrs.get(tracked.name, math.nan)
        if g is None:
            self._emit_components(
                state.step,
                tracked,
                lr,
                reduce_flat(theta, tracked.index, precision=self.precision),
                None,
                None,
                "grad is None at this step (parameter unused in the forward pass?)",
            )
            return
        parts = reduce_components(theta, g, tracked.index, precision=self.precision)
        self._emit_reduced(state, tracked, parts, theta.clone() if schema.UPDATE in self.quantities else None)

    def _emit_reduced(
        self,
        state: _StepState,
        tracked: TrackedParam,
        parts: Components,
        theta_before: torch.Tensor | None,
        results: Mapping[str, NormalityResult] | None = None,
    ) -> None:
        """Rows of θ, g and X of a captured step, and the snapshot its update will be measured from."""
        lr = state.lrs.get(tracked.name, math.nan)
        self._emit_components(state.step, tracked, lr, parts.theta, parts.grad, parts.x, "", results)
        if theta_before is not None:
            state.snapshots[tracked.name] = Snapshot(
                theta=theta_before,
                lr=lr,
                grad_norm=parts.grad.norm,
                param_norm=parts.theta.norm,
                x_std=parts.x.moments.std,
                numel=tracked.param.numel(),
                theta_sample=parts.theta.sample,
            )

    def _before_group(self, state: _StepState, group: _Group) -> None:
        """:meth:`_before` for a group of same-size tensors, reduced together.

        If the grouped reduction cannot be used (a gradient is missing, a
        subsample holds NaN/Inf, or it fails), each member is reduced on its
        own, so every member still gets its rows or its own error.
        """
        if not self._dist.writes or not state.captured:
            return
        members = group.members
        grads = [m.param.grad for m in members]
        result = None
        if all(g is not None for g in grads):
            result = self._guard(
                state.step,
                None,
                f"grouped reduction ({group.label})",
                functools.partial(reduce_group_components, precision=self.precision),
                [m.param for m in members],
                grads,
                group.index,
            )
        if result is None:
            for tracked in members:
                self._guard(state.step, tracked.name, "before step", self._before, state, tracked)
            return
        components, group_state = result
        if self.optimizer is None:  # no shadow columns without an optimizer: do not hold g
            group_state.grad = None
        by_quantity = {
            schema.THETA_MINUS_GRAD: [c.x for c in components],
            schema.THETA: [c.theta for c in components],
            schema.GRAD: [c.grad for c in components],
        }
        tested = (
            self._guard(state.step, None, f"grouped tests ({group.label})", self._assess_group, by_quantity)
            or {}
        )
        keep = schema.UPDATE in self.quantities
        for i, (tracked, parts) in enumerate(zip(members, components, strict=True)):
            before = group_state.theta[i] if keep else None
            results = {quantity: rows[i] for quantity, rows in tested.items()}
            self._guard(
                state.step,
                tracked.name,
                "before step",
                self._emit_reduced,
                state,
                tracked,
                parts,
                before,
                results,
            )
        if keep:
            state.groups.append((group, group_state))

    def _after_group(self, state: _StepState, group: _Group, group_state: GroupState) -> None:
        """The update rows of a group, reduced together; members left over take :meth:`_after`.

        The shadow columns use g as the optimizer used it: the copy taken before
        the step (the per-member fallback reads ``param.grad`` after it, which is
        the same unless the optimizer rewrites ``.grad`` in place).
        """
        members = [m for m in group.members if m.name in state.snapshots]
        if len(members) != len(group.members):  # a member's rows failed: all go one by one
            return
        result = self._guard(
            state.step,
            None,
            f"grouped update ({group.label})",
            reduce_group_update,
            [m.param for m in members],
            group_state,
            group.index,
        )
        if result is None:
            return
        tested = self._guard(
            state.step,
            None,
            f"grouped tests ({group.label})",
            self._assess_group,
            {schema.UPDATE: [r for r, _ in result]},
        )
        updates = (tested or {}).get(schema.UPDATE, [None] * len(members))
        for tracked, (red_update, dot), tests in zip(members, result, updates, strict=True):
            snap = state.snapshots.pop(tracked.name)
            shadow_dot = dot if group_state.grad is not None else None
            self._guard(
                state.step,
                tracked.name,
                "after step",
                self._emit_update,
                state,
                tracked,
                snap,
                red_update,
                shadow_dot,
                tests,
            )

    def _emit_update(
        self,
        state: _StepState,
        tracked: TrackedParam,
        snap: Snapshot,
        update: Reduction,
        dot: float | None,
        result: NormalityResult | None = None,
    ) -> None:
        """The update row of a captured step; with Σ Δ·g (``dot``), its shadow-fidelity columns."""
        shadow = shadow_from_dot(dot, snap, update.norm) if dot is not None else {}
        self._emit(
            state.step,
            tracked,
            schema.UPDATE,
            snap.lr,
            update,
            snap.param_norm,
            snap.grad_norm,
            extra=shadow,
            result=result,
        )

    def _assess_group(
        self, by_quantity: Mapping[str, Sequence[Reduction]]
    ) -> dict[str, list[NormalityResult]]:
        """The tests of every recorded quantity of a group's members, run on all members at once."""
        return {
            quantity: assess_samples(
                [r.moments for r in reductions],
                np.stack([r.sample for r in reductions]),
                axis=schema.AXIS_POOLED,
                thresholds=self.thresholds,
                tested=quantity in self.tested,
            )
            for quantity, reductions in by_quantity.items()
            if quantity in self.quantities
        }

    def _emit_components(
        self,
        step: int,
        tracked: TrackedParam,
        lr: float,
        theta: Reduction,
        grad: Reduction | None,
        x: Reduction | None,
        no_grad_reason: str,
        results: Mapping[str, NormalityResult] | None = None,
    ) -> None:
        """Rows of X = θ − g, θ and g at a captured step; X and g get a status row without a gradient."""
        param_norm = theta.norm
        if grad is None or x is None:
            self._emit(step, tracked, schema.THETA, lr, theta, param_norm, math.nan)
            for quantity in (schema.THETA_MINUS_GRAD, schema.GRAD):
                self._emit_status(step, tracked, quantity, lr, schema.STATUS_NO_GRAD, no_grad_reason)
            return
        grad_norm = grad.norm
        results = results or {}
        for quantity, reduction in ((schema.THETA_MINUS_GRAD, x), (schema.THETA, theta), (schema.GRAD, grad)):
            result = results.get(quantity)
            self._emit(step, tracked, quantity, lr, reduction, param_norm, grad_norm, result=result)

    def _after(self, state: _StepState, tracked: TrackedParam) -> None:
        if tracked.shard is not None:
            self._after_sharded(state, tracked)
            return
        if not self._dist.writes:
            return
        snap = state.snapshots.pop(tracked.name, None)
        if snap is None:
            return
        grad = tracked.param.grad
        with_shadow = grad is not None and self.optimizer is not None
        red_update, dot = reduce_update(
            flat_view(tracked.param),
            snap.theta,
            flat_view(grad) if with_shadow else None,
            tracked.index,
            precision=self.precision,
            old_sample=snap.theta_sample,
        )
        self._emit_update(state, tracked, snap, red_update, dot if with_shadow else None)

    # ------------------------------------------------------------------ sharded (FSDP2)
    def _before_sharded(self, state: _StepState, tracked: TrackedParam) -> None:
        """:meth:`_before` for a DTensor: every rank reduces its shard, rank 0 writes.

        Everything that decides which collectives follow (tracer values, the
        snapshot) is settled before rank 0 alone does any work.
        """
        shard = tracked.shard
        theta = shard.local(tracked.param)
        grad = tracked.param.grad
        g = shard.local(grad) if grad is not None else None
        res = _dist.reduce_before(
            shard, theta, g, captured=state.captured, tracers=tracked.tracers is not None
        )
        self._count_bytes(res.bytes_received)
        if res.tracer_theta is not None:
            state.tracer_values[tracked.name] = (res.tracer_theta, res.tracer_grad)
        if not state.captured:
            return
        lr = state.lrs.get(tracked.name, math.nan)
        if res.grad is not None and schema.UPDATE in self.quantities:
            state.snapshots[tracked.name] = Snapshot(
                theta=theta.clone(),
                lr=lr,
                grad_norm=res.grad.norm,
                param_norm=res.theta.norm,
                x_std=res.x.moments.std,
                numel=shard.numel,
            )
        if self._dist.writes:
            self._emit_components(
                state.step,
                tracked,
                lr,
                res.theta,
                res.grad,
                res.x,
                "grad is None at this step on at least one rank",
            )

    def _after_sharded(self, state: _StepState, tracked: TrackedParam) -> None:
        """:meth:`_after` for a DTensor (one collective on every rank, rank 0 writes)."""
        shard = tracked.shard
        tracer = state.tracer_values.pop(tracked.name, None)
        snap = state.snapshots.pop(tracked.name, None)
        grad = tracked.param.grad
        res = _dist.reduce_after(
            shard,
            shard.local(tracked.param),
            snap.theta if snap is not None else None,
            shard.local(grad) if grad is not None else None,
            tracers=tracer is not None,
        )
        self._count_bytes(res.bytes_received)
        if not self._dist.writes or self._capture_disabled:
            return
        if tracer is not None:
            self._writer.append(
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
        with_shadow = grad is not None and self.optimizer is not None
        self._emit_update(state, tracked, snap, res.update, res.dot if with_shadow else None)

    def _count_bytes(self, nbytes: int) -> None:
        if nbytes and "distributed" in self._meta:
            info = self._meta["distributed"]
            info["bytes_received"] = info.get("bytes_received", 0) + nbytes

    # ------------------------------------------------------------------ rows
    def _emit(
        self,
        step: int,
        tracked: TrackedParam,
        quantity: str,
        lr: float,
        reduction: Reduction,
        param_norm: float,
        grad_norm: float,
        extra: Mapping[str, float] | None = None,
        result: NormalityResult | None = None,
    ) -> None:
        """One stats row (and its stored sample); ``result`` when the tests already ran (groups)."""
        if quantity not in self.quantities:
            return
        if result is None:
            result = assess_sample(
                reduction.moments,
                reduction.sample,
                axis=schema.AXIS_POOLED,
                thresholds=self.thresholds,
                tested=quantity in self.tested,
            )
        row = self._row(step, tracked.name, quantity, lr, result, param_norm, grad_norm)
        if extra:
            row.update(extra)
        self._writer.append("stats", [row])
        if self.keep_samples:
            kept = (
                reduction.sample[tracked.keep]
                if tracked.keep.size <= reduction.sample.size
                else reduction.sample
            )
            self._writer.append(
                "samples",
                [
                    {
                        "step": step,
                        "param": tracked.name,
                        "quantity": quantity,
                        "values": kept.astype(np.float32),
                    }
                ],
            )

    @staticmethod
    def _row(
        step: int,
        param: str,
        quantity: str,
        lr: float,
        result: NormalityResult | None,
        param_norm: float,
        grad_norm: float,
    ) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(schema.STATS_COLUMNS)
        if result is not None:
            row.update(result.to_dict())
        ratio = grad_norm / param_norm if param_norm and math.isfinite(grad_norm) else math.nan
        row.update(
            step=step,
            param=param,
            quantity=quantity,
            axis=schema.AXIS_POOLED,
            lr=lr,
            param_norm=param_norm,
            grad_norm=grad_norm,
            grad_to_param=ratio,
        )
        return row

    def _emit_status(
        self, step: int, tracked: TrackedParam, quantity: str, lr: float, status: str, reason: str
    ) -> None:
        if quantity not in self.quantities:
            return
        row = self._row(step, tracked.name, quantity, lr, None, math.nan, math.nan)
        row.update(
            status=status,
            reason=reason,
            numel=tracked.param.numel(),
            n_tested=0,
            verdict=schema.VERDICT_NOT_TESTED,
        )
        self._writer.append("stats", [row])

    def _emit_skip(self, step: int, tracked: TrackedParam, lr: float) -> None:
        self._guard(
            step,
            tracked.name,
            "skip row",
            self._emit_status,
            step,
            tracked,
            schema.THETA_MINUS_GRAD,
            lr,
            tracked.skip_status,
            tracked.skip_reason,
        )

    # ------------------------------------------------------------------ closing
    def _write_meta(self) -> None:
        self._meta.update(
            steps=self._step,
            captured_steps=self._captured_steps,
            probe_time=self.time.to_dict(),
            errors=self.errors,
            error_count=self._error_count,
        )
        self._writer.write_meta(self._meta)

    def _close(self, status: str, reason: str) -> None:
        started = time.perf_counter()
        try:
            if not self._capture_disabled:
                self._drain_tracers()
                self._writer.flush()
        except OSError as exc:
            self._record_error(self._step, None, "final flush", exc)
            status, reason = "failed", f"final flush failed: {exc}"
            warnings.warn(f"goup_probe: {reason}", RuntimeWarning, stacklevel=3)
        finally:
            self.time.close_seconds += time.perf_counter() - started
            self._meta.update(status=status, status_reason=reason, ended_at=utc_now())
            try:
                self._write_meta()
            except OSError as exc:
                warnings.warn(
                    f"goup_probe: cannot write {self.run_dir}/run.json: {exc}", RuntimeWarning, stacklevel=3
                )


def attach(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    run_dir: str | os.PathLike[str],
    every: int | None = None,
    schedule: schedules.Schedule | None = None,
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
