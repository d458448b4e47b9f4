"""Xie et al. 2023: pooled vs per-coordinate views of the gradient noise, and its covariance spectrum.

The paper shows that testing the gradient noise *dimension-wise* (all
coordinates of one noise vector pooled) suggests heavy tails, while testing it
*iteration-wise* (one coordinate across mini-batches) looks Gaussian: a pool
of Gaussians with different variances is heavy-tailed. It also finds the
noise covariance's eigenvalues follow a power law (a straight line on the
log-log rank plot).

Here: a one-hidden-layer MLP on the bundled digits, trained with SGD; at the
end :func:`goup_probe.gradient_noise` gives, per tensor, the pooled verdict
and excess kurtosis and the share of coordinates whose verdict is not
'non-Gaussian' (and whose Shapiro-Wilk test does not reject at 5%); per-sample
gradients of the output layer's weight give the covariance spectrum, with a
least-squares line fitted to log λ vs log rank over the top ``fit_ranks``
eigenvalues.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from goup_probe.noise.gradient import AXIS_COORDINATE, AXIS_POOLED, gradient_noise
from goup_probe.reproduce.common import (
    Page,
    digits,
    mlp,
    new_figure,
    random_batches,
    style,
    train_sgd,
    unit_gradients,
)

CLAIM = (
    "Pooled-over-coordinates tests call the noise heavy-tailed while per-coordinate tests over iterations "
    "find it near Gaussian; the noise covariance spectrum follows a power law."
)
MEASURED = (
    "Per tensor of a digits MLP after training: the pooled verdict and excess kurtosis of all noise "
    "coordinates, "
    "and the share of single coordinates (across mini-batches) not called non-Gaussian; the eigenvalues of "
    "the per-sample gradient covariance of the output layer on a log-log rank plot."
)
POWER_LAW_R2 = 0.95
"""Least R² of the log-log line over at least a decade of ranks for 'power law'."""


@dataclass(frozen=True)
class Settings:
    """Sizes of the run."""

    width: int
    steps: int
    batch_size: int
    n_batches: int
    max_coordinates: int
    spectrum_samples: int
    fit_ranks: int = 60
    lr: float = 0.1
    seed: int = 0


QUICK = Settings(width=32, steps=300, batch_size=32, n_batches=100, max_coordinates=60, spectrum_samples=800)
FULL = Settings(
    width=64, steps=1500, batch_size=32, n_batches=400, max_coordinates=150, spectrum_samples=1437
)


@dataclass(frozen=True)
class Result:
    """Both views per tensor and the covariance spectrum.

    Attributes
    ----------
    layers : DataFrame
        ``param``, ``numel``, ``pooled_verdict``, ``pooled_shape``, ``pooled_excess_kurtosis``,
        ``coordinates``, ``coord_not_nongaussian``, ``coord_not_rejected``, ``coord_median_kurtosis``.
    eigenvalues : ndarray
        Covariance eigenvalues of the output layer's per-sample gradients, descending.
    slope, r2 : float
        Log-log line over the top ``fit_ranks`` eigenvalues.
    fit_ranks : int
        Ranks fitted.
    spectrum_layer : str
        The tensor of the spectrum.
    """

    layers: pd.DataFrame
    eigenvalues: np.ndarray
    slope: float
    r2: float
    fit_ranks: int
    spectrum_layer: str


def _layer_rows(stats: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for param, group in stats.groupby("param", sort=False):
        pooled = group[group.axis == AXIS_POOLED].iloc[0]
        coords = group[group.axis == AXIS_COORDINATE]
        p = coords.shapiro_p.to_numpy(dtype=float)
        rows.append(
            {
                "param": param,
                "pooled_verdict": pooled.verdict,
                "pooled_shape": pooled.get("shape", ""),
                "pooled_excess_kurtosis": float(pooled.excess_kurtosis),
                "coordinates": len(coords),
                "coord_not_nongaussian": float((coords.verdict != "non-Gaussian").mean()),
                "coord_not_rejected": float((p[np.isfinite(p)] >= 0.05).mean()),
                "coord_median_kurtosis": float(np.nanmedian(coords.excess_kurtosis.to_numpy(dtype=float))),
            }
        )
    return pd.DataFrame(rows)


def power_law_fit(eigenvalues: np.ndarray, ranks: int) -> tuple[float, float]:
    """Slope and R² of log λ_r vs log r over r = 1..ranks (positive eigenvalues only)."""
    lam = np.asarray(eigenvalues, dtype=float)
    lam = lam[lam > 0][:ranks]
    if lam.size < 3:
        raise ValueError(f"power_law_fit needs at least 3 positive eigenvalues, got {lam.size}")
    x, y = np.log(np.arange(1, lam.size + 1)), np.log(lam)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    return float(slope), float(1 - resid.var() / y.var())


def run(settings: Settings) -> Result:
    """Train, then measure both views of the noise and the output layer's covariance spectrum."""
    data = digits(settings.seed)
    model = mlp(settings.width, seed=settings.seed)
    train_sgd(
        model, data, batch_size=settings.batch_size, lr=settings.lr, steps=settings.steps, seed=settings.seed
    )
    rng = np.random.default_rng(settings.seed + 2)
    batches = random_batches(data.train_x, data.train_y, settings.batch_size, settings.n_batches, rng)
    noise = gradient_noise(
        model,
        nn.functional.cross_entropy,
        batches,
        max_coordinates=settings.max_coordinates,
        seed=settings.seed,
    )
    layers = _layer_rows(noise.stats)
    layers.insert(1, "numel", [noise.numel[p] for p in layers.param])
    name, weight = list(model.named_parameters())[-2]  # the output layer's weight
    n = min(settings.spectrum_samples, len(data.train_x))
    idx = rng.choice(len(data.train_x), size=n, replace=False)
    singles = [(data.train_x[i : i + 1], data.train_y[i : i + 1]) for i in idx]
    g = unit_gradients(model, singles, [weight])
    lam = np.sort(np.linalg.eigvalsh(np.cov(g, rowvar=False)))[::-1]
    ranks = min(settings.fit_ranks, int((lam > 0).sum()))
    slope, r2 = power_law_fit(lam, ranks)
    return Result(layers, lam, slope, r2, ranks, name)


def _heavy(row: pd.Series) -> bool:
    return row.pooled_verdict == "non-Gaussian" and row.pooled_excess_kurtosis > 0


def verdict(result: Result) -> str:
    """Per-layer disagreement count and the power-law fit."""
    t = result.layers
    heavy = int(sum(_heavy(r) for _, r in t.iterrows()))
    return (
        f"pooled view non-Gaussian with positive excess kurtosis in {heavy} of {len(t)} tensors; "
        f"single coordinates not called non-Gaussian: median share {t.coord_not_nongaussian.median():.0%}; "
        f"spectrum of {result.spectrum_layer}: log-log slope {result.slope:.2f}, R^2 {result.r2:.3f} "
        f"over the top {result.fit_ranks} ranks"
    )


def sentence(result: Result) -> str:
    """What was reproduced and what was not, from the numbers."""
    t = result.layers
    disagree = [r.param for _, r in t.iterrows() if _heavy(r) and r.coord_not_nongaussian >= 0.5]
    first = (
        f"The two views disagree in {len(disagree)} of {len(t)} tensors (pooled heavy-tailed, "
        "at least half the "
        f"single coordinates not non-Gaussian)"
    )
    decade = result.fit_ranks >= 10
    if result.r2 >= POWER_LAW_R2 and decade:
        second = (
            f"the covariance spectrum is close to a power law (slope {result.slope:.2f}, "
            f"R^2 {result.r2:.3f} over "
            f"{result.fit_ranks} ranks)"
        )
    else:
        second = (
            f"a power-law spectrum is not shown (R^2 {result.r2:.3f} over {result.fit_ranks} ranks, "
            f"needed {POWER_LAW_R2} over at least 10)"
        )
    return (
        f"{first}; {second}. A straight log-log line over one or two decades is weak evidence of a power law."
    )


def page(result: Result) -> Page:
    """The report page's text and tables."""
    return Page(
        "Xie et al. 2023: pooled vs per-coordinate noise, and the covariance spectrum",
        CLAIM,
        MEASURED,
        verdict(result),
        sentence(result),
        [("Both views per tensor", result.layers)],
    )


def figures(result: Result, writer: object) -> list:
    """Per-layer kurtosis of both views (left); the log-log rank plot of the covariance spectrum (right)."""
    t = result.layers
    fig, (ax1, ax2) = new_figure((11, 4.4), 2)
    pos = np.arange(len(t))
    ax1.bar(pos - 0.2, t.pooled_excess_kurtosis, 0.4, label="pooled over coordinates")
    ax1.bar(pos + 0.2, t.coord_median_kurtosis, 0.4, label="one coordinate over batches (median)")
    ax1.set_yscale("symlog", linthresh=1)
    ax1.set_xticks(pos, [f"{p}\n{v}" for p, v in zip(t.param, t.pooled_verdict, strict=True)], fontsize=9)
    ax1.axhline(0, color="grey", lw=1)
    ax1.legend(fontsize=9)
    style(
        ax1, "Excess kurtosis of the noise, two axes", "tensor (pooled verdict)", "excess kurtosis (symlog)"
    )
    lam = result.eigenvalues[result.eigenvalues > 1e-10 * result.eigenvalues.max()]  # drop numerical zeros
    ranks = np.arange(1, lam.size + 1)
    ax2.loglog(ranks, lam, ".", ms=4, label="eigenvalues")
    k = result.fit_ranks
    fit = np.exp(np.polyval(np.polyfit(np.log(ranks[:k]), np.log(lam[:k]), 1), np.log(ranks[:k])))
    ax2.loglog(ranks[:k], fit, "-", color="C3", label=f"fit: slope {result.slope:.2f}, R^2 {result.r2:.3f}")
    ax2.legend(fontsize=9)
    style(ax2, f"Noise covariance spectrum of {result.spectrum_layer}", "rank", "eigenvalue")
    return [
        writer.save(  # type: ignore[attr-defined]
            fig,
            "xie2023_views_spectrum",
            "Two views of the noise and its covariance spectrum",
            "Left: the paper's dimension-wise vs iteration-wise comparison; right: its power-law rank plot.",
        )
    ]
