"""Figures of the compare-runs page: verdict shares, metrics of shared layers, OU rates, a colour per run.

Drawn with matplotlib on the Agg backend (:func:`~goup_probe.report.figures.agg_figure`)
in the style of :mod:`goup_probe.plots`, saved by the report's
:class:`~goup_probe.report.figures.FigureWriter`; the page that shows them is
:mod:`goup_probe.report.compare_runs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from goup_probe import schema
from goup_probe.plots.axes import METRIC_LABELS, VERDICT_COLORS, mpl_text
from goup_probe.plots.tables import VERDICT_ORDER, ou_interval, ou_ratio
from goup_probe.report.figures import FigureWriter, agg_figure
from goup_probe.report.folder import FigureFile
from goup_probe.runs import RUN_COLUMN

LOG_METRICS = frozenset({"grad_to_param"})
"""Metrics drawn on a log axis (their non-positive values left out)."""
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_TICK, _LABEL, _TITLE = 9, 10, 11  # font sizes in points


def run_colors(runs: Sequence[str]) -> dict[str, tuple]:
    """One colour per run, in order (tab10, or tab20 beyond ten runs)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {run: cmap(i % cmap.N) for i, run in enumerate(runs)}


def _style(ax: Axes) -> None:
    ax.tick_params(labelsize=_TICK)
    ax.xaxis.label.set_size(_LABEL)
    ax.yaxis.label.set_size(_LABEL)
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def verdict_figure(writer: FigureWriter, stats: pd.DataFrame, runs: Sequence[str]) -> FigureFile:
    """Stacked horizontal bars: share of (tensor, step) rows of X per verdict, one bar per run."""
    verdicts = stats["verdict"].fillna(schema.VERDICT_NOT_TESTED)
    counts = pd.crosstab(stats[RUN_COLUMN], verdicts).reindex(index=list(runs), columns=list(VERDICT_ORDER))
    counts = counts.fillna(0)
    totals = counts.sum(axis=1)
    shares = counts.div(totals.where(totals > 0), axis=0)
    height = 1.6 + 0.45 * len(runs)
    fig = agg_figure((10.0, height))
    ax = fig.add_subplot()
    y = np.arange(len(runs))
    left = np.zeros(len(runs))
    for verdict in VERDICT_ORDER:
        width = shares[verdict].fillna(0).to_numpy(dtype=np.float64)
        if not width.any():
            continue
        ax.barh(y, width, left=left, color=VERDICT_COLORS[verdict], height=0.7, label=verdict)
        for yi, (x0, w) in enumerate(zip(left, width, strict=True)):
            if w >= 0.08:
                ax.text(x0 + w / 2, yi, f"{w:.0%}", ha="center", va="center", fontsize=_TICK)
        left += width
    for yi, total in enumerate(totals):
        if total == 0:
            ax.text(0.01, yi, "no rows of X", va="center", fontsize=_TICK, color="0.4")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{mpl_text(r)} (n={int(t)})" for r, t in zip(runs, totals, strict=True)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    ax.set_xlabel("share of (tensor, captured step) rows of X = θ − g")
    _style(ax)
    ax.grid(False)
    fig.legend(fontsize=_TICK, loc="outside lower center", ncols=len(VERDICT_ORDER), frameon=False)
    title = "Verdict shares on X = θ − g per run (all tensors, all captured steps)"
    fig.suptitle(title, fontsize=_TITLE)
    caption = (
        "Each bar is one run: the share of its (tensor, captured step) rows of X with each verdict; "
        "n counts the rows. Thresholds as in the run report's glossary."
    )
    return writer.save(fig, "compare-verdicts", title, caption)


_MAX_MARKERS = 40
"""Markers per run's line at most in the compare-runs line figures (one every k-th step beyond)."""


def lines_figure(
    writer: FigureWriter,
    stats: pd.DataFrame,
    layers: Sequence[str],
    runs: Sequence[str],
    colors: dict[str, tuple],
    metric: str,
    title: str,
    caption: str,
) -> FigureFile:
    """One panel per shared layer, one line per run, of a stats column over optimizer steps."""
    n_cols = min(3, len(layers))
    n_rows = -(-len(layers) // n_cols)
    fig = agg_figure((4.4 * n_cols + 0.6, 3.0 * n_rows + 1.0))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False).ravel())
    label = METRIC_LABELS.get(metric, mpl_text(metric))
    handles: dict[str, object] = {}
    for ax, param in zip(axes, layers, strict=False):
        rows = stats[stats["param"] == param]
        for i, run in enumerate(runs):
            sub = rows[rows[RUN_COLUMN] == run].sort_values("step", kind="stable")
            values = sub[metric].astype(np.float64)
            keep = np.isfinite(values) & ((values > 0) if metric in LOG_METRICS else True)
            if not keep.any():
                continue
            (line,) = ax.plot(
                sub["step"][keep],
                values[keep],
                marker=_MARKERS[i % len(_MARKERS)],
                markevery=max(1, int(keep.sum()) // _MAX_MARKERS),  # identifies the run; 2000 would blot
                ms=4,
                lw=1.4,
                color=colors[run],
                label=mpl_text(run),
            )
            handles.setdefault(run, line)
        if metric in LOG_METRICS and ax.lines:
            ax.set_yscale("log")
        if metric == "excess_kurtosis":
            ax.axhline(0.0, color="0.3", lw=0.8, ls="--")
        ax.set_title(mpl_text(param), fontsize=_LABEL)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.locator_params(axis="x", nbins=5)  # five-digit steps in a 4.4-in panel: 6 ticks ran together
        _style(ax)
        if not ax.lines:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    ordered = [r for r in runs if r in handles]
    if ordered:
        fig.legend(
            [handles[r] for r in ordered],
            [mpl_text(r) for r in ordered],
            loc="outside right upper",
            fontsize=_TICK,
            title="run",
            title_fontsize=_TICK,
            frameon=False,
        )
    fig.suptitle(title, fontsize=_TITLE)
    return writer.save(fig, f"compare-{metric}", title, caption)


def ou_figure(
    writer: FigureWriter, ou: pd.DataFrame, layers: Sequence[str], runs: Sequence[str], colors: dict
) -> FigureFile:
    """k̂/α per layer (rows) with its interval, one marker per run, offset within each row."""
    height = 1.8 + 0.42 * len(layers) * max(1, min(len(runs), 4)) / 2
    fig = agg_figure((10.0, height))
    ax = fig.add_subplot()
    ratio = ou_ratio(ou)
    low, high = ou_interval(ou)
    frame = ou.assign(ratio=ratio, low=low, high=high)
    spread = 0.2 * (1 - 1 / max(len(runs), 1))  # markers of one layer stay nearer its label than the next
    offsets = np.linspace(-spread, spread, len(runs)) if len(runs) > 1 else np.zeros(1)
    rank = {p: i for i, p in enumerate(layers)}
    for i, run in enumerate(runs):
        sub = frame[(frame[RUN_COLUMN] == run) & frame["param"].isin(rank)]
        if sub.empty:
            continue
        y = np.array([rank[p] for p in sub["param"]], dtype=np.float64) + offsets[i]
        ax.hlines(y, sub["low"], sub["high"], color=colors[run], lw=1.4)
        ax.plot(sub["ratio"], y, _MARKERS[i % len(_MARKERS)], color=colors[run], ms=5, label=mpl_text(run))
    ax.axvline(1.0, color="#c44e52", ls="--", lw=1, label="k = α (seed's assumption)")
    ax.set_yticks(np.arange(len(layers)))
    ax.set_yticklabels([mpl_text(p) for p in layers])
    ax.set_ylim(len(layers) - 0.5, -0.5)
    for edge in np.arange(len(layers) - 1) + 0.5:
        ax.axhline(edge, color="0.85", lw=0.8)
    ax.set_xlabel("k̂ / α (mean-reversion rate over learning rate)")
    finite = frame[["ratio", "low", "high"]].to_numpy(dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_xscale("log")
    _style(ax)
    fig.legend(fontsize=_TICK, loc="outside right upper", frameon=False)
    title = "OU mean-reversion rate k̂/α per layer and run"
    fig.suptitle(title, fontsize=_TITLE)
    caption = (
        "k̂ from each run's stored ou table (goup-probe ou RUN_DIR --write), relative to that run's "
        "learning rate α, with its interval; one marker per run. The seed assumes k = α (dashed)."
    )
    return writer.save(fig, "compare-ou", title, caption)
