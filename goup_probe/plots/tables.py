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
from goup_probe.rows import quantity_rows
from goup_probe.stats.normality import blom_positions

__all__ = [
    "SE_COLUMNS",
    "VERDICT_ORDER",
    "WHITE_NOISE_Z",
    "beyond_white_noise",
    "blom_positions",
    "effect_matrix",
    "median_n_tested",
    "metric_values",
    "normal_density",
    "ou_interval",
    "ou_ratio",
    "param_order",
    "quantity_rows",
    "sample_values",
    "small_n_params",
    "verdict_counts",
]

VERDICT_ORDER = (
    schema.VERDICT_GAUSSIAN,
    schema.VERDICT_CLOSE,
    schema.VERDICT_NON_GAUSSIAN,
    schema.VERDICT_INCONCLUSIVE,
    schema.VERDICT_NOT_TESTED,
)
"""Verdicts in the order every table and legend lists them."""

SE_COLUMNS = {"skew": "skew_se", "excess_kurtosis": "kurtosis_se"}
"""Stats column holding the standard error of a metric (drawn as a band around its line)."""

WHITE_NOISE_Z = 1.96
"""Half-width, in units of 1/√n, of the 95% band of a lag-1 autocorrelation of white noise."""


def metric_column(metric: str) -> str:
    """The stats column :func:`metric_values` reads for ``metric``."""
    return "qq_r" if metric == "one_minus_qq_r" else metric


def metric_values(stats: pd.DataFrame, metric: str) -> pd.Series:
    """A stats column, or the derived ``"one_minus_qq_r"`` (1 − qq_r), as float64."""
    column = metric_column(metric)
    if column != metric:
        return 1.0 - stats[column].astype(np.float64)
    if metric not in stats.columns:
        raise ValueError(f"unknown metric {metric!r}; use 'one_minus_qq_r' or a stats column")
    return stats[metric].astype(np.float64)


def param_order(frame: pd.DataFrame) -> list[str]:
    """Parameter names in the order they first appear (model order for probe tables)."""
    return [str(name) for name in pd.unique(frame["param"])]  # in order of appearance


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
    rows = quantity_rows(stats, quantity, ["param", "step", metric_column(metric)])
    if rows.empty:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {"param": rows["param"].astype(str), "step": rows["step"], "value": metric_values(rows, metric)}
    )
    matrix = frame.pivot_table(index="param", columns="step", values="value", aggfunc="first", dropna=False)
    return matrix.reindex(param_order(rows))


def median_n_tested(stats: pd.DataFrame, quantity: str = schema.THETA_MINUS_GRAD) -> pd.Series:
    """Median over captured steps of ``n_tested`` per tensor (model order; NaN where never tested)."""
    rows = quantity_rows(stats, quantity, ["param", "n_tested"])
    if rows.empty or "n_tested" not in rows.columns:
        return pd.Series(dtype=np.float64)
    frame = pd.DataFrame({"param": rows["param"].astype(str), "n": rows["n_tested"].astype(np.float64)})
    return frame.groupby("param", sort=False)["n"].median().reindex(param_order(frame))


def small_n_params(stats: pd.DataFrame, min_n: int, quantity: str = schema.THETA_MINUS_GRAD) -> list[str]:
    """Tensors whose median ``n_tested`` is below ``min_n``, in model order (never tested: not listed).

    Parameters
    ----------
    stats : DataFrame
        ``run.stats``.
    min_n : int
        Smallest median number of tested values that counts as enough (0: none is small).
    quantity : str
        Which quantity's rows count.

    Returns
    -------
    list of str
    """
    if isinstance(min_n, bool) or not isinstance(min_n, int | np.integer) or min_n < 0:
        raise ValueError(f"min_n must be an integer >= 0, got {min_n!r}")
    n = median_n_tested(stats, quantity)
    return [str(p) for p, v in n.items() if np.isfinite(v) and v < min_n]


def beyond_white_noise(acf: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Whether each lag-1 autocorrelation lies outside ±1.96/√n (False where n is missing or not positive)."""
    acf = np.asarray(acf, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        band = WHITE_NOISE_Z / np.sqrt(np.where(n > 0, n, np.nan))
        return np.asarray(np.abs(acf) > band) & np.isfinite(band)


def verdict_counts(stats: pd.DataFrame, *, quantity: str = schema.THETA_MINUS_GRAD) -> pd.DataFrame:
    """Number of tensors per verdict at each captured step (columns in a fixed verdict order)."""
    rows = quantity_rows(stats, quantity, ["step", "verdict"])
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
