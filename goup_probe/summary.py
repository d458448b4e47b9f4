"""Per-layer summary of a run's stats: the table the CLI prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.formatting import format_cell
from goup_probe.order import model_order
from goup_probe.rows import quantity_rows
from goup_probe.stats.multiplicity import Q_VALUE, add_q_values
from goup_probe.store import Run

SUMMARY_COLUMNS = (
    "param",
    "numel",
    "verdict_first",
    "kurt_first",
    "verdict_last",
    "shape_last",
    "kurt_last",
    "skew_last",
    "w1_last",
    "gaussian_share",
    "rejected_fdr_share",
    "grad_to_param",
)

VERDICT_COLUMNS = (
    "verdict_first",
    "verdict_last",
    "shape_last",
    "w1_last",
    "gaussian_share",
    "rejected_fdr_share",
)
"""Columns of :func:`layer_summary` that only a quantity tested for Gaussianity fills."""


def layer_summary(
    run: Run | pd.DataFrame,
    quantity: str = schema.THETA_MINUS_GRAD,
    *,
    meta: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per parameter tensor: verdict and shape of X at the first and last captured step.

    Parameters
    ----------
    run : Run or DataFrame
        A loaded run, or its ``stats`` table.
    quantity : str
        Which quantity to summarise (default X = θ − g).
    meta : mapping, optional
        ``run.json`` of a ``stats`` table passed as a DataFrame, for the model
        order of the rows (a Run brings its own).

    Returns
    -------
    DataFrame
        One row per tensor in model order (:func:`goup_probe.order.model_order`;
        order of first appearance without ``run.json``). Columns: ``param``,
        ``numel``, ``verdict_first``/``kurt_first`` (first captured step),
        ``verdict_last``/``shape_last``/``kurt_last``/``skew_last``/``w1_last``
        (last captured step; ``shape_last`` is the shape column of that row:
        heavy-tailed, light-tailed, skewed, discrete, other or none detected,
        empty for a Gaussian or untested row and for runs written before the
        shape column), ``gaussian_share`` (fraction of tested steps judged
        Gaussian or close to Gaussian), ``rejected_fdr_share`` (fraction of
        tested steps whose Shapiro-Wilk rejection holds at false discovery
        rate α across the tensors of that step: ``q_value < α``, see
        :func:`goup_probe.stats.multiplicity.add_q_values`; α from run.json's
        thresholds, default 0.05) and ``grad_to_param`` (median ‖g‖/‖θ‖).
        A tensor whose values were not tested shows ``"not tested"`` as verdict
        when its values were fine (the quantity was not in ``tested=``), else the
        status that prevented testing (``too_few``, ``constant``, ...).
    """
    stats = _stats_of(run, SUMMARY_STATS_COLUMNS, quantity) if isinstance(run, Run) else run
    meta = run.meta if isinstance(run, Run) else meta
    alpha = recorded_alpha(meta)
    # The pooled rows of a quantity are whole families of the q-values (step, quantity, axis,
    # micro-batch: every tensor of the step), so selecting them first changes none of the q-values.
    rows = quantity_rows(stats, quantity, [*SUMMARY_STATS_COLUMNS, Q_VALUE])
    if "shapiro_p" in rows.columns:
        rows = add_q_values(rows)
    if rows.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    order = model_order(rows.sort_values("step", kind="stable")["param"], meta)
    out = []
    for param in order:
        sub = rows[rows["param"] == param].sort_values("step", kind="stable")
        first, last = sub.iloc[0], sub.iloc[-1]
        decided = ~sub["verdict"].isin([schema.VERDICT_NOT_TESTED, schema.VERDICT_INCONCLUSIVE])
        tested = sub[sub["status"].isin(schema.TESTED_STATUSES) & decided]
        good = tested["verdict"].isin([schema.VERDICT_GAUSSIAN, schema.VERDICT_CLOSE])
        with_q = sub[sub[Q_VALUE].notna()] if Q_VALUE in sub.columns else sub.iloc[:0]
        out.append(
            {
                "param": param,
                "numel": int(first["numel"]) if pd.notna(first["numel"]) else 0,
                "verdict_first": _verdict_or_status(first),
                "kurt_first": first["excess_kurtosis"],
                "verdict_last": _verdict_or_status(last),
                "shape_last": _shape_of(last),
                "kurt_last": last["excess_kurtosis"],
                "skew_last": last["skew"],
                "w1_last": last["w1_sigma"],
                "gaussian_share": float(good.mean()) if len(tested) else np.nan,
                "rejected_fdr_share": float((with_q[Q_VALUE] < alpha).mean()) if len(with_q) else np.nan,
                "grad_to_param": float(np.nanmedian(sub["grad_to_param"].astype(float)))
                if sub["grad_to_param"].notna().any()
                else np.nan,
            }
        )
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


SUMMARY_STATS_COLUMNS = (
    "step",
    "param",
    "quantity",
    "axis",
    "micro_batch",
    "status",
    "verdict",
    "numel",
    "skew",
    "excess_kurtosis",
    "w1_sigma",
    "grad_to_param",
    "shapiro_p",
    "shape",
)
"""Columns of ``stats`` that :func:`layer_summary` reads from a run directory (the q-values' included)."""


def _stats_of(run: Run, columns: Sequence[str], quantity: str) -> pd.DataFrame:
    """The ``stats`` rows of one quantity, only ``columns``: from memory when read whole, else from disk.

    A quantity's rows are whole families of the q-values (step, quantity, axis,
    micro-batch), so filtering on it changes none of them.
    """
    if run.is_read("stats"):
        return run.stats
    return run.table("stats", columns=list(columns), filters=[("quantity", "==", quantity)])


def recorded_alpha(meta: Mapping[str, Any] | None) -> float:
    """The verdict's level α recorded in run.json (``capture.thresholds.alpha``), else 0.05."""
    from goup_probe.stats.normality import DEFAULT_THRESHOLDS

    recorded = ((meta or {}).get("capture") or {}).get("thresholds") or {}
    alpha = recorded.get("alpha", DEFAULT_THRESHOLDS.alpha) if isinstance(recorded, Mapping) else None
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        return DEFAULT_THRESHOLDS.alpha
    return float(alpha)


def _verdict_or_status(row: pd.Series) -> str:
    if row["verdict"] == schema.VERDICT_NOT_TESTED or pd.isna(row["verdict"]):
        return schema.VERDICT_NOT_TESTED if row["status"] in schema.TESTED_STATUSES else str(row["status"])
    return str(row["verdict"])


def _shape_of(row: pd.Series) -> str:
    """The row's shape, ``""`` when it has none (Gaussian, untested, or a run without the column)."""
    shape = row.get("shape")
    return "" if shape is None or pd.isna(shape) else str(shape)


def was_tested(run: Run | pd.DataFrame, quantity: str) -> bool:
    """Whether any pooled row of ``quantity`` carries a Gaussianity verdict (it was in ``tested=``)."""
    stats = _stats_of(run, ("quantity", "verdict"), quantity) if isinstance(run, Run) else run
    rows = stats[stats["quantity"] == quantity]
    return bool((rows["verdict"].notna() & (rows["verdict"] != schema.VERDICT_NOT_TESTED)).any())


def moments_only(summary: pd.DataFrame) -> pd.DataFrame:
    """A :func:`layer_summary` without its verdict columns, for a quantity that was not tested."""
    return summary[[c for c in summary.columns if c not in VERDICT_COLUMNS]]


def format_table(frame: pd.DataFrame, float_digits: int = 3) -> str:
    """Render a DataFrame as a plain-text table for the terminal.

    Every cell goes through :func:`goup_probe.formatting.format_cell`, as in the
    report: floats to ``float_digits`` significant digits (inf and nan as such),
    learning rates to 4.
    """
    if frame.empty:
        return "(no rows)"

    columns = [str(c) for c in frame.columns]
    cells = [columns] + [
        [format_cell(c, v, float_digits) for c, v in zip(columns, row, strict=True)]
        for row in frame.itertuples(index=False)
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class RunProgress:
    """How far a run got: from ``run.json`` once it is final, from the tables while it is written."""

    steps: int | None
    """Optimizer steps (None when neither run.json nor the tables tell)."""
    captured: int
    """Captured steps (distinct steps of ``stats``)."""
    last_captured: int | None
    """Last captured step, None when nothing was captured."""
    on_disk: bool
    """Counted from the tables on disk (a running or unfinished run), not taken from run.json."""

    def counted_meta(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``run.json`` whose ``steps``/``captured_steps`` are these counts (when from disk)."""
        out = dict(meta)
        if self.on_disk:
            out["steps"] = "?" if self.steps is None else self.steps
            out["captured_steps"] = self.captured
        return out

    def describe(self, status: str) -> str:
        """``"status running, 7 steps on disk so far (4 captured, last captured step 6)"``-style text."""
        if not self.on_disk:
            steps = "?" if self.steps is None else self.steps
            return f"status {status}, {steps} steps, {self.captured} captured"
        steps = "no steps" if not self.steps else f"{self.steps} steps"
        last = f", last captured step {self.last_captured}" if self.last_captured is not None else ""
        return f"status {status}, {steps} on disk so far ({self.captured} captured{last})"


def run_progress(run: Run) -> RunProgress:
    """Steps and captured steps of a run, counted from its tables when ``run.json`` is not final.

    While training runs (status ``running``), and whenever ``run.json`` counts
    fewer steps than the tables hold (a run killed before it could write its
    end), the counts come from what is on disk: captured steps are the distinct
    steps of ``stats``, optimizer steps one past the last step of ``stats`` or
    ``trajectories`` (the tracers record every step). Reads only the ``step``
    column of ``trajectories``.

    Parameters
    ----------
    run : Run
        A loaded run.

    Returns
    -------
    RunProgress
    """
    stats = run.stats if run.is_read("stats") else run.table("stats", columns=["step"])
    steps_seen = set(stats["step"].unique().tolist()) if "step" in stats.columns else set()
    last = max(steps_seen) if steps_seen else None
    last_any = last
    if "trajectories" in run.tables:
        traj = (
            run.trajectories if run.is_read("trajectories") else run.table("trajectories", columns=["step"])
        )
        if len(traj):
            last_any = max(int(traj["step"].max()), -1 if last_any is None else last_any)
    on_disk_steps = None if last_any is None else last_any + 1
    meta_steps, meta_captured = run.meta.get("steps"), run.meta.get("captured_steps")
    final = (
        run.status != "running"
        and isinstance(meta_steps, int)
        and (on_disk_steps is None or meta_steps >= on_disk_steps)
    )
    if final:
        captured = meta_captured if isinstance(meta_captured, int) else len(steps_seen)
        return RunProgress(meta_steps, captured, last, on_disk=False)
    return RunProgress(on_disk_steps, len(steps_seen), last, on_disk=True)
