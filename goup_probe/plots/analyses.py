"""Axes-level plots of the analysis tables: the OU validation and the GO-UP comparison.

Same contract as :mod:`goup_probe.plots.axes`: a DataFrame in, one Axes drawn
(``ax=None``: the current one) and returned, no file written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from goup_probe.plots.axes import SMALL_FONT, _axes, _no_data, mpl_text
from goup_probe.plots.tables import WHITE_NOISE_Z, beyond_white_noise, ou_interval, ou_ratio, param_order


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
    low, high = ou_interval(ou)
    frame["low"], frame["high"] = low, high
    frame = frame.head(max_rows)
    y = np.arange(len(frame))
    if np.isfinite(frame["low"]).any():
        ax.hlines(y, frame["low"], frame["high"], color="#4c72b0", lw=1.5, label="interval")
    ax.plot(frame["ratio"], y, "o", color="#4c72b0", ms=4, label=r"$\hat k / \alpha$")
    ax.axvline(1.0, color="#c44e52", ls="--", lw=1, label=r"$k = \alpha$ (seed's assumption)")
    ax.set_yticks(y)
    ax.set_yticklabels([mpl_text(p) for p in frame["param"]], fontsize=SMALL_FONT)
    ax.invert_yaxis()
    finite = frame[["ratio", "low", "high"]].to_numpy(dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_xscale("log")
    ax.legend(
        fontsize=SMALL_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0
    )
    return ax


BEYOND_BAND_COLOR = "#d95f02"
"""Bar colour of an innovation autocorrelation outside the ±1.96/√n band of white noise."""

WITHIN_BAND_COLOR = "#1b9e77"
"""Bar colour of an innovation autocorrelation inside that band."""

NO_BAND_COLOR = "#4c72b0"
"""Bar colour when the table gives no series length (no band can be drawn)."""


def plot_ou_innovation_acf(
    ou: pd.DataFrame,
    *,
    column: str = "innovation_acf1",
    n_column: str | None = None,
    max_rows: int = 60,
    ax: Axes | None = None,
) -> Axes:
    """Lag-1 autocorrelation of the OU innovations per tensor, with the ±1.96/√n band of white noise.

    The band is drawn as a grey strip behind each bar; a bar is orange
    (:data:`BEYOND_BAND_COLOR`) exactly when ``|acf| > 1.96/√n``, green inside
    the band. Without a series length every bar is blue and no band is drawn.

    Parameters
    ----------
    ou : DataFrame
        The OU validation table (``param`` and ``column``).
    column : str
        Autocorrelation column.
    n_column : str, optional
        Column with the series length behind each autocorrelation; default
        ``steps`` or ``n_steps`` when the table has one.
    max_rows : int
        At most this many tensors are drawn.
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
        The bars are ``ax.containers[-1]``.
    """
    ax = _axes(ax)
    ax.set_xlabel("lag-1 autocorrelation of innovations")
    ax.set_ylabel("parameter tensor")
    if column not in ou.columns or not np.isfinite(ou[column].astype(np.float64)).any():
        return _no_data(ax, f"no {column}")
    if n_column is not None and n_column not in ou.columns:
        raise ValueError(f"n_column {n_column!r} is not a column of the OU table")
    frame = ou.head(max_rows)
    y = np.arange(len(frame))
    acf = frame[column].astype(np.float64).to_numpy()
    n_col = n_column or next((c for c in ("steps", "n_steps") if c in frame.columns), None)
    handles = []
    if n_col is not None:
        n = frame[n_col].astype(np.float64).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            band = WHITE_NOISE_Z / np.sqrt(np.where(n > 0, n, np.nan))
        beyond = beyond_white_noise(acf, n)
        colors = np.where(beyond, BEYOND_BAND_COLOR, WITHIN_BAND_COLOR)
        ax.barh(y, 2 * band, left=-band, height=1.0, color="0.88", zorder=0)
        handles = [
            Patch(color=BEYOND_BAND_COLOR, label="outside the band: autocorrelated"),
            Patch(color=WITHIN_BAND_COLOR, label="inside the band"),
            Patch(color="0.88", label=r"band $\pm 1.96/\sqrt{n}$ of white noise" + f"\n(n = {n_col})"),
        ]
    else:
        colors = np.full(len(frame), NO_BAND_COLOR)
    ax.barh(y, acf, color=list(colors), height=0.6, zorder=2)
    ax.axvline(0, color="0.3", lw=0.8, zorder=3)
    if handles:
        ax.legend(
            handles=handles,
            fontsize=SMALL_FONT,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            borderaxespad=0,
        )
    ax.set_yticks(y)
    ax.set_yticklabels([mpl_text(p) for p in frame["param"]], fontsize=SMALL_FONT)
    ax.set_ylim(len(frame) - 0.5, -0.5)
    return ax


CURVE_LABELS = {
    "train_loss": "training loss",
    "heldout_loss": "held-out loss",
    "heldout_acc": "held-out accuracy",
    "rel_distance": r"$\|\theta_{arm} - \theta_{base}\| / \|\theta_{base}\|$",
    "update_cosine": "cos(update, base arm's update)",
}
"""Axis labels of the comparison's curve columns."""

FEW_POINTS = 30
"""Curves with at most this many distinct x values get a marker at each point (sparse evaluations)."""


def plot_fidelity_curves(
    curves: pd.DataFrame, *, y: str, x: str = "step", hue: str = "arm", ax: Axes | None = None
) -> Axes:
    """A training curve per arm (e.g. SGD vs GO-UP), mean over seeds with a min–max band.

    Curves of at most :data:`FEW_POINTS` distinct x values (a held-out metric
    evaluated every few steps) mark each point, so sparse evaluations show.

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
    few = data[x].nunique() <= FEW_POINTS
    sns.lineplot(
        data=data,
        x=x,
        y=y,
        hue=hue,
        errorbar=("pi", 100),
        estimator="mean",
        marker="o" if few else None,
        markersize=5,
        ax=ax,
    )
    ax.set_xlabel(mpl_text(x.replace("_", " ")))
    ax.set_ylabel(CURVE_LABELS.get(y, mpl_text(y.replace("_", " "))))
    if ax.get_legend() is not None:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(
            handles,
            labels,
            title="arm (band: min–max\nover seeds)",
            fontsize=SMALL_FONT,
            title_fontsize=SMALL_FONT,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            borderaxespad=0,
            alignment="left",
        )
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
    ax.set_ylabel(CURVE_LABELS.get(value, mpl_text(value.replace("_", " "))))
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
    ax.legend(
        fontsize=SMALL_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0
    )
    return ax


OU_DIAGNOSTICS = {
    "innovation_lb_reject": "η auto-\ncorrelated\n(Ljung-Box)",
    "innovation_normality_reject_time": "η non-normal\nover time",
    "innovation_normality_reject_pooled": "η non-normal\nacross coords",
    "resid_lb_reject": "residuals\nautocorrelated",
    "resid_normality_reject": "residuals\nnon-normal",
    "var_unstable": "residual\nvariance\ndrifts",
    "adf_stationary": "unit root not\nrejected (ADF)",
}
"""OU diagnostics drawn by :func:`plot_ou_diagnostics`: fraction of coordinates or steps failing each."""

OU_STEP_DIAGNOSTICS = ("innovation_normality_reject_pooled",)
"""Diagnostics that are a share of steps (one test across coordinates per step); the rest are shares of
tracer coordinates (one test over time per coordinate)."""

NOT_COMPUTED = "n/a"
"""Text of a diagnostic cell whose test could not run (too few values, or constant ones)."""


def plot_ou_diagnostics(
    ou: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    max_rows: int = 60,
    colorbar_label: str | None = "share of coordinates / steps failing",
    row_labels: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of the OU residual and innovation diagnostics: share of coordinates (or steps) failing.

    Every column is oriented so that 0 is what an OU process with i.i.d. Gaussian
    innovations gives (about the test level, 5%) and 1 means every coordinate
    fails; ``adf_stationary`` is therefore drawn as ``1 − adf_stationary``.
    Cells whose test could not run (NaN) are grey and read ``n/a``.

    Parameters
    ----------
    ou : DataFrame
        The OU validation table (``param`` and any of :data:`OU_DIAGNOSTICS`).
    columns : sequence of str, optional
        Which diagnostics to draw (default: every one of :data:`OU_DIAGNOSTICS`
        the table has), e.g. only the per-coordinate ones or :data:`OU_STEP_DIAGNOSTICS`.
    max_rows : int
        At most this many tensors are drawn.
    colorbar_label : str or None
        Label of the colour bar (say what the share is of); None draws no colour
        bar (a panel beside another one on the same 0–1 scale).
    row_labels : bool
        Write the tensor names (off for a panel beside another that has them).
    ax : Axes, optional
        Target Axes.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    wanted = list(OU_DIAGNOSTICS) if columns is None else list(columns)
    unknown = [c for c in wanted if c not in OU_DIAGNOSTICS]
    if unknown:
        raise ValueError(f"columns: unknown OU diagnostic(s) {unknown}; known: {list(OU_DIAGNOSTICS)}")
    columns = [c for c in wanted if c in ou.columns]
    if not columns:
        return _no_data(ax, "no OU diagnostics")
    frame = ou.head(max_rows)
    values = frame[columns].astype(np.float64).copy()
    if "adf_stationary" in values.columns:
        values["adf_stationary"] = 1.0 - values["adf_stationary"]
    values.index = [mpl_text(p) for p in frame["param"].astype(str)]
    values.columns = [OU_DIAGNOSTICS[c] for c in columns]
    annotate = len(values) <= 40
    sns.heatmap(
        values,
        vmin=0,
        vmax=1,
        cmap="rocket_r",
        annot=annotate,
        fmt=".0%",
        annot_kws={"fontsize": SMALL_FONT},
        cbar=colorbar_label is not None,
        cbar_kws={"label": colorbar_label} if colorbar_label is not None else None,
        yticklabels=row_labels,
        ax=ax,
    )
    ax.set_facecolor("0.9")  # NaN cells: the test could not run
    if annotate:
        for i, j in zip(*np.nonzero(~np.isfinite(values.to_numpy())), strict=True):
            ax.text(
                j + 0.5, i + 0.5, NOT_COMPUTED, ha="center", va="center", color="0.35", fontsize=SMALL_FONT
            )
    ax.tick_params(axis="x", labelsize=SMALL_FONT, rotation=0)
    ax.tick_params(axis="y", labelsize=SMALL_FONT)
    ax.set_xlabel("")
    ax.set_ylabel("parameter tensor" if row_labels else "")
    return ax
