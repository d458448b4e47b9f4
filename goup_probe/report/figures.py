"""Figures of the report: matplotlib Figures (Agg, no pyplot) drawn by :mod:`goup_probe.plots`, as PNG."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from goup_probe import plots, schema
from goup_probe.report.folder import FIGURE_DIR, FigureFile
from goup_probe.report.naming import safe_stem


@dataclass(frozen=True)
class FigureWriter:
    """Saves figures under ``out_dir / figures`` at a fixed resolution."""

    out_dir: Path
    dpi: int = 100

    def save(self, fig: Figure, stem: str, title: str, caption: str, *, tight: bool = True) -> FigureFile:
        """Write ``fig`` as ``figures/<safe stem>.png`` and describe it.

        ``stem`` is sanitised here, so no caller can write outside the folder.
        ``tight`` crops to the drawn artists (needed for legends outside the Axes;
        costs a second draw).
        """
        folder = self.out_dir / FIGURE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        name = safe_stem(stem) + ".png"
        path = folder / name
        extra = {"bbox_inches": "tight", "pad_inches": 0.15} if tight else {}
        fig.savefig(path, dpi=self.dpi, facecolor="white", **extra)
        width, height = png_size(path)
        return FigureFile(f"{FIGURE_DIR}/{name}", title, caption, width, height)

    def draw(
        self,
        stem: str,
        title: str,
        caption: str,
        size: tuple[float, float],
        draw: Callable[[Axes], object],
    ) -> FigureFile:
        """Make a one-Axes figure of ``size`` inches, let ``draw`` fill it, save it."""
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.add_subplot()
        draw(ax)
        return self.save(fig, stem, title, caption)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels from a PNG file's IHDR chunk."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def _stats_line(stats: pd.DataFrame, param: str, step: int, quantity: str) -> str:
    """Two-line panel title: step and verdict, then the shape statistics of the whole tensor."""
    row = stats[(stats["param"] == param) & (stats["step"] == step) & (stats["quantity"] == quantity)]
    if row.empty:
        return f"step {step}: not captured"
    r = row.iloc[0]
    verdict = r["verdict"] if r["verdict"] != schema.VERDICT_NOT_TESTED else r["status"]

    def f(v: object) -> str:
        return "n/a" if v is None or not np.isfinite(float(v)) else f"{float(v):.3g}"

    return (
        f"step {step}: {verdict}\nskew {f(r['skew'])}, ex. kurt. {f(r['excess_kurtosis'])}, "
        f"qq_r {f(r['qq_r'])}, ‖g‖/‖θ‖ {f(r['grad_to_param'])}"
    )


def layer_figure(
    writer: FigureWriter,
    stats: pd.DataFrame,
    samples: pd.DataFrame,
    param: str,
    steps: Sequence[int],
) -> FigureFile:
    """Per-layer detail: for each chosen step, X's histogram with fitted normal, its QQ plot, θ and g.

    Parameters
    ----------
    writer : FigureWriter
        Where the PNG goes.
    stats, samples : DataFrame
        ``run.stats`` and (at least the needed rows of) ``run.samples``.
    param : str
        Parameter tensor.
    steps : sequence of int
        Captured steps, one row of panels each.
    """
    steps = list(steps) or [0]
    # A fixed layout in inches (twice as fast as constrained layout for 12 panels): 0.75 in on top for
    # the figure title and the two-line panel titles, 0.9 in between rows, 2.1 in panels.
    height = 0.35 + 3.0 * len(steps)
    fig = Figure(figsize=(15, height))
    fig.subplots_adjust(
        left=0.05, right=0.99, top=1 - 0.75 / height, bottom=0.5 / height, wspace=0.25, hspace=0.9 / 2.1
    )
    axes = np.atleast_2d(fig.subplots(len(steps), 4, squeeze=False))
    for row, step in zip(axes, steps, strict=True):
        plots.plot_histogram(samples, param=param, step=step, quantity=schema.THETA_MINUS_GRAD, ax=row[0])
        plots.plot_qq(samples, param=param, step=step, quantity=schema.THETA_MINUS_GRAD, ax=row[1])
        plots.plot_histogram(
            samples, param=param, step=step, quantity=schema.THETA, color="#8172b3", ax=row[2]
        )
        plots.plot_histogram(
            samples, param=param, step=step, quantity=schema.GRAD, color="#937860", ax=row[3]
        )
        title = plots.mpl_text(_stats_line(stats, param, step, schema.THETA_MINUS_GRAD))
        row[0].set_title(title, loc="left", fontsize=8.5)
        row[1].set_title(f"step {step}: QQ plot of X", fontsize=8.5)
        row[2].set_title(f"step {step}: component θ", fontsize=8.5)
        row[3].set_title(f"step {step}: component g (gradient)", fontsize=8.5)
    fig.suptitle(plots.mpl_text(param), fontsize=11, x=0.01, y=1 - 0.08 / height, ha="left", va="top")
    caption = (
        "Left: density histogram of the stored subsample of X = θ − g with the normal fitted to it "
        "(its own mean and standard deviation); second: normal QQ plot with the line y = x; right: the "
        "components θ and g at the same steps, each with its fitted normal."
    )
    return writer.save(fig, f"layer-{param}", param, caption, tight=False)


def heatmap_figure(
    writer: FigureWriter, stats: pd.DataFrame, *, metric: str = "one_minus_qq_r", stem: str = "heatmap"
) -> FigureFile:
    """Layers × steps heatmap of an effect size for X, sized to the number of tensors."""
    matrix = plots.effect_matrix(stats, metric=metric)
    n_rows, n_cols = matrix.shape if not matrix.empty else (1, 1)
    height = min(30.0, max(3.0, 0.125 * n_rows + 1.6))
    width = min(18.0, max(7.0, 0.22 * n_cols + 5.0))
    title = f"Effect size {plots.METRIC_LABELS.get(metric, metric)} of X per tensor and step"
    caption = (
        "Each cell is one tensor at one captured step; brighter means further from a normal distribution. "
        "Blank cells were not tested."
    )

    def draw(ax: Axes) -> None:
        plots.plot_effect_heatmap(stats, metric=metric, ax=ax)
        ax.set_title(title, fontsize=10)

    return writer.draw(stem, _plain(title), caption, (width, height), draw)


def _plain(text: str) -> str:
    replacements = {
        r"$1 - r_{QQ}$": "1 − qq_r",
        r"$W_1$": "W1",
        r"($\sigma$ units)": "(σ units)",
        r"$\|g\| / \|\theta\|$": "‖g‖/‖θ‖",
        r"$\hat k / \alpha$": "k̂/α",
    }
    for math_text, plain in replacements.items():
        text = text.replace(math_text, plain)
    return text


def lines_figure(
    writer: FigureWriter,
    stats: pd.DataFrame,
    *,
    metric: str,
    highlight: Sequence[str] = (),
    caption: str = "",
) -> FigureFile:
    """One metric of X over training, a line per tensor (grey + median + highlights when many)."""
    label = plots.METRIC_LABELS.get(metric, metric)
    title = f"{label} of X over training"

    def draw(ax: Axes) -> None:
        plots.plot_layer_lines(stats, metric=metric, highlight=highlight, ax=ax)
        ax.set_title(title, fontsize=10)

    return writer.draw(f"lines-{metric}", _plain(title), caption, (9.5, 4.2), draw)


def verdict_figure(writer: FigureWriter, stats: pd.DataFrame) -> FigureFile:
    """Stacked verdict counts of X per captured step."""
    n_steps = max(1, stats["step"].nunique())
    width = min(16.0, max(7.5, 0.12 * n_steps + 6.0))

    def draw(ax: Axes) -> None:
        plots.plot_verdict_counts(stats, ax=ax)
        ax.set_title("Verdict on X = θ − g per captured step", fontsize=10)

    caption = (
        "How many parameter tensors get each verdict at each captured step (thresholds in the glossary)."
    )
    return writer.draw("verdicts", "Verdicts over training", caption, (width, 3.6), draw)


def ou_figures(writer: FigureWriter, ou: pd.DataFrame) -> list[FigureFile]:
    """k̂/α with intervals, the innovations' lag-1 autocorrelation, and the residual diagnostics."""
    height = min(30.0, max(3.0, 0.22 * min(len(ou), 60) + 1.5))
    out = []
    if plots.ou_ratio(ou) is not None:
        out.append(
            writer.draw(
                "ou-rates",
                "Mean-reversion rate k̂ relative to the learning rate α",
                "k̂ from regressing θ_{t+1} on θ_t over the tracer coordinates, with its interval; the "
                "seed's derivation assumes k = α (dashed line). Near a minimum theory expects "
                "k̂ ≈ α·(curvature + weight decay), not α.",
                (8.5, height),
                lambda ax: plots.plot_ou_rates(ou, ax=ax),
            )
        )
    if "innovation_acf1" in ou.columns:
        out.append(
            writer.draw(
                "ou-acf",
                "Lag-1 autocorrelation of the seed's innovations η = α(θ − g)",
                "An OU model needs innovations that are uncorrelated over time; bars beyond the ±1.96/√n "
                "ticks (orange: |acf| > 0.1) contradict it.",
                (8.5, height),
                lambda ax: plots.plot_ou_innovation_acf(ou, ax=ax),
            )
        )
    if any(c in ou.columns for c in plots.OU_DIAGNOSTICS):
        out.append(
            writer.draw(
                "ou-diagnostics",
                "Residual and innovation diagnostics of the OU fit",
                "Share of tracer coordinates (or steps) failing each check at the 5% level; an OU process "
                "with i.i.d. Gaussian innovations gives about 5% everywhere.",
                (11.0, height + 0.6),
                lambda ax: plots.plot_ou_diagnostics(ou, ax=ax),
            )
        )
    return out


CURVE_METRICS = ("train_loss", "heldout_loss", "heldout_acc", "rel_distance", "update_cosine")
"""Columns of a comparison's curves table drawn per arm, when present."""


def fidelity_figures(
    writer: FigureWriter,
    curves: pd.DataFrame | None,
    layers: pd.DataFrame | None,
    highlight: Sequence[str] = (),
) -> list[FigureFile]:
    """Loss/accuracy curves per arm with bands over seeds, and parameter distance per tensor."""
    out = []
    if curves is not None and not curves.empty:
        for metric in CURVE_METRICS:
            if metric not in curves.columns or not _numeric(curves[metric]):
                continue
            out.append(
                writer.draw(
                    f"fidelity-{metric}",
                    f"{metric.replace('_', ' ')} per arm",
                    "Mean over seeds; the band spans the lowest to the highest seed.",
                    (7.5, 3.8),
                    lambda ax, m=metric: plots.plot_fidelity_curves(curves, y=m, ax=ax),
                )
            )
    if (
        layers is not None
        and not layers.empty
        and {"param", "step", "rel_distance", "arm"} <= set(layers.columns)
    ):
        for arm, sub in layers.groupby("arm", sort=False):
            frame = sub[["param", "step", "rel_distance"]].dropna()
            if frame.empty or not (frame["rel_distance"].abs() > 0).any():
                continue  # the base arm: distance 0 to itself
            title = f"Relative parameter distance to the base arm per tensor: {arm}"

            def draw(ax: Axes, f: pd.DataFrame = frame, t: str = title) -> None:
                plots.plot_param_distance(f, value="rel_distance", highlight=highlight, ax=ax)
                ax.set_title(plots.mpl_text(t), fontsize=10)

            out.append(
                writer.draw(
                    f"fidelity-distance-{arm}",
                    title,
                    f"‖θ_arm − θ_base‖ / ‖θ_base‖ per parameter tensor for arm {arm}, mean over seeds.",
                    (9.5, 4.0),
                    draw,
                )
            )
    return out


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and bool(np.isfinite(series.astype(np.float64)).any())
