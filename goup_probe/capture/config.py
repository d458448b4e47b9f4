"""The probe's options, validated once: :class:`ProbeConfig`.

:func:`goup_probe.attach` and :class:`~goup_probe.Probe` take these options as
keywords; both build one ``ProbeConfig``, so each option is checked in one place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from goup_probe import schedule as schedules
from goup_probe import schema
from goup_probe.capture.quantities import FUSED, PHASE_BACKWARD, Quantity, resolve_quantities
from goup_probe.capture.sums import PRECISIONS
from goup_probe.stats.normality import DEFAULT_THRESHOLDS, MAX_TESTED, VerdictThresholds

LayerSelector = str | Sequence[str] | Callable[[str], bool] | None


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
    tracers: int = 256
    tracer_schedule: schedules.Schedule = field(default_factory=lambda: schedules.every(1))
    seed: int = 0
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS
    overwrite: bool = False
    strict: bool = False
    flush_rows: int = 2000
    flush_seconds: float = 10.0
    precision: str = "fast"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    hooks: bool = True
    tensorboard: Any = None

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
        tracers: int = 256,
        seed: int = 0,
        thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
        overwrite: bool = False,
        strict: bool = False,
        flush_rows: int = 2000,
        flush_seconds: float = 10.0,
        precision: str = "fast",
        metadata: Mapping[str, Any] | None = None,
        hooks: bool = True,
        tensorboard: Any = None,
    ) -> ProbeConfig:
        """Validate the keyword options of :func:`~goup_probe.attach`.

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
        keep_samples = _int_option("keep_samples", keep_samples, 0)
        tracers = _int_option("tracers", tracers, 0)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not isinstance(thresholds, VerdictThresholds):
            raise TypeError(f"thresholds must be a VerdictThresholds, got {type(thresholds).__name__}")
        for option, value in (("overwrite", overwrite), ("strict", strict), ("hooks", hooks)):
            if not isinstance(value, bool):
                raise TypeError(f"{option} must be True or False, got {value!r}")
        flush_rows = _int_option("flush_rows", flush_rows, 1)
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
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        return cls(
            schedule=schedules.resolve(every, schedule),
            layers=layers,
            quantities=resolved,
            tested=tested_names,
            statistics=tuple(statistics),
            sample_size=sample_size,
            keep_samples=min(keep_samples, sample_size),
            tracers=tracers,
            seed=int(seed),
            thresholds=thresholds,
            overwrite=overwrite,
            strict=strict,
            flush_rows=flush_rows,
            flush_seconds=float(flush_seconds),
            precision=precision,
            metadata=dict(metadata or {}),
            hooks=hooks,
            tensorboard=tensorboard,
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
            "tracers": self.tracers,
            "tracer_schedule": schedules.describe(self.tracer_schedule),
            "seed": self.seed,
            "precision": self.precision,
            "thresholds": vars(self.thresholds),
        }
