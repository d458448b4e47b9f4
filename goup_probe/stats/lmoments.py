"""L-moments of sorted samples and data-valid standard errors of L-statistics, vectorised over rows.

L-moments (Hosking 1990) are expectations of linear combinations of order
statistics: λ₂ is a scale, τ₃ = λ₃/λ₂ (L-skewness) and τ₄ = λ₄/λ₂
(L-kurtosis) are shape ratios that exist whenever the mean does, so unlike the
moment skewness and kurtosis they stay informative, and their standard errors
finite, for heavy tails (Student t with ν > 2). For a normal τ₃ = 0 and
τ₄ = 30 arctan(√2)/π − 9 ≈ 0.1226 (:data:`TAU4_NORMAL`); a uniform has τ₄ = 0,
a logistic 1/6, a Laplace 0.2357.

The sample L-moments are Hosking's unbiased estimators from the probability
weighted moments b_r = n⁻¹ Σᵢ [C(i−1, r)/C(n−1, r)] x₍ᵢ₎ (one matrix product).
Their standard errors come from the influence function of an L-statistic
T = ∫ F⁻¹(u) J(u) du, IF(x) = ∫ (F(y) − 1{y ≥ x}) J(F(y)) dy, evaluated at the
sample (the infinitesimal jackknife): one cumulative sum over the gaps between
order statistics per weight function, no resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "TAU4_NORMAL",
    "LMomentRatios",
    "gap_influence",
    "influence_spread",
    "l_moment_ratios",
    "pwm_weights",
    "row_blocks",
]

TAU4_NORMAL = 30.0 / math.pi * math.atan(math.sqrt(2.0)) - 9.0
"""L-kurtosis τ₄ of every normal distribution (≈ 0.12260)."""

SMALL_SAMPLE_LAG = 7.0
"""The influence-function SEs of τ₃ and τ₄ are scaled by √(n/(n − 7)): on normal samples (400
replications) the plain SE was 14% low at n = 50 and within 2% from n = 200; with the factor the
RMS SE over the Monte Carlo SD is 0.98–1.05 at n = 20…5000 (2000 replications below 5000)."""


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@lru_cache(maxsize=64)
def pwm_weights(n: int) -> np.ndarray:
    """Weights of the unbiased probability weighted moments b₀..b₃: shape (n, 4), read-only, cached.

    Column r holds C(i − 1, r)/C(n − 1, r)/n for i = 1..n, so ``sorted_rows @ pwm_weights(n)``
    gives b₀..b₃ of every row.
    """
    if n < 4:
        raise ValueError(f"L-moments up to order 4 need n >= 4, got n={n}")
    below = np.arange(n, dtype=np.float64)  # i − 1
    weights = np.empty((n, 4))
    weights[:, 0] = 1.0
    for r in (1, 2, 3):
        weights[:, r] = weights[:, r - 1] * (below - r + 1) / (n - r)
    return _read_only(weights / n)


@lru_cache(maxsize=64)
def _legendre_on_gaps(n: int) -> np.ndarray:
    """Shifted Legendre polynomials P*₁, P*₂, P*₃ at F = j/n on the gaps j = 1..n−1: shape (3, n − 1)."""
    u = np.arange(1, n, dtype=np.float64) / n
    return _read_only(np.stack([2 * u - 1, (6 * u - 6) * u + 1, ((20 * u - 30) * u + 12) * u - 1]))


def gap_influence(gaps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Influence function of an L-statistic at each order statistic, up to a constant per row.

    On the gap j between x₍ⱼ₎ and x₍ⱼ₊₁₎ the empirical CDF is j/n, so
    IF(x₍ᵢ₎) = Σⱼ gapⱼ J(j/n) j/n − Σ_{j ≥ i} gapⱼ J(j/n)
    = const + Σ_{j < i} gapⱼ J(j/n): the prefix sums of gapⱼ J(j/n), starting at 0.

    Parameters
    ----------
    gaps : ndarray, shape (m, n − 1)
        ``np.diff`` of sorted rows.
    weights : ndarray, shape (m, n − 1) or (n − 1,)
        The weight function J on the gaps.

    Returns
    -------
    ndarray, shape (m, n)
        Σ_{j < i} gapⱼ J(j/n) for i = 1..n.
    """
    out = np.zeros((gaps.shape[0], gaps.shape[1] + 1))
    np.multiply(gaps, weights, out=out[:, 1:])
    return np.cumsum(out, axis=1, out=out)


def influence_spread(gaps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Population standard deviation over i of :func:`gap_influence`, without storing it twice."""
    prefix = gap_influence(gaps, weights)
    n = prefix.shape[1]
    mean = prefix.sum(axis=1) / n
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", prefix, prefix) / n - mean * mean, 0.0))


@dataclass(frozen=True)
class LMomentRatios:
    """L-skewness and L-kurtosis of each row, with standard errors valid for the data."""

    l_skew: np.ndarray
    """τ₃ = λ₃/λ₂ (0 for a symmetric law)."""
    l_skew_se: np.ndarray
    l_kurt: np.ndarray
    """τ₄ = λ₄/λ₂ (:data:`TAU4_NORMAL` for a normal)."""
    l_kurt_se: np.ndarray


ROW_BLOCK = 8
"""Rows per block in the SE computations: a block's temporaries stay in the CPU cache (at n = 5000
the per-sample cost of 64 rows at once is twice that of 8)."""


def l_moment_ratios(ordered: np.ndarray) -> LMomentRatios:
    """τ₃ and τ₄ of each sorted row and their influence-function standard errors.

    Parameters
    ----------
    ordered : ndarray, shape (m, n)
        Rows sorted ascending, n >= 8, not constant (any location and scale: the
        ratios are invariant).

    Returns
    -------
    LMomentRatios
        Arrays of shape (m,). The SE of a ratio τ = λ_r/λ₂ is the spread of
        (IF_r − τ IF₂)/λ₂ over the row divided by √n, times √(n/(n − 7))
        (:data:`SMALL_SAMPLE_LAG`). Measured RMS SE over Monte Carlo SD (2000
        replications; 400 at n = 5000): 0.94–1.06 for normal, uniform, logistic,
        Laplace, t₅ and t₁₂ samples at n = 200 and 5000; 0.86–1.08 at n = 50
        (t₅ lowest); t₃ 0.90–0.98 from n = 200, 0.72–0.81 at n = 50.
    """
    ordered = np.asarray(ordered, dtype=np.float64)
    n = ordered.shape[1]
    b = ordered @ pwm_weights(n)
    l2 = 2 * b[:, 1] - b[:, 0]
    l3 = 6 * b[:, 2] - 6 * b[:, 1] + b[:, 0]
    l4 = 20 * b[:, 3] - 30 * b[:, 2] + 12 * b[:, 1] - b[:, 0]
    tau3, tau4 = l3 / l2, l4 / l2
    p2, p3, p4 = _legendre_on_gaps(n)
    se3, se4 = np.empty_like(tau3), np.empty_like(tau4)
    for rows in row_blocks(len(ordered)):
        gaps = np.diff(ordered[rows], axis=1)
        # IF of τ = λ_r/λ₂ is (IF_r − τ IF₂)/λ₂: one L-statistic with weight P*_{r−1} − τ P*₁ per row
        se3[rows] = influence_spread(gaps, p3 - tau3[rows, None] * p2)
        se4[rows] = influence_spread(gaps, p4 - tau4[rows, None] * p2)
    scale = 1.0 / (l2 * math.sqrt(n - SMALL_SAMPLE_LAG))
    return LMomentRatios(tau3, se3 * scale, tau4, se4 * scale)


def row_blocks(m: int) -> list[slice]:
    """Slices of :data:`ROW_BLOCK` rows covering ``m`` rows."""
    return [slice(start, min(start + ROW_BLOCK, m)) for start in range(0, m, ROW_BLOCK)]
