"""The GO-UP fidelity section: twin-run curves and the one-step (shadow) comparison."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from goup_probe import plots, schema
from goup_probe.formatting import format_lr
from goup_probe.report import html as h
from goup_probe.report.figures import FigureFile, fidelity_figures, lines_figure
from goup_probe.report.sections.base import ReportContext, Section, SectionOutput, SectionSkipped

NO_COMPARISON = (
    "This run holds no GO-UP comparison (no compare tables, no shadow columns); run a "
    "comparison to fill this section."
)

SHADOW_METRICS = (
    (
        "noise_to_signal",
        "σ√N/‖g‖ per tensor: GO-UP's added noise over the gradient's size. "
        "Above 1 the noise dominates the gradient step.",
    ),
    (
        "goup_cosine",
        "cos(Δ, −αg) per tensor: the direction of the update the optimizer actually made against GO-UP's "
        "mean update −αg. 1 for plain SGD (dashed line); momentum, weight decay or an adaptive optimizer "
        "(Adam, AdamW) turn the update away from −αg.",
    ),
    (
        "goup_w2_rel",
        "W2 between the actual update and GO-UP's update distribution, relative to "
        "the size of GO-UP's mean update.",
    ),
)
"""Shadow columns of the stats table drawn over training, with their captions."""

SAME_AS_NOISE_RTOL = 0.05
"""goup_w2_rel is not drawn when every row is within this relative distance of noise_to_signal."""


def shadow_metrics(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """The shadow columns worth a figure, with their captions.

    ``goup_w2_rel`` equals ``noise_to_signal`` for plain SGD (W2² = ‖Δ + αg‖² + Nα²σ²
    and Δ = −αg), so when every row of ``rows`` has the two within
    :data:`SAME_AS_NOISE_RTOL` it would repeat that figure: it is left out and
    the noise-to-signal caption says so. Columns without a finite value are left out.

    Parameters
    ----------
    rows : DataFrame
        The ``update`` rows of ``run.stats``.

    Returns
    -------
    list of (column, caption)
    """
    present = {
        m: c
        for m, c in SHADOW_METRICS
        if m in rows.columns and np.isfinite(rows[m].to_numpy(dtype=np.float64)).any()
    }
    if {"noise_to_signal", "goup_w2_rel"} <= set(present):
        noise = rows["noise_to_signal"].to_numpy(dtype=np.float64)
        w2 = rows["goup_w2_rel"].to_numpy(dtype=np.float64)
        both = np.isfinite(noise) & np.isfinite(w2) & (noise > 0)
        gap = float(np.max(np.abs(w2[both] / noise[both] - 1.0))) if both.any() else np.inf
        if gap <= SAME_AS_NOISE_RTOL:
            del present["goup_w2_rel"]
            present["noise_to_signal"] += (
                f" W2(actual, GO-UP)/‖αg‖ (goup_w2_rel) is within {max(gap, 1e-4):.1%} of this on every "
                "row of this run (as for plain SGD), so it is not drawn separately."
            )
    return list(present.items())


class FidelitySection(Section):
    """A comparison's tables (``compare_*``) and the shadow columns of ``stats``, whichever the run has."""

    name = "fidelity"
    title = "GO-UP fidelity"

    def build(self, ctx: ReportContext) -> SectionOutput:
        """The twin-run tables and figures, then the shadow columns over training."""
        parts, figures = _twin_parts(ctx)
        shadow_parts, shadow_figures = _shadow_parts(ctx)
        parts += shadow_parts
        figures += shadow_figures
        if not parts:
            raise SectionSkipped(NO_COMPARISON)
        return SectionOutput("\n".join(parts), tuple(figures))


def _twin_parts(ctx: ReportContext) -> tuple[list[str], list[FigureFile]]:
    tables = ctx.fidelity
    curves, layers, summary = tables["curves"], tables["layers"], tables["summary"]
    if not (curves.present or summary.present):
        return [], []
    parts = ["<h3>Twin runs: reference optimizer against GO-UP</h3>"]
    parts.append(
        h.paragraph(
            "The same model, data order and seeds trained by the reference optimizer and by GO-UP; "
            "curves show the mean over seeds with a band from the lowest to the highest seed."
        )
    )
    parts.append(h.paragraph(comparison_settings(ctx.run.meta)))
    if summary.present:
        parts.append(h.table(_summary_display(summary.frame), caption="Final metrics, one row per arm"))
    new = fidelity_figures(ctx.writer, curves.frame, layers.frame, ctx.highlight)
    parts.extend(h.figure(f) for f in new)
    return parts, list(new)


def comparison_settings(meta: dict[str, Any]) -> str:
    """One sentence with the settings the comparison recorded in ``run.json`` (``"compare"``).

    The twin runs are a training of their own: their steps, learning rate, batch
    size and seeds need not be the probed run's, so the sentence names both when
    the run directory also holds a probe run.

    Parameters
    ----------
    meta : dict
        The run's ``run.json``.

    Returns
    -------
    str
    """
    cfg = meta.get("compare") or {}
    if not cfg:
        return "The comparison's own settings (steps, learning rate, seeds) were not recorded in run.json."
    seeds = cfg.get("seeds")
    seed_text = (
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))})"
        if isinstance(seeds, list)
        else f"seeds {seeds}"
    )
    data = cfg.get("data", "?")
    sizes = (
        f" ({cfg['n_train']} training, {cfg['n_heldout']} held-out examples)"
        if "n_train" in cfg and "n_heldout" in cfg
        else ""
    )
    text = (
        f"Settings of these twin runs, as the comparison recorded them: {cfg.get('steps', '?')} steps at "
        f"lr {format_lr(cfg.get('lr', '?'))}, batch size {cfg.get('batch_size', '?')}, {seed_text}, "
        f"on {data}{sizes}, evaluated every {cfg.get('eval_every', '?')} steps."
    )
    probed = _probed_run(meta)
    if probed:
        text += f" They are a training of their own, not the probed run ({probed})."
    return text


def _probed_run(meta: dict[str, Any]) -> str:
    """``"1500 steps at lr 0.1"`` for a probe run's own training, empty for a comparison-only run."""
    if meta.get("kind") == "compare" or "steps" not in meta:
        return ""
    groups = (meta.get("optimizer") or {}).get("param_groups") or []
    lr = f" at lr {format_lr(groups[0]['lr'])}" if groups and "lr" in groups[0] else ""
    return f"{meta['steps']} steps{lr}"


def _shadow_parts(ctx: ReportContext) -> tuple[list[str], list[FigureFile]]:
    stats = ctx.stats
    shadow_rows = stats[(stats["quantity"] == schema.UPDATE)]
    if not ("noise_to_signal" in shadow_rows.columns and shadow_rows["noise_to_signal"].notna().any()):
        return [], []
    parts = ["<h3>One-step (shadow) fidelity during this run</h3>"]
    parts.append(
        h.paragraph(
            "At each captured step the probe compares the actual update with GO-UP's update "
            "θ − αg + α·std(θ − g)·z: the noise it adds relative to the gradient step, and how far the "
            "two updates are apart."
        )
    )
    figures = []
    for metric, caption in shadow_metrics(shadow_rows):
        label = plots.METRIC_LABELS.get(metric, metric)
        fig = lines_figure(
            ctx.writer,
            stats,
            metric=metric,
            quantity=schema.UPDATE,
            highlight=ctx.highlight,
            caption=caption,
            min_n=0,
            stem=f"shadow-{metric}",
            title=f"{label} over training",
        )
        figures.append(fig)
        parts.append(h.figure(fig))
    return parts, figures


def _summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    try:
        from goup_probe.fidelity import summary_table
    except ImportError:
        return summary
    try:
        return summary_table(summary)
    except (KeyError, ValueError, TypeError):
        return summary
