"""Discrete Ornstein-Uhlenbeck (AR(1)) fits and their residual diagnostics.

A discrete OU process with unit time step is the AR(1) model

    x_{t+1} = c + (1 − k) x_t + e_t,   e_t i.i.d. N(0, σ²),

with mean-reversion rate ``k``, long-run mean ``μ = c / k`` and half-life
``ln 2 / k`` steps. :func:`fit_ou` fits one series by least squares (equal to
statsmodels' ``AutoReg(x, lags=1, trend="c")``) and checks the assumptions
behind the model: white residuals (Ljung-Box with the AR(1) degrees of freedom
of :func:`ar1_lb_model_df`), Gaussian residuals (D'Agostino-Pearson K²),
stationarity (augmented Dickey-Fuller with Said-Dickey lags), a constant
innovation variance over time (Brown-Forsythe across windows), an innovation
variance that does not depend on the state (Koenker's n·R² of e² on the
centred x², :func:`state_variance_batch`) and no volatility clustering
(McLeod-Li). Its ``verdict`` says whether mean reversion is detected and, when
it is not, gives a one-sided upper confidence bound on ``k``.

The ``*_batch`` functions compute the same quantities for many series at once
(one per column of a ``(time, series)`` array) in closed form; they equal the
statsmodels/scipy results (the tests check this) and are what the per-layer
analysis in :mod:`goup_probe.ou` uses for thousands of tracer coordinates.
:func:`pooled_ar1` estimates one common ``k`` for many series and removes the
Nickell (1981) bias of the within estimator before forming its interval.

Every function works in float64 and is scale-invariant: multiplying a series by
a positive constant leaves ``k``, every p-value and every effect size unchanged;
:func:`fit_ou` holds this across the float64 range (it rescales by a power of
two first). Autocorrelations are computed by FFT and the ADF normal equations
from lagged dot products, so :func:`fit_ou` costs ``O(n log n)`` plus
``O(n^{4/3})`` for the ADF regression with its ``n^{1/3}`` lags.

Known limitation: the one-series least-squares ``k̂`` is biased upwards by about
``(1 + 3(1 − k)) / T`` for ``T`` transitions (Kendall 1954, :func:`kendall_bias`)
and is not corrected; its normal interval under-covers when ``T·k`` is small,
which :attr:`OUFit.k_reliable` (``T·k̂ >= MIN_STEPS_X_K``) and the verdict say.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import fft as sfft
from scipy import optimize, stats
from statsmodels.tsa.adfvalues import mackinnonp

from goup_probe import schema

MIN_TRANSITIONS = 20
"""Fewest transitions x_t -> x_{t+1} a fit accepts (D'Agostino's K² needs 20 residuals)."""
MIN_NORMALITY = 20
"""Fewest values on which the D'Agostino-Pearson K² test is run."""
DEFAULT_WINDOWS = 4
"""Windows the residuals are split into for the variance-stability test."""
MIN_STEPS_X_K = 20.0
"""``T·k̂`` below which the normal interval of a single series' ``k`` is unreliable.

Measured (``benchmarks/ou_calibration.py``, T = 1000, 10000 replications, SE ≤ 0.004):
the two-sided 95% interval covers 0.82 at ``T·k = 2``, 0.87 at 5 and 0.91 at 10 (the
true ``k`` lies below it: Kendall's bias), 0.92 at 20 and 0.94 from 50 on.
"""
VERDICT_MEAN_REVERSION = "mean reversion"
"""Verdict of :func:`fit_ou` when the unit root is rejected and ``T·k̂`` is large."""
VERDICT_UNRELIABLE = "mean reversion; interval unreliable"
"""Prefix of the verdict when the unit root is rejected but ``T·k̂ < MIN_STEPS_X_K``."""
VERDICT_NO_MEAN_REVERSION = "no mean reversion detected"
"""Prefix of the verdict ``"no mean reversion detected (k < bound)"``."""
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
    k_upper : float
        One-sided upper confidence bound ``k̂ + z·se`` at ``conf_level``. Kendall's
        upward bias makes it conservative near a unit root, so it is the honest
        statement when no mean reversion is detected.
    steps_x_k : float
        ``n · k̂``; below :data:`MIN_STEPS_X_K` ``k_ci`` under-covers.
    k_reliable : bool
        ``steps_x_k >= MIN_STEPS_X_K``.
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
    ljung_box_stat, ljung_box_lags, ljung_box_df, ljung_box_p : float, int, float, float
        Ljung-Box Q on the residuals against χ² with ``ljung_box_df`` =
        ``lags − (1 − φ̂^{2·lags})`` degrees of freedom (:func:`ar1_lb_model_df`:
        ``lags − 1`` for a stationary AR(1), ``lags`` at a unit root); small p: not white.
    mcleod_li_stat, mcleod_li_p : float
        Ljung-Box Q of the squared residuals (McLeod & Li 1983, ``lags`` degrees
        of freedom); small p: the innovation variance clusters in time.
    state_var_corr, state_var_p : float
        Correlation of e_t² with the centred x_t² and Koenker's n·R² p-value
        (:func:`state_variance_batch`); small p: the innovation variance depends on the state.
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
        Coverage of ``k_ci`` and ``k_upper``.
    verdict : str
        :data:`VERDICT_MEAN_REVERSION` (ADF rejects the unit root at
        ``1 − conf_level`` and ``k_reliable``); ``"mean reversion; interval
        unreliable (T·k̂ = … < 20)"``; or ``"no mean reversion detected (k < bound)"``
        with ``bound`` = ``k_upper``. Empty when the fit is missing.
    status, reason : str
        ``"ok"``, or why the fit or its diagnostics are missing.
    """

    n: int
    axis: str
    k: float
    k_se: float
    k_ci: tuple[float, float]
    k_upper: float
    steps_x_k: float
    k_reliable: bool
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
    ljung_box_df: float
    ljung_box_p: float
    mcleod_li_stat: float
    mcleod_li_p: float
    state_var_corr: float
    state_var_p: float
    resid_skew: float
    resid_excess_kurtosis: float
    resid_normality_p: float
    adf_stat: float
    adf_lags: int
    adf_p: float
    var_ratio: float
    var_stability_p: float
    conf_level: float
    verdict: str
    status: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        """Plain dictionary (``k_ci`` split into ``k_ci_low`` and ``k_ci_high``)."""
        out = asdict(self)
        low, high = out.pop("k_ci")
        out["k_ci_low"], out["k_ci_high"] = low, high
        return out


_INT_FIELDS = {"n": 0, "ljung_box_lags": 0, "adf_lags": 0}


def _empty_fit(n: int, axis: str, conf_level: float, status: str, reason: str) -> OUFit:
    nan = float("nan")
    values: dict[str, object] = {name: nan for name in OUFit.__dataclass_fields__}
    values.update(_INT_FIELDS)
    values.update(
        n=n,
        axis=axis,
        k_ci=(nan, nan),
        k_reliable=False,
        conf_level=conf_level,
        verdict="",
        status=status,
        reason=reason,
    )
    return OUFit(**values)


def _as_real_series(series: object, name: str = "series") -> np.ndarray:
    """``series`` as a float64 array; complex (or non-numeric) input is refused, naming ``name``."""
    raw = np.asarray(series)
    if np.iscomplexobj(raw):
        raise TypeError(f"{name} must be real-valued, got complex dtype {raw.dtype}")
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {raw.dtype}")
    return raw.astype(np.float64, copy=False)


def _check_series(series: object, conf_level: float, windows: int) -> np.ndarray:
    x = _as_real_series(series)
    if x.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {x.shape}")
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must lie in (0, 1), got {conf_level}")
    if windows < 2:
        raise ValueError(f"windows must be >= 2, got {windows}")
    if not np.all(np.isfinite(x)):
        raise ValueError("series holds NaN or Inf; an OU fit needs a contiguous finite series")
    return x


def _power_of_two_scale(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``x · 2^-e`` with ``max|x · 2^-e|`` in [0.5, 1): exact, so no square overflows or underflows."""
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if top == 0.0:
        return x, 0
    exponent = math.frexp(top)[1]
    return np.ldexp(x, -exponent), exponent


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
        A 1-D real series x_0 … x_T, equally spaced in steps; must be finite.
    axis : str
        Label recorded in the result (default ``"time"``: one coordinate over time).
    conf_level : float
        Coverage of the confidence interval and of the upper bound of ``k``;
        ``1 − conf_level`` is the level of the ADF test behind the verdict.
    lb_lags : int, optional
        Ljung-Box (and McLeod-Li) lags; default :func:`default_lb_lags`.
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
    TypeError
        If ``series`` is complex or not numeric.
    ValueError
        If the series is not 1-D, holds non-finite values, or an argument is out of range.

    Notes
    -----
    The series is first multiplied by a power of two (exact), so ``k̂``, every
    p-value and the verdict are the same for ``c·x`` at any positive ``c`` in the
    float64 range. Cost: ``O(n log n)`` for the fit and its FFT-based
    autocorrelations, ``O(n^{4/3})`` for the ADF regression (``n^{1/3}`` lags);
    ``n = 10⁶`` takes about a second.

    Examples
    --------
    >>> import numpy as np, goup_probe as gp
    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros(5000)
    >>> for t in range(4999):
    ...     x[t + 1] = 0.9 * x[t] + rng.normal()
    >>> fit = gp.fit_ou(x)
    >>> round(fit.k, 2), fit.k_ci[0] < 0.1 < fit.k_ci[1], fit.verdict
    (0.1, True, 'mean reversion')
    """
    x = _check_series(series, conf_level, windows)
    n = x.size - 1
    if n < MIN_TRANSITIONS:
        why = f"{max(n, 0)} transitions; need >= {MIN_TRANSITIONS}"
        return _empty_fit(max(n, 0), axis, conf_level, schema.STATUS_TOO_FEW, why)
    x2, exponent = _power_of_two_scale(x)
    center, scale = float(x2.mean()), float(x2.std())
    if scale == 0 or scale <= _RELATIVE_CONSTANT * abs(center):
        why = f"the series is constant ({math.ldexp(center, exponent):.6g})"
        return _empty_fit(n, axis, conf_level, schema.STATUS_CONSTANT, why)
    z = (x2 - center) / scale
    fit = ar1_batch(z[:-1], z[1:])
    common = _fit_fields(fit, center, scale, exponent, axis, conf_level)
    resid = fit.resid[:, 0]
    if float(np.std(resid)) <= _RELATIVE_CONSTANT:
        why = "residuals are zero: the series is deterministic"
        empty = _empty_fit(n, axis, conf_level, schema.STATUS_CONSTANT, why)
        return OUFit(**{**asdict(empty), **common})
    diagnostics = _residual_diagnostics(resid, z, fit.phi[0], lb_lags, adf_lags, windows)
    verdict = _single_verdict(common, diagnostics["adf_p"], conf_level)
    return OUFit(**common, **diagnostics, verdict=verdict, status=schema.STATUS_OK, reason="")


def _fit_fields(
    fit: AR1Batch, center: float, scale: float, exponent: int, axis: str, conf_level: float
) -> dict[str, object]:
    """The fitted-model fields of :class:`OUFit`, in the units of the original series."""
    n = fit.n
    phi, c_z, phi_se = float(fit.phi[0]), float(fit.intercept[0]), float(fit.phi_se[0])
    k = 1.0 - phi
    q = float(stats.norm.ppf(0.5 + conf_level / 2))
    q_one = float(stats.norm.ppf(conf_level))
    sigma = math.ldexp(math.sqrt(float(fit.sigma2[0])) * scale, exponent)
    log_scale = math.log(scale) + exponent * math.log(2.0)
    steps_x_k = n * k
    return {
        "n": n,
        "axis": axis,
        "k": k,
        "k_se": phi_se,
        "k_ci": (k - q * phi_se, k + q * phi_se),
        "k_upper": k + q_one * phi_se,
        "steps_x_k": steps_x_k,
        "k_reliable": bool(steps_x_k >= MIN_STEPS_X_K),
        "phi": phi,
        "intercept": math.ldexp(center * (1.0 - phi) + scale * c_z, exponent),
        "mean": math.ldexp(center + scale * c_z / k, exponent) if k > 0 else float("nan"),
        "sigma": sigma,
        "stationary_std": sigma / math.sqrt(1.0 - phi * phi) if abs(phi) < 1 else float("nan"),
        "half_life": math.log(2.0) / k if k > 0 else math.inf,
        "loglik": float(fit.loglik[0]) - n * log_scale,
        "conf_level": conf_level,
    }


def _residual_diagnostics(
    resid: np.ndarray, z: np.ndarray, phi: float, lb_lags: int | None, adf_lags: int | None, windows: int
) -> dict[str, object]:
    """Whiteness, volatility, state dependence, shape, stationarity and stability of one fit."""
    lags = default_lb_lags(resid.size) if lb_lags is None else int(lb_lags)
    if not 2 <= lags < resid.size:
        raise ValueError(f"lb_lags must lie in [2, {resid.size - 1}], got {lags}")
    e = resid[:, None]
    model_df = ar1_lb_model_df(phi, lags)
    lb_stat, lb_p = ljung_box_batch(e, lags, model_df=model_df)
    ml_stat, ml_p = ljung_box_batch(e * e, lags)
    _, sv_p, sv_corr = state_variance_batch(e, z[:-1, None])
    skew, kurt, norm_p = normality_batch(e)
    adf_lags = default_adf_lags(z.size) if adf_lags is None else int(adf_lags)
    adf_stat, adf_p = (float(v[0]) for v in adf_batch(z, adf_lags))
    _, bf_p, var_ratio = brown_forsythe_batch(e, windows)
    return {
        "resid_acf1": float(acf_batch(e, 1)[0, 0]),
        "ljung_box_stat": float(lb_stat[0]),
        "ljung_box_lags": lags,
        "ljung_box_df": float(lags - model_df),
        "ljung_box_p": float(lb_p[0]),
        "mcleod_li_stat": float(ml_stat[0]),
        "mcleod_li_p": float(ml_p[0]),
        "state_var_corr": float(sv_corr[0]),
        "state_var_p": float(sv_p[0]),
        "resid_skew": float(skew[0]),
        "resid_excess_kurtosis": float(kurt[0]),
        "resid_normality_p": float(norm_p[0]),
        "adf_stat": adf_stat,
        "adf_lags": adf_lags,
        "adf_p": adf_p,
        "var_ratio": float(var_ratio[0]),
        "var_stability_p": float(bf_p[0]),
    }


def _single_verdict(fields: dict[str, object], adf_p: float, conf_level: float) -> str:
    """Mean reversion detected (ADF at ``1 − conf_level``), unreliable, or an upper bound on k."""
    if not adf_p < 1.0 - conf_level:
        return f"{VERDICT_NO_MEAN_REVERSION} (k < {fields['k_upper']:.3g})"
    if not fields["k_reliable"]:
        return f"{VERDICT_UNRELIABLE} (T·k̂ = {fields['steps_x_k']:.3g} < {MIN_STEPS_X_K:g})"
    return VERDICT_MEAN_REVERSION


# ----------------------------------------------------------------------------- many series


def _as_2d(a: np.ndarray, name: str = "array") -> np.ndarray:
    arr = _as_real_series(a, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected {name} as a (time, series) array, got shape {arr.shape}")
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
        Within (fixed-effects) estimate of ``1 − φ`` with the Nickell bias
        removed (:func:`nickell_correct`), its standard error clustered by time
        step (robust to any correlation between the series at the same step and
        to heteroscedasticity) times the derivative of the correction, and a
        Student-t interval with ``n_steps − 1`` degrees of freedom around the
        corrected ``k``.
    k_upper : float
        One-sided upper confidence bound at ``conf_level`` (Student-t).
    k_raw, bias : float
        The uncorrected within estimate and the bias removed (``k_raw − k``;
        about ``2/T`` when ``T·k`` is large, ``3/(T + 1)`` at a unit root).
    k_se_ols : float
        The classical standard error of ``k_raw`` that assumes independent series.
    n_steps, n_series : int
        Transitions per series and number of series.
    conf_level : float
        Coverage of ``k_ci`` and ``k_upper``.
    """

    k: float
    k_se: float
    k_ci: tuple[float, float]
    k_upper: float
    k_raw: float
    bias: float
    k_se_ols: float
    n_steps: int
    n_series: int
    conf_level: float

    @property
    def steps_x_k(self) -> float:
        """``n_steps · k``: how many relaxation times the series span."""
        return self.n_steps * self.k

    @property
    def verdict(self) -> str:
        """``"mean reversion"`` if ``k_ci`` excludes 0, else ``"no mean reversion detected (k < bound)"``.

        After the bias correction the pooled t-statistic is asymptotically normal
        at the unit root as the number of series grows (Levin, Lin & Chu 2002), so
        the interval is a valid test of ``k = 0``. Empty when ``k`` is NaN.
        """
        if not math.isfinite(self.k):
            return ""
        if self.k_ci[0] > 0:
            return VERDICT_MEAN_REVERSION
        return f"{VERDICT_NO_MEAN_REVERSION} (k < {self.k_upper:.3g})"


def pooled_ar1(x: np.ndarray, y: np.ndarray, *, conf_level: float = 0.95) -> PooledAR1:
    """Pooled AR(1) slope over many series with per-series intercepts, Nickell-corrected.

    The within (fixed-effects) estimator: each series (column) is centred on
    its own mean, then one slope φ is fitted through all ``(x, y)`` pairs, so
    series with more variation carry more weight (the efficient choice when k
    is common). Its ``k̂ = 1 − φ̂`` is biased upwards by about ``(1 + k)/T``
    per unit of ``(1 − φ)``, i.e. ≈ 2/T for ``T·k`` large (Nickell 1981,
    :func:`nickell_bias`, stationary start), which is as large as the standard
    error once ``T`` is smaller than about ``4·C``: the returned ``k`` and its
    interval have that bias removed (:func:`nickell_correct`); ``k_raw`` keeps
    the uncorrected value. Multiplying all series by one constant changes
    nothing; columns without variation are dropped.

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
    xa, ya = _as_2d(x, "x"), _as_2d(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must lie in (0, 1), got {conf_level}")
    top = max(float(np.max(np.abs(xa), initial=0.0)), float(np.max(np.abs(ya), initial=0.0)))
    if 0 < top < math.inf:  # an exact power of two: no square overflows or underflows
        shift = -math.frexp(top)[1]
        xa, ya = np.ldexp(xa, shift), np.ldexp(ya, shift)
    n_steps = xa.shape[0]
    xm = xa.mean(axis=0)
    xc = xa - xm
    sxx_col = np.einsum("tc,tc->c", xc, xc)
    keep = _varies(sxx_col, xm, n_steps)
    nan = float("nan")
    if n_steps < 3 or not keep.any():
        return PooledAR1(nan, nan, (nan, nan), nan, nan, nan, nan, n_steps, int(keep.sum()), conf_level)
    k_raw, se_raw, se_ols = _within_slope(xc[:, keep], ya[:, keep], float(sxx_col[keep].sum()))
    k, slope = nickell_correct(k_raw, n_steps)
    se = se_raw * slope
    q = float(stats.t.ppf(0.5 + conf_level / 2, n_steps - 1))
    q_one = float(stats.t.ppf(conf_level, n_steps - 1))
    return PooledAR1(
        k=k,
        k_se=se,
        k_ci=(k - q * se, k + q * se),
        k_upper=k + q_one * se,
        k_raw=k_raw,
        bias=k_raw - k,
        k_se_ols=se_ols,
        n_steps=n_steps,
        n_series=int(keep.sum()),
        conf_level=conf_level,
    )


def _within_slope(xc: np.ndarray, ya: np.ndarray, sxx_total: float) -> tuple[float, float, float]:
    """Within ``k̂ = 1 − φ̂``, its step-clustered SE and the OLS SE, for centred ``xc``."""
    n_steps, n_series = xc.shape
    scale = math.sqrt(sxx_total / (n_steps * n_series))  # numerics only
    xs = xc / scale
    ys = (ya - ya.mean(axis=0)) / scale
    sxx = float(np.einsum("tc,tc->", xs, xs))
    phi = float(np.einsum("tc,tc->", xs, ys)) / sxx
    e = ys - phi * xs
    dof = n_steps * n_series - n_series - 1
    se_ols = math.sqrt(float(np.einsum("tc,tc->", e, e)) / max(dof, 1) / sxx)
    score = np.einsum("tc,tc->t", xs, e)
    se = math.sqrt(n_steps / (n_steps - 1) * float(score @ score)) / sxx
    return 1.0 - phi, se, se_ols


def nickell_correct(k_raw: float, n_steps: int) -> tuple[float, float]:
    """Remove the Nickell bias from a pooled within ``k̂``: solve ``k + b(k) = k_raw``.

    ``b`` is :func:`nickell_bias`; ``k + b(k)`` increases in ``k`` (``b' > −1``),
    so the root is unique. Below ``T·k = 0.01`` (a unit root or an explosive
    series) ``b`` is held at its value there (≈ ``3/(T + 1)``).

    Parameters
    ----------
    k_raw : float
        The uncorrected estimate.
    n_steps : int
        Transitions per series ``T`` (at least 3).

    Returns
    -------
    k, slope : float
        The corrected rate and ``dk / dk_raw = 1 / (1 + b'(k))``, the factor
        that carries a standard error of ``k_raw`` over to ``k``.
    """
    if not math.isfinite(k_raw):
        return float("nan"), float("nan")
    t = int(n_steps)
    k_lo, k_hi = 0.01 / t, 1.99
    b_lo = nickell_bias(k_lo, t)
    if k_raw <= k_lo + b_lo:
        return k_raw - b_lo, 1.0
    if k_raw >= k_hi + nickell_bias(k_hi, t):
        return k_raw - nickell_bias(k_hi, t), 1.0
    k = optimize.brentq(lambda v: v + nickell_bias(v, t) - k_raw, k_lo, k_hi, xtol=1e-15, rtol=1e-14)
    h = 1e-4 * k
    db = (nickell_bias(min(k + h, k_hi), t) - nickell_bias(max(k - h, k_lo), t)) / (
        min(k + h, k_hi) - max(k - h, k_lo)
    )
    return float(k), 1.0 / (1.0 + db)


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
    # A = 1 − (1 − φ^T)/(T(1 − φ)); expm1/log1p keep it accurate for small k
    a = 1.0 + math.expm1(t * math.log1p(-k)) / (t * k) if k < 1 else 1.0 - (1.0 - phi**t) / (t * k)
    return (1.0 + phi) / (t - 1.0) * a / (1.0 - 2.0 * phi / ((1.0 - phi) * (t - 1.0)) * a)


def acf_batch(e: np.ndarray, nlags: int) -> np.ndarray:
    """Autocorrelations at lags 1…``nlags`` of every column, as statsmodels' ``acf``.

    Computed by FFT (zero-padded to ``n + nlags``, so there is no wrap-around):
    ``O(n log n)`` per column whatever ``nlags``.

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
    nfft = sfft.next_fast_len(n + nlags, real=True)
    spec = sfft.rfft(c, n=nfft, axis=0)
    acov = sfft.irfft(spec.real**2 + spec.imag**2, n=nfft, axis=0)[1 : nlags + 1]
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
    df = lags - np.asarray(model_df, dtype=np.float64)
    if np.any(df < 1):
        raise ValueError(f"lags ({lags}) must exceed model_df ({model_df})")
    r = acf_batch(e, lags)
    n = _as_2d(e, "e").shape[0]
    weights = 1.0 / (n - np.arange(1, lags + 1, dtype=np.float64))
    q = n * (n + 2) * np.einsum("lc,l->c", r * r, weights)
    return q, stats.chi2.sf(q, df)


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
    pval = np.full(cols, np.nan)
    finite = np.isfinite(stat)
    pval[finite] = [mackinnonp(float(s), regression="c", N=1) for s in stat[finite]]
    return stat, pval


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
