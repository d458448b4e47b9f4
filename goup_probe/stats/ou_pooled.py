"""One common mean-reversion rate for many series: the pooled within AR(1) and its Nickell correction.

:func:`pooled_ar1` fits one slope through all series, each centred on its own
mean, and removes the Nickell (1981) bias of that within estimator
(:func:`nickell_bias`, :func:`nickell_correct`) before forming its interval,
clustered by time step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from goup_probe.stats.ou_common import VERDICT_MEAN_REVERSION, VERDICT_NO_MEAN_REVERSION, _as_2d, _varies


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


STEP_BLOCK = 1024
"""Steps :func:`pooled_ar1` processes at a time: its temporaries are a block's (256 series: 2 MB a
matrix), not four matrices of every step (a 20 000-step tensor of 256 tracers: 157 MB)."""


def pooled_ar1(
    x: np.ndarray, y: np.ndarray, *, conf_level: float = 0.95, series: np.ndarray | None = None
) -> PooledAR1:
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
    nothing; columns without variation are dropped. The sums run over blocks of
    :data:`STEP_BLOCK` steps, so the memory beyond ``x`` and ``y`` is a block's.

    Parameters
    ----------
    x, y : array_like
        ``(T, C)`` arrays: the states at t and t + 1 of ``C`` series.
    conf_level : float
        Coverage of the interval.
    series : array_like of bool, optional
        The columns to fit (default all), without copying the others out first.

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
    n_steps = xa.shape[0]
    cols = _selected(series, xa.shape[1])
    top = float(np.max([0.0, *(_abs_max(b) for a in (xa, ya) for b in _blocks(a, cols, 0))]))  # NaN stays
    shift = 0
    if 0 < top < math.inf and not _UNSCALED_RANGE[0] <= top <= _UNSCALED_RANGE[1]:
        shift = -math.frexp(top)[1]  # by an exact power of two: no sum of squares overflows or underflows
    xm = _column_mean(xa, cols, shift)
    sxx_col = sum((np.einsum("tc,tc->c", c, c) for c in _centred(xa, cols, shift, xm)), np.zeros(len(xm)))
    keep = _varies(sxx_col, xm, n_steps)
    nan = float("nan")
    if n_steps < 3 or not keep.any():
        return PooledAR1(nan, nan, (nan, nan), nan, nan, nan, nan, n_steps, int(keep.sum()), conf_level)
    if not keep.all():
        cols, xm = (np.flatnonzero(keep) if cols is None else cols[keep]), xm[keep]
    moments = _Moments(xa, ya, cols, shift, xm, _column_mean(ya, cols, shift))
    k_raw, se_raw, se_ols = _within_slope(moments, float(sxx_col[keep].sum()))
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


def _selected(series: np.ndarray | None, n_columns: int) -> np.ndarray | None:
    """Column indices of a boolean ``series`` mask; None for all columns."""
    if series is None:
        return None
    mask = np.asarray(series, dtype=bool)
    if mask.shape != (n_columns,):
        raise ValueError(f"series must be a boolean mask of the {n_columns} columns, got shape {mask.shape}")
    return None if mask.all() else np.flatnonzero(mask)


def _blocks(a: np.ndarray, cols: np.ndarray | None, shift: int) -> Iterator[np.ndarray]:
    """``a`` a block of :data:`STEP_BLOCK` rows at a time: its ``cols``, times ``2**shift``."""
    for start in range(0, a.shape[0], STEP_BLOCK):
        block = a[start : start + STEP_BLOCK]
        block = block if cols is None else block[:, cols]
        yield np.ldexp(block, shift) if shift else block


def _column_mean(a: np.ndarray, cols: np.ndarray | None, shift: int) -> np.ndarray:
    width = a.shape[1] if cols is None else len(cols)
    total = sum((b.sum(axis=0) for b in _blocks(a, cols, shift)), np.zeros(width))
    return total / max(a.shape[0], 1)


def _centred(a: np.ndarray, cols: np.ndarray | None, shift: int, mean: np.ndarray) -> Iterator[np.ndarray]:
    for block in _blocks(a, cols, shift):
        yield block - mean


@dataclass(frozen=True)
class _Moments:
    """The fitted columns of x and y, centred on their means, readable in blocks of steps."""

    x: np.ndarray
    y: np.ndarray
    cols: np.ndarray | None
    shift: int
    x_mean: np.ndarray
    y_mean: np.ndarray

    def pairs(self, scale: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Blocks of (x − x̄, y − ȳ) divided by ``scale``."""
        xs = _centred(self.x, self.cols, self.shift, self.x_mean)
        ys = _centred(self.y, self.cols, self.shift, self.y_mean)
        for xb, yb in zip(xs, ys, strict=True):
            xb /= scale
            yb /= scale
            yield xb, yb


def _abs_max(a: np.ndarray) -> float:
    """The largest |a| without the temporary of ``np.abs(a)`` (0 for an empty array; NaN propagates)."""
    if a.size == 0:
        return 0.0
    return max(float(a.max()), -float(a.min()))


_UNSCALED_RANGE = (2.0**-300, 2.0**300)
"""Largest |value| for which :func:`pooled_ar1` skips its power-of-two rescaling (which changes no
result where nothing under- or overflows): below 2³⁰⁰ no sum of 10⁹ squares overflows, and above
2⁻³⁰⁰ only a series 2²⁰⁰ times smaller than the largest could lose its squares to underflow, and it
weighs nothing in the pooled slope either way."""


def _within_slope(moments: _Moments, sxx_total: float) -> tuple[float, float, float]:
    """Within ``k̂ = 1 − φ̂``, its step-clustered SE and the OLS SE, two passes over blocks of steps."""
    n_steps = moments.x.shape[0]
    n_series = len(moments.x_mean)
    scale = math.sqrt(sxx_total / (n_steps * n_series))  # numerics only: 4th powers stay in range
    sxx = sxy = 0.0
    for xs, ys in moments.pairs(scale):
        sxx += float(np.einsum("tc,tc->", xs, xs))
        sxy += float(np.einsum("tc,tc->", xs, ys))
    phi = sxy / sxx
    see = score_sq = 0.0
    for xs, ys in moments.pairs(scale):
        e = ys - phi * xs
        see += float(np.einsum("tc,tc->", e, e))
        score = np.einsum("tc,tc->t", xs, e)  # clustered by step: each block holds whole steps
        score_sq += float(score @ score)
    dof = n_steps * n_series - n_series - 1
    se_ols = math.sqrt(see / max(dof, 1) / sxx)
    se = math.sqrt(n_steps / (n_steps - 1) * score_sq) / sxx
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
