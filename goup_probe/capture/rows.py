"""Stats and samples rows: one place that turns a reduction into what is stored.

Every strategy hands its reductions to one :class:`RowSink`, so a row looks the
same whichever path reduced its tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from goup_probe import schema
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.reduce import Reduction
from goup_probe.capture.retention import SampleRetention
from goup_probe.stats.normality import NormalityResult, VerdictThresholds, assess_sample, assess_samples


class RowSink:
    """Builds the stats row (and stored sample) of each recorded quantity and appends it to the writer.

    Parameters
    ----------
    writer : RunWriter or NullWriter
        Where rows go.
    recorded : sequence of str
        Names of the recorded quantities; rows of others are dropped.
    tested : set of str
        Quantities that get the test battery (the others: moments only).
    thresholds : VerdictThresholds
        Thresholds of the verdict.
    keep_samples : int
        Values of each subsample stored (0: none).
    keep_sample_steps : int, optional
        The captured steps whose samples are stored (:mod:`~goup_probe.capture.retention`;
        None: all). Call :meth:`flush_held` at detach to write the last step's.
    statistics : sequence of Statistic
        User statistics added to the tested rows.
    on_error : callable, optional
        ``(step, param, where, exception)``, called when a user statistic failed
        on a row (its columns are NaN there).
    """

    def __init__(
        self,
        writer: Any,
        *,
        recorded: Sequence[str],
        tested: frozenset[str],
        thresholds: VerdictThresholds,
        keep_samples: int,
        keep_sample_steps: int | None = None,
        statistics: Sequence[Any] = (),
        on_error: Callable[[int, str, str, BaseException], None] | None = None,
    ) -> None:
        self.writer = writer
        self.recorded = frozenset(recorded)
        self.tested = tested
        self.thresholds = thresholds
        self.keep_samples = keep_samples
        self.retention = SampleRetention(keep_sample_steps)
        """Which captured steps' samples are written (the last one's at :meth:`flush_held`)."""
        self.statistics = tuple(statistics)
        self.global_step: int | None = None
        """The framework's step of the rows being written (set at each capture point)."""
        self.listeners: list[Any] = []
        """Objects with ``row(row)`` and ``end_step(step)`` that see every stats row (TensorBoard)."""
        self._on_error = on_error

    def wants(self, quantity: str) -> bool:
        """Whether rows of ``quantity`` are recorded."""
        return quantity in self.recorded

    def assess(self, quantity: str, reductions: Sequence[Reduction]) -> list[NormalityResult]:
        """The battery (or moments only) for same-size reductions of one quantity, at once."""
        return assess_samples(
            [r.moments for r in reductions],
            np.stack([r.sample for r in reductions]),
            axis=schema.AXIS_POOLED,
            thresholds=self.thresholds,
            tested=quantity in self.tested,
            statistics=self.statistics,
        )

    def stats(
        self,
        step: int,
        tracked: TrackedParam,
        quantity: str,
        lr: float,
        reduction: Reduction,
        param_norm: float,
        grad_norm: float,
        *,
        extra: Mapping[str, Any] | None = None,
        result: NormalityResult | None = None,
    ) -> None:
        """One stats row and its stored sample; ``result`` when the tests already ran (groups)."""
        if quantity not in self.recorded:
            return
        if result is None:
            result = assess_sample(
                reduction.moments,
                reduction.sample,
                axis=schema.AXIS_POOLED,
                thresholds=self.thresholds,
                tested=quantity in self.tested,
                statistics=self.statistics,
            )
        if self._on_error is not None:
            for name, message in getattr(result, "statistic_errors", {}).items():
                self._on_error(step, tracked.name, f"statistic {name}", RuntimeError(message))
        row = self._row(step, tracked.name, quantity, lr, result, param_norm, grad_norm)
        row["global_step"] = self.global_step
        if extra:
            row.update(extra)
        self.writer.append("stats", [row])
        for listener in self.listeners:
            listener.row(row)
        if self.keep_samples:
            sample = reduction.sample
            kept = sample[tracked.keep] if tracked.keep.size <= sample.size else sample
            row = {
                "step": step,
                "param": tracked.name,
                "quantity": quantity,
                "values": kept.astype(np.float32),
            }
            rows = self.retention.admit(step, row)
            if rows:
                self.writer.append("samples", rows)

    def flush_held(self) -> None:
        """Write the samples of the last captured step when the retention rule held them back (at detach)."""
        rows = self.retention.release()
        if rows:
            self.writer.append("samples", rows)

    def status(
        self, step: int, tracked: TrackedParam, quantity: str, lr: float, status: str, reason: str
    ) -> None:
        """A row that holds no statistics, only why (``no_grad``, ``frozen``, ...)."""
        if quantity not in self.recorded:
            return
        row = self._row(step, tracked.name, quantity, lr, None, math.nan, math.nan)
        row.update(
            global_step=self.global_step,
            status=status,
            reason=reason,
            numel=tracked.param.numel(),
            n_tested=0,
            verdict=schema.VERDICT_NOT_TESTED,
        )
        self.writer.append("stats", [row])

    def end_step(self, step: int) -> None:
        """Tell the listeners that the rows of ``step`` are complete."""
        for listener in self.listeners:
            listener.end_step(step)

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
        row: dict[str, Any] = {}
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
