"""Shared pieces of the OU statistics: thresholds, verdict strings, default lags, input checks.

Used by :mod:`goup_probe.stats.ou` (the single-series fit),
:mod:`goup_probe.stats.ou_pooled` (the pooled panel estimator) and
:mod:`goup_probe.stats.ou_tests` (the batch residual tests); every name is
re-exported by :mod:`goup_probe.stats.ou`.
"""

from __future__ import annotations

import numpy as np

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


# ----------------------------------------------------------------------------- input checks


def _as_real_series(series: object, name: str = "series") -> np.ndarray:
    """``series`` as a float64 array; complex (or non-numeric) input is refused, naming ``name``."""
    raw = np.asarray(series)
    if np.iscomplexobj(raw):
        raise TypeError(f"{name} must be real-valued, got complex dtype {raw.dtype}")
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {raw.dtype}")
    return raw.astype(np.float64, copy=False)


def _as_2d(a: np.ndarray, name: str = "array") -> np.ndarray:
    arr = _as_real_series(a, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected {name} as a (time, series) array, got shape {arr.shape}")
    return arr


def _varies(sum_sq: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Columns whose standard deviation is not zero relative to their mean."""
    std = np.sqrt(sum_sq / max(n, 1))
    return (std > 0) & (std > _RELATIVE_CONSTANT * np.abs(mean))
