"""Discrete Ornstein-Uhlenbeck (AR(1)) fits and their residual diagnostics.

A discrete OU process with unit time step is the AR(1) model

    x_{t+1} = c + (1 − k) x_t + e_t,   e_t i.i.d. N(0, σ²),

with mean-reversion rate ``k``, long-run mean ``μ = c / k`` and half-life
``ln 2 / k`` steps. :func:`fit_ou` fits one series with statsmodels' ``AutoReg``
and checks the assumptions behind the model: white residuals (Ljung-Box),
Gaussian residuals (D'Agostino-Pearson K²), stationarity (augmented
Dickey-Fuller with Said-Dickey lags) and a constant innovation variance (Brown-Forsythe across
windows).

The ``*_batch`` functions compute the same quantities for many series at once
(one per column of a ``(time, series)`` array) in closed form; they equal the
statsmodels/scipy results (the tests check this) and are what the per-layer
analysis in :mod:`goup_probe.ou` uses for thousands of tracer coordinates.

Every function works in float64 and is scale-invariant: multiplying a series by
a positive constant leaves ``k``, every p-value and every effect size unchanged.

Known limitation: the least-squares ``k̂`` is biased upwards by about
``(1 + 3(1 − k)) / T`` for one series of ``T`` transitions (Kendall 1954) and by
about ``(2 − k) / T`` for the pooled within-coordinate estimator (Nickell 1981).
The bias is negligible against ``k`` only when ``T·k`` is large, which is why the
analysis calls ``T·k̂ < 100`` "insufficient data".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.diagnostic import acorr_ljungbox
from statsmodels.tsa.adfvalues import mackinnonp
from statsmodels.tsa.ar_model import AutoReg

from goup_probe import schema

MIN_TRANSITIONS = 20
"""Fewest transitions x_t -> x_{t+1} a fit accepts (D'Agostino's K² needs 20 residuals)."""
MIN_NORMALITY = 20
"""Fewest values on which the D'Agostino-Pearson K² test is run."""
DEFAULT_WINDOWS = 4
"""Windows the residuals are split into for the variance-stability test."""
_RELATIVE_CONSTANT = 1e-12


# ----------------------------------------------------------------------------- lags


def default_lb_lags(n: int) -> int:
    """Ljung-Box lags for ``n`` residuals: ``min(10, n // 5)``, at least 2.

    Hyndman & Athanasopoulos' rule for non-seasonal data; at least 2 so that a
    test on AR(1) residuals (one degree of freedom used by the model) has ``df >= 1``.
    """
    return max(2, min(10, n // 5))


def default_adf_lags(n: int) -> int:
    """Fixed ADF augmentation lags for a series of length ``n``: ``⌊(n − 1)^{1/3}⌋``.

    Said & Dickey (1984): the lag order must grow like ``n^{1/3}`` for the ADF
    statistic to keep its Dickey-Fuller distribution under serially correlated errors.
    """
    return int(np.floor(np.cbrt(max(n - 1, 1))))


# ----------------------------------------------------------------------------- one series


@dataclass(frozen=True)
class OUFit:
    """A discrete OU / AR(1) fit of one series and its residual diagnostics.

    Attributes
    ----------
    n : int
        Transitions used (series length − 1).
    axis : str
        What the series is: ``"time"`` (one coordinate over time) unless stated.
    k, k_se, k_ci : float, float, (float, float)
        Mean-reversion rate ``1 − φ̂``, its standard error (``AutoReg``'s, equal to
        that of φ̂; ≈ √((2k − k²)/n) for a stationary series) and a normal
        confidence interval at ``conf_level``.
    phi, intercept : float
        AR coefficient φ̂ and intercept ĉ of ``x_{t+1} = c + φ x_t + e_t``.
    mean : float
        Long-run mean ``ĉ / k̂`` (NaN when ``k̂ <= 0``).
    sigma : float
        Innovation standard deviation (maximum likelihood, √(RSS / n)).
    stationary_std : float
        ``σ / √(1 − φ²)`` when ``|φ| < 1``, else NaN.
    half_life : float
        ``ln 2 / k̂`` in steps (inf when ``k̂ <= 0``).
    loglik : float
        Conditional Gaussian log-likelihood, in the series' own units.
    resid_acf1 : float
        Lag-1 autocorrelation of the residuals.
    ljung_box_stat, ljung_box_lags, ljung_box_p : float, int, float
        Ljung-Box Q on the residuals with ``model_df = 1``; small p: not white.
    resid_skew, resid_excess_kurtosis, resid_normality_p : float
        Residual shape and the D'Agostino-Pearson K² p-value; small p: not Gaussian.
    adf_stat, adf_lags, adf_p : float, int, float
        Augmented Dickey-Fuller test with a constant and ``⌊n^{1/3}⌋`` lags
        (:func:`adf_batch`); small p: the unit root is rejected (stationary).
        A random walk gives a large p.
    var_ratio, var_stability_p : float
        Largest over smallest residual variance across ``windows`` consecutive
        windows, and the Brown-Forsythe p-value; small p: the variance changes.
    conf_level : float
        Coverage of ``k_ci``.
    status, reason : str
        ``"ok"``, or why the fit or its diagnostics are missing.
    """

    n: int
    axis: str
    k: float
    k_se: float
    k_ci: tuple[float, float]
    phi: float
    intercept: float
    mean: float
    sigma: float
    stationary_std: float
    half_life: float
    loglik: float
    resid_acf1: float
    ljung_box_stat: float
    ljung_box_lags: int
    ljung_box_p: float
    resid_skew: float
    resid_excess_kurtosis: float
    resid_normality_p: float
    adf_stat: float
    adf_lags: int
    adf_p: float
    var_ratio: float
    var_stability_p: float
    conf_level: float
    status: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        """Plain dictionary (``k_ci`` split into ``k_ci_low`` and ``k_ci_high``)."""
        out = asdict(self)
        low, high = out.pop("k_ci")
        out["k_ci_low"], out["k_ci_high"] = low, high
        return out


def _empty_fit(n: int, axis: str, conf_level: float, status: str, reason: str) -> OUFit:
    nan = float("nan")
    return OUFit(
        n=n,
        axis=axis,
        k=nan,
        k_se=nan,
        k_ci=(nan, nan),
        phi=nan,
        intercept=nan,
        mean=nan,
        sigma=nan,
        stationary_std=nan,
        half_life=nan,
        loglik=nan,
        resid_acf1=nan,
        ljung_box_stat=nan,
        ljung_box_lags=0,
        ljung_box_p=nan,
        resid_skew=nan,
        resid_excess_kurtosis=nan,
        resid_normality_p=nan,
        adf_stat=nan,
        adf_lags=0,
        adf_p=nan,
        var_ratio=nan,
        var_stability_p=nan,
        conf_level=conf_level,
        status=status,
        reason=reason,
    )


def fit_ou(
    series: np.ndarray,
    *,
    axis: str = schema.AXIS_TIME,
    conf_level: float = 0.95,
    lb_lags: int | None = None,
    adf_lags: int | None = None,
    windows: int = DEFAULT_WINDOWS,
) -> OUFit:
    """Fit a discrete OU process (AR(1) with intercept) to one series and diagnose it.

    Parameters
    ----------
    series : array_like
        A 1-D series x_0 … x_T, equally spaced in steps; must be finite.
    axis : str
        Label recorded in the result (default ``"time"``: one coordinate over time).
    conf_level : float
        Coverage of the confidence interval of ``k``.
    lb_lags : int, optional
        Ljung-Box lags; default :func:`default_lb_lags`.
    adf_lags : int, optional
        Augmentation lags of the ADF test; default :func:`default_adf_lags`.
    windows : int
        Consecutive windows of the variance-stability test (at least 2).

    Returns
    -------
    OUFit
        With ``status`` ``"too_few"`` (fewer than :data:`MIN_TRANSITIONS`
        transitions) or ``"constant"`` (a constant series, or zero residuals)
        the statistics that cannot be computed are NaN.

    Raises
    ------
    ValueError
        If the series is not 1-D, holds non-finite values, or an argument is out of range.

    Examples
    --------
    >>> import numpy as np, goup_probe as gp
    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros(5000)
    >>> for t in range(4999):
    ...     x[t + 1] = 0.9 * x[t] + rng.normal()
    >>> fit = gp.fit_ou(x)
    >>> round(fit.k, 2), fit.k_ci[0] < 0.1 < fit.k_ci[1]
    (0.1, True)
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {x.shape}")
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must lie in (0, 1), got {conf_level}")
    if windows < 2:
        raise ValueError(f"windows must be >= 2, got {windows}")
    if not np.all(np.isfinite(x)):
        raise ValueError("series holds NaN or Inf; an OU fit needs a contiguous finite series")
    n = x.size - 1
    if n < MIN_TRANSITIONS:
        return _empty_fit(
            max(n, 0),
            axis,
            conf_level,
            schema.STATUS_TOO_FEW,
            f"{max(n, 0)} transitions; need >= {MIN_TRANSITIONS}",
        )
    center, scale = float(x.mean()), float(x.std())
    if scale == 0 or scale <= _RELATIVE_CONSTANT * abs(center):
        return _empty_fit(
            n, axis, conf_level, schema.STATUS_CONSTANT, f"the series is constant ({center:.6g})"
        )
    z = (x - center) / scale
    res = AutoReg(z, lags=1, trend="c").fit()
    c_z, phi = (float(v) for v in res.params)
    phi_se = float(res.bse[1])
    k = 1.0 - phi
    q = float(stats.norm.ppf(0.5 + conf_level / 2))
    sigma = math.sqrt(float(res.sigma2)) * scale
    resid = np.asarray(res.resid, dtype=np.float64)
    common = {
        "n": n,
        "axis": axis,
        "k": k,
        "k_se": phi_se,
        "k_ci": (k - q * phi_se, k + q * phi_se),
        "phi": phi,
        "intercept": center * (1.0 - phi) + scale * c_z,
        "mean": center + scale * c_z / k if k > 0 else float("nan"),
        "sigma": sigma,
        "stationary_std": sigma / math.sqrt(1.0 - phi * phi) if abs(phi) < 1 else float("nan"),
        "half_life": math.log(2.0) / k if k > 0 else math.inf,
        "loglik": float(res.llf) - n * math.log(scale),
        "conf_level": conf_level,
    }
    if float(np.std(resid)) <= _RELATIVE_CONSTANT:
        empty = _empty_fit(
            n, axis, conf_level, schema.STATUS_CONSTANT, "residuals are zero: the series is deterministic"
        )
        return OUFit(**{**asdict(empty), **common})
    lags = default_lb_lags(resid.size) if lb_lags is None else int(lb_lags)
    if not 2 <= lags < resid.size:
        raise ValueError(f"lb_lags must lie in [2, {resid.size - 1}], got {lags}")
    lb = acorr_ljungbox(resid, lags=[lags], model_df=1)
    skew, kurt, norm_p = normality_batch(resid[:, None])
    adf_lags = default_adf_lags(z.size) if adf_lags is None else int(adf_lags)
    adf_stat, adf_p = (float(v[0]) for v in adf_batch(z, adf_lags))
    _, bf_p, var_ratio = brown_forsythe_batch(resid[:, None], windows)
    return OUFit(
        **common,
        resid_acf1=float(acf_batch(resid[:, None], 1)[0, 0]),
        ljung_box_stat=float(lb["lb_stat"].iloc[0]),
        ljung_box_lags=lags,
        ljung_box_p=float(lb["lb_pvalue"].iloc[0]),
        resid_skew=float(skew[0]),
        resid_excess_kurtosis=float(kurt[0]),
        resid_normality_p=float(norm_p[0]),
        adf_stat=adf_stat,
        adf_lags=adf_lags,
        adf_p=adf_p,
        var_ratio=float(var_ratio[0]),
        var_stability_p=float(bf_p[0]),
        status=schema.STATUS_OK,
        reason="",
    )


# ----------------------------------------------------------------------------- many series


def _as_2d(a: np.ndarray) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected a (time, series) array, got shape {arr.shape}")
    return arr


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
    xa, ya = _as_2d(x), _as_2d(y)
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


def _varies(sum_sq: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Columns whose standard deviation is not zero relative to their mean."""
    std = np.sqrt(sum_sq / max(n, 1))
    return (std > 0) & (std > _RELATIVE_CONSTANT * np.abs(mean))


@dataclass(frozen=True)
class PooledAR1:
    """A common mean-reversion rate for many series, each with its own mean.

    Attributes
    ----------
    k, k_se, k_ci : float, float, (float, float)
        Within (fixed-effects) estimate of ``1 − φ``, its standard error
        clustered by time step (robust to any correlation between the series at
        the same step and to heteroscedasticity), and a Student-t interval with
        ``n_steps − 1`` degrees of freedom.
    k_se_ols : float
        The classical standard error that assumes independent series.
    n_steps, n_series : int
        Transitions per series and number of series.
    conf_level : float
        Coverage of ``k_ci``.
    """

    k: float
    k_se: float
    k_ci: tuple[float, float]
    k_se_ols: float
    n_steps: int
    n_series: int
    conf_level: float


def pooled_ar1(x: np.ndarray, y: np.ndarray, *, conf_level: float = 0.95) -> PooledAR1:
    """Pooled AR(1) slope over many series with per-series intercepts.

    The within (fixed-effects) estimator: each series (column) is centred on
    its own mean, then one slope φ is fitted through all ``(x, y)`` pairs, so
    series with more variation carry more weight (the efficient choice when k
    is common). Multiplying all series by one constant changes nothing;
    columns without variation are dropped. The estimate of ``k`` is biased
    upwards by about ``(1 + φ)/(T − 1) / (1 − 2/(k(T − 1)))`` (Nickell 1981,
    stationary start), i.e. ≈ 2/T for ``T·k`` large.

    Parameters
    ----------
    x, y : array_like
        ``(T, C)`` arrays: the states at t and t + 1 of ``C`` series.
    conf_level : float
        Coverage of the interval.

    Returns
    -------
    PooledAR1
        All NaN when fewer than 3 steps or no varying series remain.
    """
    xa, ya = _as_2d(x), _as_2d(y)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
    n_steps = xa.shape[0]
    xm = xa.mean(axis=0)
    xc = xa - xm
    sxx_col = np.einsum("tc,tc->c", xc, xc)
    keep = _varies(sxx_col, xm, n_steps)
    nan = float("nan")
    if n_steps < 3 or not keep.any():
        return PooledAR1(nan, nan, (nan, nan), nan, n_steps, int(keep.sum()), conf_level)
    scale = math.sqrt(float(sxx_col[keep].sum()) / (n_steps * int(keep.sum())))  # numerics only
    xs = xc[:, keep] / scale
    yk = ya[:, keep]
    ys = (yk - yk.mean(axis=0)) / scale
    sxx = float(np.einsum("tc,tc->", xs, xs))
    phi = float(np.einsum("tc,tc->", xs, ys)) / sxx
    e = ys - phi * xs
    n_series = xs.shape[1]
    dof = n_steps * n_series - n_series - 1
    se_ols = math.sqrt(float(np.einsum("tc,tc->", e, e)) / max(dof, 1) / sxx)
    score = np.einsum("tc,tc->t", xs, e)
    se = math.sqrt(n_steps / (n_steps - 1) * float(score @ score)) / sxx
    k = 1.0 - phi
    q = float(stats.t.ppf(0.5 + conf_level / 2, n_steps - 1))
    return PooledAR1(k, se, (k - q * se, k + q * se), se_ols, n_steps, n_series, conf_level)


def kendall_bias(k: float, n: int) -> float:
    """Approximate upward bias of the one-series least-squares ``k̂``: ``(1 + 3(1 − k)) / n``.

    Kendall (1954) for an AR(1) with estimated mean and ``n`` transitions;
    error ``O(1/n²)``.
    """
    return (1.0 + 3.0 * (1.0 - k)) / n


def nickell_bias(k: float, n_steps: int) -> float:
    """Approximate upward bias of the pooled within estimator ``k̂`` (many series, stationary start).

    Nickell (1981), for ``n_steps`` transitions per series and many series::

        (1 + φ)/(T − 1) · A / (1 − 2φ/((1 − φ)(T − 1)) · A),  A = 1 − (1 − φ^T)/(T(1 − φ)),

    with φ = 1 − k; about 2/T when ``T·k`` is large.
    """
    phi, t = 1.0 - k, float(n_steps)
    if not 0 < k < 2 or t < 3:
        raise ValueError(f"need 0 < k < 2 and n_steps >= 3, got k={k}, n_steps={n_steps}")
    a = 1.0 - (1.0 - phi**t) / (t * (1.0 - phi))
    return (1.0 + phi) / (t - 1.0) * a / (1.0 - 2.0 * phi / ((1.0 - phi) * (t - 1.0)) * a)


def acf_batch(e: np.ndarray, nlags: int) -> np.ndarray:
    """Autocorrelations at lags 1…``nlags`` of every column, as statsmodels' ``acf``.

    Returns
    -------
    ndarray
        ``(nlags, C)``; NaN for constant columns.
    """
    a = _as_2d(e)
    n = a.shape[0]
    if not 1 <= nlags < n:
        raise ValueError(f"nlags must lie in [1, {n - 1}], got {nlags}")
    c = a - a.mean(axis=0)
    denom = np.einsum("tc,tc->c", c, c)
    safe = np.where(denom > 0, denom, np.nan)
    return np.stack([np.einsum("tc,tc->c", c[lag:], c[:-lag]) / safe for lag in range(1, nlags + 1)])


def ljung_box_batch(e: np.ndarray, lags: int, *, model_df: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ljung-Box Q over lags 1…``lags`` for every column, as ``acorr_ljungbox``.

    Parameters
    ----------
    e : array_like
        ``(T, C)`` series (residuals or innovations), one per column.
    lags : int
        Largest lag included.
    model_df : int
        Degrees of freedom used by a fitted model (1 for AR(1) residuals); the
        reference distribution is χ² with ``lags − model_df`` degrees of freedom.

    Returns
    -------
    statistic, pvalue : ndarray, ndarray
        One per column; small p: the column is not white noise.
    """
    if lags - model_df < 1:
        raise ValueError(f"lags ({lags}) must exceed model_df ({model_df})")
    r = acf_batch(e, lags)
    n = _as_2d(e).shape[0]
    weights = 1.0 / (n - np.arange(1, lags + 1, dtype=np.float64))
    q = n * (n + 2) * np.einsum("lc,l->c", r * r, weights)
    return q, stats.chi2.sf(q, lags - model_df)


def normality_batch(e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skewness, excess kurtosis and D'Agostino-Pearson K² p-value of every column.

    Columns are standardised first (scale invariance); constant columns, and
    all columns when there are fewer than :data:`MIN_NORMALITY` rows, give NaN.

    Returns
    -------
    skew, excess_kurtosis, pvalue : ndarray
        One value per column.
    """
    a = _as_2d(e)
    n, cols = a.shape
    skew = np.full(cols, np.nan)
    kurt = np.full(cols, np.nan)
    pval = np.full(cols, np.nan)
    c = a - a.mean(axis=0)
    sd = np.sqrt(np.einsum("tc,tc->c", c, c) / max(n, 1))
    ok = _varies(sd * sd * n, a.mean(axis=0), n)
    if n < MIN_NORMALITY or not ok.any():
        return skew, kurt, pval
    z = c[:, ok] / sd[ok]
    z2 = z * z
    skew[ok] = np.mean(z2 * z, axis=0)
    kurt[ok] = np.mean(z2 * z2, axis=0) - 3.0
    pval[ok] = stats.normaltest(z, axis=0).pvalue
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
    a = _as_2d(e)
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
    regression="c")``.

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
    a = _as_2d(series)
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
        z = c0[:, ok] / sd[ok]
        d = np.diff(z, axis=0)
        y = d[p:]
        regs = [z[p : n_obs - 1]] + [d[p - j : n_obs - 1 - j] for j in range(1, p + 1)]
        # (C', nobs, p + 1); the constant is partialled out by centring, columns scaled to unit norm
        design = np.stack([r - r.mean(axis=0) for r in regs], axis=-1).transpose(1, 0, 2).copy()
        design /= np.sqrt(np.einsum("cnm,cnm->cm", design, design))[:, None, :]
        y = (y - y.mean(axis=0)).T[..., None]  # (C', nobs, 1)
        # pinv: a deterministic series (e.g. pure weight decay) makes the design singular
        gram_inv = np.linalg.pinv(np.matmul(design.transpose(0, 2, 1), design))
        coef = np.matmul(gram_inv, np.matmul(design.transpose(0, 2, 1), y))
        resid = y - np.matmul(design, coef)
        rss = np.einsum("cn,cn->c", resid[..., 0], resid[..., 0])
        var_gamma = rss / (nobs - n_reg) * gram_inv[:, 0, 0]
        coef = coef[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            stat[ok] = np.where(var_gamma > 0, coef[:, 0] / np.sqrt(np.abs(var_gamma)), np.nan)
    pval = np.full(cols, np.nan)
    finite = np.isfinite(stat)
    pval[finite] = [mackinnonp(float(s), regression="c", N=1) for s in stat[finite]]
    return stat, pval


def rejection_fraction(pvalues: np.ndarray, alpha: float = 0.05) -> float:
    """Fraction of finite p-values below ``alpha`` (NaN when there are none)."""
    p = np.asarray(pvalues, dtype=np.float64)
    p = p[np.isfinite(p)]
    return float(np.mean(p < alpha)) if p.size else float("nan")
