"""What a report section is: a name, a title, the data it requires, and ``build(context)``.

A section is a small class::

    import goup_probe as gp
    from goup_probe.report.sections import Requirement, SectionOutput

    class LearningRate(gp.Section):
        name = "lr"
        title = "Learning rate"
        requires = (Requirement("trajectories", ("step", "lr")),)

        def build(self, ctx):
            lr = ctx.table("trajectories", columns=["step", "lr"]).groupby("step")["lr"].median()
            fig = ctx.writer.draw("lr", "Learning rate", "Median α per step.", (6, 3),
                                  lambda ax: ax.plot(lr.index, lr.to_numpy()))
            return SectionOutput.text(f"Final learning rate {lr.iloc[-1]:.3g}.", figures=[fig])

    gp.report("runs/exp1", sections=[LearningRate()])

Before ``build`` runs, the report checks :attr:`Section.requires` (and
:meth:`Section.missing`); when data is absent the section becomes one line
saying why, and ``build`` is not called. ``build`` may also raise
:class:`SectionSkipped` when it finds the data empty.

This module imports neither matplotlib nor the built-in sections, so
``import goup_probe`` stays light.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from goup_probe import store
from goup_probe.report.folder import FigureFile

if TYPE_CHECKING:
    from goup_probe.report.data import OptionalTable
    from goup_probe.report.figures import FigureWriter
    from goup_probe.report.findings import Findings
    from goup_probe.report.select import LayerSelection
    from goup_probe.store import Run

__all__ = ["ReportContext", "Requirement", "Section", "SectionOutput", "SectionSkipped"]


@dataclass(frozen=True)
class Requirement:
    """A table a section reads, and the columns it needs there.

    ``table`` may name alternatives (a tuple): the first one the run holds is
    checked for ``columns``. ``note`` replaces the generated skip line.
    """

    table: str | tuple[str, ...]
    columns: tuple[str, ...] = ()
    note: str = ""

    def unmet(self, ctx: ReportContext) -> str | None:
        """Why the run does not satisfy this requirement (a phrase), or None if it does."""
        names = (self.table,) if isinstance(self.table, str) else tuple(self.table)
        present = [n for n in names if n in ctx.tables]
        if not present:
            return f"the run has no {' or '.join(names)} table"
        lacking = [c for c in self.columns if c not in ctx.columns(present[0])]
        if lacking:
            plural = "s" if len(lacking) > 1 else ""
            return f"table {present[0]} has no column{plural} {', '.join(lacking)}"
        return None


class SectionSkipped(Exception):
    """Raised by :meth:`Section.build` to leave the section as one line: ``str(exc)``."""


@dataclass(frozen=True)
class SectionOutput:
    """What a section built: its HTML body and the PNG files that body shows.

    ``html`` is inserted as it is (escape every value: :mod:`goup_probe.report.html`
    has helpers); ``figures`` are the :class:`FigureFile` objects it drew, in page
    order, listed in :attr:`ReportResult.figures`. ``note`` is an optional
    one-line remark kept in :attr:`ReportResult.notes`.
    """

    html: str
    figures: tuple[FigureFile, ...] = ()
    note: str | None = None

    @classmethod
    def text(
        cls, *paragraphs: str, figures: Sequence[FigureFile] = (), note: str | None = None
    ) -> SectionOutput:
        """Plain-text paragraphs (escaped), then the figures with their captions."""
        from goup_probe.report import html as h

        body = [h.paragraph(p) for p in paragraphs] + [h.figure(f) for f in figures]
        return cls("\n".join(body), tuple(figures), note)


class Section(ABC):
    """One section of the report.

    Subclasses set the class attributes and implement :meth:`build`.

    Attributes
    ----------
    name : str
        Anchor id in the page and key in :attr:`ReportResult.notes`; unique.
    title : str
        Heading (and navigation entry).
    requires : tuple of Requirement or str
        Tables (a plain string: just the table) and columns the section reads.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    requires: ClassVar[tuple[Requirement | str, ...]] = ()

    def missing(self, ctx: ReportContext) -> str | None:
        """The one line shown instead of the section when its data is absent, or None.

        The default checks :attr:`requires`: ``"<title>: skipped — <reason>."``
        (or the requirement's own ``note``).
        """
        for need in self.requires:
            req = Requirement(need) if isinstance(need, str) else need
            reason = req.unmet(ctx)
            if reason is not None:
                return req.note or f"{self.title}: skipped — {reason}."
        return None

    @abstractmethod
    def build(self, ctx: ReportContext) -> SectionOutput | str:
        """The section's content (a plain string is taken as its HTML body)."""


@dataclass
class ReportContext:
    """Everything a section may read: the run, shared choices, and where figures go.

    Attributes
    ----------
    run : Run
        The run being reported.
    writer : FigureWriter
        Saves figures under the report folder (``writer.draw(stem, title, caption, size, fn)``).
    selection : LayerSelection
        Tensors chosen for per-layer detail.
    steps : list of int
        Captured steps of the per-layer figures.
    findings : Findings
        The summary's verdicts and sentences.
    include_ou : bool
        Whether the OU analysis was asked for.
    """

    run: Run
    writer: FigureWriter
    selection: LayerSelection
    steps: list[int]
    findings: Findings
    include_ou: bool = True
    _columns: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @cached_property
    def stats(self) -> pd.DataFrame:
        """``run.stats`` (read once), rows in model order (:func:`goup_probe.order.in_model_order`)."""
        from goup_probe.order import in_model_order

        return in_model_order(self.run.stats, self.run.meta)

    @cached_property
    def tables(self) -> frozenset[str]:
        """Tables the run holds."""
        return frozenset(self.run.tables)

    def columns(self, name: str) -> list[str]:
        """Columns of a table, from the Parquet footers (no rows read)."""
        if name not in self._columns:
            self._columns[name] = store.table_columns(self.run.path, name)
        return self._columns[name]

    def table(self, name: str, columns: Sequence[str] | None = None, filters: Any = None) -> pd.DataFrame:
        """A table of the run; with ``columns``/``filters`` only those are read (see ``store.read_table``)."""
        if columns is None and filters is None:
            return self.run.table(name)
        return store.read_table(self.run.path, name, columns, filters, on_error=self.run.on_error)

    @property
    def highlight(self) -> list[str]:
        """Up to three least and three most Gaussian tensors: coloured in the overview plots."""
        return list(self.selection.least_gaussian[:3]) + list(self.selection.most_gaussian[:3])

    @cached_property
    def ou(self) -> OptionalTable:
        """The OU validation (stored or computed), or why there is none."""
        from goup_probe.report.data import OptionalTable, load_ou

        if not self.include_ou:
            return OptionalTable(None, "The OU section was turned off for this report.")
        return load_ou(self.run)

    @cached_property
    def fidelity(self) -> dict[str, OptionalTable]:
        """The GO-UP comparison tables (curves, layers, summary), when present."""
        from goup_probe.report.data import load_fidelity

        return load_fidelity(self.run)
