"""The normality tests and effect sizes, vectorised over the rows of a matrix of same-size samples.

Every function takes samples as rows (shape (k, n)) and returns one value per
row, so many tensors' subsamples of the same size are tested with a fixed
number of numpy operations; a single sample is the case k = 1. Everything is
float64 and, on standardised input, scale-invariant. Only Shapiro-Wilk is
computed row by row, by scipy.

Pitfalls respected (see DESIGN.md §2): the KS statistic is tested with a Monte
Carlo Lilliefors null per n (never ``kstest`` with estimated parameters);
Shapiro-Wilk runs on at most 5000 values. The statistics are declared, and run
together, in :mod:`goup_probe.stats.battery`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special, stats

MAX_TESTED = 5000
"""Largest subsample the tests run on (Shapiro-Wilk's p-values are valid up to 5000)."""

MIN_DAGOSTINO = 20
"""D'Agostino-Pearson's kurtosis test needs n >= 20."""

LILLIEFORS_NULL_DRAWS = 2000
"""Fewest Monte Carlo draws of the Lilliefors null distribution per sample size (see
:func:`lilliefors_null_draws`: small samples get up to :data:`LILLIEFORS_MAX_NULL_DRAWS`)."""

LILLIEFORS_MAX_NULL_DRAWS = 20_000
"""Most Monte Carlo draws of the Lilliefors null per sample size (n <= 200)."""

_LILLIEFORS_NULL_VALUES = 4_000_000
"""Budget of simulated values per sample size: draws = this // n, clipped to [2000, 20000]."""

_shapiro = getattr(stats.shapiro, "__wrapped__", stats.shapiro)
"""scipy's Shapiro-Wilk without its axis/NaN-policy wrapper (3× faster on a clean 1-D sample)."""

_SQRT_2PI = math.sqrt(2 * math.pi)


def subsample_indices(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform subsample of ``min(n, k)`` out of ``n``.

    Uses an O(k) algorithm for large ``n``, so choosing 5000 out of 10^9 costs
    nothing. The same ``(n, k, seed)`` always gives the same indices.
    """
    if n <= k:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for array in arrays:
        array.setflags(write=False)
    return arrays


@lru_cache(maxsize=256)
def _rank_grid(n: int) -> tuple[np.ndarray, ...]:
    """i/n, (i − 1)/n and the Anderson-Darling weights (2i − 1)/n for i = 1..n (cached per n)."""
    i = np.arange(1, n + 1, dtype=np.float64)
    return _frozen(i / n, (i - 1) / n, (2 * i - 1) / n)


def standardise(samples: np.ndarray) -> np.ndarray:
    """Each row centred and divided by its std (ddof=0), via its largest values (no overflow).

    Each row is divided by its largest magnitude before the mean is taken (a
    sum of values near 1e307 would overflow) and by its largest deviation before
    squaring (squares of values near 1e200 would).
    """
    peak = np.max(np.abs(samples), axis=1, keepdims=True)
    scaled = samples / np.where(peak > 0, peak, 1.0)
    centred = scaled - scaled.mean(axis=1, keepdims=True)
    centred /= np.max(np.abs(centred), axis=1, keepdims=True)  # keeps squares finite near 1e200
    return centred / centred.std(axis=1, keepdims=True)


def fitted_cdf(ordered: np.ndarray) -> np.ndarray:
    """Φ of each sorted row standardised by its mean and std (ddof=1), as Lilliefors and A-D use it."""
    mean = ordered.mean(axis=1, keepdims=True)
    sd = ordered.std(axis=1, ddof=1, keepdims=True)
    return special.ndtr((ordered - mean) / sd)


def ks_distance(cdf: np.ndarray) -> np.ndarray:
    """Max |F_n − F| per row, from the fitted CDF at the sorted sample."""
    upper, lower, _ = _rank_grid(cdf.shape[1])
    return np.maximum(np.max(upper - cdf, axis=1), np.max(cdf - lower, axis=1))


def lilliefors_statistic(ordered: np.ndarray) -> np.ndarray:
    """KS distance to the normal with estimated mean and std, row-wise on sorted samples.

    Parameters
    ----------
    ordered : ndarray, shape (m, n)
        Each row a sample sorted ascending.
    """
    return ks_distance(fitted_cdf(ordered))


def lilliefors_null_draws(n: int) -> int:
    """Monte Carlo draws of the Lilliefors null for sample size ``n``: 4·10⁶ // n within [2000, 20000].

    The size of the Monte Carlo test at level α is off by the sampling error of
    the null's (1 − α) quantile, about √(α(1 − α)/draws): 0.49 points of 5% with
    2000 draws (measured 5.5% at n = 20 and 50), 0.15 points with 20000. Small
    samples, where draws are cheap, get 20000 (n <= 200); n >= 2000 keeps 2000
    (10⁷ values at n = 5000, about a second once per n).
    """
    return int(min(LILLIEFORS_MAX_NULL_DRAWS, max(LILLIEFORS_NULL_DRAWS, _LILLIEFORS_NULL_VALUES // n)))


@lru_cache(maxsize=128)
def lilliefors_null(n: int) -> np.ndarray:
    """Sorted Monte Carlo draws of the Lilliefors statistic under normality for sample size n.

    :func:`lilliefors_null_draws` draws, seeded by ``n`` (the same null in every process).
    """
    rng = np.random.default_rng(20_170_101 + n)
    total = lilliefors_null_draws(n)
    block = max(1, min(total, 2_000_000 // n))
    draws = []
    for start in range(0, total, block):
        size = min(block, total - start)
        draws.append(lilliefors_statistic(np.sort(rng.standard_normal((size, n)), axis=1)))
    return _frozen(np.sort(np.concatenate(draws)))[0]


def dallal_wilkinson_p(ks_d: np.ndarray, n: int) -> np.ndarray:
    """Dallal & Wilkinson's (1986) analytic approximation of the Lilliefors p-value, valid for p < 0.1.

    p ≈ exp(−7.01256 D²(n + 2.78019) + 2.99587 D √(n + 2.78019) − 0.122119
    + 0.974598/√n + 1.67997/n); above n = 100, D is scaled by (n/100)^0.49 and
    n set to 100 (as ``statsmodels``' ``lilliefors(pvalmethod="approx")``).
    """
    d = np.asarray(ks_d, dtype=np.float64)
    if n > 100:
        d = d * (n / 100.0) ** 0.49
        n = 100
    m = n + 2.78019
    return np.exp(
        -7.01256 * d * d * m + 2.99587 * d * math.sqrt(m) - 0.122119 + 0.974598 / math.sqrt(n) + 1.67997 / n
    )


def lilliefors_p_and_floor(ks_d: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """Lilliefors p-values of statistics ``ks_d`` for size ``n``, and the Monte Carlo floor 1/(draws + 1).

    Inside the simulated range the p-value is the Monte Carlo
    (1 + #{null >= D}) / (draws + 1), at least 2/(draws + 1). Where D exceeds
    every null draw the simulation says only p < 1/(draws + 1) (the floor, an
    upper bound there): the p-value is then Dallal & Wilkinson's tail
    approximation (:func:`dallal_wilkinson_p`) capped at the floor. So a
    p-value at or below the floor is beyond the simulated range.
    """
    null = lilliefors_null(int(n))
    ks_d = np.asarray(ks_d, dtype=np.float64)
    exceed = null.size - np.searchsorted(null, ks_d, side="left")
    floor = 1.0 / (null.size + 1)
    beyond = exceed == 0
    p = (1 + exceed) / (null.size + 1)
    if beyond.any():
        with np.errstate(under="ignore"):
            p = np.where(beyond, np.minimum(dallal_wilkinson_p(ks_d, int(n)), floor), p)
    return p, floor


def lilliefors_p(ks_d: np.ndarray, n: int) -> np.ndarray:
    """Lilliefors p-values for size n: Monte Carlo, and Dallal-Wilkinson beyond the simulated range.

    See :func:`lilliefors_p_and_floor` (which also gives the bound that holds there).
    """
    return lilliefors_p_and_floor(ks_d, n)[0]


def anderson_darling(ordered: np.ndarray, cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anderson-Darling A² (estimated mean and std) and its p-value, per sorted row.

    A² = −n − Σ (2i − 1)/n [ln Φ(w_i) + ln(1 − Φ(w_{n+1−i}))]; the p-value uses
    Stephens' case-3 modification A²(1 + 0.75/n + 2.25/n²) and D'Agostino &
    Stephens' (1986) piecewise formulas, as ``statsmodels``' ``normal_ad``. Rows
    whose CDF reaches 0 or 1 take their logs from ``log_ndtr`` (exact tails).
    """
    n = ordered.shape[1]
    inside = (cdf[:, 0] > 0) & (cdf[:, -1] < 1)  # Φ never reaches 0 or 1: plain logs are exact
    if inside.all():
        log_terms = np.log(cdf) + np.log1p(-cdf[:, ::-1])
    else:
        log_terms = np.empty_like(cdf)
        log_terms[inside] = np.log(cdf[inside]) + np.log1p(-cdf[inside][:, ::-1])
        rows = ordered[~inside]
        w = (rows - rows.mean(axis=1, keepdims=True)) / rows.std(axis=1, ddof=1, keepdims=True)
        log_terms[~inside] = special.log_ndtr(w) + special.log_ndtr(-w[:, ::-1])
    a2 = -n - log_terms @ _rank_grid(n)[2]
    return a2, anderson_darling_p(a2 * (1 + 0.75 / n + 2.25 / n**2))


def anderson_darling_p(modified_a2: np.ndarray) -> np.ndarray:
    """D'Agostino & Stephens' p-value of the modified statistic m = A²(1 + 0.75/n + 2.25/n²).

    Four pieces: p = 1 − exp(q(m)) for m < 0.2 and m < 0.34, p = exp(q(m)) for
    m < 0.6 and m <= 13 (q a quadratic per piece), 0 beyond 13.
    """
    m = np.asarray(modified_a2, dtype=np.float64)
    piece = np.searchsorted(_AD_BREAKS, m, side="right")
    c0, c1, c2 = _AD_COEFFICIENTS[:, piece]
    e = np.exp(c0 + c1 * m + c2 * m * m)
    return np.where(piece < 2, 1 - e, np.where(piece < 4, e, 0.0))


_AD_BREAKS = np.array([0.2, 0.34, 0.6, np.nextafter(13.0, np.inf)])  # pieces are [a, b), the 4th ends at 13

_AD_COEFFICIENTS = np.array(
    [
        [-13.436, -8.318, 0.9177, 1.2937, 0.0],
        [101.14, 42.796, -4.279, -5.709, 0.0],
        [-223.73, -59.938, -1.38, 0.0186, 0.0],
    ]
)
"""Quadratics in m of the pieces m < 0.2, < 0.34, < 0.6, <= 13 and beyond (the last unused)."""


def skew_kurtosis(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Biased sample skewness and excess kurtosis of each row."""
    z2 = z * z
    m2 = z2.mean(axis=1)
    return (z2 * z).mean(axis=1) / m2**1.5, (z2 * z2).mean(axis=1) / m2**2 - 3.0


def dagostino_pearson_p(skew: np.ndarray, excess_kurtosis: np.ndarray, n: int) -> np.ndarray:
    """D'Agostino-Pearson K² p-values from biased sample skewness and excess kurtosis (n >= 20).

    K² = Z₁² + Z₂² with D'Agostino's (1970) transform of the skewness and Anscombe &
    Glynn's (1983) transform of the kurtosis; K² ~ χ²₂ under normality. The same
    formulas as ``scipy.stats.normaltest``.
    """
    skew = np.asarray(skew, dtype=np.float64)
    b2 = np.asarray(excess_kurtosis, dtype=np.float64) + 3.0
    y = skew * math.sqrt((n + 1) * (n + 3) / (6.0 * (n - 2)))
    beta2 = 3.0 * (n * n + 27 * n - 70) * (n + 1) * (n + 3) / ((n - 2.0) * (n + 5) * (n + 7) * (n + 9))
    w2 = -1 + math.sqrt(2 * (beta2 - 1))
    delta = 1 / math.sqrt(0.5 * math.log(w2))
    alpha = math.sqrt(2.0 / (w2 - 1))
    y = np.where(y == 0, 1.0, y)
    z_skew = delta * np.log(y / alpha + np.sqrt((y / alpha) ** 2 + 1))

    expected = 3.0 * (n - 1) / (n + 1)
    var_b2 = 24.0 * n * (n - 2) * (n - 3) / ((n + 1) * (n + 1.0) * (n + 3) * (n + 5))
    x = (b2 - expected) / math.sqrt(var_b2)
    sqrt_beta1 = (
        6.0
        * (n * n - 5 * n + 2)
        / ((n + 7) * (n + 9))
        * math.sqrt(6.0 * (n + 3) * (n + 5) / (n * (n - 2) * (n - 3)))
    )
    a = 6.0 + 8.0 / sqrt_beta1 * (2.0 / sqrt_beta1 + math.sqrt(1 + 4.0 / sqrt_beta1**2))
    denom = 1 + x * math.sqrt(2 / (a - 4.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        term2 = np.sign(denom) * np.abs((1 - 2.0 / a) / denom) ** (1 / 3.0)
    z_kurt = (1 - 2 / (9.0 * a) - term2) / math.sqrt(2 / (9.0 * a))
    p = np.exp(-0.5 * (z_skew * z_skew + z_kurt * z_kurt))  # χ²₂ survival function
    return np.where(denom == 0, np.nan, p)


def jarque_bera_p(skew: np.ndarray, excess_kurtosis: np.ndarray, n: int) -> np.ndarray:
    """Jarque-Bera p-values, JB = n/6 (S² + K²/4) ~ χ²₂ (asymptotic)."""
    skew, kurt = np.asarray(skew, dtype=np.float64), np.asarray(excess_kurtosis, dtype=np.float64)
    return np.exp(-0.5 * n / 6.0 * (skew * skew + kurt * kurt / 4.0))


@lru_cache(maxsize=256)
def blom_positions(n: int) -> np.ndarray:
    """Expected normal order statistics, Blom's approximation Φ⁻¹((i − 3/8)/(n + 1/4)) (read-only)."""
    i = np.arange(1, int(n) + 1, dtype=np.float64)
    return _frozen(special.ndtri((i - 0.375) / (n + 0.25)))[0]


def probability_plot_r(ordered: np.ndarray) -> np.ndarray:
    """Correlation of each sorted row with the Blom positions (the QQ-plot correlation)."""
    m = blom_positions(ordered.shape[1])
    dc = ordered - ordered.mean(axis=1, keepdims=True)
    return (dc @ m) / np.sqrt(np.einsum("ij,ij->i", dc, dc) * (m @ m))


def _royston_params(n: int) -> tuple[float, float]:
    """Mean and sd of ln(1 − W') under normality (Royston 1993, 5 <= n <= 5000)."""
    u = math.log(n)
    v = math.log(u)
    return -1.2725 + 1.0521 * (v - u), 1.0308 - 0.26758 * (v + 2.0 / u)


@lru_cache(maxsize=1024)
def qq_r_critical(n: int, alpha: float = 0.05) -> float:
    """Critical value of the probability-plot correlation ``qq_r`` at level ``alpha``.

    ``qq_r`` with Blom positions is the square root of the Shapiro-Francia W'.
    Under normality ln(1 − W') is close to normal (Royston 1993) for
    5 <= n <= 5000; beyond 5000 the approximation is extrapolated. A sample
    with ``qq_r`` below the critical value is rejected at level ``alpha``.
    """
    if n < 5:
        return float("nan")
    mu, sigma = _royston_params(n)
    w_crit = 1.0 - math.exp(mu + sigma * float(special.ndtri(1.0 - alpha)))
    return math.sqrt(max(w_crit, 0.0))


def shapiro_francia_p(qq_r: np.ndarray, n: int) -> np.ndarray:
    """p-values of the Shapiro-Francia test W' = qq_r² (Royston's approximation)."""
    qq_r = np.asarray(qq_r, dtype=np.float64)
    if n < 5:
        return np.full(qq_r.shape, np.nan)
    one_minus_w = np.maximum(1.0 - qq_r * qq_r, 1e-300)
    mu, sigma = _royston_params(n)
    return special.ndtr(-(np.log(one_minus_w) - mu) / sigma)


@lru_cache(maxsize=256)
def _w1_grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per quantile interval [i/n, (i+1)/n]: its ends' normal quantiles and u₁ + u₂, and Σ (φ₁ + φ₂)."""
    u = np.arange(n + 1, dtype=np.float64) / n
    q = special.ndtri(u)  # -inf ... +inf
    phi = np.exp(-0.5 * np.where(np.isfinite(q), q, 0.0) ** 2) / _SQRT_2PI
    phi[~np.isfinite(q)] = 0.0
    q1, q2, u_sum = _frozen(q[:-1].copy(), q[1:].copy(), u[:-1] + u[1:])
    return q1, q2, u_sum, float(np.sum(phi[:-1] + phi[1:]))


def wasserstein1_to_normal(ordered: np.ndarray) -> np.ndarray:
    """Exact Wasserstein-1 distance between each standardised sorted row's empirical law and N(0, 1).

    W1 = ∫₀¹ |F_n⁻¹(u) − Φ⁻¹(u)| du, integrated exactly on each of the n
    quantile intervals [u₁, u₂] using ∫ Φ⁻¹(u) du = −φ(Φ⁻¹(u)). On an interval
    where the sample holds the value a, split at u* = Φ(a) clipped into
    [u₁, u₂] (equivalently Φ(a*) with a* = a clipped into [Φ⁻¹(u₁), Φ⁻¹(u₂)]):
    the integral is a(2u* − u₁ − u₂) + 2φ(a*) − φ₁ − φ₂. In units of σ.
    """
    q1, q2, u_sum, phi_total = _w1_grid(ordered.shape[1])
    clipped = np.clip(ordered, q1, q2)
    phi_at = np.exp(-0.5 * clipped * clipped) / _SQRT_2PI
    return (
        np.einsum("ij,ij->i", ordered, 2 * special.ndtr(clipped) - u_sum) + 2 * phi_at.sum(axis=1) - phi_total
    )


def shapiro_wilk(z: np.ndarray, ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapiro-Wilk W and p per row (scipy), on the sorted row, or on a seeded 5000 of a longer one."""
    k, n = z.shape
    w, p = np.empty(k), np.empty(k)
    for i in range(k):
        # W does not depend on the order of the values: the sorted copy saves scipy most of its own sort
        row = ordered[i] if n <= MAX_TESTED else z[i, subsample_indices(n, MAX_TESTED, n)]
        result = _shapiro(row)
        w[i], p[i] = result.statistic, result.pvalue
    return w, p
