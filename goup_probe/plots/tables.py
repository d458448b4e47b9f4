"""Data shaping behind the plots: pandas and numpy only, never matplotlib.

Everything here turns a run's tables (``run.stats``, ``run.samples``, an OU or
comparison table) into the frames and arrays the ``plot_*`` functions of
:mod:`goup_probe.plots.axes` draw, so table code (the report's choice of layers,
say) can use it without importing a plotting library.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.stats.normality import blom_positions

__all__ = [
    "VERDICT_ORDER",
    "blom_positions",
    "effect_matrix",
    "metric_values",
    "normal_density",
    "ou_interval",
    "ou_ratio",
    "param_order",
    "quantity_rows",
    "sample_values",
    "verdict_counts",
]

VERDICT_ORDER = (
    schema.VERDICT_GAUSSIAN,
    schema.VERDICT_NEGLIGIBLE,
    schema.VERDICT_NON_GAUSSIAN,
    schema.VERDICT_INCONCLUSIVE,
    schema.VERDICT_NOT_TESTED,
)
"""Verdicts in the order every table and legend lists them."""


def metric_values(stats: pd.DataFrame, metric: str) -> pd.Series:
    """A stats column, or the derived ``"one_minus_qq_r"`` (1 − qq_r), as float64."""
    if metric == "one_minus_qq_r":
        return 1.0 - stats["qq_r"].astype(np.float64)
    if metric not in stats.columns:
        raise ValueError(f"unknown metric {metric!r}; use 'one_minus_qq_r' or a stats column")
    return stats[metric].astype(np.float64)


def quantity_rows(stats: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """Rows of one quantity, pooled over the tensor (per-axis rows dropped when there is an axis)."""
    rows = stats[stats["quantity"] == quantity]
    if "axis" in rows.columns:
        rows = rows[rows["axis"].fillna(schema.AXIS_POOLED) == schema.AXIS_POOLED]
    return rows


def param_order(frame: pd.DataFrame) -> list[str]:
    """Parameter names in the order they first appear (model order for probe tables)."""
    return list(dict.fromkeys(frame["param"].astype(str)))


def sample_values(
    samples: pd.DataFrame, *, param: str, step: int, quantity: str = schema.THETA_MINUS_GRAD
) -> np.ndarray:
    """The finite values of one stored subsample as float64 (empty if absent)."""
    hit = samples[(samples["param"] == param) & (samples["step"] == step) & (samples["quantity"] == quantity)]
    if hit.empty:
        return np.empty(0, dtype=np.float64)
    values = np.asarray(hit.iloc[0]["values"], dtype=np.float64)
    return values[np.isfinite(values)]


def effect_matrix(
    stats: pd.DataFrame, *, metric: str = "one_minus_qq_r", quantity: str = schema.THETA_MINUS_GRAD
) -> pd.DataFrame:
    """Layers × captured steps matrix of one metric (rows in model order, NaN where untested)."""
    rows = quantity_rows(stats, quantity)
    if rows.empty:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {"param": rows["param"].astype(str), "step": rows["step"], "value": metric_values(rows, metric)}
    )
    matrix = frame.pivot_table(index="param", columns="step", values="value", aggfunc="first", dropna=False)
    return matrix.reindex(param_order(rows))


def verdict_counts(stats: pd.DataFrame, *, quantity: str = schema.THETA_MINUS_GRAD) -> pd.DataFrame:
    """Number of tensors per verdict at each captured step (columns in a fixed verdict order)."""
    rows = quantity_rows(stats, quantity)
    counts = pd.crosstab(rows["step"], rows["verdict"].fillna(schema.VERDICT_NOT_TESTED))
    return counts.reindex(columns=list(VERDICT_ORDER), fill_value=0)


def ou_ratio(ou: pd.DataFrame) -> np.ndarray | None:
    """k̂/α per row of an OU table (``k_over_lr``, or ``k_pooled / lr``); None if it has neither."""
    if "k_over_lr" in ou.columns:
        return ou["k_over_lr"].astype(np.float64).to_numpy()
    if {"k_pooled", "lr"} <= set(ou.columns):
        return (ou["k_pooled"].astype(np.float64) / ou["lr"].astype(np.float64)).to_numpy()
    return None


def ou_interval(ou: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Low and high ends of k̂/α per row, from whichever interval columns the OU table has (NaN if none)."""
    nan = np.full(len(ou), np.nan)
    for lo, hi, scale in (
        ("k_over_lr_low", "k_over_lr_high", None),
        ("k_over_lr_lo", "k_over_lr_hi", None),
        ("k_pooled_ci_low", "k_pooled_ci_high", "lr"),
        ("k_low", "k_high", "lr"),
        ("k_lo", "k_hi", "lr"),
        ("k_ci_low", "k_ci_high", "lr"),
    ):
        if {lo, hi} <= set(ou.columns) and (scale is None or scale in ou.columns):
            div = 1.0 if scale is None else ou[scale].astype(np.float64).to_numpy()
            return (
                ou[lo].astype(np.float64).to_numpy() / div,
                ou[hi].astype(np.float64).to_numpy() / div,
            )
    return nan, nan.copy()


def normal_density(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Density of N(mean, std²) at ``x`` (used for overlays; float64)."""
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    return np.exp(-0.5 * z * z) / (std * math.sqrt(2 * math.pi))
