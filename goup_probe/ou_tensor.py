"""One tensor's OU statistics from its tracer tracks, computed in blocks of coordinates and of steps.

The tests of :func:`goup_probe.validate_ou` are of two kinds: those of one tracer
coordinate over time (its AR(1) fit and the residual diagnostics, the innovation
η = α(θ − g) of the seed over time) and those of one step across the coordinates
(normality of η across coordinates, step sizes). Each kind is computed on a block
of :data:`COORDINATE_BLOCK` coordinates, or of :data:`STEP_BLOCK` steps, at a
time, so that a tensor's temporaries are a block's, not a dozen matrices of all
its steps × tracers (a 20 000-step tensor of 256 tracers: 555 MB). Every statistic
of a coordinate (of a step) depends on that coordinate's (step's) values alone, so
the result is the one of the whole matrix up to the order numpy's vectorised loops
add in (within 1e-12 relative; the verdicts are the same). The pooled AR(1) fit,
one slope through every coordinate, sums over blocks of steps in the same way
(:func:`goup_probe.stats.ou.pooled_ar1`; its step-clustered standard error moved
by 1.5e-9 relative on a 5000-step run: the per-step scores are sums that cancel).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from goup_probe.stats import ou as sou

COORDINATE_BLOCK = 32
"""Tracer coordinates whose time-series tests run together (a 5000-step block: 1.3 MB per matrix)."""

STEP_BLOCK = 1024
"""Steps whose across-coordinate statistics run together (256 tracers: 2 MB per matrix)."""


@dataclass(frozen=True)
class CoordinateStatistics:
    """Per analysed coordinate (arrays in coordinate order): the time-series tests of one tracer."""

    moving: np.ndarray
    """Per coordinate of the tensor: finite throughout, moving, and with a noisy AR(1) fit."""
    values: dict[str, np.ndarray]
    """Per analysed (moving) coordinate: ``k`` (1 − φ̂), ``resid_acf1``, ``resid_lb_p``,
    ``resid_kurt``, ``resid_norm_p``, ``adf_p``, ``bf_p``, ``var_ratio``, ``eta_acf1``,
    ``eta_lb_p``, ``eta_kurt``, ``eta_norm_p``, ``eta_state_corr``; empty when not analysed."""


@dataclass(frozen=True)
class StepStatistics:
    """Per step (arrays of length T) over the analysed coordinates."""

    eta_kurt: np.ndarray
    """Excess kurtosis of η across the coordinates at each step."""
    eta_norm_p: np.ndarray
    """D'Agostino-Pearson p-value of η across the coordinates at each step."""
    spread: np.ndarray
    """Σ_i (θ_ti − θ̄_i)²: the weight of step t in the pooled within-coordinate AR(1)."""
    grad_norm: np.ndarray
    """‖g_t‖ on the coordinates."""
    moved: np.ndarray
    """‖θ_{t+1} − θ_t‖."""
    sgd_gap: np.ndarray
    """‖θ_{t+1} − θ_t + α_t g_t‖: 0 for a plain SGD step."""


def _slices(n: int, size: int) -> Iterator[slice]:
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


def coordinate_statistics(
    theta: np.ndarray,
    grad: np.ndarray,
    theta_next: np.ndarray,
    lr_col: np.ndarray,
    *,
    windows: int,
    analyse: bool,
) -> CoordinateStatistics:
    """Which coordinates move, and (``analyse``) the time-series tests of each, a block at a time.

    Parameters
    ----------
    theta, grad, theta_next : ndarray, shape (T, C)
        A tensor's tracer tracks (float64).
    lr_col : ndarray, shape (T, 1)
        Each step's learning rate (1 where unknown).
    windows : int
        Windows of the Brown-Forsythe variance-stability test.
    analyse : bool
        Run the tests (else only decide which coordinates move).

    Returns
    -------
    CoordinateStatistics
    """
    moving, pieces = [], []
    for cols in _slices(theta.shape[1], COORDINATE_BLOCK):
        block = (np.ascontiguousarray(a[:, cols]) for a in (theta, grad, theta_next))
        keep, values = _coordinate_block(*block, lr_col, windows, analyse)
        moving.append(keep)
        if values is not None:
            pieces.append(values)
    values = {key: np.concatenate([p[key] for p in pieces]) for key in pieces[0]} if pieces else {}
    return CoordinateStatistics(np.concatenate(moving) if moving else np.zeros(0, dtype=bool), values)


def _coordinate_block(
    theta: np.ndarray,
    grad: np.ndarray,
    theta_next: np.ndarray,
    lr_col: np.ndarray,
    windows: int,
    analyse: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """The moving coordinates of one block and, when asked and any move, their tests."""
    # A coordinate is usable when it is finite throughout and moves at all.
    finite = np.isfinite(theta).all(0) & np.isfinite(theta_next).all(0) & np.isfinite(grad).all(0)
    spread = theta.std(axis=0)
    moving = finite & (spread > 1e-12 * np.abs(theta.mean(axis=0))) & (spread > 0)
    if not moving.any():  # noiseless coordinates (e.g. zero gradient under weight decay) are no OU sample
        return moving, None
    whole = bool(moving.all())
    fit = sou.ar1_batch(*((theta, theta_next) if whole else (theta[:, moving], theta_next[:, moving])))
    noisy = fit.sigma2 > 1e-20 * spread[moving] ** 2
    moving[np.flatnonzero(moving)[~noisy]] = False
    if not analyse or not moving.any():
        return moving, None
    if not (whole and noisy.all()):
        theta, grad, theta_next = theta[:, moving], grad[:, moving], theta_next[:, moving]
        fit = sou.ar1_batch(theta, theta_next)
    return moving, _time_series_tests(theta, grad, theta_next, lr_col, fit, windows)


def _time_series_tests(
    theta: np.ndarray,
    grad: np.ndarray,
    theta_next: np.ndarray,
    lr_col: np.ndarray,
    fit: sou.AR1Batch,
    windows: int,
) -> dict[str, np.ndarray]:
    """The AR(1) residual diagnostics and the seed's innovation tests of each coordinate over time."""
    resid = fit.resid
    n = resid.shape[0]
    lags = sou.default_lb_lags(n)
    # φ̂-dependent degrees of freedom: model_df = 1 is oversized near a unit root
    resid_acf = sou.acf_batch(resid, lags)
    _, resid_lb_p = sou.ljung_box_from_acf(resid_acf, n, model_df=sou.ar1_lb_model_df(fit.phi, lags))
    _, resid_kurt, resid_norm_p = sou.normality_batch(resid)
    _, bf_p, var_ratio = sou.brown_forsythe_batch(resid, windows)
    # The whole series θ_0 … θ_T (contiguous steps: theta_next[t] is theta[t + 1]).
    _, adf_p = sou.adf_batch(np.vstack([theta, theta_next[-1:]]))
    eta = lr_col * (theta - grad)
    eta_acf = sou.acf_batch(eta, lags)
    _, eta_lb_p = sou.ljung_box_from_acf(eta_acf, n)
    _, eta_kurt, eta_norm_p = sou.normality_batch(eta)
    return {
        "k": fit.k,
        "resid_acf1": resid_acf[0],
        "resid_lb_p": resid_lb_p,
        "resid_kurt": resid_kurt,
        "resid_norm_p": resid_norm_p,
        "adf_p": adf_p,
        "bf_p": bf_p,
        "var_ratio": var_ratio,
        "eta_acf1": eta_acf[0],
        "eta_lb_p": eta_lb_p,
        "eta_kurt": eta_kurt,
        "eta_norm_p": eta_norm_p,
        "eta_state_corr": column_corr(eta, theta),
    }


def column_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b`` (NaN if one is constant)."""
    ac, bc = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt(np.einsum("tc,tc->c", ac, ac) * np.einsum("tc,tc->c", bc, bc))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, np.einsum("tc,tc->c", ac, bc) / denom, np.nan)


def step_statistics(
    theta: np.ndarray,
    grad: np.ndarray,
    theta_next: np.ndarray,
    lr_col: np.ndarray,
    moving: np.ndarray,
) -> StepStatistics:
    """Across-coordinate statistics of each step on the ``moving`` coordinates, a block of steps at a time.

    Parameters
    ----------
    theta, grad, theta_next : ndarray, shape (T, C)
        A tensor's tracer tracks (all its coordinates).
    lr_col : ndarray, shape (T, 1)
        Each step's learning rate (1 where unknown).
    moving : ndarray of bool, shape (C,)
        The coordinates analysed.

    Returns
    -------
    StepStatistics
    """
    whole = bool(moving.all())
    centre = theta.mean(axis=0)[moving]
    parts: dict[str, list[np.ndarray]] = {f: [] for f in StepStatistics.__dataclass_fields__}
    for rows in _slices(theta.shape[0], STEP_BLOCK):
        th, g, nxt = (a[rows] if whole else a[rows][:, moving] for a in (theta, grad, theta_next))
        lr = lr_col[rows]
        _, kurt, p = sou.normality_batch((lr * (th - g)).T)
        delta = nxt - th
        parts["eta_kurt"].append(kurt)
        parts["eta_norm_p"].append(p)
        parts["spread"].append(((th - centre) ** 2).sum(axis=1))
        parts["grad_norm"].append(np.linalg.norm(g, axis=1))
        parts["moved"].append(np.linalg.norm(delta, axis=1))
        parts["sgd_gap"].append(np.linalg.norm(delta + lr * g, axis=1))
    return StepStatistics(**{f: np.concatenate(v) if v else np.zeros(0) for f, v in parts.items()})
