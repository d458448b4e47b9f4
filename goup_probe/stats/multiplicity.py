"""Multiple testing across the tensors of a step: Benjamini-Hochberg q-values of the verdict's p-value.

A run tests hundreds of tensors at every captured step; at level α about α of
the tensors whose values are normal are rejected by chance. The false discovery
rate is controlled per captured step (one family: the tensors of one step, one
quantity and one axis) with Benjamini & Hochberg's (1995) step-up procedure on
the verdict's normality-test p-value (Shapiro-Wilk's ``shapiro_p``; the verdict
also rejects on a significant tail or asymmetry, which the q-values do not cover):
:func:`add_q_values` adds the ``q_value`` column when a stats table is read, so
every row of a step is known, and a rejection "at FDR α" is ``q_value < α``.

Steps are not pooled into one family: with the default ``resample="fixed"``
the probe tests the same coordinates of a tensor at every step, so its p-values
at successive steps are strongly dependent (one test repeated, not many
independent ones); counting rejections over steps would count one finding many
times. ``resample="step"`` draws fresh indices per step (see
:class:`goup_probe.capture.config.ProbeConfig`), which removes the dependence
that comes from the indices, not the one that comes from the weights
changing slowly.

BH controls the FDR for independent or positively dependent (PRDS) p-values;
tensors of one step are different tensors, tested on their own subsamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.rows import quantity_rows

__all__ = ["FAMILY_COLUMNS", "Q_VALUE", "VERDICT_P", "add_q_values", "bh_q_values", "step_rejections"]

Q_VALUE = "q_value"
"""The column :func:`add_q_values` adds (declared in :data:`goup_probe.schema.STATS_DERIVED_FIELDS`)."""

VERDICT_P = "shapiro_p"
"""The verdict's normality-test p-value (one of its ways to reject), the one corrected."""

FAMILY_COLUMNS = ("step", "quantity", "axis", "micro_batch")
"""A family of tests: the rows sharing these values (those the table has)."""


def bh_q_values(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of one family of tests.

    q₍ᵢ₎ = min over j >= i of m p₍ⱼ₎ / j for the ascending p-values p₍₁₎ <= ... <= p₍ₘ₎,
    capped at 1; rejecting every q < α controls the false discovery rate at α.
    NaN p-values are left out of the family (m counts the finite ones) and get NaN.

    Parameters
    ----------
    p : array_like of float
        p-values in [0, 1] (NaN for untested).

    Returns
    -------
    ndarray
        q-values in the input order.

    Raises
    ------
    ValueError
        If a p-value lies outside [0, 1] or is infinite.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p must be one-dimensional, got shape {p.shape}")
    known = ~np.isnan(p)
    values = p[known]
    if np.any((values < 0) | (values > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {values[(values < 0) | (values > 1)][:3]}")
    q = np.full(p.shape, np.nan)
    m = values.size
    if m == 0:
        return q
    order = np.argsort(values, kind="stable")
    scaled = values[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    q[known] = out
    return q


def _tested_p(stats: pd.DataFrame) -> pd.Series:
    """The verdict's p-value of the tested rows (status ok or nonfinite_excluded), NaN elsewhere."""
    p = pd.to_numeric(stats[VERDICT_P], errors="coerce").astype(np.float64)
    if "status" in stats.columns:
        p = p.where(stats["status"].isin(schema.TESTED_STATUSES))
    return p


def add_q_values(stats: pd.DataFrame) -> pd.DataFrame:
    """A copy of a stats table with ``q_value``: BH q-values of ``shapiro_p`` per step and quantity.

    One family per captured step, quantity, axis and micro-batch (the columns of
    :data:`FAMILY_COLUMNS` the table has); within it the tested rows (status
    ``ok`` or ``nonfinite_excluded`` with a finite ``shapiro_p``) are adjusted
    together (:func:`bh_q_values`). Untested rows get NaN. Call it on a whole
    table (every row of a step): a step's q-values depend on all its rows.

    Parameters
    ----------
    stats : DataFrame
        A ``stats`` table (``Run.stats``), with at least ``shapiro_p``.

    Returns
    -------
    DataFrame
        The same rows and index, plus (or with a recomputed) ``q_value`` column.

    Raises
    ------
    ValueError
        If ``shapiro_p`` is missing (naming the columns present).
    """
    if not isinstance(stats, pd.DataFrame):
        raise TypeError(f"stats must be a pandas DataFrame, got {type(stats).__name__}")
    if VERDICT_P not in stats.columns:
        raise ValueError(f"stats has no {VERDICT_P!r} column to correct; columns: {list(stats.columns)[:12]}")
    out = stats.copy()
    p = _tested_p(stats)
    q = np.full(len(stats), np.nan)
    keys = [c for c in FAMILY_COLUMNS if c in stats.columns]
    if keys and len(stats):
        values = p.to_numpy()
        for rows in stats.groupby(keys, sort=False, dropna=False).indices.values():
            q[rows] = bh_q_values(values[rows])
    elif len(stats):
        q = bh_q_values(p.to_numpy())
    out[Q_VALUE] = q
    return out


def step_rejections(
    stats: pd.DataFrame, alpha: float, quantity: str = schema.THETA_MINUS_GRAD
) -> pd.DataFrame:
    """Per captured step: tensors tested, rejected at level α, and rejected at FDR α (q < α).

    Parameters
    ----------
    stats : DataFrame
        A ``stats`` table (with or without ``q_value``; it is computed when absent).
    alpha : float
        Level of the per-tensor test and of the false discovery rate, in (0, 1).
    quantity : str
        The quantity counted (pooled rows only).

    Returns
    -------
    DataFrame
        Columns ``step``, ``tested``, ``rejected`` (p < α) and ``rejected_fdr`` (q < α).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    # Only the columns counted, of the quantity's pooled rows: whole families of the q-values, so
    # computing them on these rows alone changes none of them.
    rows = quantity_rows(stats, quantity, [*FAMILY_COLUMNS, VERDICT_P, "status", Q_VALUE])
    if Q_VALUE not in rows.columns:
        rows = add_q_values(rows)
    p = _tested_p(rows)
    counted = pd.DataFrame(
        {
            "step": rows["step"].to_numpy(),
            "tested": p.notna().to_numpy(),
            "rejected": (p < alpha).to_numpy(),
            "rejected_fdr": (rows[Q_VALUE] < alpha).to_numpy(),
        }
    )
    columns = ["step", "tested", "rejected", "rejected_fdr"]
    if counted.empty:
        return pd.DataFrame(columns=columns)
    return counted.groupby("step", sort=True).sum().astype(np.int64).reset_index()[columns]
