r"""Shadow fidelity: the update the optimizer took against the one GO-UP would have taken.

GO-UP's update at a step is Δ_GO-UP = −αg + ασz, z ~ N(0, I), with σ = std(θ − g)
(unbiased, as ``torch.std`` in :class:`goup_probe.optim.GOUP`). So the residual
r = Δ + αg of the update Δ the optimizer took is, if the optimizer *is* GO-UP,
a draw from N(0, α²σ²I). :func:`goup_fit` tests that: a two-sided χ² test of the
scaled norm ‖r‖²/(α²σ²) against χ²_N, and a Shapiro–Wilk test of the scaled
coordinates r_i/(ασ) on the subsample, combined by Bonferroni.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from goup_probe.stats.normal_tests import shapiro_wilk

MIN_COORDINATE_TEST = 3
"""Fewest subsample coordinates the Shapiro–Wilk part of :func:`goup_fit` runs on."""


@dataclass
class Snapshot:
    """State kept between the pre and post hook of a captured step."""

    theta: torch.Tensor
    lr: float
    grad_norm: float
    param_norm: float
    x_std: float
    numel: int
    theta_sample: np.ndarray | None = None
    """θ at the subsample indices, when already on the host (the update's sample reuses it)."""
    grad_sample: np.ndarray | None = None
    """g at the same subsample indices (the coordinate part of :func:`goup_fit`)."""


@dataclass(frozen=True)
class GoupFit:
    """Goodness of fit of one realised update to GO-UP's update distribution."""

    chi2: float
    """‖Δ + αg‖²/(α²σ²): χ²_N when the optimizer is GO-UP."""
    chi2_p: float
    """Two-sided p of ``chi2`` against χ²_N: 2·min(P(χ²_N ≤ q), P(χ²_N ≥ q)), at most 1."""
    coord_p: float
    """Shapiro–Wilk p of the scaled coordinates (Δ_i + αg_i)/(ασ) on the subsample (NaN: not run)."""
    p: float
    """Bonferroni combination: min(1, 2·min(chi2_p, coord_p)); ``chi2_p`` alone without ``coord_p``."""


def goup_sigma(x_std: float, numel: int) -> float:
    """GO-UP's σ: the unbiased std of θ − g, from its population std ``x_std`` over ``numel`` values."""
    return x_std * math.sqrt(numel / (numel - 1)) if numel > 1 else 0.0


def chi2_two_sided_p(q: float, dof: int) -> float:
    """Two-sided p of ``q`` against χ²_dof (scipy's exact distribution; no normal approximation).

    Through ``scipy.special`` (the functions ``scipy.stats.chi2`` calls, with the
    same values): 1.5 µs a call instead of 64 µs, paid per tensor and captured step.
    """
    if not math.isfinite(q) or dof < 1:
        return math.nan
    lower, upper = float(special.chdtr(dof, q)), float(special.chdtrc(dof, q))
    return min(1.0, 2.0 * min(lower, upper))


def goup_fit(
    dot: float,
    snap: Snapshot,
    update_norm: float,
    update_sample: np.ndarray | None = None,
) -> GoupFit:
    """Test the realised update Δ against GO-UP's N(−αg, α²σ²I) at this step.

    Parameters
    ----------
    dot : float
        Σ Δ·g over the whole tensor.
    snap : Snapshot
        The step's α (this step's learning rate of the tensor's param group),
        ‖g‖, std(θ − g), N and g at the subsample indices.
    update_norm : float
        ‖Δ‖ over the whole tensor.
    update_sample : ndarray, optional
        Δ at the subsample indices (the same indices as ``snap.grad_sample``).

    Returns
    -------
    GoupFit
        NaN throughout when α ≤ 0, σ = 0 or a norm is not finite. ‖r‖² is
        formed as ‖Δ‖² + 2αΣΔ·g + α²‖g‖² from the step's power sums, so its
        rounding error is about that of the sums times (‖Δ‖² / ‖r‖²).
    """
    nan = GoupFit(math.nan, math.nan, math.nan, math.nan)
    alpha, n = snap.lr, snap.numel
    sigma = goup_sigma(snap.x_std, n)
    values = (alpha, sigma, dot, update_norm, snap.grad_norm)
    if not all(math.isfinite(v) for v in values) or alpha <= 0 or sigma <= 0:
        return nan
    scale = alpha * sigma
    resid2 = max(update_norm**2 + 2 * alpha * dot + (alpha * snap.grad_norm) ** 2, 0.0)
    q = resid2 / scale**2
    chi2_p = chi2_two_sided_p(q, n)
    coord_p = math.nan
    grad_sample = snap.grad_sample
    if update_sample is not None and grad_sample is not None and len(update_sample) == len(grad_sample):
        z = (np.asarray(update_sample, np.float64) + alpha * np.asarray(grad_sample, np.float64)) / scale
        z = z[np.isfinite(z)]
        if z.size >= MIN_COORDINATE_TEST:
            # a constant sample has probability 0 under N(0, 1): a sure rejection, not a warning
            coord_p = 0.0 if np.ptp(z) == 0 else float(shapiro_wilk(z[None, :], np.sort(z)[None, :])[1][0])
    p = chi2_p if math.isnan(coord_p) else min(1.0, 2.0 * min(chi2_p, coord_p))
    return GoupFit(q, chi2_p, coord_p, p)


def shadow_from_dot(
    dot: float, snap: Snapshot, update_norm: float, update_sample: np.ndarray | None = None
) -> dict[str, float]:
    """Compare the update taken with the one GO-UP would have taken at this step.

    GO-UP's update is Δ_GO-UP ~ N(−αg, α²σ²I) with σ = std(θ − g). With the
    actual update Δ, from ``dot`` = Σ Δ·g, ``update_norm`` = ‖Δ‖ and Δ at the
    subsample indices (``update_sample``):

    * ``noise_to_signal`` = σ√N / ‖g‖ (GO-UP's noise norm over its mean's norm),
      with σ the unbiased std of θ − g over the tensor, as ``torch.std`` in GO-UP;
    * ``goup_cosine`` = cos(Δ, −αg);
    * ``goup_fit_p`` = the p-value of :func:`goup_fit`: is Δ a draw from GO-UP's
      update distribution? Uniform when the optimizer is GO-UP; 0 for plain SGD.
    """
    g_norm = snap.grad_norm
    sigma = goup_sigma(snap.x_std, snap.numel)
    out = {"noise_to_signal": math.nan, "goup_cosine": math.nan, "goup_fit_p": math.nan}
    if g_norm > 0 and math.isfinite(g_norm):
        out["noise_to_signal"] = sigma * math.sqrt(snap.numel) / g_norm
        if update_norm > 0:
            out["goup_cosine"] = -dot / (update_norm * g_norm)
    out["goup_fit_p"] = goup_fit(dot, snap, update_norm, update_sample).p
    return out
