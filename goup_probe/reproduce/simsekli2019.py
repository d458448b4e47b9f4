"""Simsekli, Sagun & Gürbüzbalaban 2019: the tail index of the pooled mini-batch gradient noise vs width.

The paper trains networks of several widths with SGD and, at checkpoints,
estimates the α of a symmetric α-stable law fitted to all coordinates of the
mini-batch gradient noise ξ = g_B − ∇L pooled together, with the Mohammadi et
al. block-sum estimator. Its claim: α̂ < 2 (heavy-tailed, not Gaussian) and α̂
decreases as the network gets wider.

Here: one-hidden-layer ReLU MLPs on the bundled digits, trained with SGD; at
each checkpoint, ``n_batches`` independent mini-batches give the unit
gradients g_u, ∇L is estimated by their mean, and the pooled ξ of all
parameters goes to :func:`goup_probe.noise.tails.tail_index` (Mohammadi,
95% interval).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from goup_probe.noise.tails import tail_index
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
    "Mini-batch gradient noise is heavy-tailed (alpha-stable with alpha < 2), and alpha decreases with width."
)
MEASURED = (
    "alpha-hat (Mohammadi block sums, 95% interval) of all coordinates of the mini-batch noise pooled, "
    "at training checkpoints, for a width sweep of one-hidden-layer MLPs on the bundled digits."
)


@dataclass(frozen=True)
class Settings:
    """Sizes of the sweep."""

    widths: tuple[int, ...]
    steps: int
    checkpoints: int
    batch_size: int
    n_batches: int
    lr: float = 0.1
    seed: int = 0


QUICK = Settings(widths=(16, 64, 256), steps=150, checkpoints=4, batch_size=32, n_batches=40)
FULL = Settings(widths=(16, 64, 256, 1024), steps=600, checkpoints=7, batch_size=32, n_batches=100)


@dataclass(frozen=True)
class Result:
    """α̂ per width and checkpoint.

    Attributes
    ----------
    table : DataFrame
        ``width``, ``step``, ``alpha``, ``ci_low``, ``ci_high``, ``n_values``.
    """

    table: pd.DataFrame

    def final(self) -> pd.DataFrame:
        """The rows of the last checkpoint, by width."""
        last = self.table.step.max()
        return self.table[self.table.step == last].sort_values("width").reset_index(drop=True)


def run(settings: Settings) -> Result:
    """Train each width and estimate α̂ of the pooled noise at the checkpoints."""
    data = digits(settings.seed)
    at = set(np.linspace(0, settings.steps, settings.checkpoints).round().astype(int).tolist())
    rows: list[dict[str, object]] = []
    for width in settings.widths:
        model = mlp(width, seed=settings.seed)
        rng = np.random.default_rng(settings.seed + width)

        def measure(step: int, net: object, width: int = width, rng: np.random.Generator = rng) -> None:
            if step not in at:
                return
            batches = random_batches(data.train_x, data.train_y, settings.batch_size, settings.n_batches, rng)
            g = unit_gradients(net, batches, list(net.parameters()))  # type: ignore[attr-defined]
            xi = (g - g.mean(axis=0)).ravel()
            tail = tail_index(xi[xi != 0], "mohammadi", seed=settings.seed)
            rows.append(
                {
                    "width": width,
                    "step": step,
                    "alpha": tail.alpha,
                    "ci_low": tail.ci_low,
                    "ci_high": tail.ci_high,
                    "n_values": tail.n,
                }
            )

        train_sgd(
            model,
            data,
            batch_size=settings.batch_size,
            lr=settings.lr,
            steps=settings.steps,
            seed=settings.seed,
            callback=measure,
        )
    return Result(pd.DataFrame(rows))


def verdict(result: Result) -> str:
    """Our verdict: cells whose interval lies below 2, and the width trend at the last checkpoint."""
    t = result.table
    below = int((t.ci_high < 2).sum())
    final = result.final()
    trend = "decreasing" if np.all(np.diff(final.alpha) < 0) else "not monotone decreasing"
    return (
        f"alpha-hat interval below 2 in {below} of {len(t)} (width, checkpoint) cells; "
        f"alpha-hat at the last checkpoint {trend} in width "
        f"({', '.join(f'{w}: {a:.2f}' for w, a in zip(final.width, final.alpha, strict=True))})"
    )


def sentence(result: Result) -> str:
    """What was reproduced and what was not, from the numbers."""
    t = result.table
    final = result.final()
    pairs = len(final) - 1
    dec = int((np.diff(final.alpha) < 0).sum())
    overlap = int(
        sum(
            max(final.ci_low.iloc[i], final.ci_low.iloc[i + 1])
            <= min(final.ci_high.iloc[i], final.ci_high.iloc[i + 1])
            for i in range(pairs)
        )
    )
    heavy = int((t.ci_high < 2).sum())
    lo, hi = float(t.alpha.min()), float(t.alpha.max())
    part1 = (
        f"Heavy tails reproduced: alpha-hat < 2 with the whole interval below 2 in all {len(t)} cells "
        f"(alpha-hat {lo:.2f} to {hi:.2f})"
        if heavy == len(t)
        else f"Heavy tails only partly reproduced: the interval lies below 2 in {heavy} of {len(t)} cells "
        f"(alpha-hat {lo:.2f} to {hi:.2f})"
    )
    part2 = (
        f"alpha-hat decreased with width in {dec} of {pairs} width steps at the last checkpoint"
        f" (intervals overlap in {overlap} of {pairs})"
    )
    tail = "; the alpha-stable fit is an assumption of the estimator, not a finding."
    return f"{part1}; {part2}{tail}"


def page(result: Result) -> Page:
    """The report page's text and tables."""
    return Page(
        "Simsekli et al. 2019: tail index of the gradient noise vs width",
        CLAIM,
        MEASURED,
        verdict(result),
        sentence(result),
        [("alpha-hat per width and checkpoint", result.table)],
    )


def figures(result: Result, writer: object) -> list:
    """α̂ vs step per width (with intervals), and α̂ vs width at the last checkpoint."""
    fig, (ax1, ax2) = new_figure((11, 4.2), 2)
    for width, rows in result.table.groupby("width"):
        ax1.errorbar(
            rows.step,
            rows.alpha,
            yerr=[rows.alpha - rows.ci_low, rows.ci_high - rows.alpha],
            marker="o",
            capsize=3,
            label=f"width {width}",
        )
    ax1.axhline(2, color="grey", ls="--", lw=1, label="Gaussian (alpha = 2)")
    ax1.legend(fontsize=9)
    style(ax1, "alpha-hat of pooled noise over training", "SGD step", "alpha-hat (Mohammadi)")
    final = result.final()
    ax2.errorbar(
        final.width,
        final.alpha,
        yerr=[final.alpha - final.ci_low, final.ci_high - final.alpha],
        marker="o",
        capsize=3,
    )
    ax2.set_xscale("log", base=2)
    ax2.axhline(2, color="grey", ls="--", lw=1)
    style(ax2, f"alpha-hat vs width (step {int(final.step.max())})", "hidden width", "alpha-hat")
    return [
        writer.save(  # type: ignore[attr-defined]
            fig,
            "simsekli2019_alpha",
            "Tail index of the pooled mini-batch noise",
            "Mohammadi estimator with 95% intervals; the paper's Fig. 2/3 analogue "
            "(alpha vs iterations and width).",
        )
    ]
