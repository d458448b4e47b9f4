"""Normality of a 1-D sample: tests, effect sizes and a verdict.

Every function here works in float64 on the host and is scale-invariant: the
sample is standardised before testing, so multiplying the data by any positive
constant leaves every statistic unchanged.

Pitfalls respected (see DESIGN.md §2):

* no ``scipy.stats.kstest`` against a normal with estimated parameters; the KS
  statistic is tested with Lilliefors' null distribution instead;
* Shapiro-Wilk (and every other test, for comparability) runs on a seeded
  subsample of at most 5000 values, the range where its p-values are valid;
* effect sizes are reported beside p-values, and the verdict is driven by
  them, because with large n every test rejects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np
from scipy import special, stats

from goup_probe import schema

MAX_TESTED = 5000
"""Largest subsample the tests run on (Shapiro-Wilk's p-values are valid up to 5000)."""
MIN_TESTED = 8
"""Fewest values on which the tests are run at all."""
MIN_DAGOSTINO = 20
"""D'Agostino-Pearson's kurtosis test needs n >= 20."""
LILLIEFORS_NULL_DRAWS = 2000
"""Monte Carlo draws of the Lilliefors null distribution per sample size."""
_RELATIVE_CONSTANT = 1e-12
_shapiro = getattr(stats.shapiro, "__wrapped__", stats.shapiro)
"""scipy's Shapiro-Wilk without its axis/NaN-policy wrapper (3× faster on a clean 1-D sample)."""


@dataclass(frozen=True)
class VerdictThresholds:
    """Thresholds that turn test results and effect sizes into a verdict.

    A sample is called

    * **Gaussian** when Shapiro-Wilk does not reject normality at ``alpha`` on at
      least ``min_n_gaussian`` values;
    * **inconclusive** when it does not reject on fewer values: with n = 16 the
      test misses a uniform distribution 87% of the time, so "not rejected"
      says nothing about the shape;
    * **negligible deviation** when it rejects, but every effect size is small:
      ``w1_sigma <= max_w1_sigma``, ``|skew| <= max_abs_skew`` and
      ``|excess_kurtosis| <= max_abs_excess_kurtosis`` (with n in the thousands a
      test detects deviations far too small to matter);
    * **non-Gaussian** otherwise.

    The defaults put a uniform distribution (W1 = 0.15 sigma, excess kurtosis -1.2),
    a Laplace (W1 = 0.15 sigma, excess kurtosis 3) and a Student-t(3) clearly in
    the non-Gaussian class.
    """

    alpha: float = 0.05
    max_w1_sigma: float = 0.05
    max_abs_skew: float = 0.5
    max_abs_excess_kurtosis: float = 1.0
    min_n_gaussian: int = 50

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        for name in ("max_w1_sigma", "max_abs_skew", "max_abs_excess_kurtosis", "min_n_gaussian"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


DEFAULT_THRESHOLDS = VerdictThresholds()


@dataclass(frozen=True)
class Moments:
    """Moments of a whole array (finite values only), as computed on the device or host."""

    numel: int
    nonfinite: int
    mean: float
    std: float
    skew: float
    excess_kurtosis: float
    min: float
    max: float

    @property
    def n_finite(self) -> int:
        """Number of finite values the moments are computed from."""
        return self.numel - self.nonfinite

    @classmethod
    def from_central_moments(
        cls,
        *,
        numel: int,
        nonfinite: int,
        mean: float,
        m2: float,
        m3: float,
        m4: float,
        minimum: float,
        maximum: float,
    ) -> Moments:
        """Build from the mean and the 2nd-4th central moments (population, 1/n)."""
        std = math.sqrt(m2) if m2 > 0 else 0.0
        if m2 > 0:
            skew = m3 / (m2 * math.sqrt(m2))  # products overflow to inf, ** would raise
            kurt = m4 / (m2 * m2) - 3.0
        else:
            skew = kurt = float("nan")
        return cls(numel, nonfinite, mean, std, skew, kurt, minimum, maximum)


def moments(x: np.ndarray) -> Moments:
    """Moments of all finite values of ``x`` in float64 (two-pass, numerically stable).

    Parameters
    ----------
    x : array_like
        Any array; it is flattened.
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    finite = np.isfinite(a)
    nonfinite = int(a.size - np.count_nonzero(finite))
    if nonfinite:
        a = a[finite]
    if a.size == 0:
        nan = float("nan")
        return Moments(int(finite.size), nonfinite, nan, nan, nan, nan, nan, nan)
    mean = float(a.mean())
    centred = a - mean
    scale = float(np.max(np.abs(centred)))
    if scale == 0:
        return Moments(int(finite.size), nonfinite, mean, 0.0, math.nan, math.nan, mean, mean)
    c = centred / scale  # powers of values near 1e100 would overflow
    sq = c * c
    m2 = float(sq.mean())
    return Moments(
        numel=int(finite.size),
        nonfinite=nonfinite,
        mean=mean,
        std=scale * math.sqrt(m2),
        skew=float((sq * c).mean()) / m2**1.5,
        excess_kurtosis=float((sq * sq).mean()) / m2**2 - 3.0,
        min=float(a.min()),
        max=float(a.max()),
    )


@dataclass(frozen=True)
class NormalityResult:
    """Normality statistics of one sample; field names match the stats columns.

    Moments (``mean`` to ``max``) describe all finite values; the tests and
    effect sizes (``ks_d`` to ``w1_sigma``) describe the subsample of
    ``n_tested`` values. Statistics that could not be computed are NaN, and
    ``status``/``reason`` say why.
    """

    numel: int
    n_tested: int
    nonfinite: int
    mean: float
    std: float
    skew: float
    skew_se: float
    excess_kurtosis: float
    kurtosis_se: float
    min: float
    max: float
    ks_d: float
    lilliefors_p: float
    shapiro_w: float
    shapiro_p: float
    anderson_a2: float
    anderson_p: float
    dagostino_p: float
    jarque_bera_p: float
    qq_r: float
    qq_r_crit05: float
    shapiro_francia_p: float
    w1_sigma: float
    axis: str
    status: str
    reason: str
    verdict: str

    def to_dict(self) -> dict[str, object]:
        """Plain dictionary, ready to become a stats row (shallow: every field is a scalar)."""
        return {name: getattr(self, name) for name in _RESULT_FIELDS}


_RESULT_FIELDS = tuple(f.name for f in fields(NormalityResult))
_TEST_FIELDS = (
    "ks_d",
    "lilliefors_p",
    "shapiro_w",
    "shapiro_p",
    "anderson_a2",
    "anderson_p",
    "dagostino_p",
    "jarque_bera_p",
    "qq_r",
    "qq_r_crit05",
    "shapiro_francia_p",
    "w1_sigma",
)


def subsample_indices(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform subsample of ``min(n, k)`` out of ``n``.

    Uses an O(k) algorithm for large ``n``, so choosing 5000 out of 10^9 costs
    nothing. The same ``(n, k, seed)`` always gives the same indices.
    """
    if n <= k:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


def normality(
    x: np.ndarray,
    *,
    axis: str = schema.AXIS_POOLED,
    max_tested: int = MAX_TESTED,
    seed: int = 0,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
) -> NormalityResult:
    """Test a 1-D sample for normality and measure how far from normal it is.

    Parameters
    ----------
    x : array_like
        Values; flattened. Non-finite values are counted and excluded.
    axis : str
        What the values are: ``"pooled"`` (coordinates of one tensor at one step)
        or ``"time"`` (one coordinate over time). Recorded, not used.
    max_tested : int
        Tests run on a seeded subsample of at most this many finite values.
    seed : int
        Seed of the subsample.
    thresholds : VerdictThresholds
        Effect-size thresholds of the verdict.

    Returns
    -------
    NormalityResult
        Moments of all finite values, tests and effect sizes on the subsample.

    Examples
    --------
    >>> import numpy as np, goup_probe as gp
    >>> r = gp.normality(np.random.default_rng(0).uniform(size=4000))
    >>> r.verdict, round(r.excess_kurtosis, 1)
    ('non-Gaussian', -1.2)
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    if max_tested < MIN_TESTED:
        raise ValueError(f"max_tested must be >= {MIN_TESTED}, got {max_tested}")
    full = moments(a)
    finite = a[np.isfinite(a)] if full.nonfinite else a
    sample = finite[subsample_indices(finite.size, max_tested, seed)]
    return assess_sample(full, sample, axis=axis, thresholds=thresholds)


def assess_sample(
    full: Moments,
    sample: np.ndarray,
    *,
    axis: str = schema.AXIS_POOLED,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    tested: bool = True,
) -> NormalityResult:
    """Combine whole-array moments with tests on a subsample into one result.

    This is the path the probe takes: ``full`` is reduced on the device over the
    whole tensor, ``sample`` is the seeded subsample copied to the host.

    Parameters
    ----------
    full : Moments
        Moments of the whole array.
    sample : ndarray
        Subsample to test; non-finite values are dropped.
    axis : str
        Axis label recorded in the result.
    thresholds : VerdictThresholds
        Effect-size thresholds of the verdict.
    tested : bool
        When false, only the moments are reported (tests NaN, verdict "not tested").
    """
    s = np.asarray(sample, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    n_fin = full.n_finite
    base = {
        "numel": int(full.numel),
        "n_tested": int(s.size),
        "nonfinite": int(full.nonfinite),
        "mean": full.mean,
        "std": full.std,
        "skew": full.skew,
        "skew_se": math.sqrt(6.0 / n_fin) if n_fin > 0 else float("nan"),
        "excess_kurtosis": full.excess_kurtosis,
        "kurtosis_se": math.sqrt(24.0 / n_fin) if n_fin > 0 else float("nan"),
        "min": full.min,
        "max": full.max,
        "axis": axis,
    }
    nan_tests = dict.fromkeys(_TEST_FIELDS, float("nan"))
    status, reason = _degenerate_status(full, s)
    if status is not None:
        return NormalityResult(
            **base, **nan_tests, status=status, reason=reason, verdict=schema.VERDICT_NOT_TESTED
        )
    if not tested:
        return NormalityResult(
            **base,
            **nan_tests,
            status=schema.STATUS_OK,
            reason="moments only (quantity not in tested)",
            verdict=schema.VERDICT_NOT_TESTED,
        )
    centred = s - s.mean()
    centred /= np.max(np.abs(centred))  # keeps squares finite for values near 1e200
    z = centred / centred.std()
    tests = _run_tests(z)
    status = schema.STATUS_NONFINITE_EXCLUDED if full.nonfinite else schema.STATUS_OK
    reason = f"{full.nonfinite} non-finite values excluded" if full.nonfinite else ""
    result = NormalityResult(**base, **tests, status=status, reason=reason, verdict=schema.VERDICT_NOT_TESTED)
    return replace(result, verdict=verdict(result, thresholds))


def _degenerate_status(full: Moments, sample: np.ndarray) -> tuple[str | None, str]:
    if full.numel == 0:
        return schema.STATUS_TOO_FEW, "empty tensor"
    if full.n_finite == 0:
        return schema.STATUS_ALL_NONFINITE, f"all {full.numel} values are NaN/Inf"
    if full.n_finite < 2:
        return schema.STATUS_TOO_FEW, "a single value: no spread to test"
    if full.std == 0 or full.std <= _RELATIVE_CONSTANT * abs(full.mean):
        return schema.STATUS_CONSTANT, f"all values equal {full.mean:.6g}"
    if sample.size < MIN_TESTED:
        return schema.STATUS_TOO_FEW, f"{sample.size} values; tests need at least {MIN_TESTED}"
    if np.ptp(sample) == 0:
        return schema.STATUS_CONSTANT, "the tested subsample is constant"
    return None, ""


def _run_tests(z: np.ndarray) -> dict[str, float]:
    """All tests on a standardised sample ``z`` (mean 0, std 1, n >= MIN_TESTED)."""
    n = z.size
    ordered = np.sort(z)
    w = (ordered - ordered.mean()) / ordered.std(ddof=1)  # the standardisation of Lilliefors and A-D
    cdf = special.ndtr(w)
    ks_d = _ks_distance(cdf)
    lf_p = lilliefors_p(ks_d, n)
    # Shapiro-Wilk's p-values are valid up to 5000 values: a larger max_tested tests a seeded 5000
    # W does not depend on the order of the values: the sorted copy saves scipy most of its own sort
    shapiro = _shapiro(ordered if n <= MAX_TESTED else z[subsample_indices(n, MAX_TESTED, n)])
    a2, ad_p = anderson_darling(ordered, cdf=cdf)
    g1, g2 = _sample_skew_kurtosis(z)
    dagostino_p = dagostino_pearson_p(g1, g2, n) if n >= MIN_DAGOSTINO else float("nan")
    jb_p = jarque_bera_p(g1, g2, n)
    qq_r = _probability_plot_r(ordered)
    return {
        "ks_d": float(ks_d),
        "lilliefors_p": float(lf_p),
        "shapiro_w": float(shapiro.statistic),
        "shapiro_p": float(shapiro.pvalue),
        "anderson_a2": float(a2),
        "anderson_p": float(ad_p),
        "dagostino_p": dagostino_p,
        "jarque_bera_p": jb_p,
        "qq_r": qq_r,
        "qq_r_crit05": qq_r_critical(n, 0.05),
        "shapiro_francia_p": shapiro_francia_p(qq_r, n),
        "w1_sigma": wasserstein1_to_normal(ordered),
    }


@lru_cache(maxsize=256)
def _rank_grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """i/n, (i − 1)/n and the Anderson-Darling weights (2i − 1)/n for i = 1..n (cached per n)."""
    i = np.arange(1, n + 1, dtype=np.float64)
    grid = (i / n, (i - 1) / n, (2 * i - 1) / n)
    for array in grid:
        array.setflags(write=False)
    return grid


def _ks_distance(cdf: np.ndarray) -> float:
    """Max |F_n − F| from the fitted CDF at the sorted sample."""
    upper, lower, _ = _rank_grid(cdf.size)
    return float(max(np.max(upper - cdf), np.max(cdf - lower)))


def anderson_darling(ordered: np.ndarray, cdf: np.ndarray | None = None) -> tuple[float, float]:
    """Anderson-Darling A² against the normal with estimated mean and std, and its p-value.

    A² = −n − Σ (2i − 1)/n [ln Φ(w_i) + ln(1 − Φ(w_{n+1−i}))] with w the sample
    standardised by its mean and std (ddof=1); the p-value uses Stephens' case-3
    modification A²(1 + 0.75/n + 2.25/n²) and D'Agostino & Stephens' (1986)
    piecewise formulas — the same as ``statsmodels.stats.diagnostic.normal_ad``,
    with log Φ computed stably in the tails.

    Parameters
    ----------
    ordered : ndarray
        The sample, sorted ascending (n >= 8).
    cdf : ndarray, optional
        Φ of the standardised sample, if already computed; the logs are taken
        from it unless a value is 0 or 1, where ``log_ndtr`` keeps the tails exact.
    """
    n = ordered.size

    def standardised() -> np.ndarray:
        return (ordered - ordered.mean()) / ordered.std(ddof=1)

    if cdf is None:
        cdf = special.ndtr(standardised())
    with np.errstate(divide="ignore"):
        log_terms = np.log(cdf) + np.log1p(-cdf[::-1])
    if not np.isfinite(log_terms).all():
        w = standardised()
        log_terms = special.log_ndtr(w) + special.log_ndtr(-w[::-1])
    a2 = float(-n - np.dot(_rank_grid(n)[2], log_terms))
    m = a2 * (1 + 0.75 / n + 2.25 / n**2)
    if m < 0.2:
        p = 1 - math.exp(-13.436 + 101.14 * m - 223.73 * m * m)
    elif m < 0.34:
        p = 1 - math.exp(-8.318 + 42.796 * m - 59.938 * m * m)
    elif m < 0.6:
        p = math.exp(0.9177 - 4.279 * m - 1.38 * m * m)
    elif m <= 13:
        p = math.exp(1.2937 - 5.709 * m + 0.0186 * m * m)
    else:
        p = 0.0
    return a2, p


def lilliefors_statistic(ordered: np.ndarray) -> np.ndarray:
    """KS distance to the normal with estimated mean and std, row-wise on sorted samples.

    Parameters
    ----------
    ordered : ndarray, shape (m, n)
        Each row a sample sorted ascending.
    """
    n = ordered.shape[1]
    mean = ordered.mean(axis=1, keepdims=True)
    sd = ordered.std(axis=1, ddof=1, keepdims=True)
    cdf = special.ndtr((ordered - mean) / sd)
    i = np.arange(1, n + 1, dtype=np.float64)
    d_plus = np.max(i / n - cdf, axis=1)
    d_minus = np.max(cdf - (i - 1) / n, axis=1)
    return np.maximum(d_plus, d_minus)


@lru_cache(maxsize=128)
def _lilliefors_null(n: int) -> np.ndarray:
    """Sorted Monte Carlo draws of the Lilliefors statistic under normality for sample size n."""
    rng = np.random.default_rng(20_170_101 + n)
    block = max(1, min(LILLIEFORS_NULL_DRAWS, 2_000_000 // n))
    draws = []
    for start in range(0, LILLIEFORS_NULL_DRAWS, block):
        size = min(block, LILLIEFORS_NULL_DRAWS - start)
        draws.append(lilliefors_statistic(np.sort(rng.standard_normal((size, n)), axis=1)))
    return np.sort(np.concatenate(draws))


def lilliefors_p(ks_d: float, n: int) -> float:
    """Monte Carlo p-value of the Lilliefors statistic (estimated mean and std).

    The null distribution for this ``n`` is simulated once ({draws} seeded draws)
    and cached; the p-value is (1 + #{{null >= D}}) / (draws + 1), so it is never
    below 1/(draws + 1). Unlike the tabulated approximations it is calibrated at
    every n (statsmodels' table rejects about 3.5% of normal samples at 5% for
    n of a few thousand).
    """
    null = _lilliefors_null(int(n))
    exceed = null.size - np.searchsorted(null, ks_d, side="left")
    return float((1 + exceed) / (null.size + 1))


lilliefors_p.__doc__ = lilliefors_p.__doc__.format(draws=LILLIEFORS_NULL_DRAWS)


def _sample_skew_kurtosis(z: np.ndarray) -> tuple[float, float]:
    """Biased sample skewness and excess kurtosis of a standardised sample."""
    z2 = z * z
    m2 = float(z2.mean())
    return float((z2 * z).mean()) / m2**1.5, float((z2 * z2).mean()) / m2**2 - 3.0


def dagostino_pearson_p(skew: float, excess_kurtosis: float, n: int) -> float:
    """D'Agostino-Pearson K² p-value from the biased sample skewness and excess kurtosis.

    K² = Z₁² + Z₂² with D'Agostino's (1970) transform of the skewness and Anscombe &
    Glynn's (1983) transform of the kurtosis; K² ~ χ²₂ under normality. The same
    formulas as ``scipy.stats.normaltest``, evaluated from two numbers (n >= 20).
    """
    y = skew * math.sqrt((n + 1) * (n + 3) / (6.0 * (n - 2)))
    beta2 = 3.0 * (n * n + 27 * n - 70) * (n + 1) * (n + 3) / ((n - 2.0) * (n + 5) * (n + 7) * (n + 9))
    w2 = -1 + math.sqrt(2 * (beta2 - 1))
    delta = 1 / math.sqrt(0.5 * math.log(w2))
    alpha = math.sqrt(2.0 / (w2 - 1))
    y = y if y != 0 else 1.0
    z_skew = delta * math.log(y / alpha + math.sqrt((y / alpha) ** 2 + 1))

    b2 = excess_kurtosis + 3.0
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
    if denom == 0:
        return float("nan")
    term2 = math.copysign(abs((1 - 2.0 / a) / denom) ** (1 / 3.0), denom)
    z_kurt = (1 - 2 / (9.0 * a) - term2) / math.sqrt(2 / (9.0 * a))
    return math.exp(-0.5 * (z_skew * z_skew + z_kurt * z_kurt))  # χ²₂ survival function


def jarque_bera_p(skew: float, excess_kurtosis: float, n: int) -> float:
    """Jarque-Bera p-value, JB = n/6 (S² + K²/4) ~ χ²₂ (asymptotic)."""
    jb = n / 6.0 * (skew * skew + excess_kurtosis * excess_kurtosis / 4.0)
    return math.exp(-0.5 * jb)


@lru_cache(maxsize=256)
def _blom_cached(n: int) -> np.ndarray:
    i = np.arange(1, n + 1, dtype=np.float64)
    positions = special.ndtri((i - 0.375) / (n + 0.25))
    positions.setflags(write=False)
    return positions


def blom_positions(n: int) -> np.ndarray:
    """Expected normal order statistics, Blom's approximation Φ⁻¹((i − 3/8)/(n + 1/4))."""
    return _blom_cached(int(n))


def _probability_plot_r(ordered: np.ndarray) -> float:
    m = blom_positions(ordered.size)
    dc = ordered - ordered.mean()
    return float(np.dot(dc, m) / math.sqrt(np.dot(dc, dc) * np.dot(m, m)))


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


def shapiro_francia_p(qq_r: float, n: int) -> float:
    """p-value of the Shapiro-Francia test W' = qq_r² (Royston's approximation)."""
    if n < 5 or not math.isfinite(qq_r):
        return float("nan")
    one_minus_w = max(1.0 - qq_r * qq_r, 1e-300)
    mu, sigma = _royston_params(n)
    return float(special.ndtr(-(math.log(one_minus_w) - mu) / sigma))


@lru_cache(maxsize=256)
def _w1_grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per quantile interval [i/n, (i+1)/n]: its ends' normal quantiles and u₁ + u₂, and Σ (φ₁ + φ₂)."""
    u = np.arange(n + 1, dtype=np.float64) / n
    q = special.ndtri(u)  # -inf ... +inf
    phi = np.exp(-0.5 * np.where(np.isfinite(q), q, 0.0) ** 2) / math.sqrt(2 * math.pi)
    phi[~np.isfinite(q)] = 0.0
    q1, q2, u_sum = q[:-1].copy(), q[1:].copy(), u[:-1] + u[1:]
    for array in (q1, q2, u_sum):
        array.setflags(write=False)
    return q1, q2, u_sum, float(np.sum(phi[:-1] + phi[1:]))


def wasserstein1_to_normal(ordered: np.ndarray) -> float:
    """Exact Wasserstein-1 distance between the empirical law of a standardised sample and N(0, 1).

    W1 = ∫₀¹ |F_n⁻¹(u) − Φ⁻¹(u)| du, integrated exactly on each of the n
    quantile intervals [u₁, u₂] using ∫ Φ⁻¹(u) du = −φ(Φ⁻¹(u)). In units of σ
    because the sample is standardised.

    On an interval where the sample holds the value a, split at u* = Φ(a)
    clipped into [u₁, u₂] (equivalently Φ(a*) with a* = a clipped into
    [Φ⁻¹(u₁), Φ⁻¹(u₂)]): the integral is a(u* − u₁) − (φ₁ − φ(a*)) +
    (φ(a*) − φ₂) − a(u₂ − u*) = a(2u* − u₁ − u₂) + 2φ(a*) − φ₁ − φ₂.
    """
    q1, q2, u_sum, phi_total = _w1_grid(ordered.size)
    a = ordered
    clipped = np.clip(a, q1, q2)
    phi_at = np.exp(-0.5 * clipped * clipped) / math.sqrt(2 * math.pi)
    return float(np.dot(a, 2 * special.ndtr(clipped) - u_sum) + 2 * phi_at.sum() - phi_total)


def verdict(result: NormalityResult, thresholds: VerdictThresholds = DEFAULT_THRESHOLDS) -> str:
    """Verdict of a tested result: Gaussian, negligible deviation, non-Gaussian or inconclusive."""
    if result.status not in schema.TESTED_STATUSES or not math.isfinite(result.shapiro_p):
        return schema.VERDICT_NOT_TESTED
    if result.shapiro_p >= thresholds.alpha:
        if result.n_tested < thresholds.min_n_gaussian:
            return schema.VERDICT_INCONCLUSIVE
        return schema.VERDICT_GAUSSIAN
    small = (
        result.w1_sigma <= thresholds.max_w1_sigma
        and abs(result.skew) <= thresholds.max_abs_skew
        and abs(result.excess_kurtosis) <= thresholds.max_abs_excess_kurtosis
    )
    return schema.VERDICT_NEGLIGIBLE if small else schema.VERDICT_NON_GAUSSIAN
