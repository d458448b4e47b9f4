"""Build the report of a run: figures as PNG files and one ``index.html`` that opens offline.

The page is the list :data:`SECTIONS` (one module each under
:mod:`goup_probe.report.sections`) plus any sections the caller adds. Each
section declares what it ``requires``; one whose data the run lacks becomes a
single line saying why.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.memory import release_free_memory
from goup_probe.report import html as h
from goup_probe.report.data import load_ou, load_stats
from goup_probe.report.figures import FigureFile, FigureWriter
from goup_probe.report.findings import Findings, compute_findings
from goup_probe.report.folder import INDEX, REPORT_DIR, prepare_report_dir, write_index
from goup_probe.report.sections.base import ReportContext, Section, SectionOutput, SectionSkipped
from goup_probe.report.sections.fidelity import FidelitySection
from goup_probe.report.sections.glossary import GlossarySection
from goup_probe.report.sections.layers import LayersSection
from goup_probe.report.sections.noise import NoiseSection
from goup_probe.report.sections.ou import OUSection
from goup_probe.report.sections.summary import SummarySection, analysis_sentences, run_description
from goup_probe.report.sections.tensors import TensorsSection
from goup_probe.report.sections.training import TrainingSection
from goup_probe.report.select import LayerSelection, choose_layers, choose_steps
from goup_probe.rows import quantity_rows
from goup_probe.store import Run, load_run, utc_now
from goup_probe.summary import RunProgress, run_progress

__all__ = [
    "INDEX",
    "REPORT_DIR",
    "SECTIONS",
    "ReportResult",
    "analysis_sentences",
    "build_report",
    "run_description",
]

SECTIONS: tuple[Section, ...] = (
    SummarySection(),
    LayersSection(),
    TrainingSection(),
    TensorsSection(),
    OUSection(),
    FidelitySection(),
    NoiseSection(),
    GlossarySection(),
)
"""The built-in sections, in page order."""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote."""

    out_dir: Path
    index: Path
    figures: tuple[FigureFile, ...]
    sections: tuple[str, ...]
    """Section headings in page order."""
    notes: dict[str, str] = field(default_factory=dict)
    """Section name -> one-line note for sections whose data the run lacks."""
    findings: Findings | None = None
    detail_layers: tuple[str, ...] = ()
    seconds: float = 0.0

    def __repr__(self) -> str:
        """One line: where the page is, what it holds, how long it took (not every figure)."""
        notes = f", {len(self.notes)} skipped or noted ({', '.join(self.notes)})" if self.notes else ""
        return (
            f"ReportResult(index={str(self.index)!r}, {len(self.sections)} sections, "
            f"{len(self.figures)} figures, {len(self.detail_layers)} detailed tensors{notes}, "
            f"{self.seconds:.1f} s)"
        )


def build_report(
    run: Run | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    per_side: int = 3,
    layers: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    n_steps: int = 3,
    ou: bool = True,
    dpi: int = 100,
    title: str | None = None,
    sections: Sequence[Section] = (),
) -> ReportResult:
    """Write the HTML/PNG report of a run directory.

    Reads only the run's Parquet tables (nothing is trained); every figure is
    drawn with :mod:`goup_probe.plots` on the Agg backend and saved as a PNG
    under ``out/figures``; ``out/index.html`` shows them with the findings and
    opens from disk without a server or network.

    Parameters
    ----------
    run : Run or path
        The run (or its directory). Partial runs (interrupted, still running)
        are reported as far as they were captured.
    out : path, optional
        Report folder (default ``RUN_DIR/report``). Earlier reports there are
        replaced; a folder holding anything else keeps it.
    per_side : int
        With more than ``2 * per_side`` tensors, per-layer detail is shown for the
        ``per_side`` most and ``per_side`` least Gaussian ones (others get the
        compact overviews only).
    layers : sequence of str, optional
        Tensors to detail instead of the automatic choice.
    steps : sequence of int, optional
        Captured steps of the per-layer figures (default: ``n_steps`` spread
        from the first to the last captured step).
    n_steps : int
        How many steps the default choice takes (3: first, middle, last).
    ou : bool
        Include the OU section (computed from the trajectories unless stored).
    dpi : int
        Resolution of the PNG files.
    title : str, optional
        Page title (default from the model's class and the run folder).
    sections : sequence of Section, optional
        Extra sections (see :class:`goup_probe.Section`), shown after the
        built-in ones (:data:`SECTIONS`) in the order given.

    Returns
    -------
    ReportResult
        Paths, figure list, section headings, notes and the build time.

    Raises
    ------
    ValueError
        If two sections share a name, a name in ``layers`` is not a tensor of the
        run, or a step in ``steps`` was not captured (nothing is written then).
    TypeError
        If ``layers`` or ``steps`` is not a sequence of names or integers.

    Examples
    --------
    >>> import goup_probe as gp
    >>> result = gp.report("reports/demo")  # doctest: +SKIP
    >>> result.index  # doctest: +SKIP
    PosixPath('reports/demo/report/index.html')
    """
    start = time.perf_counter()
    run = run if isinstance(run, Run) else load_run(run)
    chosen = _check_names([*SECTIONS, *sections])
    _check_requests(run, layers, steps)  # a wrong name fails now, not after the OU analysis
    # The longest analysis first, while nothing else is in memory: its working set and the stats
    # table are then never held together (benchmarks/README.md, "Reading and reporting").
    ou_table = load_ou(run) if ou else None
    release_free_memory()  # what the analysis freed, before the stats table is read
    stats = load_stats(run)  # only the columns the report draws, in model order
    selection, detail_steps = _choices(  # before touching disk
        stats, per_side, layers, steps, n_steps, _steps_with_samples(run)
    )
    out_dir = prepare_report_dir(Path(out) if out is not None else run.path / REPORT_DIR)
    progress = run_progress(run)
    ctx = ReportContext(
        run=run,
        writer=FigureWriter(out_dir, dpi=dpi),
        selection=selection,
        steps=detail_steps,
        findings=compute_findings(stats, progress.counted_meta(run.meta)),
        include_ou=ou,
    )
    ctx.__dict__["stats"] = stats  # ReportContext.stats is a cached property: the sections share this read
    if ou_table is not None:
        ctx.__dict__["ou"] = ou_table  # likewise ReportContext.ou
    figures: list[FigureFile] = []
    notes: dict[str, str] = {}
    rendered = []
    for section in chosen:
        output, note = _build_one(section, ctx)
        if output.figures:  # reference cycles (matplotlib's artists): collected, their memory returned,
            gc.collect()  # before the next section draws (bert report: peak of the sections 596 -> 558 MB)
            release_free_memory()
        rendered.append(h.Section(section.name, section.title, output.html))
        figures.extend(output.figures)
        if note:
            notes[section.name] = note

    from goup_probe._version import __version__

    page = h.page(
        title=title or _default_title(run),
        subtitle=_subtitle(run, progress),
        sections=rendered,
        version=__version__,
        built_at=utc_now(),
        build_seconds=time.perf_counter() - start,
    )
    return ReportResult(
        out_dir=out_dir,
        index=write_index(out_dir, page),
        figures=tuple(figures),
        sections=tuple(s.heading for s in rendered),
        notes=notes,
        findings=ctx.findings,
        detail_layers=tuple(ctx.selection.params),
        seconds=time.perf_counter() - start,
    )


def _steps_with_samples(run: Run) -> set[int]:
    """Steps at which the run stored samples (only the ``step`` column is read)."""
    if "samples" not in run.tables:
        return set()
    return {int(s) for s in run.table("samples", columns=["step"])["step"].unique()}


def _check_requests(run: Run, layers: Sequence[str] | None, steps: Sequence[int] | None) -> None:
    """Raise on a tensor or step the caller asked for that the run lacks (three columns of ``stats`` read).

    :func:`_choices` checks them again on the whole table, with the same rules.
    """
    if layers is None and steps is None:
        return
    columns = ["step", "param", "quantity"]
    stats = run.stats[columns] if run.is_read("stats") else run.table("stats", columns=columns)
    if layers is not None:
        choose_layers(stats, layers=layers)
    if steps is not None:
        _requested_steps(steps, sorted({int(s) for s in stats["step"]}))


def _check_names(sections: list[Section]) -> list[Section]:
    seen: set[str] = set()
    for section in sections:
        if not isinstance(section, Section):
            raise TypeError(f"sections must be Section instances, got {type(section).__name__}")
        if section.name in seen:
            raise ValueError(f"two report sections are named {section.name!r}; names must be unique")
        seen.add(section.name)
    return sections


def _choices(
    stats: pd.DataFrame,
    per_side: int,
    layers: Sequence[str] | None,
    steps: Sequence[int] | None,
    n_steps: int,
    sampled: set[int],
) -> tuple[LayerSelection, list[int]]:
    """The tensors and captured steps that get per-layer detail (checked against the run's ``stats``).

    Unless ``steps`` names them, the first, middle and last of the captured steps
    whose samples were kept (``sampled``: the retention policy thins them), so
    every detail figure has values to draw.
    """
    captured = sorted({int(s) for s in quantity_rows(stats, schema.THETA_MINUS_GRAD, ["step"])["step"]})
    if steps is not None:
        detail_steps = _requested_steps(steps, sorted({int(s) for s in stats["step"]}))
    else:
        drawable = [s for s in captured if s in sampled] or captured
        detail_steps = choose_steps(drawable or [0], n_steps)
    return choose_layers(stats, per_side=per_side, layers=layers), detail_steps


def _requested_steps(steps: Sequence[int], captured: Sequence[int]) -> list[int]:
    """``steps`` sorted and distinct, all of them captured, else an error naming the others."""
    if isinstance(steps, str) or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) for s in steps
    ):
        raise TypeError(f"steps must be a sequence of integer optimizer steps, got {steps!r}")
    wanted = sorted({int(s) for s in steps})
    absent = [s for s in wanted if s not in set(captured)]
    if absent:
        have = (
            f"{len(captured)} captured steps from {captured[0]} to {captured[-1]}"
            if captured
            else "no captured steps"
        )
        raise ValueError(f"steps: {absent[:10]} not captured in this run (it has {have})")
    return wanted


def _build_one(section: Section, ctx: ReportContext) -> tuple[SectionOutput, str | None]:
    """A section's output and note; a section whose data is absent becomes its one-line reason."""
    reason = section.missing(ctx)
    if reason is None:
        try:
            output = section.build(ctx)
        except SectionSkipped as skipped:
            reason = str(skipped)
        else:
            output = output if isinstance(output, SectionOutput) else SectionOutput(str(output))
            return output, output.note
    return SectionOutput(h.paragraph(reason, cls="note")), reason


# ----------------------------------------------------------------------------- header


def _default_title(run: Run) -> str:
    model = (run.meta.get("model") or {}).get("class")
    kind = "comparison" if run.meta.get("kind") == "compare" else "probe report"
    return f"goup_probe {kind}: {model or 'run'} — {run.path.name}"


def _subtitle(run: Run, progress: RunProgress) -> str:
    steps = "?" if progress.steps is None else progress.steps
    so_far = " on disk so far" if progress.on_disk else ""
    return f"Run folder {run.path} · status {run.status} · {steps} optimizer steps{so_far}"
