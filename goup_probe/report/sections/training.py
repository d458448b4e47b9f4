"""The Over training section: the effect-size heatmap and shape metrics per tensor over steps."""

from __future__ import annotations

from goup_probe import schema
from goup_probe.report import html as h
from goup_probe.report.figures import heatmap_figure, lines_figure
from goup_probe.report.sections.base import ReportContext, Requirement, Section, SectionOutput, SectionSkipped

NO_TRAINING = "The run holds no captured statistics to follow over training."

CAPTIONS = {
    "skew": "Skewness of X per tensor; 0 for a normal distribution.",
    "excess_kurtosis": "Excess kurtosis of X per tensor: 0 for a normal, −1.2 for a uniform "
    "(PyTorch's default init), positive for heavy tails.",
    "grad_to_param": "‖g‖/‖θ‖ per tensor (log scale): when ≪ 1, X = θ − g is essentially θ.",
}
"""Metrics of X drawn over training, with their captions."""


class TrainingSection(Section):
    """Heatmap of 1 − qq_r (tensors × steps) and line plots of skewness, kurtosis and ‖g‖/‖θ‖."""

    name = "training"
    title = "Over training"
    requires = (Requirement("stats", note=NO_TRAINING),)

    def build(self, ctx: ReportContext) -> SectionOutput:
        """The heatmap and the three line plots."""
        stats = ctx.stats
        if stats[stats["quantity"] == schema.THETA_MINUS_GRAD].empty:
            raise SectionSkipped(NO_TRAINING)
        parts = []
        if stats["param"].nunique() > 10:
            parts.append(
                h.paragraph(
                    "In the line plots, grey lines are all tensors, the black line their median, and the "
                    "coloured lines the tensors shown in per-layer detail."
                )
            )
        new = [heatmap_figure(ctx.writer, stats)]
        for metric, caption in CAPTIONS.items():
            new.append(
                lines_figure(ctx.writer, stats, metric=metric, highlight=ctx.highlight, caption=caption)
            )
        parts.extend(h.figure(f) for f in new)
        return SectionOutput("\n".join(parts), tuple(new))
