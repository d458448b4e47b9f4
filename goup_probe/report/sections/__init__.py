"""Sections of the report: the public base (:mod:`.base`) and one module per built-in section.

Importing this package loads only the base; the built-in sections (which draw
with matplotlib) are imported by :mod:`goup_probe.report.builder`.
"""

from goup_probe.report.sections.base import (
    ReportContext,
    Requirement,
    Section,
    SectionOutput,
    SectionSkipped,
)

__all__ = ["ReportContext", "Requirement", "Section", "SectionOutput", "SectionSkipped"]
