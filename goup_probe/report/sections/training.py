"""The Over training section: the effect-size heatmap and shape metrics per tensor over steps."""

from __future__ import annotations

from goup_probe import schema
from goup_probe.report import html as h
from goup_probe.report.figures import heatmap_figure, lines_figure
from goup_probe.report.sections.base import ReportContext, Requirement, Section, SectionOutput, SectionSkipped
from goup_probe.report.select import MIN_RANKED_N

NO_TRAINING = "The run holds no captured statistics to follow over training."

SMALL_N_NOTE = (
    " Tensors tested on fewer than {min_n} values are dotted darker grey and left out of the median: "
    "on 16 normal values skewness has a standard error of 0.6 and excess kurtosis one of 1.2, so their "
    "swings are mostly noise. Coloured lines carry a ±1.96 SE band."
)
"""Appended to the skewness and kurtosis captions ({min_n}: the ranking's small-n rule)."""

CAPTIONS = {
    "skew": "Skewness of X per tensor; 0 for a normal distribution (dashed line)." + SMALL_N_NOTE,
    "excess_kurtosis": "Excess kurtosis of X per tensor: 0 for a normal (dashed line), −1.2 for a uniform "
    "(dotted line; PyTorch's default init), positive for heavy tails." + SMALL_N_NOTE,
    "grad_to_param": "‖g‖/‖θ‖ per tensor (log scale): when ≪ 1, X = θ − g is essentially θ. Tensors "
    "tested on fewer than {min_n} values are dotted darker grey and left out of the median.",
}
"""Metrics of X drawn over training, with their captions."""


class TrainingSection(Section):
    """Heatmap of W1 (σ) (tensors × steps) and line plots of skewness, kurtosis and ‖g‖/‖θ‖."""

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
                    f"In the line plots, solid grey lines are the tensors tested on at least {MIN_RANKED_N} "
                    f"values, dotted darker grey ones those tested on fewer, the black line the median of "
                    "the former, and the coloured lines the tensors shown in per-layer detail."
                )
            )
        new = [heatmap_figure(ctx.writer, stats)]
        for metric, caption in CAPTIONS.items():
            new.append(
                lines_figure(
                    ctx.writer,
                    stats,
                    metric=metric,
                    highlight=ctx.highlight,
                    caption=caption.format(min_n=MIN_RANKED_N),
                    min_n=MIN_RANKED_N,
                )
            )
        parts.extend(h.figure(f) for f in new)
        return SectionOutput("\n".join(parts), tuple(new))
