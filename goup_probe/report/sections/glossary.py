"""The Glossary section: every statistic, verdict and threshold the run was judged by."""

from __future__ import annotations

from goup_probe.report import html as h
from goup_probe.report.glossary import glossary_items
from goup_probe.report.sections.base import ReportContext, Section, SectionOutput


class GlossarySection(Section):
    """Definitions of the statistics and verdicts, with the thresholds recorded in ``run.json``."""

    name = "glossary"
    title = "Glossary"

    def build(self, ctx: ReportContext) -> SectionOutput:
        """The glossary as a definition list."""
        return SectionOutput(h.definition_list(glossary_items(ctx.run.meta)))
