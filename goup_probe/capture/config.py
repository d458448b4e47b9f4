"""The probe's options, validated once: :class:`ProbeConfig`.

:func:`goup_probe.attach` and :class:`~goup_probe.Probe` take these options as
keywords; both build one ``ProbeConfig``, so each option is checked in one place.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from goup_probe import schedule as schedules
from goup_probe import schema
from goup_probe.capture.fused import resolve_kernel
from goup_probe.capture.quantities import FUSED, PHASE_BACKWARD, Quantity, resolve_quantities
from goup_probe.capture.retention import DEFAULT_KEEP_SAMPLE_STEPS
from goup_probe.capture.sums import PRECISIONS
from goup_probe.stats.normality import DEFAULT_THRESHOLDS, MAX_TESTED, VerdictThresholds

LayerSelector = str | Sequence[str] | Callable[[str], bool] | None

TRAJECTORY_DTYPES = ("float32", "float64")
"""How tracer trajectories are stored (the OU fit is float64 either way)."""
RESAMPLE_MODES = ("fixed", "step")
"""How the subsample indices are drawn: once per tensor, or afresh at each step (ProbeConfig.resample)."""

_MAX_METADATA_DEPTH = 64
"""Deepest nesting of ``metadata`` accepted (far below the JSON encoder's recursion limit)."""

_RUN_FILES_RESERVE = 64
"""Bytes a run directory's path must leave free for the names the run writes inside it
(``<table>/part-000001.parquet``, temporary ``.run.json.*.tmp`` files)."""

_FALLBACK_NAME_MAX, _FALLBACK_PATH_MAX = 255, 4096


def _int_option(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``; floats and bools are refused, not truncated."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value.__index__())
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def as_bool(value: Any, who: str) -> bool:
    """A schedule's answer as a bool; anything but a bool (or 0/1, numpy bools) is refused.

    Raises
    ------
    TypeError
        Naming ``who``.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{who} must return True or False for a step, got {type(value).__name__}: {value!r:.60}")


def check_run_dir(run_dir: Any) -> str | os.PathLike[str]:
    """Refuse a ``run_dir`` that cannot name a directory, before anything is created; return it unchanged.

    ``run_dir`` must be a ``str`` or an ``os.PathLike`` whose ``__fspath__`` gives a
    ``str`` (``bytes`` paths are refused: the run records its path as text); it must
    not be empty (``""`` would mean the current directory), hold a NUL character
    or a character the file system encoding cannot write (a lone surrogate), and
    each of its components must fit the file system's ``PC_NAME_MAX`` and the
    whole absolute path, with 64 bytes to spare for the run's own files, its
    ``PC_PATH_MAX`` (both read with :func:`os.pathconf` on the nearest existing
    ancestor; 255 and 4096 where that is not available).

    Raises
    ------
    TypeError
        When ``run_dir`` is not a str or path (None, an int, bytes).
    ValueError
        When it is empty, holds NUL or an unencodable character, or is too long; the message names run_dir.
    """
    if isinstance(run_dir, bytes) or not isinstance(run_dir, str | os.PathLike):
        raise TypeError(
            f"run_dir must be a str or os.PathLike path, got {type(run_dir).__name__}: {run_dir!r:.80}"
        )
    text = os.fspath(run_dir)
    if not isinstance(text, str):
        raise TypeError(
            f"run_dir must be a text path; its __fspath__ gave {type(text).__name__}: {text!r:.80}"
        )
    if not text:
        raise ValueError("run_dir must not be empty (it would mean the current directory)")
    if "\0" in text:
        raise ValueError(f"run_dir must not contain a NUL character, got {text!r:.120}")
    try:
        encoded = os.fsencode(os.path.abspath(text))
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"run_dir {text!r:.120} holds a character the file system cannot store: {exc}"
        ) from exc
    name_max, path_max = _path_limits(os.path.abspath(text))
    for part in encoded.split(os.fsencode(os.sep)):
        if len(part) > name_max:
            raise ValueError(
                f"run_dir {text!r:.120} has a component of {len(part)} bytes; "
                f"the file system allows {name_max} (PC_NAME_MAX)"
            )
    if len(encoded) + _RUN_FILES_RESERVE >= path_max:
        raise ValueError(
            f"run_dir {text!r:.120} is {len(encoded)} bytes long as an absolute path; with "
            f"{_RUN_FILES_RESERVE} bytes for the run's own files it must stay under {path_max} (PC_PATH_MAX)"
        )
    return run_dir


def _path_limits(path: str) -> tuple[int, int]:
    """``PC_NAME_MAX`` and ``PC_PATH_MAX`` where ``path`` would be created (its nearest existing ancestor)."""
    pathconf = getattr(os, "pathconf", None)
    existing = os.path.dirname(path)
    while existing and not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    limits = []
    for key, fallback in (("PC_NAME_MAX", _FALLBACK_NAME_MAX), ("PC_PATH_MAX", _FALLBACK_PATH_MAX)):
        try:
            value = pathconf(existing, key) if pathconf is not None else -1
        except (OSError, ValueError):
            value = -1
        limits.append(value if value > 0 else fallback)
    return limits[0], limits[1]


def check_metadata(metadata: Any) -> dict[str, Any]:
    """``metadata`` as ``run.json`` will store it, checked now: a plain, acyclic copy of JSON values.

    Accepted: a mapping with ``str`` keys whose values are None, bool, int,
    float, str, lists, tuples (stored as lists) and mappings of the same,
    nested at most 64 deep. Two conversions are made: numpy scalars
    (``np.float32(0.1)``, ``np.int64(3)``, ``np.bool_``, ``np.str_``) become the
    Python value of ``.item()``, and ``os.PathLike`` values their ``str`` path.
    Everything else is refused, naming its place (``metadata['a']['b'][0]``):
    tensors and numpy arrays (store ``.item()`` or ``.tolist()``), sets, bytes,
    arbitrary objects, non-str keys (JSON would turn ``1`` and ``"1"`` into the
    same key) and cycles. The copy is taken at attach: changing the caller's
    mapping later does not change the run.

    Raises
    ------
    TypeError
        When ``metadata`` is not a mapping, or a key or value cannot be stored.
    ValueError
        When it holds a cycle or is nested too deeply.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    return _json_value(metadata, "metadata", ())


def _json_value(value: Any, where: str, ancestors: tuple[tuple[int, str], ...]) -> Any:
    """``value`` as JSON (see :func:`check_metadata`); ``where`` names it, ``ancestors`` its containers."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.bool_ | np.integer | np.floating | np.str_):
        return value.item()
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str):
            return path
    if isinstance(value, Mapping | list | tuple):
        outer = next((name for key, name in ancestors if key == id(value)), None)
        if outer is not None:
            raise ValueError(f"{where} refers back to {outer} (a cycle); run.json can store only a tree")
        if len(ancestors) >= _MAX_METADATA_DEPTH:
            raise ValueError(f"metadata is nested more than {_MAX_METADATA_DEPTH} deep, at {where:.120}")
        inner = (*ancestors, (id(value), where))
        if not isinstance(value, Mapping):
            return [_json_value(v, f"{where}[{i}]", inner) for i, v in enumerate(value)]
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has a key of type {type(key).__name__} ({key!r:.60}); keys must be str"
                )
            out[key] = _json_value(v, f"{where}[{key!r}]", inner)
        return out
    kind = type(value).__name__
    hint = " (store .item() or .tolist())" if hasattr(value, "tolist") else ""
    raise TypeError(f"{where} is a {kind}, which run.json cannot store{hint}: {value!r:.60}")


def check_layers(layers: Any) -> LayerSelector:
    """Refuse a ``layers`` selector that is not None, a glob pattern, patterns, or a predicate.

    A pattern iterable that is not a list or tuple (a set, a generator) is
    returned as a tuple, so it can be matched and recorded.

    Raises
    ------
    TypeError
        Naming ``layers`` and the first entry that is not a str.
    """
    if layers is None or isinstance(layers, str) or callable(layers):
        return layers
    if isinstance(layers, bytes) or not isinstance(layers, Iterable):
        raise TypeError(
            "layers must be a glob pattern, a sequence of patterns or a predicate on names, "
            f"got {type(layers).__name__}: {layers!r:.60}"
        )
    patterns = layers if isinstance(layers, list | tuple) else tuple(layers)
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            raise TypeError(
                f"layers[{i}] must be a str glob pattern, got {type(pattern).__name__}: {pattern!r:.60}"
            )
    return patterns


def _warn_large_sample(sample_size: int) -> None:
    if sample_size > MAX_TESTED:
        warnings.warn(
            f"sample_size={sample_size} is above {MAX_TESTED}: Shapiro-Wilk, whose p-values are valid only "
            f"up to n = {MAX_TESTED} and whose rejection is one input of the verdict, runs on a seeded "
            f"{MAX_TESTED} of each subsample, and qq_r's critical value is extrapolated; the other tests, "
            "the effect sizes and the verdict's tail/asymmetry tests and closeness bounds use all values",
            UserWarning,
            stacklevel=4,
        )


@dataclass(frozen=True)
class ProbeConfig:
    """Every option of a probe, validated (see :class:`~goup_probe.Probe` for their meaning)."""

    schedule: schedules.Schedule = field(default_factory=lambda: schedules.every(10))
    layers: LayerSelector = None
    quantities: tuple[Quantity, ...] = ()
    tested: frozenset[str] = frozenset({schema.THETA_MINUS_GRAD})
    statistics: tuple[Any, ...] = ()
    sample_size: int = MAX_TESTED
    keep_samples: int = 1000
    keep_sample_steps: int | None = DEFAULT_KEEP_SAMPLE_STEPS
    """Sample retention: every captured step stores its samples until this many have, then about this
    many log-spaced steps per tenfold of the step count, always the first and the last captured step
    (:mod:`goup_probe.capture.retention`); None stores them at every captured step."""
    tracers: int = 256
    trajectory_dtype: str = "float32"
    """How tracer trajectories are stored: "float32" (default; exact for float32/16-bit parameters) or
    "float64". Readers and the OU fit work in float64 either way."""
    tracer_schedule: schedules.Schedule = field(default_factory=lambda: schedules.every(1))
    seed: int = 0
    resample: str = "fixed"
    """Subsample indices: "fixed" (default) draws them once per tensor from (seed, tensor), so every
    captured step tests the same coordinates and a tensor's p-values at successive steps are one test
    repeated (a tensor flagged once is flagged at every step); "step" draws fresh indices at every step
    from (seed, tensor, step), so steps test different coordinates (and the same (seed, step) the same
    ones). Either way, correct across tensors per step (goup_probe.stats.multiplicity), not over steps."""
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS
    overwrite: bool = False
    resume: bool | int = False
    """Continue the run already in ``run_dir``: True after its last recorded step, an int at that
    step (rows at it or later are dropped first); False starts a new run."""
    strict: bool = False
    flush_rows: int = 2000
    flush_seconds: float = 10.0
    precision: str = "fast"
    kernel: str = "auto"
    """Who computes the power sums of CPU tensors: "numba" (the compiled loop of
    goup_probe.capture.fused), "eager" (torch operations), or "auto": numba where it is
    installed. :meth:`from_options` stores the resolved choice, so run.json names the one used."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    hooks: bool = True
    tensorboard: Any = None
    noise: Any = None
    """A :class:`~goup_probe.NoiseProbe` measuring the gradient noise at θ_t on its own schedule, or None."""

    @classmethod
    def from_options(
        cls,
        *,
        every: int | None = None,
        schedule: schedules.Schedule | None = None,
        layers: LayerSelector = None,
        quantities: Sequence[str | Quantity] = schema.QUANTITIES,
        tested: Sequence[str] = (schema.THETA_MINUS_GRAD,),
        statistics: Sequence[Any] = (),
        sample_size: int = MAX_TESTED,
        keep_samples: int = 1000,
        keep_sample_steps: int | None = DEFAULT_KEEP_SAMPLE_STEPS,
        tracers: int = 256,
        trajectory_dtype: str = "float32",
        seed: int = 0,
        resample: str = "fixed",
        thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
        overwrite: bool = False,
        resume: bool | int = False,
        strict: bool = False,
        flush_rows: int = 2000,
        flush_seconds: float = 10.0,
        precision: str = "fast",
        kernel: str = "auto",
        metadata: Mapping[str, Any] | None = None,
        hooks: bool = True,
        tensorboard: Any = None,
        noise: Any = None,
    ) -> ProbeConfig:
        """Validate the keyword options of :func:`~goup_probe.attach`.

        Counts (``sample_size``, ``keep_samples``, ``tracers``, ``flush_rows``) and
        ``seed`` must be integers (floats and bools are refused, not truncated).
        ``sample_size`` above 5000 is accepted with a ``UserWarning``: Shapiro-Wilk
        (whose p < α is one way a row is rejected; see
        :class:`goup_probe.stats.equivalence.VerdictThresholds`) still runs on a
        seeded 5000 of each subsample (its p-values are valid only up to there). ``layers`` is checked by
        :func:`check_layers` and ``metadata`` by :func:`check_metadata` (a plain
        JSON copy is kept). ``resample`` is ``"fixed"`` (default: the same
        subsample indices at every step, so per-step results of a tensor repeat
        one test) or ``"step"`` (fresh indices per step, seeded by (seed,
        tensor, step)); see :attr:`ProbeConfig.resample`.

        Raises
        ------
        TypeError, ValueError
            Naming the offending option.
        """
        resolved = resolve_quantities(quantities)
        names = {q.name for q in resolved}
        tested_names = frozenset(tested) | {q.name for q in resolved if q.tested}
        if isinstance(tested, str) or tested_names - names - set(schema.QUANTITIES):
            raise ValueError(
                f"tested must be a subset of the recorded quantities {sorted(names)}, got {tested!r}"
            )
        sample_size = _int_option("sample_size", sample_size, 8)
        _warn_large_sample(sample_size)
        keep_samples = _int_option("keep_samples", keep_samples, 0)
        tracers = _int_option("tracers", tracers, 0)
        if keep_sample_steps is not None:
            keep_sample_steps = _int_option("keep_sample_steps", keep_sample_steps, 1)
        if trajectory_dtype not in TRAJECTORY_DTYPES:
            raise ValueError(f"trajectory_dtype must be one of {TRAJECTORY_DTYPES}, got {trajectory_dtype!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        kernel = resolve_kernel(kernel)
        if not isinstance(thresholds, VerdictThresholds):
            raise TypeError(f"thresholds must be a VerdictThresholds, got {type(thresholds).__name__}")
        for option, value in (("overwrite", overwrite), ("strict", strict), ("hooks", hooks)):
            if not isinstance(value, bool):
                raise TypeError(f"{option} must be True or False, got {value!r}")
        flush_rows = _int_option("flush_rows", flush_rows, 1)
        if not isinstance(resume, bool):
            resume = _int_option("resume", resume, 0)
        if resume is not False and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run, or replace it")
        if isinstance(flush_seconds, bool) or not isinstance(flush_seconds, int | float):
            raise TypeError(f"flush_seconds must be a number of seconds, got {flush_seconds!r}")
        if math.isnan(flush_seconds) or flush_seconds < 0:
            raise ValueError(f"flush_seconds must be >= 0, got {flush_seconds!r}")
        if tensorboard is not None and not (
            isinstance(tensorboard, str | os.PathLike) or hasattr(tensorboard, "add_scalar")
        ):
            raise TypeError(
                f"tensorboard must be a log directory or a SummaryWriter, got {type(tensorboard).__name__}"
            )
        if noise is not None:
            from goup_probe.noise.probe import NoiseProbe

            if not isinstance(noise, NoiseProbe):
                raise TypeError(f"noise must be a goup_probe.NoiseProbe or None, got {type(noise).__name__}")
        metadata = check_metadata(metadata)
        layers = check_layers(layers)
        seed = _int_option("seed", seed, -(2**63))
        if not isinstance(resample, str) or resample not in RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
        return cls(
            schedule=schedules.resolve(every, schedule),
            layers=layers,
            quantities=resolved,
            tested=tested_names,
            statistics=tuple(statistics),
            sample_size=sample_size,
            keep_samples=min(keep_samples, sample_size),
            keep_sample_steps=keep_sample_steps,
            tracers=tracers,
            trajectory_dtype=trajectory_dtype,
            seed=seed,
            resample=resample,
            thresholds=thresholds,
            overwrite=overwrite,
            resume=resume,
            strict=strict,
            flush_rows=flush_rows,
            flush_seconds=float(flush_seconds),
            precision=precision,
            kernel=kernel,
            metadata=metadata,
            hooks=hooks,
            tensorboard=tensorboard,
            noise=noise,
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the recorded quantities."""
        return tuple(q.name for q in self.quantities)

    @property
    def custom(self) -> tuple[Quantity, ...]:
        """The quantities reduced by the generic path (``fn`` then one reduction): all but the fused four."""
        return tuple(q for q in self.quantities if q.name not in FUSED)

    @property
    def backward(self) -> tuple[Quantity, ...]:
        """Quantities computed during backward, per micro-batch."""
        return tuple(q for q in self.quantities if q.phase == PHASE_BACKWARD)

    def due(self, step: int) -> frozenset[str]:
        """Names of the quantities captured at ``step`` (each by its own schedule or the probe's).

        Raises
        ------
        TypeError
            When a schedule returns something other than True or False.
        """
        default = as_bool(self.schedule(step), "schedule")
        return frozenset(
            q.name
            for q in self.quantities
            if (as_bool(q.schedule(step), f"the schedule of quantity {q.name!r}") if q.schedule else default)
        )

    def check_schedules(self) -> None:
        """Call every schedule at step 0 and refuse one that raises or does not return a bool.

        Raises
        ------
        TypeError, ValueError
            Naming the schedule.
        """
        for who, schedule in [("schedule", self.schedule)] + [
            (f"the schedule of quantity {q.name!r}", q.schedule) for q in self.quantities if q.schedule
        ]:
            try:
                value = schedule(0)
            except Exception as exc:
                raise ValueError(f"{who} raised at step 0: {type(exc).__name__}: {exc}") from exc
            as_bool(value, who)

    def describe(self) -> dict[str, Any]:
        """The ``capture`` entry of ``run.json``."""
        from goup_probe.capture.quantities import describe

        return {
            "schedule": schedules.describe(self.schedule),
            "layers": repr(self.layers) if self.layers is not None else None,
            "quantities": list(self.names),
            "quantity_declarations": describe(self.custom),
            "statistics": [getattr(s, "name", repr(s)) for s in self.statistics],
            "tested": sorted(self.tested),
            "sample_size": self.sample_size,
            "keep_samples": self.keep_samples,
            "keep_sample_steps": self.keep_sample_steps,
            "tracers": self.tracers,
            "trajectory_dtype": self.trajectory_dtype,
            "tracer_schedule": schedules.describe(self.tracer_schedule),
            "seed": self.seed,
            "resample": self.resample,
            "precision": self.precision,
            "kernel": self.kernel,
            "thresholds": vars(self.thresholds),
            "noise_probe": self.noise.describe() if self.noise is not None else None,
        }
