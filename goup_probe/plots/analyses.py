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

from goup_probe.plots.axes import _axes, _no_data, mpl_text
from goup_probe.plots.tables import ou_interval, ou_ratio, param_order


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
    ax.set_yticklabels([mpl_text(p) for p in frame["param"]], fontsize=7)
    ax.invert_yaxis()
    finite = frame[["ratio", "low", "high"]].to_numpy(dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_xscale("log")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0)
    return ax


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
