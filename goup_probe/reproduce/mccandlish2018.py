"""McCandlish, Kaplan, Amodei et al. 2018: the gradient noise scale predicts the critical batch size.

The paper measures B_simple = tr Σ / |G|² over training and, separately, the
number of steps S(B) to reach a target loss for a sweep of batch sizes, each
with its best learning rate. Steps and examples trade off as
S = S_min (1 + B_crit / B): below B_crit doubling the batch nearly halves the
steps, above it the steps stop halving. The claim: B_crit ≈ B_simple.

Here: a one-hidden-layer MLP on the bundled digits. B_simple comes from one
SGD run, at checkpoints, from ``n_units`` independent mini-batches
(:func:`goup_probe.noise.scale.noise_scale_from_sums`, McCandlish et al.'s
Appendix A two-batch-size estimator with a jackknife interval). S(B) is the
first step at which the full training loss (checked every ``check_every``
steps) falls below ``target``, best over a learning-rate grid; B_crit and
S_min are the least-squares fit of S = S_min + S_min·B_crit / B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from goup_probe.noise.scale import noise_scale_from_sums
from goup_probe.reproduce.common import (
    Page,
    digits,
    full_loss,
    mlp,
    new_figure,
    random_batches,
    style,
    train_sgd,
    unit_gradients,
)

CLAIM = (
    "The critical batch size, where steps-to-target stop halving when the batch doubles, is about B_simple."
)
MEASURED = (
    "B_simple (App. A estimator, 95% jackknife interval) over one SGD run, against B_crit fitted to "
    "steps-to-target-loss of a batch-size sweep (best learning rate of a grid), on a digits MLP."
)
AGREE_FACTOR = 2.0
"""B_crit and B_simple 'agree' when their ratio lies within this factor."""


@dataclass(frozen=True)
class Settings:
    """Sizes of the sweep."""

    batch_sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    target: float
    max_steps: int
    check_every: int
    scale_checkpoints: int
    n_units: int
    width: int = 64
    scale_batch: int = 32
    seed: int = 0


QUICK = Settings(
    batch_sizes=(4, 16, 64, 256),
    lrs=(0.1, 0.3, 1.0),
    target=0.1,
    max_steps=3000,
    check_every=5,
    scale_checkpoints=5,
    n_units=40,
)
FULL = Settings(
    batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256, 512),
    lrs=(0.05, 0.1, 0.2, 0.4, 0.8, 1.6),
    target=0.05,
    max_steps=8000,
    check_every=2,
    scale_checkpoints=9,
    n_units=100,
)


@dataclass(frozen=True)
class Result:
    """The noise scale over training and the steps-to-target sweep.

    Attributes
    ----------
    scale : DataFrame
        ``step``, ``train_loss``, ``b_simple``, ``b_simple_low``, ``b_simple_high``.
    sweep : DataFrame
        ``batch_size``, ``lr``, ``steps`` (inf when the target was not reached).
    s_min, b_crit : float
        Fit of S = S_min (1 + B_crit / B) to each batch size's best steps.
    b_simple : float
        Geometric mean of B_simple over the checkpoints from step 0 to the step the
        ``scale_batch`` run reached the target loss.
    target : float
        Target training loss.
    """

    scale: pd.DataFrame
    sweep: pd.DataFrame
    s_min: float
    b_crit: float
    b_simple: float
    target: float

    def best(self) -> pd.DataFrame:
        """Fewest steps per batch size (over the learning rates), with the halving ratio S(B)/S(B_next)."""
        best = self.sweep.loc[self.sweep.groupby("batch_size").steps.idxmin()].sort_values("batch_size")
        best = best.reset_index(drop=True)
        best["speedup_to_next"] = best.steps / best.steps.shift(-1)
        return best


def fit_steps(batch_sizes: np.ndarray, steps: np.ndarray) -> tuple[float, float]:
    """S_min and B_crit of S = S_min + S_min·B_crit / B by least squares in 1/B (finite steps only).

    Raises
    ------
    ValueError
        With fewer than 2 finite points.
    """
    b, s = np.asarray(batch_sizes, float), np.asarray(steps, float)
    keep = np.isfinite(s)
    if keep.sum() < 2:
        raise ValueError(
            f"fit_steps needs at least 2 batch sizes that reached the target, got {int(keep.sum())}"
        )
    slope, intercept = np.polyfit(1.0 / b[keep], s[keep], 1)
    return float(intercept), float(slope / intercept) if intercept > 0 else math.inf


def _steps_to_target(data: object, settings: Settings, batch_size: int, lr: float) -> float:
    model = mlp(settings.width, seed=settings.seed)
    hit: list[int] = []

    def check(step: int, net: nn.Module) -> bool:
        if step % settings.check_every:
            return False
        loss = full_loss(net, data.train_x, data.train_y)  # type: ignore[attr-defined]
        if not math.isfinite(loss) or loss > 50:
            return True  # diverged
        if loss <= settings.target:
            hit.append(step)
            return True
        return False

    train_sgd(
        model,
        data,
        batch_size=batch_size,
        lr=lr,
        steps=settings.max_steps,
        seed=settings.seed,
        callback=check,
    )  # type: ignore[arg-type]
    return float(hit[0]) if hit else math.inf


def _noise_scale_run(data: object, settings: Settings, lr: float, horizon: int) -> pd.DataFrame:
    """B_simple at ``scale_checkpoints`` steps from 0 to ``horizon`` of one SGD run at ``scale_batch``."""
    model = mlp(settings.width, seed=settings.seed)
    rng = np.random.default_rng(settings.seed + 3)
    at = set(np.linspace(0, horizon, settings.scale_checkpoints).round().astype(int).tolist())
    rows = []

    def measure(step: int, net: nn.Module) -> None:
        if step not in at:
            return
        batches = random_batches(data.train_x, data.train_y, settings.scale_batch, settings.n_units, rng)  # type: ignore[attr-defined]
        g = unit_gradients(net, batches, list(net.parameters()))
        mean = g.mean(axis=0)
        ns = noise_scale_from_sums(
            np.einsum("ij,ij->i", g, g), g @ mean, float(mean @ mean), settings.scale_batch
        )
        rows.append(
            {
                "step": step,
                "train_loss": full_loss(net, data.train_x, data.train_y),  # type: ignore[attr-defined]
                "b_simple": ns.b_simple,
                "b_simple_low": ns.b_simple_low,
                "b_simple_high": ns.b_simple_high,
            }
        )

    train_sgd(
        model,
        data,
        batch_size=settings.scale_batch,
        lr=lr,
        steps=max(at),
        seed=settings.seed,
        callback=measure,
    )  # type: ignore[arg-type]
    return pd.DataFrame(rows)


def run(settings: Settings) -> Result:
    """The batch-size sweep, then B_simple over one run at ``scale_batch`` until the target."""
    data = digits(settings.seed)
    sweep = pd.DataFrame(
        [
            {"batch_size": b, "lr": lr, "steps": _steps_to_target(data, settings, b, lr)}
            for b in settings.batch_sizes
            for lr in settings.lrs
        ]
    )
    best = sweep.loc[sweep.groupby("batch_size").steps.idxmin()].sort_values("batch_size")
    s_min, b_crit = fit_steps(best.batch_size.to_numpy(), best.steps.to_numpy())
    near = (best.batch_size - settings.scale_batch).abs().idxmin()
    reached = best.loc[near, "steps"]
    horizon = int(reached) if math.isfinite(reached) else settings.max_steps
    scale = _noise_scale_run(data, settings, float(best.loc[near, "lr"]), horizon)
    before = scale.b_simple[scale.b_simple > 0]
    b_simple = float(np.exp(np.log(before).mean())) if len(before) else float("nan")
    return Result(scale, sweep, s_min, b_crit, b_simple, settings.target)


def verdict(result: Result) -> str:
    """B_crit and B_simple side by side."""
    ratio = result.b_crit / result.b_simple
    return (
        f"B_crit = {result.b_crit:.3g} samples (S_min = {result.s_min:.3g} steps) vs B_simple = "
        f"{result.b_simple:.3g} samples (geometric mean over training to loss {result.target}); "
        f"ratio {ratio:.2f}"
    )


def sentence(result: Result) -> str:
    """What was reproduced and what was not, from the numbers."""
    ratio = result.b_crit / result.b_simple
    s = result.scale
    grows = bool(len(s) > 1 and s.b_simple.iloc[-1] > s.b_simple.iloc[0])
    if not math.isfinite(ratio) or ratio <= 0:
        first = (
            "B_crit could not be fitted (steps did not fall with batch size): B_crit ≈ B_simple not tested"
        )
    elif 1 / AGREE_FACTOR <= ratio <= AGREE_FACTOR:
        first = f"Reproduced: B_crit / B_simple = {ratio:.2f}, within a factor of {AGREE_FACTOR:g}"
    else:
        side = "above" if ratio > 1 else "below"
        first = (
            f"Not reproduced within a factor of {AGREE_FACTOR:g}: B_crit / B_simple = {ratio:.2f} "
            f"(B_crit {side} B_simple)"
        )
    second = (
        "B_simple grew over training, as in the paper" if grows else "B_simple did not grow over training"
    )
    n = int(result.best().steps.notna().sum())
    return f"{first}; {second}. The fit rests on {n} batch sizes, one seed and a coarse learning-rate grid."


def page(result: Result) -> Page:
    """The report page's text and tables."""
    return Page(
        "McCandlish et al. 2018: noise scale vs critical batch size",
        CLAIM,
        MEASURED,
        verdict(result),
        sentence(result),
        [
            ("Best steps-to-target per batch size", result.best()),
            ("B_simple over training", result.scale),
            ("Whole sweep", result.sweep),
        ],
    )


def figures(result: Result, writer: object) -> list:
    """Steps to target vs batch size with the fit (left); B_simple over training with B_crit (right)."""
    best = result.best()
    fig, (ax1, ax2) = new_figure((11, 4.2), 2)
    ok = np.isfinite(best.steps)
    ax1.loglog(best.batch_size[ok], best.steps[ok], "o", label="best over learning rates")
    grid = np.geomspace(best.batch_size.min(), best.batch_size.max(), 100)
    if math.isfinite(result.b_crit) and result.b_crit > 0:
        ax1.loglog(grid, result.s_min * (1 + result.b_crit / grid), "-", label="S_min (1 + B_crit / B)")
        ax1.axvline(result.b_crit, color="C3", ls="--", lw=1, label=f"B_crit = {result.b_crit:.3g}")
    ax1.axvline(result.b_simple, color="C2", ls=":", lw=1.5, label=f"B_simple = {result.b_simple:.3g}")
    ax1.legend(fontsize=9)
    style(ax1, f"Steps to training loss {result.target}", "batch size", "steps")
    s = result.scale
    ax2.errorbar(
        s.step,
        s.b_simple,
        yerr=[s.b_simple - s.b_simple_low, np.minimum(s.b_simple_high, 1e9) - s.b_simple],
        marker="o",
        capsize=3,
        label="B_simple (95% jackknife)",
    )
    if math.isfinite(result.b_crit) and result.b_crit > 0:
        ax2.axhline(result.b_crit, color="C3", ls="--", lw=1, label="B_crit (fit)")
    ax2.set_yscale("log")
    ax2.legend(fontsize=9)
    style(ax2, "Gradient noise scale over training", "SGD step", "B_simple (samples)")
    return [
        writer.save(  # type: ignore[attr-defined]
            fig,
            "mccandlish2018_bcrit",
            "Critical batch size and noise scale",
            "The paper's Fig. 4/7 analogue: steps-to-target trade-off and B_simple over training.",
        )
    ]
