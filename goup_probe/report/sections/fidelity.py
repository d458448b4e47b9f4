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
from goup_probe.update_rule import UpdateRule, update_rule

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
)
"""Shadow columns of the stats table drawn over training, with their captions."""

FIT_LEVEL = 0.05
"""Level at which the section counts rejections of ``goup_fit_p``."""


def shadow_metrics(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """The shadow columns worth a figure (those with a finite value), with their captions.

    Parameters
    ----------
    rows : DataFrame
        The ``update`` rows of ``run.stats``.

    Returns
    -------
    list of (column, caption)
    """
    return [
        (m, c)
        for m, c in SHADOW_METRICS
        if m in rows.columns and np.isfinite(rows[m].to_numpy(dtype=np.float64)).any()
    ]


def fit_sentence(rows: pd.DataFrame) -> str:
    """How often the updates fail the goodness-of-fit test to GO-UP's update distribution (``goup_fit_p``).

    Parameters
    ----------
    rows : DataFrame
        The ``update`` rows of ``run.stats``.

    Returns
    -------
    str
        Empty when no row has a finite ``goup_fit_p`` (a run written before the column existed).
    """
    if "goup_fit_p" not in rows.columns:
        return ""
    p = rows["goup_fit_p"].to_numpy(dtype=np.float64)
    p = p[np.isfinite(p)]
    if not p.size:
        return ""
    rejected = int((p < FIT_LEVEL).sum())
    return (
        f"Is each update a draw from GO-UP's update distribution N(−αg, α²σ²I)? goup_fit_p (a two-sided χ² "
        "test of ‖Δ + αg‖²/(α²σ²) against χ²_N with a Shapiro–Wilk test of the scaled coordinates on the "
        f"subsample, Bonferroni-combined) is below {FIT_LEVEL:g} on {rejected} of {p.size} update rows "
        f"({rejected / p.size:.1%}); if the optimizer were GO-UP that share would be about {FIT_LEVEL:.0%}."
    )


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
            "θ − αg + α·std(θ − g)·z: the noise it adds relative to the gradient step, the direction of "
            "the two, and whether the actual update could be a draw of GO-UP's."
        )
    )
    cosine = shadow_rows["goup_cosine"] if "goup_cosine" in shadow_rows.columns else pd.Series(dtype=float)
    rule = update_rule(ctx.run.meta, cosine=float(cosine.median()) if cosine.notna().any() else float("nan"))
    parts.append(h.paragraph(rule.alpha_meaning() if not rule.adaptive else _adaptive_shadow_note(rule)))
    fit = fit_sentence(shadow_rows)
    if fit:
        parts.append(h.paragraph(fit))
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


def _adaptive_shadow_note(rule: UpdateRule) -> str:
    return (
        f"{rule.optimizer or 'This optimizer'}'s update is not −αg ({rule.evidence}): α here is the param "
        "group's nominal learning rate at each step, GO-UP's mean update −αg is not what this optimizer "
        "would do with that rate, and the comparison measures how far apart the two update rules are, "
        "not how well GO-UP approximates this optimizer's noise."
    )


def _summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    try:
        from goup_probe.fidelity import summary_table
    except ImportError:
        return summary
    try:
        return summary_table(summary)
    except (KeyError, ValueError, TypeError):
        return summary
