"""Axes-level plots of a run's tables: each ``plot_*`` takes a DataFrame, draws on one Axes, returns it.

The data shaping behind them (matrices, counts, ratios) lives in
:mod:`goup_probe.plots.tables`, which needs no matplotlib.

The functions only read DataFrames (``run.stats``, ``run.samples`` or an
analysis table) and draw; they never save a file and never touch torch. Pass
``ax`` to draw into a figure of your own; without it the current Axes of
:mod:`matplotlib.pyplot` is used, as in seaborn's axes-level functions.

Text taken from the model (parameter names) is escaped for matplotlib's
mathtext, so a name containing ``$`` is drawn literally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm

from goup_probe import schema
from goup_probe.plots.tables import (
    VERDICT_ORDER,
    blom_positions,
    effect_matrix,
    metric_values,
    normal_density,
    param_order,
    quantity_rows,
    sample_values,
    verdict_counts,
)

QUANTITY_LABELS = {
    schema.THETA_MINUS_GRAD: r"$X = \theta - g$",
    schema.THETA: r"$\theta$",
    schema.GRAD: r"$g = \partial L / \partial \theta$",
    schema.UPDATE: r"update $\theta_{t+1} - \theta_t$",
}
"""Axis labels of the recorded quantities (mathtext)."""

VERDICT_COLORS = dict(
    zip(VERDICT_ORDER, ("#1b9e77", "#a6d854", "#d95f02", "#9ecae1", "#bdbdbd"), strict=True)
)
"""One fixed colour per verdict, shared by every figure."""

METRIC_LABELS = {
    "one_minus_qq_r": r"$1 - r_{QQ}$ (QQ-plot correlation deficit)",
    "ks_d": "Lilliefors KS distance D",
    "w1_sigma": r"$W_1$ to fitted normal ($\sigma$ units)",
    "skew": "skewness",
    "excess_kurtosis": "excess kurtosis",
    "grad_to_param": r"$\|g\| / \|\theta\|$",
    "noise_to_signal": r"GO-UP noise / signal $\sigma\sqrt{N} / \|g\|$",
    "goup_cosine": "cos(actual update, GO-UP mean update)",
    "goup_w2_rel": r"$W_2$(actual, GO-UP) / ‖GO-UP mean update‖",
}
"""Readable labels of the stats columns (and derived metrics) the plots use."""

_LOG_METRICS = frozenset({"one_minus_qq_r", "grad_to_param", "noise_to_signal", "goup_w2_rel"})
_REFERENCE = {"skew": 0.0, "excess_kurtosis": 0.0}


def mpl_text(text: object) -> str:
    """Escape ``$`` so matplotlib draws ``text`` literally instead of parsing mathtext."""
    return str(text).replace("$", r"\$")


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.gca()


def _no_data(ax: Axes, message: str) -> Axes:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_histogram(
    samples: pd.DataFrame,
    *,
    param: str,
    step: int,
    quantity: str = schema.THETA_MINUS_GRAD,
    fit: bool = True,
    bins: int | str = "auto",
    color: str = "#4c72b0",
    ax: Axes | None = None,
) -> Axes:
    """Density histogram of one stored subsample, with the fitted normal N(mean, std) over it.

    This is the seed's figure: the histogram is on the density scale, so the
    normal curve with the subsample's own mean and standard deviation is
    directly comparable to it.

    Parameters
    ----------
    samples : DataFrame
        ``run.samples`` (columns ``step``, ``param``, ``quantity``, ``values``).
    param, step, quantity : str, int, str
        Which subsample to draw.
    fit : bool
        Overlay the fitted normal density.
    bins : int or str
        Passed to :meth:`matplotlib.axes.Axes.hist` (``"auto"``: numpy's rule).
    color : str
        Bar colour.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    x = sample_values(samples, param=param, step=step, quantity=quantity)
    ax.set_xlabel(QUANTITY_LABELS.get(quantity, mpl_text(quantity)))
    ax.set_ylabel("density")
    if x.size < 2 or np.ptp(x) == 0:
        return _no_data(ax, "no stored values" if x.size == 0 else "constant values")
    counts, _edges, _ = ax.hist(
        x,
        bins=bins,
        density=True,
        histtype="stepfilled",
        color=color,
        alpha=0.6,
        label=f"stored subsample (n={x.size})",
    )
    if fit:
        mu, sd = float(x.mean()), float(x.std())
        grid = np.linspace(x.min() - 0.5 * sd, x.max() + 0.5 * sd, 400)
        density = normal_density(grid, mu, sd)
        ax.plot(grid, density, color="#c44e52", lw=1.6, label=f"fitted N(μ={mu:.3g}, σ={sd:.3g})")
        top = max(float(counts.max()), float(density.max()))
    else:
        top = float(counts.max())
    ax.set_ylim(0, top * 1.35)  # headroom for the legend
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    ax.locator_params(axis="x", nbins=5)  # long tick labels must not run into each other
    return ax


def plot_qq(
    samples: pd.DataFrame,
    *,
    param: str,
    step: int,
    quantity: str = schema.THETA_MINUS_GRAD,
    ax: Axes | None = None,
) -> Axes:
    """Normal QQ plot of one stored subsample: standardised order statistics against Blom positions.

    The reference line y = x is where a normal sample lies; the legend gives
    the probability-plot correlation ``qq_r`` of the plotted values.

    Parameters
    ----------
    samples : DataFrame
        ``run.samples``.
    param, step, quantity : str, int, str
        Which subsample to draw.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    x = sample_values(samples, param=param, step=step, quantity=quantity)
    ax.set_xlabel("normal quantile")
    ax.set_ylabel("standardised sample quantile")
    if x.size < 3 or np.ptp(x) == 0:
        return _no_data(ax, "no stored values" if x.size == 0 else "too few or constant values")
    z = np.sort((x - x.mean()) / x.std())
    m = blom_positions(z.size)
    r = float(np.corrcoef(z, m)[0, 1])
    ax.plot(m, z, ".", ms=2.5, color="#4c72b0", label=f"sample (n={z.size}), $r_{{QQ}}$={r:.4f}")
    lim = float(max(abs(m).max(), abs(z).max()))
    ax.plot([-lim, lim], [-lim, lim], color="#c44e52", lw=1.2, label="normal reference y = x")
    ax.set_ylim(-lim * 1.05, lim * 1.45)  # headroom for the legend
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return ax


def plot_effect_heatmap(
    stats: pd.DataFrame,
    *,
    metric: str = "one_minus_qq_r",
    quantity: str = schema.THETA_MINUS_GRAD,
    max_labels: int = 100,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of an effect size, parameter tensors (rows) × captured steps (columns).

    ``1 − qq_r`` is drawn on a log colour scale (it spans decades); other
    metrics on a linear one. Untested cells stay blank. Row labels carry the
    median number of tested values n: on small n the effect size is noisy.

    Parameters
    ----------
    stats : DataFrame
        ``run.stats``.
    metric : str
        ``"one_minus_qq_r"`` or a stats column such as ``"ks_d"`` or ``"w1_sigma"``.
    quantity : str
        Which quantity (default X = θ − g).
    max_labels : int
        At most this many row and column labels are written.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    matrix = effect_matrix(stats, metric=metric, quantity=quantity)
    if matrix.empty or not np.isfinite(matrix.to_numpy(dtype=np.float64)).any():
        return _no_data(ax, "no tested rows")
    values = matrix.to_numpy(dtype=np.float64)
    norm = None
    if metric in _LOG_METRICS:
        positive = values[np.isfinite(values) & (values > 0)]
        if positive.size:
            values = np.where(values > 0, values, positive.min())
            norm = LogNorm(vmin=positive.min(), vmax=max(positive.max(), positive.min() * 10))
    n_rows, n_cols = values.shape
    ystep = max(1, math.ceil(n_rows / max_labels))
    xstep = max(1, math.ceil(n_cols / max_labels))
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(values), cmap="viridis", norm=norm, shading="flat", edgecolors="none"
    )
    height = ax.figure.get_figheight() * ax.get_position().height
    ax.figure.colorbar(
        mesh,
        ax=ax,
        label=METRIC_LABELS.get(metric, mpl_text(metric)),
        pad=0.02,
        fraction=0.05,
        shrink=min(1.0, 6.0 / max(height, 1e-6)),
        aspect=25,
    )
    ax.set_xlim(0, n_cols)
    ax.set_ylim(n_rows, 0)  # first tensor on top
    ax.set_xticks(np.arange(0, n_cols, xstep) + 0.5)
    ax.set_xticklabels([str(c) for c in matrix.columns[::xstep]], rotation=90 if n_cols > 12 else 0)
    n_tested = quantity_rows(stats, quantity).groupby("param")["n_tested"].median()
    labels = [
        f"{mpl_text(p)} (n={int(n_tested[p])})" if p in n_tested and np.isfinite(n_tested[p]) else mpl_text(p)
        for p in matrix.index[::ystep]
    ]
    ax.set_yticks(np.arange(0, n_rows, ystep) + 0.5)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("parameter tensor")
    ax.tick_params(axis="x", labelsize=7)
    return ax


def plot_layer_lines(
    stats: pd.DataFrame,
    *,
    metric: str,
    quantity: str = schema.THETA_MINUS_GRAD,
    highlight: Sequence[str] | None = None,
    max_legend: int = 10,
    ax: Axes | None = None,
) -> Axes:
    """One line per parameter tensor of a metric over training.

    With at most ``max_legend`` tensors every line is coloured and named in the
    legend. With more, all tensors are drawn thin and grey (a compact overview),
    the median over tensors in black, and only the ``highlight`` tensors in colour.

    Parameters
    ----------
    stats : DataFrame
        ``run.stats``.
    metric : str
        A stats column (``skew``, ``excess_kurtosis``, ``grad_to_param`` ...) or ``"one_minus_qq_r"``.
    quantity : str
        Which quantity (default X = θ − g).
    highlight : sequence of str, optional
        Tensors drawn in colour when there are too many for a legend.
    max_legend : int
        Largest number of tensors that all get a legend entry.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    rows = quantity_rows(stats, quantity)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(METRIC_LABELS.get(metric, mpl_text(metric)))
    if rows.empty:
        return _no_data(ax, "no rows")
    frame = pd.DataFrame(
        {"param": rows["param"].astype(str), "step": rows["step"], "value": metric_values(rows, metric)}
    ).sort_values("step", kind="stable")
    frame = frame[np.isfinite(frame["value"])]
    if frame.empty:
        return _no_data(ax, "no finite values")
    order = param_order(frame)
    if metric in _LOG_METRICS:
        frame = frame[frame["value"] > 0]
        ax.set_yscale("log")
    if metric in _REFERENCE:
        ax.axhline(_REFERENCE[metric], color="0.3", lw=0.8, ls="--", label="normal value")
    if len(order) <= max_legend:
        palette = sns.color_palette("tab10", len(order))
        for color, param in zip(palette, order, strict=True):
            sub = frame[frame["param"] == param]
            ax.plot(sub["step"], sub["value"], marker=".", ms=4, lw=1.2, color=color, label=mpl_text(param))
    else:
        segments = [
            sub[["step", "value"]].to_numpy(dtype=np.float64) for _, sub in frame.groupby("param", sort=False)
        ]
        ax.add_collection(LineCollection(segments, colors="0.75", linewidths=0.5, alpha=0.6, zorder=1))
        ax.autoscale_view()
        median = frame.groupby("step")["value"].median()
        ax.plot(median.index, median.to_numpy(), color="black", lw=2, label=f"median of {len(order)} tensors")
        for color, param in zip(sns.color_palette("tab10", 10), list(highlight or [])[:10], strict=False):
            sub = frame[frame["param"] == param]
            ax.plot(sub["step"], sub["value"], lw=1.2, color=color, label=mpl_text(param), zorder=3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
    return ax


def plot_verdict_counts(
    stats: pd.DataFrame, *, quantity: str = schema.THETA_MINUS_GRAD, ax: Axes | None = None
) -> Axes:
    """Stacked bars: how many tensors get each verdict at each captured step.

    Parameters
    ----------
    stats : DataFrame
        ``run.stats``.
    quantity : str
        Which quantity (default X = θ − g).
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    ax.set_xlabel("optimizer step (captured)")
    ax.set_ylabel("parameter tensors")
    counts = verdict_counts(stats, quantity=quantity)
    if counts.empty:
        return _no_data(ax, "no rows")
    positions = np.arange(len(counts))
    bottom = np.zeros(len(counts))
    for verdict, color in VERDICT_COLORS.items():
        height = counts[verdict].to_numpy(dtype=np.float64)
        if height.any():
            ax.bar(positions, height, bottom=bottom, color=color, width=0.85, label=verdict)
        bottom += height
    step_labels = [str(s) for s in counts.index]
    stride = max(1, math.ceil(len(step_labels) / 25))
    ax.set_xticks(positions[::stride])
    ax.set_xticklabels(step_labels[::stride], rotation=90 if len(step_labels) > 12 else 0, fontsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
    return ax
