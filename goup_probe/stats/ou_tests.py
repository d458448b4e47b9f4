"""Batch AR(1) fits and residual tests for many series at once, one per column of a ``(time, series)`` array.

Closed-form equivalents of statsmodels/scipy (the tests check this): least-squares
AR(1) fits (:func:`ar1_batch`), autocorrelations (:func:`acf_batch`),
Ljung-Box with the AR(1) degrees of freedom (:func:`ljung_box_batch`,
:func:`ar1_lb_model_df`; on squared residuals it is McLeod-Li), Koenker's
state-dependent variance test (:func:`state_variance_batch`), D'Agostino-Pearson
normality (:func:`normality_batch`), Brown-Forsythe variance stability
(:func:`brown_forsythe_batch`) and the augmented Dickey-Fuller test
(:func:`adf_batch`). All work in float64 and are scale-invariant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import special, stats
from statsmodels.tsa.adfvalues import (  # MacKinnon's tables: one source for mackinnon_p and statsmodels
    _tau_largeps,
    _tau_maxs,
    _tau_mins,
    _tau_smallps,
    _tau_stars,
)

from goup_probe.stats.normal_tests import dagostino_pearson_p
from goup_probe.stats.ou_common import DEFAULT_WINDOWS, MIN_NORMALITY, _as_2d, _varies, default_adf_lags


@dataclass(frozen=True)
class AR1Batch:
    """Least-squares AR(1) fits ``y = c + φ x + e``, one per column.

    Equal to statsmodels' ``AutoReg(series, lags=1, trend="c")`` for
    ``x = series[:-1]``, ``y = series[1:]``. Columns with no variation are NaN.
    """

    n: int
    phi: np.ndarray
    intercept: np.ndarray
    phi_se: np.ndarray
    sigma2: np.ndarray
    loglik: np.ndarray
    resid: np.ndarray

    @property
    def k(self) -> np.ndarray:
        """Mean-reversion rates ``1 − φ̂``."""
        return 1.0 - self.phi

    @property
    def k_se(self) -> np.ndarray:
        """Standard errors of ``k̂`` (equal to those of φ̂)."""
        return self.phi_se


def ar1_batch(x: np.ndarray, y: np.ndarray) -> AR1Batch:
    """Fit ``y[:, j] = c_j + φ_j x[:, j] + e`` by least squares for every column ``j``.

    Parameters
    ----------
    x, y : array_like
        ``(T, C)`` arrays (or 1-D for one series): the state at t and at t + 1.

    Returns
    -------
    AR1Batch
        ``sigma2`` is RSS / T and ``phi_se`` = √(sigma2 / Σ(x − x̄)²), as in
        ``AutoReg``; ``loglik`` is the conditional Gaussian log-likelihood.
    """
    xa, ya = _as_2d(x, "x"), _as_2d(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
    n = xa.shape[0]
    xm, ym = xa.mean(axis=0), ya.mean(axis=0)
    xc, yc = xa - xm, ya - ym
    sxx = np.einsum("tc,tc->c", xc, xc)
    sxy = np.einsum("tc,tc->c", xc, yc)
    ok = _varies(sxx, xm, n)
    safe = np.where(ok, sxx, 1.0)
    phi = np.where(ok, sxy / safe, np.nan)
    resid = yc - phi * xc
    sigma2 = np.einsum("tc,tc->c", resid, resid) / n
    with np.errstate(divide="ignore"):
        loglik = -0.5 * n * (np.log(2 * np.pi * sigma2) + 1.0)
    return AR1Batch(
        n=n,
        phi=phi,
        intercept=ym - phi * xm,
        phi_se=np.where(ok, np.sqrt(sigma2 / safe), np.nan),
        sigma2=sigma2,
        loglik=np.where(ok, loglik, np.nan),
        resid=resid,
    )


DIRECT_ACF_MAX_LAGS = 32
"""Up to this many lags, autocovariances are lagged dot products; beyond it, an FFT.

A dot product per lag costs ``O(n)`` per column and reads the rows in memory
order; the FFT costs ``O(n log n)`` whatever the lags, and is the faster from
about 40 lags on for 5000 × 256 series (0.4 ms per lag against 19 ms)."""


def acf_batch(e: np.ndarray, nlags: int) -> np.ndarray:
    """Autocorrelations at lags 1…``nlags`` of every column, as statsmodels' ``acf``.

    Lagged dot products for at most :data:`DIRECT_ACF_MAX_LAGS` lags, an FFT
    (zero-padded to ``n + nlags``, so there is no wrap-around) for more.

    Returns
    -------
    ndarray
        ``(nlags, C)``; NaN for constant columns.
    """
    a = _as_2d(e, "e")
    n = a.shape[0]
    if not 1 <= nlags < n:
        raise ValueError(f"nlags must lie in [1, {n - 1}], got {nlags}")
    c = a - a.mean(axis=0)
    denom = np.einsum("tc,tc->c", c, c)
    safe = np.where(denom > 0, denom, np.nan)
    if nlags <= DIRECT_ACF_MAX_LAGS:
        acov = np.stack([np.einsum("tc,tc->c", c[lag:], c[:-lag]) for lag in range(1, nlags + 1)])
    else:
        nfft = sfft.next_fast_len(n + nlags, real=True)
        spec = sfft.rfft(c.T, n=nfft, axis=1)  # along rows of the transpose: contiguous, 25% faster
        acov = sfft.irfft(spec.real**2 + spec.imag**2, n=nfft, axis=1)[:, 1 : nlags + 1].T
    return acov / safe


def ar1_lb_model_df(phi: float | np.ndarray, lags: int) -> float | np.ndarray:
    """Degrees of freedom an AR(1) fit takes from a Ljung-Box test of its residuals: ``1 − φ^{2·lags}``.

    The residual autocorrelations of a fitted stationary AR(1) have asymptotic
    covariance ``(I − (1 − φ²) v vᵀ)/n`` with ``v_j = φ^{j−1}`` (Box & Pierce
    1970), whose eigenvalue along ``v`` is ``φ^{2·lags}``: Q is
    ``χ²_{lags−1} + φ^{2·lags} χ²_1``, of mean ``lags − 1 + φ^{2·lags}``. The
    usual ``model_df = 1`` is the ``φ^{2·lags} → 0`` limit and makes the test
    oversized near a unit root, where the estimated φ̂ takes almost nothing
    from the residuals. Pass the result as ``model_df`` of :func:`ljung_box_batch`.

    Parameters
    ----------
    phi : float or ndarray
        Fitted AR coefficients (NaN gives 1, the classical value).
    lags : int
        Ljung-Box lags.

    Returns
    -------
    float or ndarray
        ``model_df`` in [0, 1], shaped like ``phi``.
    """
    p = np.asarray(phi, dtype=np.float64)
    a = np.clip(np.abs(np.where(np.isfinite(p), p, 0.0)), 0.0, 1.0)
    out = 1.0 - a ** (2 * int(lags))
    return float(out) if out.ndim == 0 else out


def ljung_box_batch(
    e: np.ndarray, lags: int, *, model_df: float | np.ndarray = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Ljung-Box Q over lags 1…``lags`` for every column, as ``acorr_ljungbox``.

    Parameters
    ----------
    e : array_like
        ``(T, C)`` series (residuals or innovations), one per column.
    lags : int
        Largest lag included.
    model_df : float or ndarray
        Degrees of freedom used by a fitted model, one value or one per column
        (for AR(1) residuals :func:`ar1_lb_model_df`, or the classical 1); the
        reference distribution is χ² with ``lags − model_df`` degrees of freedom.

    Returns
    -------
    statistic, pvalue : ndarray, ndarray
        One per column; small p: the column is not white noise.
    """
    _check_lb_df(lags, model_df)  # before the autocorrelations, which a bad model_df would waste
    return ljung_box_from_acf(acf_batch(e, lags), _as_2d(e, "e").shape[0], model_df=model_df)


def ljung_box_from_acf(
    acf: np.ndarray, n: int, *, model_df: float | np.ndarray = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Ljung-Box Q and p-value from autocorrelations already computed (:func:`acf_batch`).

    Parameters
    ----------
    acf : ndarray
        ``(lags, C)`` autocorrelations at lags 1…lags of series of length ``n``.
    n : int
        Length of the series.
    model_df : float or ndarray
        As in :func:`ljung_box_batch`.

    Returns
    -------
    statistic, pvalue : ndarray, ndarray
        As :func:`ljung_box_batch` on the series.
    """
    r = np.asarray(acf, dtype=np.float64)
    lags = r.shape[0]
    df = _check_lb_df(lags, model_df)
    weights = 1.0 / (n - np.arange(1, lags + 1, dtype=np.float64))
    q = n * (n + 2) * np.einsum("lc,l->c", r * r, weights)
    return q, stats.chi2.sf(q, df)


def _check_lb_df(lags: int, model_df: float | np.ndarray) -> np.ndarray:
    """The χ² degrees of freedom ``lags − model_df``; ValueError unless each is at least 1."""
    df = lags - np.asarray(model_df, dtype=np.float64)
    if np.any(df < 1):
        raise ValueError(f"lags ({lags}) must exceed model_df ({model_df})")
    return df


def state_variance_batch(resid: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, ...]:
    """Does the innovation variance depend on the state? Koenker's n·R² test, per column.

    Regresses the squared residual e_t² on the centred squared state
    ``(x_t − x̄)²`` (the studentised Breusch-Pagan test of Koenker 1981, valid
    for non-Gaussian innovations): ``n·R²`` is χ²₁ under a constant variance.
    An OU process has state-independent innovations; a multiplicative or
    curvature-dependent noise (variance growing with |θ|) rejects.

    Parameters
    ----------
    resid, state : array_like
        ``(T, C)`` residuals e_t and the states x_t they follow.

    Returns
    -------
    statistic, pvalue, corr : ndarray
        ``n·R²``, its p-value (small: state-dependent variance) and the
        correlation of e² with ``(x − x̄)²`` (the effect size, sign included).
    """
    ea, xa = _as_2d(resid, "resid"), _as_2d(state, "state")
    if ea.shape != xa.shape:
        raise ValueError(f"resid and state must have the same shape, got {ea.shape} and {xa.shape}")
    n = ea.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        ea = ea / np.max(np.abs(ea), axis=0)  # scale invariance without overflow in e⁴
        xc = xa - xa.mean(axis=0)
        xc = xc / np.max(np.abs(xc), axis=0)
    s = ea * ea
    s = s - s.mean(axis=0)
    w = xc * xc
    w = w - w.mean(axis=0)
    denom = np.sqrt(np.einsum("tc,tc->c", s, s) * np.einsum("tc,tc->c", w, w))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, np.einsum("tc,tc->c", s, w) / denom, np.nan)
    stat = n * corr * corr
    return stat, stats.chi2.sf(stat, 1), corr


def normality_batch(e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skewness, excess kurtosis and D'Agostino-Pearson K² p-value of every column.

    Columns are standardised first (scale invariance); constant columns, and
    all columns when there are fewer than :data:`MIN_NORMALITY` rows, give NaN.

    Returns
    -------
    skew, excess_kurtosis, pvalue : ndarray
        One value per column.
    """
    a = _as_2d(e, "e")
    n, cols = a.shape
    skew = np.full(cols, np.nan)
    kurt = np.full(cols, np.nan)
    pval = np.full(cols, np.nan)
    c = a - a.mean(axis=0)
    sd = np.sqrt(np.einsum("tc,tc->c", c, c) / max(n, 1))
    ok = _varies(sd * sd * n, a.mean(axis=0), n)
    if n < MIN_NORMALITY or not ok.any():
        return skew, kurt, pval
    z = (c if ok.all() else c[:, ok]) / sd[ok]
    z2 = z * z
    skew[ok] = np.einsum("tc,tc->c", z2, z) / n
    kurt[ok] = np.einsum("tc,tc->c", z2, z2) / n - 3.0
    pval[ok] = dagostino_pearson_p(skew[ok], kurt[ok], n)
    return skew, kurt, pval


def brown_forsythe_batch(e: np.ndarray, windows: int = DEFAULT_WINDOWS) -> tuple[np.ndarray, ...]:
    """Brown-Forsythe test of equal variance across consecutive windows, per column.

    The rows are split into ``windows`` nearly equal consecutive blocks (as
    ``numpy.array_split``) and Levene's test with median centring is applied,
    as ``scipy.stats.levene(*blocks, center="median")``.

    Returns
    -------
    statistic, pvalue, var_ratio : ndarray
        F statistic, p-value (small: the variance changes over time) and the
        largest over the smallest block variance, one per column.
    """
    a = _as_2d(e, "e")
    n = a.shape[0]
    if windows < 2 or n < 2 * windows:
        raise ValueError(f"need windows >= 2 and at least 2 rows per window; got {windows} windows, {n} rows")
    blocks = np.array_split(a, windows, axis=0)
    sizes = np.array([b.shape[0] for b in blocks], dtype=np.float64)
    dev = [np.abs(b - np.median(b, axis=0)) for b in blocks]
    means = np.stack([d.mean(axis=0) for d in dev])
    grand = np.einsum("w,wc->c", sizes, means) / n
    between = np.einsum("w,wc->c", sizes, (means - grand) ** 2) / (windows - 1)
    within = sum(((d - m) ** 2).sum(axis=0) for d, m in zip(dev, means, strict=True)) / (n - windows)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(within > 0, between / within, np.nan)
        var = np.stack([b.var(axis=0) for b in blocks])
        ratio = np.where(var.min(axis=0) > 0, var.max(axis=0) / var.min(axis=0), np.nan)
    return f, stats.f.sf(f, windows - 1, n - windows), ratio


def adf_batch(series: np.ndarray, lags: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Augmented Dickey-Fuller test with a constant and fixed lags, per column.

    Regresses Δx_t on a constant, x_{t−1} and Δx_{t−1}, …, Δx_{t−lags}; equal
    to ``statsmodels.tsa.stattools.adfuller(x, maxlag=lags, autolag=None,
    regression="c")``. The normal equations are built from lagged dot products
    (:func:`_adf_cross_products`) in ``O(N·C·lags)`` time and ``O(N·C)`` memory.

    Parameters
    ----------
    series : array_like
        ``(N, C)`` series, one per column.
    lags : int, optional
        Augmentation lags; default :func:`default_adf_lags`.

    Returns
    -------
    statistic, pvalue : ndarray
        t-statistic of x_{t−1} and MacKinnon's approximate p-value; small p
        rejects the unit root (stationary). NaN for constant columns.
    """
    a = _as_2d(series, "series")
    n_obs, cols = a.shape
    p = default_adf_lags(n_obs) if lags is None else int(lags)
    nobs = n_obs - 1 - p
    n_reg = p + 2
    if p < 0 or nobs <= n_reg + 1:
        raise ValueError(f"a series of {n_obs} values is too short for an ADF test with {p} lags")
    c0 = a - a.mean(axis=0)
    sd = np.sqrt(np.einsum("tc,tc->c", c0, c0) / n_obs)
    ok = _varies(sd * sd * n_obs, a.mean(axis=0), n_obs)
    stat = np.full(cols, np.nan)
    if ok.any():
        stat[ok] = _adf_tstat(c0[:, ok] / sd[ok], p)
    return stat, mackinnon_p(stat)


def mackinnon_p(stat: np.ndarray) -> np.ndarray:
    """MacKinnon's (1994) approximate p-values of ADF t-statistics with a constant, for many at once.

    Equal to statsmodels' ``mackinnonp(s, regression="c", N=1)`` for each ``s``
    (its tables, its rule: the small-p polynomial up to the switch point, the
    large-p one above it, 0 and 1 outside the tabulated range), without the
    0.1 ms of a Python call per statistic.

    Parameters
    ----------
    stat : array_like
        ADF t-statistics (a non-finite one gives NaN).

    Returns
    -------
    ndarray
        p-values, shaped like ``stat``; small p rejects the unit root.
    """
    s = np.asarray(stat, dtype=np.float64)
    finite = np.isfinite(s)
    s = np.where(finite, s, 0.0)
    small = np.polynomial.polynomial.polyval(s, _tau_smallps["c"][0])
    large = np.polynomial.polynomial.polyval(s, _tau_largeps["c"][0])
    p = special.ndtr(np.where(s <= _tau_stars["c"][0], small, large))
    p = np.where(s > _tau_maxs["c"][0], 1.0, np.where(s < _tau_mins["c"][0], 0.0, p))
    return np.where(finite, p, np.nan)


def _adf_cross_products(z: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Sums and cross products of [x_{t−1}, Δx_{t−1…t−p}, Δx_t] per column.

    The lagged differences are windows of one series shifted by one step, so the
    products of two of them at the same lag distance ``h`` differ only by edge
    terms: one dot product per ``h`` and ``O(p²)`` corrections give all of
    them, ``O(n·p)`` in all instead of the ``O(n·p²)`` of the design matrix.
    """
    n_obs, cols = z.shape
    d = np.diff(z, axis=0)
    nobs = n_obs - 1 - p
    m = p + 2

    def pos(j: int) -> int:  # column of Δx_{t−j}: lags 1…p, then the response Δx_t
        return j if j else p + 1

    gram = np.empty((cols, m, m))
    sums = np.empty((cols, m))
    level = z[p : p + nobs]
    gram[:, 0, 0] = np.einsum("tc,tc->c", level, level)
    sums[:, 0] = level.sum(axis=0)
    for j in range(p + 1):
        gram[:, 0, pos(j)] = gram[:, pos(j), 0] = np.einsum("tc,tc->c", level, d[p - j : p - j + nobs])
    for h in range(p + 1):  # Δx_{t−i}·Δx_{t−i−h}, window of Δx_{t−i} starting at a = p − i
        s = np.einsum("tc,tc->c", d[p : p + nobs], d[p - h : p - h + nobs])
        for i in range(p - h + 1):
            if i:
                a = p - i
                s = s + d[a] * d[a - h] - d[a + nobs] * d[a + nobs - h]
            gram[:, pos(i), pos(i + h)] = gram[:, pos(i + h), pos(i)] = s
    total = d[p : p + nobs].sum(axis=0)
    for j in range(p + 1):
        if j:
            total = total + d[p - j] - d[p - j + nobs]
        sums[:, pos(j)] = total
    return gram, sums, nobs


def _adf_tstat(z: np.ndarray, p: int) -> np.ndarray:
    """ADF t-statistics of standardised columns ``z`` with ``p`` augmentation lags."""
    gram, sums, nobs = _adf_cross_products(z, p)
    m = p + 1
    # Centring partials out the constant; the regressors are scaled to unit norm.
    centred = gram - sums[:, :, None] * sums[:, None, :] / nobs
    norm = np.sqrt(np.maximum(np.einsum("cii->ci", centred[:, :m, :m]), 0.0))
    norm = np.where(norm > 0, norm, 1.0)
    xtx = centred[:, :m, :m] / (norm[:, :, None] * norm[:, None, :])
    xty = centred[:, :m, m] / norm
    # pinv: a deterministic series (e.g. pure weight decay) makes the design singular
    gram_inv = np.linalg.pinv(xtx, hermitian=True)
    coef = np.einsum("cij,cj->ci", gram_inv, xty)
    rss = centred[:, m, m] - np.einsum("ci,ci->c", coef, xty)
    var_gamma = rss / (nobs - (p + 2)) * gram_inv[:, 0, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var_gamma > 0, coef[:, 0] / np.sqrt(np.abs(var_gamma)), np.nan)


def rejection_fraction(pvalues: np.ndarray, alpha: float = 0.05) -> float:
    """Fraction of finite p-values below ``alpha`` (NaN when there are none)."""
    p = np.asarray(pvalues, dtype=np.float64)
    p = p[np.isfinite(p)]
    return float(np.mean(p < alpha)) if p.size else float("nan")
