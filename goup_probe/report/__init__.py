"""HTML/PNG reports of a run: ``report(run, out=...)`` writes ``index.html`` and ``figures/*.png``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from goup_probe.report.builder import ReportResult
    from goup_probe.report.sections.base import Section
    from goup_probe.store import Run

__all__ = ["report"]


def report(
    run: Run | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    per_side: int = 3,
    layers: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    ou: bool = True,
    dpi: int = 100,
    sections: Sequence[Section] = (),
) -> ReportResult:
    """Write the report of a run: ``index.html`` (opens offline from disk) and every figure as a PNG.

    A thin entry point over :func:`goup_probe.report.builder.build_report` that
    imports matplotlib only when called.

    Parameters
    ----------
    run : Run or path
        The run or its directory; partial runs give a report of what was captured.
    out : path, optional
        Report folder (default ``RUN_DIR/report``).
    per_side : int
        Per-layer detail for this many most and least Gaussian tensors.
    layers : sequence of str, optional
        Tensors to detail instead.
    steps : sequence of int, optional
        Captured steps of the per-layer figures (default first, middle, last).
    ou : bool
        Include the OU section.
    dpi : int
        PNG resolution.
    sections : sequence of Section, optional
        Your own sections (subclasses of :class:`goup_probe.Section`), appended
        after the built-in ones in the order given.

    Returns
    -------
    ReportResult
        ``index`` (path of index.html), ``figures``, ``sections``, ``notes``, ``seconds``.
    """
    from goup_probe.report.builder import build_report

    return build_report(
        run, out, per_side=per_side, layers=layers, steps=steps, ou=ou, dpi=dpi, sections=sections
    )
