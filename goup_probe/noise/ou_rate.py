"""The OU rate against the curvature: does k̂ ≈ α(h + λ) hold, as near a quadratic minimum.

Near a minimum θ* with Hessian H, SGD with learning rate α and (L2) weight
decay λ moves θ_{t+1} − θ* = (I − α(H + λI))(θ_t − θ*) + noise, so one
coordinate i reverts at rate α(H_ii + λ) to first order (Mandt, Hoffman & Blei
2017). The OU fit pools a tensor's tracer coordinates into one k̂; the matching
curvature is the mean diagonal of the tensor's Hessian block, h = tr(H_tt)/N
(Hutchinson trace over its size), and the block's top eigenvalue gives the
fastest rate, α(h_top + λ), which no coordinate's k should exceed by much.

The curvature comes from :class:`~goup_probe.NoiseProbe` ``(curvature=...)``
rows (the ``noise_probe`` table), the median over the measured steps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from goup_probe import schema

__all__ = ["CURVATURE_COLUMNS", "measured_curvature", "ou_rate_vs_curvature"]

CURVATURE_COLUMNS = (
    "param",
    "curv_steps",
    "h_mean",
    "h_top",
    "weight_decay",
    "lr",
    "k_pooled",
    "k_pooled_ci_low",
    "k_pooled_ci_high",
    "k_predicted",
    "k_ratio",
    "k_within_ci",
    "k_top",
)
"""Columns of :func:`ou_rate_vs_curvature`."""


def measured_curvature(noise_probe: pd.DataFrame) -> pd.DataFrame:
    """Per tensor: the median over measured steps of tr(H_tt)/N and of the top eigenvalue, and λ.

    Parameters
    ----------
    noise_probe : DataFrame
        The ``noise_probe`` table (rows without curvature, failed rows and the
        ``'<model>'`` rows are left out).

    Returns
    -------
    DataFrame
        ``param``, ``curv_steps``, ``h_mean``, ``h_top``, ``weight_decay``; empty
        when no curvature was measured.
    """
    columns = ["param", "curv_steps", "h_mean", "h_top", "weight_decay"]
    if noise_probe.empty or "curv_trace" not in noise_probe.columns:
        return pd.DataFrame(columns=columns)
    rows = noise_probe[
        (noise_probe["status"] == schema.STATUS_OK)
        & (noise_probe["param"] != schema.MODEL_ROW)
        & noise_probe["curv_trace"].notna()
    ]
    rows = rows.drop_duplicates(["step", "param"])  # one measurement per step (rows per unit size repeat it)
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(h_mean=rows["curv_trace"] / rows["numel"])
    grouped = rows.groupby("param", sort=False)
    return pd.DataFrame(
        {
            "param": list(grouped.groups),
            "curv_steps": grouped["step"].nunique().to_numpy(),
            "h_mean": grouped["h_mean"].median().to_numpy(),
            "h_top": grouped["curv_top"].median().to_numpy(),
            "weight_decay": grouped["weight_decay"].median().fillna(0.0).to_numpy(),
        }
    )


def ou_rate_vs_curvature(ou: pd.DataFrame, noise_probe: pd.DataFrame) -> pd.DataFrame:
    """k̂ of each tensor beside the quadratic-minimum prediction α(h + λ), where curvature was measured.

    Parameters
    ----------
    ou : DataFrame
        The OU table (``param``, ``lr``, ``k_pooled`` and its interval).
    noise_probe : DataFrame
        The ``noise_probe`` table.

    Returns
    -------
    DataFrame
        :data:`CURVATURE_COLUMNS`: ``k_predicted`` = α(h_mean + λ), ``k_ratio`` =
        k̂ / k_predicted, ``k_within_ci`` whether k_predicted lies in k̂'s interval,
        ``k_top`` = α(h_top + λ). Empty when no tensor has both.
    """
    curv = measured_curvature(noise_probe)
    needed = {"param", "lr", "k_pooled"}
    if curv.empty or not needed <= set(ou.columns):
        return pd.DataFrame(columns=list(CURVATURE_COLUMNS))
    fit = ou.drop(columns=[c for c in ("weight_decay",) if c in ou.columns])
    for column in ("k_pooled_ci_low", "k_pooled_ci_high"):
        if column not in fit.columns:
            fit = fit.assign(**{column: np.nan})
    both = fit.merge(curv, on="param", how="inner")
    lr = both["lr"].astype(float)
    predicted = lr * (both["h_mean"] + both["weight_decay"])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = both["k_pooled"] / predicted
    low, high = both["k_pooled_ci_low"], both["k_pooled_ci_high"]
    within = (low <= predicted) & (predicted <= high)
    out = both.assign(
        k_predicted=predicted,
        k_ratio=ratio,
        k_within_ci=within.where(low.notna() & high.notna()),
        k_top=lr * (both["h_top"] + both["weight_decay"]),
    )
    return out[list(CURVATURE_COLUMNS)].reset_index(drop=True)
