"""Stats and samples rows: one place that turns a reduction into what is stored.

Every strategy hands its reductions to one :class:`RowSink`, so a row looks the
same whichever path reduced its tensor.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from goup_probe import schema
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.reduce import Reduction
from goup_probe.capture.retention import SampleRetention
from goup_probe.stats.normality import (
    NormalityResult,
    SampleBlock,
    VerdictThresholds,
    assess_sample,
    assess_sample_blocks,
)

Guarded = Callable[..., Any]
"""``guarded(step, param, fn, *args)``: ``fn(*args)``, a failure recorded against ``param`` (None back)."""


@dataclass
class _Pending:
    """A stats row waiting for the end of its phase, where same-size samples are tested together."""

    step: int
    tracked: TrackedParam
    quantity: str
    lr: float
    reduction: Reduction | None
    param_norm: float
    grad_norm: float
    extra: dict[str, Any] | None
    global_step: int | None
    result: NormalityResult | None = None
    """Set where the phase ends, by its batch or the row's own retry (None where that failed)."""
    ready_row: dict[str, Any] | None = None
    """A status row (no statistics), queued only to keep the rows' order."""


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
        self._pending: list[_Pending] | None = None
        """Rows held by :meth:`batched` until the end of their phase (None: written at once)."""

    def wants(self, quantity: str) -> bool:
        """Whether rows of ``quantity`` are recorded."""
        return quantity in self.recorded

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
    ) -> None:
        """One stats row and its stored sample (held until the end of a :meth:`batched` phase)."""
        if quantity not in self.recorded:
            return
        if self._pending is not None:
            extra = dict(extra) if extra else None
            self._pending.append(
                _Pending(
                    step,
                    tracked,
                    quantity,
                    lr,
                    reduction,
                    param_norm,
                    grad_norm,
                    extra,
                    self.global_step,
                )
            )
            return
        result = self._assess_one(quantity, reduction)
        self._write(
            step, tracked, quantity, lr, reduction, param_norm, grad_norm, extra, result, self.global_step
        )

    def _assess_one(self, quantity: str, reduction: Reduction) -> NormalityResult:
        return assess_sample(
            reduction.moments,
            reduction.sample,
            axis=schema.AXIS_POOLED,
            thresholds=self.thresholds,
            tested=quantity in self.tested,
            statistics=self.statistics,
        )

    @contextlib.contextmanager
    def batched(self, guarded: Guarded) -> Iterator[None]:
        """Hold the rows of a phase and test their samples together at its end.

        The battery costs far less per row on a stack of samples than on one
        (the maximum-likelihood shape fits iterate over all rows at once), so the
        rows of a phase are tested together: grouped by sample size for the tests,
        whose null distributions depend on it, and all sizes in one call of the
        shape fits (:func:`~goup_probe.stats.normality.assess_sample_blocks`).
        Every quantity, and the members of grouped and per-tensor strategies alike,
        share these calls (a step of three 5000-value samples: 9.3 against 4.6 ms;
        thirty: 106 against 39 ms). Rows are written in the order they came, with
        the values of testing one by one to ~10⁻¹⁰ relative (weighted sums of
        sorted values are matrix products, rounded differently). A failing call is
        retried size by size, then row by row under ``guarded``, so one bad sample
        costs only its row.
        """
        if self._pending is not None:  # nested: the outer phase tests and writes
            yield
            return
        self._pending = []
        try:
            yield
        finally:
            pending, self._pending = self._pending, None
            if pending:  # most phases of a run hold none (steps that are not captured)
                self._write_pending(pending, guarded)

    def _write_pending(self, pending: list[_Pending], guarded: Guarded) -> None:
        batches: dict[int, list[tuple[_Pending, np.ndarray]]] = {}
        for item in pending:
            if item.reduction is not None:
                sample = np.asarray(item.reduction.sample, dtype=np.float64).ravel()
                finite = sample[np.isfinite(sample)]
                batches.setdefault(finite.size, []).append((item, finite))
        groups = list(batches.values())
        blocks = [
            SampleBlock(
                [item.reduction.moments for item, _ in items],
                np.stack([finite for _, finite in items]),
                [item.quantity in self.tested for item, _ in items],
            )
            for items in groups
        ]
        results: list[list[NormalityResult]] | None = None
        with contextlib.suppress(Exception):  # a failing batch is retried size by size, then row by row
            results = assess_sample_blocks(
                blocks, axis=schema.AXIS_POOLED, thresholds=self.thresholds, statistics=self.statistics
            )
        for g, items in enumerate(groups):
            block_results = results[g] if results is not None else None
            if block_results is None and len(items) > 1:
                with contextlib.suppress(Exception):
                    block_results = assess_sample_blocks(
                        [blocks[g]],
                        axis=schema.AXIS_POOLED,
                        thresholds=self.thresholds,
                        statistics=self.statistics,
                    )[0]
            for i, (item, _) in enumerate(items):
                if block_results is not None:
                    item.result = block_results[i]
                else:
                    name = item.tracked.name
                    item.result = guarded(item.step, name, self._assess_one, item.quantity, item.reduction)
        for item in pending:
            if item.ready_row is not None:  # appending may write a part: a full disk is the guard's to record
                guarded(item.step, item.tracked.name, self.writer.append, "stats", [item.ready_row])
            elif item.result is not None and item.reduction is not None:
                guarded(
                    item.step,
                    item.tracked.name,
                    self._write,
                    item.step,
                    item.tracked,
                    item.quantity,
                    item.lr,
                    item.reduction,
                    item.param_norm,
                    item.grad_norm,
                    item.extra,
                    item.result,
                    item.global_step,
                )

    def _write(
        self,
        step: int,
        tracked: TrackedParam,
        quantity: str,
        lr: float,
        reduction: Reduction,
        param_norm: float,
        grad_norm: float,
        extra: Mapping[str, Any] | None,
        result: NormalityResult,
        global_step: int | None,
    ) -> None:
        if self._on_error is not None:
            for name, message in getattr(result, "statistic_errors", {}).items():
                self._on_error(step, tracked.name, f"statistic {name}", RuntimeError(message))
        row = self._row(step, tracked.name, quantity, lr, result, param_norm, grad_norm)
        row["global_step"] = global_step
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
        if self._pending is not None:
            self._pending.append(
                _Pending(
                    step,
                    tracked,
                    quantity,
                    lr,
                    None,
                    math.nan,
                    math.nan,
                    None,
                    self.global_step,
                    ready_row=row,
                )
            )
            return
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
