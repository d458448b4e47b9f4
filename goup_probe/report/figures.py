"""Figures of the report: matplotlib Figures (Agg, no pyplot) drawn by :mod:`goup_probe.plots`, as PNG."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from goup_probe import plots, schema
from goup_probe.report.folder import FIGURE_DIR, FigureFile
from goup_probe.report.naming import safe_stem
from goup_probe.report.select import MIN_RANKED_N
from goup_probe.stats.ou_common import MIN_NORMALITY

PAGE_WIDTH_IN = 11.7
"""Widest figure, in inches: 1200 px at the report's 100 dpi with the 0.15-in padding of a tight save.

The page's ``main`` is at most 1500 px wide less 2rem of padding, so a 1280-px window shows such a
figure unscaled and its 9-pt text stays 9 pt on screen."""


def agg_figure(size: tuple[float, float], *, constrained: bool = True) -> Figure:
    """A Figure of ``size`` inches on its own Agg canvas (constrained layout unless told otherwise).

    A bare ``Figure()`` has no renderer of its own: every text extent that a layout
    or seaborn's tick-label overlap check asks for makes a new one (a 6 MB buffer
    for a 1200 × 1300-px figure, 41 of them for a 41-row heatmap, which left
    280 MB resident). On an Agg canvas they share one.
    """
    fig = Figure(figsize=size, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


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
        fig = agg_figure(size)
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
    """One-line row header: step and verdict, then the shape statistics of the whole tensor."""
    row = stats[(stats["param"] == param) & (stats["step"] == step) & (stats["quantity"] == quantity)]
    if row.empty:
        return f"step {step}: not captured"
    r = row.iloc[0]
    verdict = r["verdict"] if r["verdict"] != schema.VERDICT_NOT_TESTED else r["status"]

    def f(v: object) -> str:
        return "n/a" if v is None or not np.isfinite(float(v)) else f"{float(v):.3g}"

    return (
        f"step {step}: {verdict}  ·  skew {f(r['skew'])}, excess kurtosis {f(r['excess_kurtosis'])}, "
        f"qq_r {f(r['qq_r'])}, ‖g‖/‖θ‖ {f(r['grad_to_param'])}"
    )


PANEL_TITLES = ("X = θ − g: histogram", "X: normal QQ plot", "component θ", "component g (gradient)")
"""Titles of the four panels of each row of :func:`layer_figure`."""


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
    # A fixed layout in inches (twice as fast as constrained layout for 12 panels): the figure title on
    # top, then per step a one-line header (verdict and shape statistics) and the panel titles above
    # 2.1-in panels, 1.1 in between rows for the tick labels of the row above.
    panel, gap, top, bottom = 2.1, 1.15, 0.95, 0.55
    height = top + bottom + panel * len(steps) + gap * (len(steps) - 1)
    fig = agg_figure((PAGE_WIDTH_IN, height), constrained=False)
    fig.subplots_adjust(
        left=0.06, right=0.99, top=1 - top / height, bottom=bottom / height, wspace=0.3, hspace=gap / panel
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
        header = plots.mpl_text(_stats_line(stats, param, step, schema.THETA_MINUS_GRAD))
        fig.text(
            0.01,
            row[0].get_position().y1 + 0.3 / height,
            header,
            fontsize=10,
            fontweight="bold",
            ha="left",
            va="bottom",
        )
        font = plots.SMALL_FONT + 1
        # y given: the title sits where matplotlib would put it (no ticks on top), without the check of
        # each x axis' extent it otherwise makes at every draw (a quarter of this figure's drawing)
        for ax, panel_title in zip(row, PANEL_TITLES, strict=True):
            ax.set_title(panel_title, fontsize=font, y=1.0)
    fig.suptitle(
        plots.mpl_text(param), fontsize=plots.TITLE_FONT + 1, x=0.01, y=1 - 0.1 / height, ha="left", va="top"
    )
    caption = (
        "Left: density histogram of the stored subsample of X = θ − g with the normal fitted to it "
        "(its own mean and standard deviation); second: normal QQ plot with the line y = x; right: the "
        "components θ and g at the same steps, each with its fitted normal. Each row's header gives the "
        "verdict and the shape statistics of the whole tensor at that step."
    )
    return writer.save(fig, f"layer-{param}", param, caption, tight=False)


def heatmap_metric(stats: pd.DataFrame) -> str:
    """The heatmap's effect size: W1 in σ (``w1_sigma``) when the stats carry it, else 1 − qq_r."""
    if "w1_sigma" in stats.columns and _numeric(stats["w1_sigma"]):
        return "w1_sigma"
    return "one_minus_qq_r"


def heatmap_figure(
    writer: FigureWriter,
    stats: pd.DataFrame,
    *,
    metric: str | None = None,
    min_n: int = MIN_RANKED_N,
    stem: str = "heatmap",
) -> FigureFile:
    """Layers × steps heatmap of an effect size for X, sized to the number of tensors.

    ``metric`` defaults to :func:`heatmap_metric`. Rows of tensors tested on
    fewer than ``min_n`` values are hatched, not coloured: the rule
    (:data:`~goup_probe.report.select.MIN_RANKED_N`) by which the per-layer
    ranking leaves them out.
    """
    metric = metric or heatmap_metric(stats)
    matrix = plots.effect_matrix(stats, metric=metric)
    n_rows = matrix.shape[0] if not matrix.empty else 1
    height = min(30.0, max(3.2, 0.2 * n_rows + 1.9))
    label = plots.METRIC_LABELS.get(metric, metric)
    title = f"Effect size {label} of X per tensor and step"
    what = (
        "W1 is the Wasserstein-1 distance of the standardised values to N(0, 1), in σ (a uniform: 0.15)"
        if metric == "w1_sigma"
        else "1 − qq_r is the straightness deficit of the normal QQ plot (log scale)"
    )
    caption = (
        f"Each cell is one tensor at one captured step, tensors in model order; {what}; brighter means "
        "further from a normal distribution. Blank cells were not tested. Every such effect size grows "
        "as the number n of tested values shrinks, even for a normal sample (W1 of 16 normal values is "
        f"typically 0.19 σ), so tensors tested on fewer than {min_n} values are hatched grey instead of "
        "coloured, the same rule by which the per-layer detail ranks tensors."
    )

    def draw(ax: Axes) -> None:
        plots.plot_effect_heatmap(stats, metric=metric, min_n=min_n, ax=ax)
        ax.set_title(title, fontsize=plots.TITLE_FONT, loc="left")

    return writer.draw(stem, _plain(title), caption, (PAGE_WIDTH_IN, height), draw)


def _plain(text: str) -> str:
    replacements = {
        r"$1 - r_{QQ}$": "1 − qq_r",
        r"$W_1$": "W1",
        r"($\sigma$ units)": "(σ units)",
        r"$\|g\| / \|\theta\|$": "‖g‖/‖θ‖",
        r"$\hat k / \alpha$": "k̂/α",
        r"GO-UP noise / signal $\sigma\sqrt{N} / \|g\|$": "GO-UP noise / signal σ√N/‖g‖",
        r"$W_2$": "W2",
    }
    for math_text, plain in replacements.items():
        text = text.replace(math_text, plain)
    return text


LINE_SIZE = (10.5, 4.4)
"""Inches of a metric-over-training figure (its legend sits right of the Axes, inside this width)."""


def lines_figure(
    writer: FigureWriter,
    stats: pd.DataFrame,
    *,
    metric: str,
    highlight: Sequence[str] = (),
    caption: str = "",
    quantity: str = schema.THETA_MINUS_GRAD,
    min_n: int = MIN_RANKED_N,
    stem: str | None = None,
    title: str | None = None,
) -> FigureFile:
    """One metric over training, a line per tensor (grey + median + highlights when many).

    Tensors tested on fewer than ``min_n`` values are drawn apart (dotted, out of
    the median); coloured lines carry a ±1.96 SE band where the stats have the SE.
    """
    label = plots.METRIC_LABELS.get(metric, metric)
    title = title or (f"{label} of X over training" if quantity == schema.THETA_MINUS_GRAD else label)

    def draw(ax: Axes) -> None:
        plots.plot_layer_lines(
            stats, metric=metric, quantity=quantity, highlight=highlight, min_n=min_n, ax=ax
        )
        ax.set_title(title, fontsize=plots.TITLE_FONT, loc="left")

    return writer.draw(stem or f"lines-{metric}", _plain(title), caption, LINE_SIZE, draw)


def verdict_figure(writer: FigureWriter, stats: pd.DataFrame) -> FigureFile:
    """Stacked verdict counts of X per captured step."""
    n_steps = max(1, stats["step"].nunique())
    width = min(PAGE_WIDTH_IN, max(8.0, 0.12 * n_steps + 6.0))

    def draw(ax: Axes) -> None:
        plots.plot_verdict_counts(stats, ax=ax)
        ax.set_title("Verdict on X = θ − g per captured step", fontsize=plots.TITLE_FONT, loc="left")

    caption = (
        "How many parameter tensors get each verdict at each captured step (thresholds in the glossary)."
    )
    return writer.draw("verdicts", "Verdicts over training", caption, (width, 3.8), draw)


def ou_figures(writer: FigureWriter, ou: pd.DataFrame) -> list[FigureFile]:
    """k̂/α with intervals, the innovations' lag-1 autocorrelation, and the residual diagnostics."""
    height = min(30.0, max(3.2, 0.25 * min(len(ou), 60) + 1.7))
    out = []
    if plots.ou_ratio(ou) is not None:
        title = "Mean-reversion rate k̂ relative to the learning rate α"

        def rates(ax: Axes) -> None:
            plots.plot_ou_rates(ou, ax=ax)
            ax.set_title(title, fontsize=plots.TITLE_FONT, loc="left")

        out.append(
            writer.draw(
                "ou-rates",
                title,
                "k̂ from regressing θ_{t+1} on θ_t over the tracer coordinates, with its interval; the "
                "seed's derivation assumes k = α (dashed line). Near a minimum theory expects "
                "k̂ ≈ α·(curvature + weight decay), not α.",
                (10.0, height),
                rates,
            )
        )
    if "innovation_acf1" in ou.columns:
        title = "Lag-1 autocorrelation of the seed's innovations η = α(θ − g)"

        def acf(ax: Axes) -> None:
            plots.plot_ou_innovation_acf(ou, ax=ax)
            ax.set_title(title, fontsize=plots.TITLE_FONT, loc="left")

        out.append(
            writer.draw(
                "ou-acf",
                title,
                "Median over a tensor's tracer coordinates of the lag-1 autocorrelation of η over time. "
                "An OU model needs innovations that are uncorrelated over time: white noise of n steps "
                "stays inside the grey band ±1.96/√n in 95% of cases. Orange bars lie outside it and "
                "contradict the model; green bars lie inside.",
                (10.0, height),
                acf,
            )
        )
    if any(c in ou.columns for c in plots.OU_DIAGNOSTICS):
        out.append(_ou_diagnostics_figure(writer, ou, height))
    return out


def _ou_diagnostics_figure(writer: FigureWriter, ou: pd.DataFrame, height: float) -> FigureFile:
    """Two panels: shares of tracer coordinates failing (tests over time), shares of steps failing."""
    per_coord = [c for c in plots.OU_DIAGNOSTICS if c in ou.columns and c not in plots.OU_STEP_DIAGNOSTICS]
    per_step = [c for c in plots.OU_STEP_DIAGNOSTICS if c in ou.columns]
    title = "Residual and innovation diagnostics of the OU fit"
    fig = agg_figure((PAGE_WIDTH_IN, height + 0.8))
    ratios = [len(per_coord), len(per_step) + 0.6] if per_coord and per_step else [1]
    axes = fig.subplots(1, len(ratios), width_ratios=ratios, squeeze=False)[0]
    bar = "share failing (left: of tracer coordinates; right: of steps)" if per_coord and per_step else None
    if per_coord:
        plots.plot_ou_diagnostics(
            ou,
            columns=per_coord,
            colorbar_label=None if per_step else "share of tracer coordinates failing",
            ax=axes[0],
        )
        axes[0].set_title(
            "share of tracer coordinates failing (each test runs over time)", fontsize=plots.SMALL_FONT + 1
        )
    if per_step:
        ax = axes[-1]
        plots.plot_ou_diagnostics(
            ou,
            columns=per_step,
            colorbar_label=bar or "share of steps failing",
            row_labels=not per_coord,
            ax=ax,
        )
        ax.set_title("share of steps failing\n(test across coordinates)", fontsize=plots.SMALL_FONT + 1)
    fig.suptitle(title, fontsize=plots.TITLE_FONT, x=0.01, ha="left")
    caption = (
        "Share failing each check at the 5% level; an OU process with i.i.d. Gaussian innovations gives "
        "about 5% everywhere. Left: each test runs over time on one tracer coordinate, the share is of "
        "coordinates. Right: the test runs across the tensor's tracer coordinates at one step, the share "
        "is of steps. Grey n/a: the test could not run, because the tensor has fewer than "
        f"{MIN_NORMALITY} tracer coordinates (or steps) or its values stay constant."
    )
    return writer.save(fig, "ou-diagnostics", title, caption)


CURVE_METRICS = ("train_loss", "heldout_loss", "heldout_acc", "rel_distance", "update_cosine")
"""Columns of a comparison's curves table drawn per arm, when present."""

CURVE_TITLES = {
    "train_loss": "Training loss per arm",
    "heldout_loss": "Held-out loss per arm",
    "heldout_acc": "Held-out accuracy per arm",
    "rel_distance": "Whole-model parameter distance to the base arm",
    "update_cosine": "Cosine of each arm's update with the base arm's",
}
"""Figure titles of :data:`CURVE_METRICS`."""

REL_DISTANCE_NOTE = (
    "‖θ_arm − θ_base‖ / ‖θ_base‖ over all parameters at once. In a model with BatchNorm the scales γ "
    "(every entry 1 at init) dominate ‖θ_base‖ (about three quarters of ‖θ‖² in the demo's ResNet) "
    "while they barely move, so this number stays small even where the conv and linear weights drift "
    "apart; the per-tensor figure below shows every tensor on its own scale."
)


def _curve_caption(curves: pd.DataFrame, metric: str) -> str:
    text = "Mean over seeds; the band spans the lowest to the highest seed."
    points = curves.dropna(subset=[metric])["step"].nunique() if "step" in curves.columns else 0
    if 0 < points <= plots.FEW_POINTS:
        text += f" Evaluated at {points} steps only (dots); lines join the evaluations."
    if metric == "rel_distance":
        text = REL_DISTANCE_NOTE + " " + text
    return text


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
            title = CURVE_TITLES[metric]

            def curve(ax: Axes, m: str = metric, t: str = title) -> None:
                plots.plot_fidelity_curves(curves, y=m, ax=ax)
                ax.set_title(t, fontsize=plots.TITLE_FONT, loc="left")

            out.append(
                writer.draw(f"fidelity-{metric}", title, _curve_caption(curves, metric), (9.0, 4.0), curve)
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
            late = _late_starters(sub)

            def draw(ax: Axes, f: pd.DataFrame = frame, t: str = title) -> None:
                plots.plot_param_distance(f, value="rel_distance", highlight=highlight, ax=ax)
                ax.set_title(plots.mpl_text(t), fontsize=plots.TITLE_FONT, loc="left")

            caption = (
                f"‖θ_arm − θ_base‖ / ‖θ_base‖ per parameter tensor for arm {arm}, mean over seeds; "
                "every tensor on its own scale, unlike the whole-model distance above."
            )
            if late:
                caption += (
                    f" {len(late)} tensor(s) start late ({_names(late)}): they are initialised to zero, so "
                    "the relative distance is undefined (0/0) until the base arm has moved them."
                )
            out.append(writer.draw(f"fidelity-distance-{arm}", title, caption, LINE_SIZE, draw))
    return out


def _late_starters(layers: pd.DataFrame) -> list[str]:
    """Tensors whose relative distance is missing at the first step (a zero base norm) but not later."""
    first = layers["step"].min()
    at_first = (
        layers[layers["step"] == first]
        .groupby("param", sort=False)["rel_distance"]
        .apply(lambda v: v.isna().all())
    )
    later = (
        layers[layers["step"] > first]
        .groupby("param", sort=False)["rel_distance"]
        .apply(lambda v: v.notna().any())
    )
    return [str(p) for p, missing in at_first.items() if missing and bool(later.get(p, False))]


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and bool(np.isfinite(series.astype(np.float64)).any())
