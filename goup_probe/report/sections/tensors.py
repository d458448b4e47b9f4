"""The All tensors section: one summary row per parameter tensor."""

from __future__ import annotations

from goup_probe.report import html as h
from goup_probe.report.sections.base import ReportContext, Requirement, Section, SectionOutput, SectionSkipped
from goup_probe.summary import layer_summary

NO_TENSORS = "No tensor has captured statistics."


class TensorsSection(Section):
    """:func:`goup_probe.layer_summary` of the run as a table."""

    name = "tensors"
    title = "All tensors"
    requires = (Requirement("stats", note=NO_TENSORS),)

    def build(self, ctx: ReportContext) -> SectionOutput:
        """The summary table, scrolling when long."""
        table = layer_summary(ctx.stats, meta=ctx.run.meta)
        if table.empty:
            raise SectionSkipped(NO_TENSORS)
        intro = h.paragraph(
            "One row per parameter tensor: verdict and excess kurtosis of X at the first and last captured "
            "step; at the last, the shape of a row that is not Gaussian (heavy-tailed, light-tailed, "
            "skewed, discrete, other; none detected when inconclusive), skewness and W1 (in σ); the share "
            "of captured steps judged Gaussian or close to Gaussian, and the median ‖g‖/‖θ‖."
        )
        return SectionOutput(intro + h.table(table, scroll=len(table) > 25))
