"""Axes-level plots of a run's tables: each ``plot_*`` takes a DataFrame, draws on one Axes, returns it.

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
from goup_probe.stats.normality import blom_positions

QUANTITY_LABELS = {
    schema.THETA_MINUS_GRAD: r"$X = \theta - g$",
    schema.THETA: r"$\theta$",
    schema.GRAD: r"$g = \partial L / \partial \theta$",
    schema.UPDATE: r"update $\theta_{t+1} - \theta_t$",
}
"""Axis labels of the recorded quantities (mathtext)."""

VERDICT_COLORS = {
    schema.VERDICT_GAUSSIAN: "#1b9e77",
    schema.VERDICT_NEGLIGIBLE: "#a6d854",
    schema.VERDICT_NON_GAUSSIAN: "#d95f02",
    schema.VERDICT_INCONCLUSIVE: "#9ecae1",
    schema.VERDICT_NOT_TESTED: "#bdbdbd",
}
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


def metric_values(stats: pd.DataFrame, metric: str) -> pd.Series:
    """A stats column, or the derived ``"one_minus_qq_r"`` (1 − qq_r), as float64."""
    if metric == "one_minus_qq_r":
        return 1.0 - stats["qq_r"].astype(np.float64)
    if metric not in stats.columns:
        raise ValueError(f"unknown metric {metric!r}; use 'one_minus_qq_r' or a stats column")
    return stats[metric].astype(np.float64)


def _rows(stats: pd.DataFrame, quantity: str) -> pd.DataFrame:
    rows = stats[stats["quantity"] == quantity]
    if "axis" in rows.columns:
        rows = rows[rows["axis"].fillna(schema.AXIS_POOLED) == schema.AXIS_POOLED]
    return rows


def param_order(frame: pd.DataFrame) -> list[str]:
    """Parameter names in the order they first appear (model order for probe tables)."""
    return list(dict.fromkeys(frame["param"].astype(str)))


def sample_values(
    samples: pd.DataFrame, *, param: str, step: int, quantity: str = schema.THETA_MINUS_GRAD
) -> np.ndarray:
    """The finite values of one stored subsample as float64 (empty if absent)."""
    hit = samples[(samples["param"] == param) & (samples["step"] == step) & (samples["quantity"] == quantity)]
    if hit.empty:
        return np.empty(0, dtype=np.float64)
    values = np.asarray(hit.iloc[0]["values"], dtype=np.float64)
    return values[np.isfinite(values)]


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


def effect_matrix(
    stats: pd.DataFrame, *, metric: str = "one_minus_qq_r", quantity: str = schema.THETA_MINUS_GRAD
) -> pd.DataFrame:
    """Layers × captured steps matrix of one metric (rows in model order, NaN where untested)."""
    rows = _rows(stats, quantity)
    if rows.empty:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {"param": rows["param"].astype(str), "step": rows["step"], "value": metric_values(rows, metric)}
    )
    matrix = frame.pivot_table(index="param", columns="step", values="value", aggfunc="first", dropna=False)
    return matrix.reindex(param_order(rows))


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
    n_tested = _rows(stats, quantity).groupby("param")["n_tested"].median()
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
    rows = _rows(stats, quantity)
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


def verdict_counts(stats: pd.DataFrame, *, quantity: str = schema.THETA_MINUS_GRAD) -> pd.DataFrame:
    """Number of tensors per verdict at each captured step (columns in a fixed verdict order)."""
    rows = _rows(stats, quantity)
    counts = pd.crosstab(rows["step"], rows["verdict"].fillna(schema.VERDICT_NOT_TESTED))
    return counts.reindex(columns=list(VERDICT_COLORS), fill_value=0)


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


def plot_ou_rates(ou: pd.DataFrame, *, max_rows: int = 60, ax: Axes | None = None) -> Axes:
    """k̂ / α per parameter tensor, with its interval when the table has one; the line k = α.

    Parameters
    ----------
    ou : DataFrame
        The OU validation table: ``param`` and ``k_over_lr``, or ``k_pooled``
        and ``lr``. Interval columns are used when present
        (``k_over_lr_low``/``k_over_lr_high``, or ``k_low``/``k_high`` divided by ``lr``).
    max_rows : int
        At most this many tensors are drawn (in table order).
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    ax.set_xlabel(r"$\hat k / \alpha$ (mean-reversion rate over learning rate)")
    ax.set_ylabel("parameter tensor")
    ratio = ou_ratio(ou)
    if ratio is None or not np.isfinite(ratio).any():
        return _no_data(ax, "no finite k estimates")
    frame = pd.DataFrame({"param": ou["param"].astype(str).to_numpy(), "ratio": ratio})
    low, high = _ou_interval(ou)
    frame["low"], frame["high"] = low, high
    frame = frame.head(max_rows)
    y = np.arange(len(frame))
    if np.isfinite(frame["low"]).any():
        ax.hlines(y, frame["low"], frame["high"], color="#4c72b0", lw=1.5, label="interval")
    ax.plot(frame["ratio"], y, "o", color="#4c72b0", ms=4, label=r"$\hat k / \alpha$")
    ax.axvline(1.0, color="#c44e52", ls="--", lw=1, label=r"$k = \alpha$ (seed's assumption)")
    ax.set_yticks(y)
    ax.set_yticklabels([mpl_text(p) for p in frame["param"]], fontsize=7)
    ax.invert_yaxis()
    finite = frame[["ratio", "low", "high"]].to_numpy(dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_xscale("log")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
    return ax


def ou_ratio(ou: pd.DataFrame) -> np.ndarray | None:
    """k̂/α per row of an OU table (``k_over_lr``, or ``k_pooled / lr``); None if it has neither."""
    if "k_over_lr" in ou.columns:
        return ou["k_over_lr"].astype(np.float64).to_numpy()
    if {"k_pooled", "lr"} <= set(ou.columns):
        return (ou["k_pooled"].astype(np.float64) / ou["lr"].astype(np.float64)).to_numpy()
    return None


def _ou_interval(ou: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    nan = np.full(len(ou), np.nan)
    for lo, hi, scale in (
        ("k_over_lr_low", "k_over_lr_high", None),
        ("k_over_lr_lo", "k_over_lr_hi", None),
        ("k_pooled_ci_low", "k_pooled_ci_high", "lr"),
        ("k_low", "k_high", "lr"),
        ("k_lo", "k_hi", "lr"),
        ("k_ci_low", "k_ci_high", "lr"),
    ):
        if {lo, hi} <= set(ou.columns) and (scale is None or scale in ou.columns):
            div = 1.0 if scale is None else ou[scale].astype(np.float64).to_numpy()
            return (
                ou[lo].astype(np.float64).to_numpy() / div,
                ou[hi].astype(np.float64).to_numpy() / div,
            )
    return nan, nan.copy()


def plot_ou_innovation_acf(
    ou: pd.DataFrame,
    *,
    column: str = "innovation_acf1",
    n_column: str | None = None,
    max_rows: int = 60,
    ax: Axes | None = None,
) -> Axes:
    """Lag-1 autocorrelation of the OU innovations per tensor, with the ±1.96/√n band of white noise.

    Parameters
    ----------
    ou : DataFrame
        The OU validation table (``param`` and ``column``).
    column : str
        Autocorrelation column.
    n_column : str, optional
        Column with the series length behind each autocorrelation; the white-noise
        band is drawn when given (or when a column ``steps`` or ``n_steps`` exists).
    max_rows : int
        At most this many tensors are drawn.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    ax.set_xlabel("lag-1 autocorrelation of innovations")
    ax.set_ylabel("parameter tensor")
    if column not in ou.columns or not np.isfinite(ou[column].astype(np.float64)).any():
        return _no_data(ax, f"no {column}")
    frame = ou.head(max_rows)
    y = np.arange(len(frame))
    acf = frame[column].astype(np.float64).to_numpy()
    ax.barh(y, acf, color=np.where(np.abs(acf) > 0.1, "#d95f02", "#1b9e77"), height=0.7)
    ax.axvline(0, color="0.3", lw=0.8)
    n_col = n_column or next((c for c in ("steps", "n_steps") if c in frame.columns), None)
    if n_col is not None and n_col in frame.columns:
        n = frame[n_col].astype(np.float64).to_numpy()
        band = 1.96 / np.sqrt(np.where(n > 0, n, np.nan))
        ax.plot(band, y, "|", color="0.3", ms=6, label=r"$\pm 1.96/\sqrt{n}$ (white noise)")
        ax.plot(-band, y, "|", color="0.3", ms=6)
        ax.legend(fontsize=7, loc="lower right", frameon=False)
    ax.set_yticks(y)
    ax.set_yticklabels([mpl_text(p) for p in frame["param"]], fontsize=7)
    ax.invert_yaxis()
    return ax


def plot_fidelity_curves(
    curves: pd.DataFrame, *, y: str, x: str = "step", hue: str = "arm", ax: Axes | None = None
) -> Axes:
    """A training curve per arm (e.g. SGD vs GO-UP), mean over seeds with a min–max band.

    Parameters
    ----------
    curves : DataFrame
        Long table with columns ``x``, ``y``, ``hue`` (and ``seed``: one line per seed and arm).
    y, x, hue : str
        Columns to plot.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    ax.set_xlabel(mpl_text(x.replace("_", " ")))
    ax.set_ylabel(mpl_text(y.replace("_", " ")))
    if y not in curves.columns or curves[y].dropna().empty:
        return _no_data(ax, f"no {y}")
    data = curves[[x, y, hue]].dropna()
    data = data.assign(**{hue: data[hue].astype(str).map(mpl_text)})
    sns.lineplot(data=data, x=x, y=y, hue=hue, errorbar=("pi", 100), estimator="mean", ax=ax)
    ax.set_xlabel(mpl_text(x.replace("_", " ")))
    ax.set_ylabel(mpl_text(y.replace("_", " ")))
    legend = ax.get_legend()
    if legend is not None:
        legend.set_title("arm (band: min–max over seeds)", prop={"size": 7})
        for text in legend.get_texts():
            text.set_fontsize(7)
    return ax


def plot_param_distance(
    distances: pd.DataFrame,
    *,
    value: str = "distance",
    x: str = "step",
    max_legend: int = 10,
    highlight: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Distance between the arms' parameters per tensor over training (long table: param, step, value).

    Parameters
    ----------
    distances : DataFrame
        Columns ``param``, ``x`` and ``value`` (one row per tensor and step; rows of
        several seeds are averaged).
    value, x : str
        Columns to plot.
    max_legend : int
        More tensors than this are drawn grey with their median in black.
    highlight : sequence of str, optional
        Tensors drawn in colour when there are more than ``max_legend``.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    ax.set_xlabel(mpl_text(x.replace("_", " ")))
    ax.set_ylabel(mpl_text(value.replace("_", " ")))
    if distances.empty or value not in distances.columns:
        return _no_data(ax, "no distances")
    frame = distances.groupby(["param", x], sort=False)[value].mean().reset_index()
    order = param_order(frame)
    if len(order) <= max_legend:
        for color, param in zip(sns.color_palette("tab10", len(order)), order, strict=True):
            sub = frame[frame["param"] == param]
            ax.plot(sub[x], sub[value], lw=1.2, color=color, label=mpl_text(param))
    else:
        for _, sub in frame.groupby("param", sort=False):
            ax.plot(sub[x], sub[value], lw=0.5, color="0.75")
        median = frame.groupby(x)[value].median()
        ax.plot(median.index, median.to_numpy(), color="black", lw=2, label=f"median of {len(order)} tensors")
        for color, param in zip(sns.color_palette("tab10", 10), list(highlight or [])[:10], strict=False):
            sub = frame[frame["param"] == param]
            if not sub.empty:
                ax.plot(sub[x], sub[value], lw=1.2, color=color, label=mpl_text(param), zorder=3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
    return ax


def normal_density(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Density of N(mean, std²) at ``x`` (used for overlays; float64)."""
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    return np.exp(-0.5 * z * z) / (std * math.sqrt(2 * math.pi))


OU_DIAGNOSTICS = {
    "innovation_lb_reject": "η autocorrelated\n(Ljung-Box)",
    "innovation_normality_reject_time": "η non-normal\nover time",
    "innovation_normality_reject_pooled": "η non-normal\nacross coords",
    "resid_lb_reject": "residuals\nautocorrelated",
    "resid_normality_reject": "residuals\nnon-normal",
    "var_unstable": "residual variance\ndrifts",
    "adf_stationary": "unit root not\nrejected (ADF)",
}
"""OU diagnostics drawn by :func:`plot_ou_diagnostics`: fraction of coordinates or steps failing each."""


def plot_ou_diagnostics(ou: pd.DataFrame, *, max_rows: int = 60, ax: Axes | None = None) -> Axes:
    """Heatmap of the OU residual and innovation diagnostics: share of coordinates (or steps) failing.

    Every column is oriented so that 0 is what an OU process with i.i.d. Gaussian
    innovations gives (about the test level, 5%) and 1 means every coordinate
    fails; ``adf_stationary`` is therefore drawn as ``1 − adf_stationary``.

    Parameters
    ----------
    ou : DataFrame
        The OU validation table (``param`` and any of :data:`OU_DIAGNOSTICS`).
    max_rows : int
        At most this many tensors are drawn.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    columns = [c for c in OU_DIAGNOSTICS if c in ou.columns]
    if not columns:
        return _no_data(ax, "no OU diagnostics")
    frame = ou.head(max_rows)
    values = frame[columns].astype(np.float64).copy()
    if "adf_stationary" in values.columns:
        values["adf_stationary"] = 1.0 - values["adf_stationary"]
    values.index = [mpl_text(p) for p in frame["param"].astype(str)]
    values.columns = [OU_DIAGNOSTICS[c] for c in columns]
    sns.heatmap(
        values,
        vmin=0,
        vmax=1,
        cmap="rocket_r",
        annot=len(values) <= 40,
        fmt=".0%",
        annot_kws={"fontsize": 6},
        cbar_kws={"label": "share of coordinates / steps failing"},
        ax=ax,
    )
    ax.tick_params(axis="x", labelsize=7, rotation=0)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("diagnostic")
    ax.set_ylabel("parameter tensor")
    return ax
