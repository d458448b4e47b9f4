"""Verdicts from evidence of closeness: equivalence bounds, significant deviations and the shape rule.

"Not rejected" is no evidence of normality: a test with little power misses
large deviations. The verdict here says "Gaussian" only when the data show
closeness, in the sense of an equivalence test (two one-sided tests): one-sided
upper confidence bounds at level 1 − α of the distances below documented
margins (:class:`VerdictThresholds`). The distances are

* W1/σ, the Wasserstein-1 distance of the standardised law to N(0, 1), whose
  estimate has a positive floor under normality, E[Ŵ1] ≈ (0.833 − 0.13/√n)/√n
  (:func:`w1_null_mean`), removed in quadrature (:func:`w1_upper_bound`);
* the L-skewness |τ₃| and the L-kurtosis deviation |τ₄ − τ₄(normal)|
  (:mod:`goup_probe.stats.lmoments`), robust to heavy tails;
* the whole tensor's |skewness| and |excess kurtosis|, with their data-valid
  SEs: the subsample may miss a few extreme values the whole-tensor moments see.

A deviation is *significant* when an estimate is more than ``shape_z`` standard
errors from the normal's value; significant deviations name the row's shape
and count as a rejection beside Shapiro-Wilk's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from scipy import special

from goup_probe import schema
from goup_probe.stats.lmoments import TAU4_NORMAL, gap_influence, row_blocks

__all__ = [
    "DEFAULT_THRESHOLDS",
    "W1_NULL_SD",
    "Closeness",
    "Deviations",
    "VerdictThresholds",
    "closeness",
    "deviations",
    "distinct_share",
    "verdict_and_shape",
    "w1_null_mean",
    "w1_standard_error",
    "w1_upper_bound",
]

W1_NULL_SD = 0.19
"""√n × the standard deviation of Ŵ1/σ for normal samples (0.17 at n = 8, 0.19–0.20 from n = 50)."""


@dataclass(frozen=True)
class VerdictThresholds:
    """Margins and levels that turn tests, bounds and effect sizes into a verdict and a shape.

    With α = ``alpha``, z = Φ⁻¹(1 − α) and a row *rejected* when Shapiro-Wilk's
    p < α or a deviation is significant (an estimate of τ₃, τ₄ − τ₄(normal), the
    whole-tensor skewness or excess kurtosis beyond ``shape_z`` of its SEs),
    and *close* when every one-sided 1 − α upper bound is within its margin —
    W1/σ (bias-corrected, :func:`w1_upper_bound`) ≤ ``max_w1_sigma``,
    |τ₃| + z·SE ≤ ``max_abs_l_skew``, |τ₄ − 0.1226| + z·SE ≤ ``max_l_kurt_dev``,
    |skew| + z·SE ≤ ``max_abs_skew`` and |excess kurtosis| + z·SE ≤
    ``max_abs_excess_kurtosis`` (whole tensor) — a sample is

    * **Gaussian**: not rejected and close;
    * **inconclusive**: not rejected, closeness not shown (too few values, or a
      deviation the tests cannot resolve);
    * **close to Gaussian**: rejected, but close;
    * **non-Gaussian**: rejected and not close.

    Minimum n follows from the margins: a sample whose estimates sit at their
    normal values shows closeness once each z·SE fits its margin — τ₄ and τ₃
    (null SEs 0.30/√n and 0.45/√n) from n ≈ 270 and 220, W1 (its bound there is
    about 1.1/√n) from n ≈ 500. Normal samples show it in 0% at n = 200, 26% at
    n = 500, 79% at 1000 and 95% at 5000 (1000 replications each,
    benchmarks/README.md). There is no cliff in n: the bounds shrink as 1/√n.

    Margins: W1 0.05 σ (a uniform is at 0.15, a logistic 0.06, t₁₂ 0.036);
    τ₄ deviation 0.03 (t₁₀ 0.031, t₁₂ 0.026, logistic 0.044, Laplace 0.113,
    uniform 0.123, normal truncated at ±2.5σ 0.016); τ₃ 0.05 (a gamma law of skewness 0.3).

    Shapes (every tested row that is not Gaussian): **heavy-tailed** /
    **light-tailed** when τ₄ − τ₄(normal) is significant (its sign), else when
    the whole tensor's excess kurtosis is; **skewed** when τ₃ or the whole
    tensor's skewness is significant; **discrete** when the tested values
    include at most ``max_distinct_share`` × n distinct ones (each value repeated
    ten times on average at the default: a lattice such as rounding to 0.1σ,
    which Shapiro-Wilk rejects at n = 5000; a bf16 N(0, σ²) tensor has about
    0.29 n distinct values at n = 5000 and is not discrete by this rule, fp16
    0.77 n; continuous float32 data has n). Discreteness is named but is no
    rejection by itself. A rejected row with none of these is **other**; a
    row not rejected with none is **none detected**.
    """

    alpha: float = 0.05
    max_w1_sigma: float = 0.05
    max_abs_l_skew: float = 0.05
    max_l_kurt_dev: float = 0.03
    max_abs_skew: float = 0.5
    max_abs_excess_kurtosis: float = 1.0
    shape_z: float = 3.0
    max_distinct_share: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise TypeError(f"{f.name} must be a number, got {type(value).__name__}: {value!r:.60}")
            if math.isnan(value):
                raise ValueError(f"{f.name} must not be NaN")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0, got {getattr(self, f.name)}")
        if self.shape_z == 0:
            raise ValueError("shape_z must be > 0")
        if self.max_distinct_share > 1:
            raise ValueError(f"max_distinct_share must lie in [0, 1], got {self.max_distinct_share}")

    @property
    def z_bound(self) -> float:
        """The z of the one-sided 1 − α upper bounds, Φ⁻¹(1 − α)."""
        return float(special.ndtri(1.0 - self.alpha))


DEFAULT_THRESHOLDS = VerdictThresholds()


def w1_null_mean(n: int | np.ndarray) -> float | np.ndarray:
    """E[Ŵ1/σ] for n normal values: (0.833 − 0.13/√n)/√n.

    Fitted to seeded simulations (40000 replications for n ≤ 200, 8·10⁶/n above,
    8 ≤ n ≤ 10000; the fit is within 0.6% of each simulated mean and within
    1.1 of its Monte Carlo SEs): 0.058 at n = 200, 0.0117 at n = 5000.
    """
    root = np.sqrt(np.asarray(n, dtype=np.float64))
    value = (0.833 - 0.13 / root) / root
    return float(value) if np.ndim(value) == 0 else value


@lru_cache(maxsize=64)
def _normal_grids(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Φ⁻¹(j/n) on the gaps j = 1..n−1 and Φ⁻¹((i − ½)/n) at the order statistics (read-only)."""
    on_gaps = special.ndtri(np.arange(1, n, dtype=np.float64) / n)
    at_points = special.ndtri((np.arange(n, dtype=np.float64) + 0.5) / n)
    on_gaps.setflags(write=False)
    at_points.setflags(write=False)
    return on_gaps, at_points


def w1_standard_error(ordered: np.ndarray) -> np.ndarray:
    """Standard error of Ŵ1/σ per standardised sorted row: influence function and null spread combined.

    Ŵ1 = ∫ |Q(u) − Φ⁻¹(u)| du of the standardised quantile function Q. With
    s(u) = sign(Q(u) − Φ⁻¹(u)) its influence function at a standardised value z
    is IF_L(z) − z ∫ s − (z² − 1)/2 ∫ s Q (an L-statistic with weight s, and the
    estimated mean and σ), evaluated at the sample. Under normality s is noise
    and this IF misstates the spread, so the SE is √(SE_IF² + (0.19/√n)²)
    (:data:`W1_NULL_SD`), never below the null spread. It is conservative: its
    RMS over the Monte Carlo SD (1000 replications, 400 at n = 5000) is 1.7–1.9
    for normal samples at n = 200…5000 and 1.04–1.6 for t₅, t₁₂, t₂₀, Laplace,
    uniform, logistic and triangular samples (nearest 1 for the larger distances
    and n), so the bound errs towards "not shown".

    Parameters
    ----------
    ordered : ndarray, shape (m, n)
        Standardised rows (mean 0, population σ 1), sorted ascending.
    """
    n = ordered.shape[1]
    on_gaps, at_points = _normal_grids(n)
    var_if = np.empty(len(ordered))
    for rows in row_blocks(len(ordered)):
        z = ordered[rows]
        above = z[:, 1:] + z[:, :-1] > 2.0 * on_gaps  # s(u) on the gaps
        influence = gap_influence(np.diff(z, axis=1), np.where(above, 1.0, -1.0))
        sign_points = np.where(z > at_points, 1.0, -1.0)  # s(u) at the order statistics
        s0 = sign_points.mean(axis=1, keepdims=True)
        s1 = np.einsum("ij,ij->i", sign_points, z)[:, None] / n
        influence -= z * s0 + 0.5 * (z * z - 1.0) * s1
        var_if[rows] = influence.var(axis=1) / n
    return np.sqrt(var_if + W1_NULL_SD**2 / n)


def w1_upper_bound(w1: float, w1_se: float, n: int, alpha: float) -> float:
    """One-sided 1 − α upper bound of the population W1/σ, with the sampling floor removed.

    The raw bound Ŵ1 + z·SE covers E[Ŵ1]; the estimate's excess over the
    population distance is at most its null floor f(n) = :func:`w1_null_mean`
    and adds roughly in quadrature (E[Ŵ1]² ≳ W1² + f²), so the bound is
    √(max((Ŵ1 + z·SE)² − f(n)², 0)). Measured coverage (300 replications per
    cell, n = 50…5000): 0.92–1.00 for t₅, t₁₂, t₂₀, logistic, Laplace,
    uniform, triangular, truncated, rounded and contaminated normals.
    """
    raw = w1 + float(special.ndtri(1.0 - alpha)) * w1_se
    floor = float(w1_null_mean(n))
    return math.sqrt(max(raw * raw - floor * floor, 0.0)) if math.isfinite(raw) else math.nan


def distinct_share(ordered: np.ndarray) -> np.ndarray:
    """Distinct values over n in each sorted row (1 for continuous data; small on a coarse lattice)."""
    return (np.count_nonzero(np.diff(ordered, axis=1), axis=1) + 1.0) / ordered.shape[1]


@dataclass(frozen=True)
class Closeness:
    """One-sided upper bounds of the distances to the normal and whether all are within their margins."""

    w1_upper: float
    l_skew_upper: float
    l_kurt_upper: float
    skew_upper: float
    kurtosis_upper: float
    shown: bool


@dataclass(frozen=True)
class Deviations:
    """Significant deviations from the normal (each |estimate| > shape_z SEs) and the lattice flag."""

    heavy_tailed: bool
    light_tailed: bool
    skewed: bool
    discrete: bool

    @property
    def significant(self) -> bool:
        """Whether a tail or an asymmetry is significant (discreteness alone is no rejection)."""
        return self.heavy_tailed or self.light_tailed or self.skewed


def _f(values: Mapping[str, object], name: str) -> float:
    value = values.get(name)
    return float(value) if value is not None else math.nan  # type: ignore[arg-type]


def _max(a: float, b: float) -> float:
    """The larger of two SEs, NaN only when both are."""
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


def _whole_tensor(values: Mapping[str, object]) -> tuple[float, float, float, float]:
    """Whole-tensor skewness and excess kurtosis, bias-corrected for normal data, and their SEs.

    The SEs are the larger of the data-valid and the null one: a normal sample
    that happens to look light-tailed has a data-valid kurtosis SE below the
    null's (at n = 50 a test with it alone calls 10% of normal samples
    light-tailed at z = 3). The kurtosis is shifted by its normal-sample mean
    −6/(N + 1) (N finite values).
    """
    count = _f(values, "numel") - _f(values, "nonfinite")
    kurtosis = _f(values, "excess_kurtosis") + (6.0 / (count + 1.0) if count > 0 else math.nan)
    skew_se = _max(_f(values, "skew_se"), _f(values, "skew_se_null"))
    kurtosis_se = _max(_f(values, "kurtosis_se"), _f(values, "kurtosis_se_null"))
    return _f(values, "skew"), skew_se, kurtosis, kurtosis_se


def closeness(values: Mapping[str, object], thresholds: VerdictThresholds) -> Closeness:
    """Upper bounds of a row's distances (a stats row or ``NormalityResult.to_dict()``); NaN bounds fail."""
    z = thresholds.z_bound
    n = int(values["n_tested"])  # type: ignore[call-overload]
    skew, skew_se, kurtosis, kurtosis_se = _whole_tensor(values)
    bounds = (
        w1_upper_bound(_f(values, "w1_sigma"), _f(values, "w1_se"), n, thresholds.alpha),
        abs(_f(values, "l_skew")) + z * _f(values, "l_skew_se"),
        abs(_f(values, "l_kurt") - TAU4_NORMAL) + z * _f(values, "l_kurt_se"),
        abs(skew) + z * skew_se,
        abs(kurtosis) + z * kurtosis_se,
    )
    margins = (
        thresholds.max_w1_sigma,
        thresholds.max_abs_l_skew,
        thresholds.max_l_kurt_dev,
        thresholds.max_abs_skew,
        thresholds.max_abs_excess_kurtosis,
    )
    shown = all(b <= m for b, m in zip(bounds, margins, strict=True))  # NaN <= m is False
    return Closeness(*bounds, shown=shown)


def _z(estimate: float, se: float) -> float:
    return estimate / se if se > 0 else math.nan


def deviations(values: Mapping[str, object], thresholds: VerdictThresholds) -> Deviations:
    """Which deviations are significant: the robust L-moment ratio first, the whole tensor's moment next."""
    limit = thresholds.shape_z
    skew, skew_se, kurtosis, kurtosis_se = _whole_tensor(values)
    tail = _z(_f(values, "l_kurt") - TAU4_NORMAL, _f(values, "l_kurt_se"))
    if not abs(tail) > limit:
        tail = _z(kurtosis, kurtosis_se)
    skewed = abs(_z(_f(values, "l_skew"), _f(values, "l_skew_se"))) > limit or abs(_z(skew, skew_se)) > limit
    discrete = _f(values, "distinct_share") <= thresholds.max_distinct_share
    return Deviations(tail > limit, tail < -limit, skewed, discrete)


def _shape(found: Deviations, rejected: bool) -> str:
    names = [
        name
        for name, present in (
            (schema.SHAPE_HEAVY_TAILED, found.heavy_tailed),
            (schema.SHAPE_LIGHT_TAILED, found.light_tailed),
            (schema.SHAPE_SKEWED, found.skewed),
            (schema.SHAPE_DISCRETE, found.discrete),
        )
        if present
    ]
    if names:
        return ", ".join(names)
    return schema.SHAPE_OTHER if rejected else schema.SHAPE_NONE


def verdict_and_shape(values: Mapping[str, object], thresholds: VerdictThresholds) -> tuple[str, str]:
    """Verdict and shape of a row (see :class:`VerdictThresholds` for the rule).

    Parameters
    ----------
    values : mapping
        A stats row: ``status``, ``n_tested``, ``shapiro_p``, ``w1_sigma``,
        ``w1_se``, ``l_skew``, ``l_skew_se``, ``l_kurt``, ``l_kurt_se``,
        ``distinct_share`` and the whole-tensor ``skew``, ``skew_se``,
        ``excess_kurtosis``, ``kurtosis_se``.
    thresholds : VerdictThresholds
        Level, margins and the significance z of the rule.

    Returns
    -------
    verdict, shape : str
        The shape is ``""`` for a Gaussian or untested row.
    """
    shapiro_p = _f(values, "shapiro_p")
    if values.get("status") not in schema.TESTED_STATUSES or not math.isfinite(shapiro_p):
        return schema.VERDICT_NOT_TESTED, ""
    found = deviations(values, thresholds)
    rejected = shapiro_p < thresholds.alpha or found.significant
    close = closeness(values, thresholds).shown
    if not rejected and close:
        return schema.VERDICT_GAUSSIAN, ""
    if rejected:
        verdict = schema.VERDICT_CLOSE if close else schema.VERDICT_NON_GAUSSIAN
    else:
        verdict = schema.VERDICT_INCONCLUSIVE
    return verdict, _shape(found, rejected)
