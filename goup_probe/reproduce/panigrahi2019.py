"""Panigrahi, Somani, Goyal & Netrapalli 2019: the mini-batch noise's normality by batch size and time.

The paper holds θ fixed at training checkpoints, draws many mini-batches and
tests each parameter's noise (one coordinate across mini-batches) for
normality. Its claim: for batch size ≥ 256 the noise is Gaussian early in
training (and less so later, or with small batches).

Here: a three-hidden-layer ReLU MLP (8 tensors) on the bundled digits, trained
with SGD; at each checkpoint and batch size, :func:`goup_probe.gradient_noise`
gives the battery on ``max_coordinates`` seeded coordinates per tensor across
``n_batches`` mini-batches. A tensor counts as *not rejected as Gaussian* when
no coordinate's Shapiro-Wilk test rejects at FDR 5% (Benjamini-Hochberg over
the tensor's coordinates, :func:`goup_probe.stats.multiplicity.bh_q_values`);
the share of coordinates with p ≥ 0.05 is shown beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from goup_probe.noise.gradient import AXIS_COORDINATE, gradient_noise
from goup_probe.reproduce.common import Page, digits, mlp, new_figure, random_batches, style, train_sgd
from goup_probe.stats.multiplicity import bh_q_values

CLAIM = "Mini-batch gradient noise is Gaussian for batch size >= 256 early in training."
MEASURED = (
    "Share of tensors with no coordinate rejected as Gaussian (Shapiro-Wilk across mini-batches at a fixed "
    "checkpoint, BH-FDR 5% within the tensor), by batch size and checkpoint, on a digits MLP."
)
FDR = 0.05
"""False discovery rate of the per-tensor family of coordinate tests."""


@dataclass(frozen=True)
class Settings:
    """Sizes of the sweep."""

    batch_sizes: tuple[int, ...]
    checkpoints: tuple[int, ...]
    n_batches: int
    max_coordinates: int
    width: int = 64
    depth: int = 3
    train_batch: int = 64
    lr: float = 0.1
    seed: int = 0


QUICK = Settings(batch_sizes=(8, 32, 128, 256), checkpoints=(0, 100, 400), n_batches=60, max_coordinates=30)
FULL = Settings(
    batch_sizes=(8, 32, 128, 256, 512), checkpoints=(0, 50, 300, 1500), n_batches=200, max_coordinates=60
)


@dataclass(frozen=True)
class Result:
    """Per (checkpoint, batch size, tensor): coordinates tested and rejected.

    Attributes
    ----------
    table : DataFrame
        ``step``, ``batch_size``, ``param``, ``coordinates``, ``coord_not_rejected`` (share with p ≥ 0.05),
        ``tensor_not_rejected`` (no coordinate with q < FDR).
    """

    table: pd.DataFrame

    def shares(self) -> pd.DataFrame:
        """Share of tensors (and of coordinates) not rejected, per checkpoint and batch size."""
        return (
            self.table.groupby(["step", "batch_size"], as_index=False)
            .agg(
                tensors_not_rejected=("tensor_not_rejected", "mean"),
                coords_not_rejected=("coord_not_rejected", "mean"),
            )
            .sort_values(["step", "batch_size"])
            .reset_index(drop=True)
        )


def _rows(step: int, batch_size: int, stats: pd.DataFrame) -> list[dict[str, object]]:
    coords = stats[stats.axis == AXIS_COORDINATE]
    rows = []
    for param, group in coords.groupby("param", sort=False):
        p = group.shapiro_p.to_numpy(dtype=float)
        p = p[np.isfinite(p)]
        if not len(p):
            continue
        q = bh_q_values(p)
        rows.append(
            {
                "step": step,
                "batch_size": batch_size,
                "param": param,
                "coordinates": len(p),
                "coord_not_rejected": float((p >= 0.05).mean()),
                "tensor_not_rejected": bool((q >= FDR).all()),
            }
        )
    return rows


def run(settings: Settings) -> Result:
    """Train once; at each checkpoint test the noise of each tensor for every batch size."""
    data = digits(settings.seed)
    model = mlp(settings.width, settings.depth, seed=settings.seed)
    rng = np.random.default_rng(settings.seed + 1)
    rows: list[dict[str, object]] = []

    def measure(step: int, net: nn.Module) -> None:
        if step not in settings.checkpoints:
            return
        for b in settings.batch_sizes:
            batches = random_batches(data.train_x, data.train_y, b, settings.n_batches, rng)
            noise = gradient_noise(
                net,
                nn.functional.cross_entropy,
                batches,
                max_coordinates=settings.max_coordinates,
                seed=settings.seed,
            )
            rows.extend(_rows(step, b, noise.stats))

    train_sgd(
        model,
        data,
        batch_size=settings.train_batch,
        lr=settings.lr,
        steps=max(settings.checkpoints),
        seed=settings.seed,
        callback=measure,
    )
    return Result(pd.DataFrame(rows))


def _cell(shares: pd.DataFrame, large: bool, early: bool) -> float:
    first = shares.step.min()
    sel = shares[(shares.batch_size >= 256) == large]
    sel = sel[(sel.step == first) == early]
    return float(sel.tensors_not_rejected.mean()) if len(sel) else float("nan")


def verdict(result: Result) -> str:
    """Share of tensors not rejected in the four cells: batch ≥ 256 or not, first checkpoint or later."""
    s = result.shares()
    return (
        f"tensors not rejected as Gaussian: batch >= 256 at step {int(s.step.min())}: "
        f"{_cell(s, True, True):.0%}; batch >= 256 later: {_cell(s, True, False):.0%}; "
        f"batch < 256 at step {int(s.step.min())}: {_cell(s, False, True):.0%}; batch < 256 later: "
        f"{_cell(s, False, False):.0%}"
    )


def sentence(result: Result) -> str:
    """What was reproduced and what was not, from the numbers."""
    s = result.shares()
    big_early, big_late = _cell(s, True, True), _cell(s, True, False)
    small_early = _cell(s, False, True)
    parts = []
    if np.isnan(big_early):
        return "No batch size >= 256 was measured, so the claim was not tested."
    if big_early >= 0.75:
        parts.append(
            f"Reproduced: at step {int(s.step.min())} with batch >= 256, {big_early:.0%} of tensors "
            "are not rejected"
        )
    else:
        parts.append(
            f"Not reproduced: at step {int(s.step.min())} with batch >= 256 only {big_early:.0%} of "
            "tensors are not rejected"
        )
    if not np.isnan(small_early):
        parts.append(f"{small_early:.0%} with smaller batches")
    if not np.isnan(big_late):
        word = "fewer" if big_late < big_early else "not fewer"
        parts.append(f"{big_late:.0%} with batch >= 256 later in training ({word} than early)")
    return (
        "; ".join(parts)
        + ". Not rejecting is not evidence of normality: each tensor is tested on "
        + f"{int(result.table.coordinates.max())} coordinates across mini-batches of a small MLP, "
        + "and power grows with the number of batches."
    )


def page(result: Result) -> Page:
    """The report page's text and tables."""
    return Page(
        "Panigrahi et al. 2019: Gaussian noise at large batch sizes?",
        CLAIM,
        MEASURED,
        verdict(result),
        sentence(result),
        [("Share not rejected per checkpoint and batch size", result.shares()), ("Per tensor", result.table)],
    )


def figures(result: Result, writer: object) -> list:
    """Share of tensors (left) and coordinates (right) not rejected vs batch size, a line per checkpoint."""
    s = result.shares()
    fig, (ax1, ax2) = new_figure((11, 4.2), 2)
    for step, rows in s.groupby("step"):
        ax1.plot(rows.batch_size, rows.tensors_not_rejected, marker="o", label=f"step {step}")
        ax2.plot(rows.batch_size, rows.coords_not_rejected, marker="o", label=f"step {step}")
    for ax, what in (
        (ax1, "tensors (no coordinate rejected, BH 5%)"),
        (ax2, "coordinates (Shapiro-Wilk p >= 0.05)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.03, 1.03)
        ax.axvline(256, color="grey", ls="--", lw=1)
        ax.legend(fontsize=9)
        style(ax, f"Share of {what.split(' ')[0]} not rejected", "batch size", f"share of {what}")
    return [
        writer.save(  # type: ignore[attr-defined]
            fig,
            "panigrahi2019_shares",
            "Gaussianity of the noise by batch size and checkpoint",
            "Dashed line: batch 256, the paper's threshold. The paper's Fig. 1 analogue.",
        )
    ]
