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
from matplotlib.colors import LogNorm, Normalize
from matplotlib.patches import Patch, Rectangle

from goup_probe import schema
from goup_probe.plots.tables import (
    SE_COLUMNS,
    VERDICT_ORDER,
    blom_positions,
    effect_matrix,
    median_n_tested,
    metric_column,
    metric_values,
    normal_density,
    param_order,
    quantity_rows,
    sample_values,
    small_n_params,
    verdict_counts,
)

SMALL_FONT = 9
"""Smallest font size (points) of any text the plots draw: legends, tick and cell labels."""

TITLE_FONT = 11
"""Font size (points) of figure and panel titles."""

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
    "goup_fit_p": "p of the update being a GO-UP draw",
}
"""Readable labels of the stats columns (and derived metrics) the plots use."""

_LOG_METRICS = frozenset({"one_minus_qq_r", "grad_to_param", "noise_to_signal"})
_REFERENCE: dict[str, tuple[tuple[float, str, str], ...]] = {
    "skew": ((0.0, "normal (0)", "--"),),
    "excess_kurtosis": ((0.0, "normal (0)", "--"), (-1.2, "uniform (−1.2)", ":")),
    "goup_cosine": ((1.0, "plain SGD (1)", "--"),),
}
"""Horizontal reference lines per metric: value, legend label, line style."""

SMALL_N_COLOR = "0.55"
"""Colour of the lines of tensors tested on too few values (they are drawn apart, dotted)."""


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
        ax.plot(grid, density, color="#c44e52", lw=1.6, label=f"fitted normal\nμ={mu:.2g}, σ={sd:.2g}")
        top = max(float(counts.max()), float(density.max()))
    else:
        top = float(counts.max())
    ax.set_ylim(0, top * (1.6 if fit else 1.3))  # headroom for the legend
    ax.legend(fontsize=SMALL_FONT, loc="upper left", frameon=False)
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
    ax.legend(fontsize=SMALL_FONT, loc="upper left", frameon=False)
    return ax


def plot_effect_heatmap(
    stats: pd.DataFrame,
    *,
    metric: str = "one_minus_qq_r",
    quantity: str = schema.THETA_MINUS_GRAD,
    min_n: int = 0,
    max_labels: int = 100,
    max_xlabels: int = 30,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of an effect size, parameter tensors (rows) × captured steps (columns).

    ``1 − qq_r`` is drawn on a log colour scale (it spans decades); other
    metrics (``w1_sigma``: W1 in σ) on a linear one from 0. Untested cells stay
    blank. Row labels carry the median number of tested values n.

    Every effect size computed from a sample grows as n shrinks even for a
    normal sample (W1 of 16 normal values is typically 0.19 σ, more than a
    uniform's 0.15 σ), so rows of tensors whose median n is below ``min_n`` are
    not coloured: they are hatched grey, labelled ``n < min_n``, and left out of
    the colour scale. When no tensor reaches ``min_n``, every row is coloured
    (there is nothing better to show) and still labelled.

    Parameters
    ----------
    stats : DataFrame
        ``run.stats``.
    metric : str
        ``"one_minus_qq_r"`` or a stats column such as ``"ks_d"`` or ``"w1_sigma"``.
    quantity : str
        Which quantity (default X = θ − g).
    min_n : int
        Tensors tested on fewer values (median over steps) are hatched instead of
        coloured; 0 colours every row.
    max_labels : int
        At most this many row labels are written.
    max_xlabels : int
        At most this many step labels are written.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
        The mesh is ``ax.collections[0]``; its array holds the coloured values
        (masked where blank or hatched).
    """
    ax = _axes(ax)
    matrix = effect_matrix(stats, metric=metric, quantity=quantity)
    if matrix.empty or not np.isfinite(matrix.to_numpy(dtype=np.float64)).any():
        return _no_data(ax, "no tested rows")
    small = set(small_n_params(stats, min_n, quantity))
    if small >= set(map(str, matrix.index)):
        small = set()  # nothing reaches min_n: colour every row rather than none
        all_small = min_n > 0
    else:
        all_small = False
    values = matrix.to_numpy(dtype=np.float64).copy()
    is_small = np.array([str(p) in small for p in matrix.index])
    values[is_small, :] = np.nan
    shown = values[np.isfinite(values)]
    if metric in _LOG_METRICS:
        positive = shown[shown > 0]
        floor = positive.min() if positive.size else 1e-6
        values = np.where(np.isfinite(values) & (values <= 0), floor, values)
        top = positive.max() if positive.size else floor * 10
        norm: Normalize = LogNorm(vmin=floor, vmax=max(top, floor * 10))
    else:
        top = float(shown.max()) if shown.size else 1.0
        norm = Normalize(
            vmin=min(0.0, float(shown.min()) if shown.size else 0.0), vmax=top if top > 0 else 1.0
        )
    n_rows, n_cols = values.shape
    ystep = max(1, math.ceil(n_rows / max_labels))
    xstep = max(1, math.ceil(n_cols / max_xlabels))
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(values), cmap="viridis", norm=norm, shading="flat", edgecolors="none"
    )
    for row in np.flatnonzero(is_small):
        ax.add_patch(
            Rectangle((0, row), n_cols, 1, facecolor="0.93", edgecolor="0.6", hatch="///", lw=0.0, zorder=2)
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
    n_tested = median_n_tested(stats, quantity)
    labels = []
    for p in matrix.index[::ystep]:
        n = n_tested.get(p, np.nan)
        if not np.isfinite(n):
            labels.append(mpl_text(p))
        elif str(p) in small or (all_small and n < min_n):
            labels.append(f"{mpl_text(p)} (n={int(n)} < {min_n})")
        else:
            labels.append(f"{mpl_text(p)} (n={int(n)})")
    ax.set_yticks(np.arange(0, n_rows, ystep) + 0.5)
    ax.set_yticklabels(labels, fontsize=SMALL_FONT)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("parameter tensor")
    ax.tick_params(axis="x", labelsize=SMALL_FONT)
    if small:
        ax.legend(
            handles=[
                Patch(facecolor="0.93", edgecolor="0.6", hatch="///", label=f"n < {min_n}: too few values")
            ],
            fontsize=SMALL_FONT,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
            borderaxespad=0.2,
        )
    return ax


def plot_layer_lines(
    stats: pd.DataFrame,
    *,
    metric: str,
    quantity: str = schema.THETA_MINUS_GRAD,
    highlight: Sequence[str] | None = None,
    max_legend: int = 10,
    min_n: int = 0,
    ax: Axes | None = None,
) -> Axes:
    """One line per parameter tensor of a metric over training.

    With at most ``max_legend`` tensors every line is coloured and named in the
    legend. With more, all tensors are drawn thin and grey (a compact overview),
    the median over tensors in black, and only the ``highlight`` tensors in colour.

    Tensors tested on fewer than ``min_n`` values (median over steps) are drawn
    apart: dotted darker grey, left out of the median, and named ``(n=…)`` when
    they have a legend entry. When the stats carry the metric's standard error
    (``skew_se``, ``kurtosis_se``), every coloured line gets a ±1.96 SE band.
    Skewness and kurtosis get reference lines (normal 0; uniform −1.2 for the
    kurtosis), ``goup_cosine`` the plain-SGD value 1.

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
    min_n : int
        Tensors tested on fewer values are drawn apart (0: none is).
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    se_column = SE_COLUMNS.get(metric)
    rows = quantity_rows(
        stats, quantity, ["param", "step", metric_column(metric), *filter(None, [se_column])]
    )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(METRIC_LABELS.get(metric, mpl_text(metric)))
    if rows.empty:
        return _no_data(ax, "no rows")
    se = rows[se_column].astype(np.float64) if se_column in rows.columns else np.nan
    frame = pd.DataFrame(
        {
            "param": rows["param"].astype(str),
            "step": rows["step"],
            "value": metric_values(rows, metric),
            "se": se,
        }
    ).sort_values("step", kind="stable")
    frame = frame[np.isfinite(frame["value"])]
    if frame.empty:
        return _no_data(ax, "no finite values")
    order = param_order(frame)
    n_tested = median_n_tested(stats, quantity)
    small = set(small_n_params(stats, min_n, quantity)) & set(order)
    if metric in _LOG_METRICS:
        frame = frame[frame["value"] > 0]
        ax.set_yscale("log")
    for value, label, style in _REFERENCE.get(metric, ()):
        ax.axhline(value, color="0.3", lw=0.9, ls=style, label=label)

    def line(param: str, color: object, label: str, **kw: object) -> None:
        sub = frame[frame["param"] == param]
        if sub.empty:
            return
        ax.plot(sub["step"], sub["value"], lw=1.2, color=color, label=label, **kw)
        if np.isfinite(sub["se"]).any():
            half = 1.96 * sub["se"].to_numpy(dtype=np.float64)
            ax.fill_between(
                sub["step"].to_numpy(),
                sub["value"] - half,
                sub["value"] + half,
                color=color,
                alpha=0.15,
                lw=0,
            )

    def name(param: str) -> str:
        n = n_tested.get(param, np.nan)
        return f"{mpl_text(param)} (n={int(n)})" if param in small and np.isfinite(n) else mpl_text(param)

    big = [p for p in order if p not in small]
    if len(order) <= max_legend:
        palette = sns.color_palette("tab10", len(order))
        for color, param in zip(palette, order, strict=True):
            style = {"ls": ":"} if param in small else {"marker": ".", "ms": 4}
            line(param, color, name(param), **style)
    else:
        pool = frame[~frame["param"].isin(small)] if big else frame
        segments = [
            s[["step", "value"]].to_numpy(dtype=np.float64) for _, s in pool.groupby("param", sort=False)
        ]
        ax.add_collection(LineCollection(segments, colors="0.7", linewidths=0.6, alpha=0.7, zorder=1))
        if small and big:
            few = frame[frame["param"].isin(small)]
            segments = [
                s[["step", "value"]].to_numpy(dtype=np.float64) for _, s in few.groupby("param", sort=False)
            ]
            ax.add_collection(
                LineCollection(
                    segments,
                    colors=SMALL_N_COLOR,
                    linewidths=0.8,
                    linestyles=":",
                    zorder=1,
                    label=f"{len(small)} tensors with n < {min_n} (dotted)",
                )
            )
        ax.autoscale_view()
        median = pool.groupby("step")["value"].median()
        what = f"median of {pool['param'].nunique()} tensors" + (
            f" with n ≥ {min_n}" if small and big else ""
        )
        ax.plot(median.index, median.to_numpy(), color="black", lw=2, label=what)
        for color, param in zip(sns.color_palette("tab10", 10), list(highlight or [])[:10], strict=False):
            line(param, color, name(param), zorder=3, **({"ls": ":"} if param in small else {}))
    ax.legend(
        fontsize=SMALL_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0
    )
    return ax


def plot_verdict_counts(
    stats: pd.DataFrame, *, quantity: str = schema.THETA_MINUS_GRAD, ax: Axes | None = None
) -> Axes:
    """Stacked steps: how many tensors get each verdict at each captured step.

    One filled staircase per verdict (a bar per step and verdict would be
    thousands of patches on a long run: 6000 took 9 s to draw).

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
    edges = np.arange(len(counts) + 1) - 0.5
    bottom = np.zeros(len(counts))
    for verdict, color in VERDICT_COLORS.items():
        height = counts[verdict].to_numpy(dtype=np.float64)
        if height.any():
            top = bottom + height
            ax.stairs(top, edges, baseline=bottom, fill=True, color=color, label=verdict)
            bottom = top
    ax.set_xlim(edges[0], edges[-1])
    step_labels = [str(s) for s in counts.index]
    stride = max(1, math.ceil(len(step_labels) / 25))
    ax.set_xticks(positions[::stride])
    ax.set_xticklabels(
        step_labels[::stride], rotation=90 if len(step_labels) > 12 else 0, fontsize=SMALL_FONT
    )
    ax.legend(
        fontsize=SMALL_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0
    )
    return ax
