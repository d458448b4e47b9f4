"""The gradient noise scale B_simple = tr Σ / |G|² (McCandlish, Kaplan, Amodei et al. 2018).

From n *units* of equal size B (mini-batches of B samples, or single samples
with B = 1), each with mean gradient g_u, the two batch sizes of McCandlish et
al.'s Appendix A are B_small = B (the units) and B_big = nB (their union,
G_big = mean_u g_u). Since E|G_B|² = |G|² + tr Σ / B,

    |G|²  ≈ (B_big |G_big|² − B_small S_small) / (B_big − B_small),
    tr Σ  ≈ (S_small − |G_big|²) / (1/B_small − 1/B_big),        S_small = mean_u |g_u|²,

are unbiased (Σ is the per-sample gradient covariance), and B_simple is their
ratio (consistent, not unbiased). The intervals are delete-one jackknife
normal intervals over the units; the leave-one-out values need only |g_u|²
and ⟨g_u, G_big⟩, so they cost O(n·P). B_simple's interval is formed on the log
scale when both estimates are positive, and is (0, inf) otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["NoiseScale", "noise_scale_from_sums"]


@dataclass(frozen=True)
class NoiseScale:
    """B_simple, tr Σ and |G|² with their jackknife intervals.

    Attributes
    ----------
    b_simple, b_simple_low, b_simple_high : float
        tr Σ / |G|² and its interval.
    trace_sigma, trace_sigma_low, trace_sigma_high : float
        tr Σ (per-sample gradient covariance) and its interval.
    grad_sq_norm, grad_sq_norm_low, grad_sq_norm_high : float
        |G|², the squared norm of the full-batch gradient, and its interval.
    n_units : int
        Number of units (batches, or samples).
    unit_size : int
        Samples per unit (B_small); B_big = n_units · unit_size.
    level : float
        Confidence level.
    note : str
        One line on the estimator.
    """

    b_simple: float
    b_simple_low: float
    b_simple_high: float
    trace_sigma: float
    trace_sigma_low: float
    trace_sigma_high: float
    grad_sq_norm: float
    grad_sq_norm_low: float
    grad_sq_norm_high: float
    n_units: int
    unit_size: int
    level: float
    note: str

    def to_dict(self) -> dict[str, object]:
        """Plain dictionary (one row of a table)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _estimates(small: np.ndarray, big: np.ndarray, b_small: int, b_big: int) -> np.ndarray:
    """(tr Σ, |G|²) for arrays of S_small and |G_big|² values (stacked on the last axis)."""
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)
    g2 = (b_big * big - b_small * small) / (b_big - b_small)
    return np.stack([trace, g2], axis=-1)


def noise_scale_from_sums(
    unit_sq_norms: np.ndarray,
    unit_dots: np.ndarray,
    mean_sq_norm: float,
    unit_size: int,
    *,
    level: float = 0.95,
) -> NoiseScale:
    """B_simple, tr Σ and |G|² from per-unit sums (see the module notes).

    Parameters
    ----------
    unit_sq_norms : ndarray, shape (n,)
        |g_u|² of each unit's mean gradient.
    unit_dots : ndarray, shape (n,)
        ⟨g_u, G_big⟩ with G_big the mean of the units.
    mean_sq_norm : float
        |G_big|².
    unit_size : int
        Samples per unit.
    level : float
        Confidence level of the intervals.

    Raises
    ------
    ValueError
        With fewer than 3 units.
    """
    a = np.asarray(unit_sq_norms, dtype=np.float64)
    c = np.asarray(unit_dots, dtype=np.float64)
    n = a.size
    if n < 3:
        raise ValueError(f"the noise scale needs at least 3 units (batches or samples), got {n}")
    b_small, b_big = int(unit_size), int(unit_size) * n
    full = _estimates(np.array(a.mean()), np.array(mean_sq_norm), b_small, b_big)
    # leave-one-out: G_(-u) = (n G - g_u)/(n - 1), on units of the same size
    loo_big = (n * n * mean_sq_norm - 2 * n * c + a) / (n - 1) ** 2
    loo_small = (n * a.mean() - a) / (n - 1)
    loo = _estimates(loo_small, loo_big, b_small, b_small * (n - 1))
    z = float(stats.norm.ppf(0.5 + level / 2))
    se = np.sqrt((n - 1) / n * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))
    trace, g2 = float(full[0]), float(full[1])
    ratio = trace / g2 if g2 != 0 else math.inf
    if trace > 0 and g2 > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = np.log(loo[:, 0]) - np.log(loo[:, 1])
        log_se = math.sqrt((n - 1) / n * float(((log_ratio - log_ratio.mean()) ** 2).sum()))
        b_low, b_high = ratio * math.exp(-z * log_se), ratio * math.exp(z * log_se)
        if not math.isfinite(log_se):
            b_low, b_high = 0.0, math.inf
    else:
        b_low, b_high = 0.0, math.inf
    note = (
        f"McCandlish et al. 2018 App. A: B_small = {b_small}, B_big = {b_big} "
        f"({n} units); delete-one jackknife intervals"
    )
    return NoiseScale(
        b_simple=ratio,
        b_simple_low=b_low,
        b_simple_high=b_high,
        trace_sigma=trace,
        trace_sigma_low=trace - z * float(se[0]),
        trace_sigma_high=trace + z * float(se[0]),
        grad_sq_norm=g2,
        grad_sq_norm_low=g2 - z * float(se[1]),
        grad_sq_norm_high=g2 + z * float(se[1]),
        n_units=n,
        unit_size=b_small,
        level=level,
        note=note,
    )
