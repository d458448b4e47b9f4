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

Layout: this module holds the single-series fit; the batch tests live in
:mod:`goup_probe.stats.ou_tests`, the pooled estimator in
:mod:`goup_probe.stats.ou_pooled` and the shared constants and checks in
:mod:`goup_probe.stats.ou_common`. Every name is re-exported here.

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
from scipy import stats

from goup_probe import schema
from goup_probe.stats.ou_common import (
    _RELATIVE_CONSTANT,
    DEFAULT_WINDOWS,
    MIN_NORMALITY,
    MIN_STEPS_X_K,
    MIN_TRANSITIONS,
    VERDICT_MEAN_REVERSION,
    VERDICT_NO_MEAN_REVERSION,
    VERDICT_UNRELIABLE,
    _as_real_series,
    default_adf_lags,
    default_lb_lags,
)
from goup_probe.stats.ou_pooled import PooledAR1, nickell_bias, nickell_correct, pooled_ar1
from goup_probe.stats.ou_tests import (
    DIRECT_ACF_MAX_LAGS,
    AR1Batch,
    acf_batch,
    adf_batch,
    ar1_batch,
    ar1_lb_model_df,
    brown_forsythe_batch,
    ljung_box_batch,
    ljung_box_from_acf,
    mackinnon_p,
    normality_batch,
    rejection_fraction,
    state_variance_batch,
)

__all__ = [
    "DEFAULT_WINDOWS",
    "DIRECT_ACF_MAX_LAGS",
    "MIN_NORMALITY",
    "MIN_STEPS_X_K",
    "MIN_TRANSITIONS",
    "VERDICT_MEAN_REVERSION",
    "VERDICT_NO_MEAN_REVERSION",
    "VERDICT_UNRELIABLE",
    "AR1Batch",
    "OUFit",
    "PooledAR1",
    "acf_batch",
    "adf_batch",
    "ar1_batch",
    "ar1_lb_model_df",
    "brown_forsythe_batch",
    "default_adf_lags",
    "default_lb_lags",
    "fit_ou",
    "kendall_bias",
    "ljung_box_batch",
    "ljung_box_from_acf",
    "mackinnon_p",
    "nickell_bias",
    "nickell_correct",
    "normality_batch",
    "pooled_ar1",
    "rejection_fraction",
    "state_variance_batch",
]

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


# ----------------------------------------------------------------------------- bias


def kendall_bias(k: float, n: int) -> float:
    """Approximate upward bias of the one-series least-squares ``k̂``: ``(1 + 3(1 − k)) / n``.

    Kendall (1954) for an AR(1) with estimated mean and ``n`` transitions;
    error ``O(1/n²)``.
    """
    return (1.0 + 3.0 * (1.0 - k)) / n
