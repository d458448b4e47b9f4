"""Single-sample forms of the battery's tests: one sorted sample or two moments in, floats out.

Each wraps the vectorised function of :mod:`goup_probe.stats.normal_tests` for
one row; :mod:`goup_probe.stats.normality` re-exports them.
"""

from __future__ import annotations

import math

import numpy as np

from goup_probe.stats import normal_tests


def anderson_darling(ordered: np.ndarray, cdf: np.ndarray | None = None) -> tuple[float, float]:
    """Anderson-Darling A² against the normal with estimated mean and std, and its p-value.

    Stephens' case-3 modification and D'Agostino & Stephens' (1986) p-value
    formulas, as ``statsmodels.stats.diagnostic.normal_ad`` (see
    :func:`goup_probe.stats.normal_tests.anderson_darling`).

    Parameters
    ----------
    ordered : ndarray
        The sample, sorted ascending (n >= 8).
    cdf : ndarray, optional
        Φ of the sample standardised by its mean and std (ddof=1), if already computed.
    """
    rows = np.asarray(ordered, dtype=np.float64)[None, :]
    a2, p = normal_tests.anderson_darling(
        rows, normal_tests.fitted_cdf(rows) if cdf is None else cdf[None, :]
    )
    return float(a2[0]), float(p[0])


def lilliefors_p(ks_d: float, n: int) -> float:
    """p-value of the Lilliefors statistic (estimated mean and std).

    The null distribution for this ``n`` is simulated once (seeded; 20000 draws
    for n <= 200, 4·10⁶/n down to 2000 for larger n:
    :func:`~goup_probe.stats.normal_tests.lilliefors_null_draws`) and cached;
    the p-value is (1 + #{null >= D}) / (draws + 1). Unlike the tabulated
    approximations it is calibrated at every n (statsmodels' table rejects about
    3.5% of normal samples at 5% for n of a few thousand). Where D exceeds every
    null draw, the p-value is Dallal & Wilkinson's analytic tail approximation,
    capped at 1/(draws + 1), the bound the simulation gives
    (:func:`~goup_probe.stats.normal_tests.lilliefors_p_and_floor`).
    """
    return float(normal_tests.lilliefors_p(np.array([ks_d]), n)[0])


def dagostino_pearson_p(skew: float, excess_kurtosis: float, n: int) -> float:
    """D'Agostino-Pearson K² p-value from the biased sample skewness and excess kurtosis (n >= 20).

    The same formulas as ``scipy.stats.normaltest``, evaluated from two numbers
    (see :func:`goup_probe.stats.normal_tests.dagostino_pearson_p`).
    """
    return float(normal_tests.dagostino_pearson_p(np.array([skew]), np.array([excess_kurtosis]), n)[0])


def jarque_bera_p(skew: float, excess_kurtosis: float, n: int) -> float:
    """Jarque-Bera p-value, JB = n/6 (S² + K²/4) ~ χ²₂ (asymptotic)."""
    return float(normal_tests.jarque_bera_p(np.array([skew]), np.array([excess_kurtosis]), n)[0])


def shapiro_francia_p(qq_r: float, n: int) -> float:
    """p-value of the Shapiro-Francia test W' = qq_r² (Royston's approximation)."""
    if not math.isfinite(qq_r):
        return float("nan")
    return float(normal_tests.shapiro_francia_p(np.array([qq_r]), n)[0])


def wasserstein1_to_normal(ordered: np.ndarray) -> float:
    """Exact Wasserstein-1 distance between a standardised sorted sample's law and N(0, 1), in σ."""
    return float(normal_tests.wasserstein1_to_normal(np.asarray(ordered, dtype=np.float64)[None, :])[0])
