"""The report folder: the one place that creates it, removes an earlier report's PNGs and writes the page.

The run directory belongs to :mod:`goup_probe.store`; the report folder (by
default ``RUN_DIR/report``, or anywhere the user chooses) belongs to this
module. Only files an earlier report wrote are ever deleted: the PNGs under
``figures/`` when ``index.html`` carries goup_probe's generator mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from goup_probe.store import atomic_write_text

REPORT_DIR = "report"
"""Default report folder inside the run directory."""
INDEX = "index.html"
"""File name of the page."""
FIGURE_DIR = "figures"
"""Sub-folder of the report folder that holds the PNG files."""
_GENERATOR_MARK = 'name="generator" content="goup_probe'


@dataclass(frozen=True)
class FigureFile:
    """One PNG written by the report."""

    relpath: str
    """Path relative to the report folder, with forward slashes (used in the HTML)."""
    title: str
    caption: str
    width: int
    height: int


def prepare_report_dir(out_dir: Path) -> Path:
    """Create the folder; remove the PNGs of an earlier report there (and nothing else).

    Raises
    ------
    ValueError
        If ``out_dir`` exists and is not a directory.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"report folder {str(out_dir)!r} exists and is not a directory")
    index = out_dir / INDEX
    figures = out_dir / FIGURE_DIR
    earlier = index.is_file() and _GENERATOR_MARK in index.read_text("utf-8", errors="replace")[:2000]
    if earlier and figures.is_dir():
        for png in figures.glob("*.png"):
            png.unlink()
    figures.mkdir(parents=True, exist_ok=True)
    return out_dir


def write_index(out_dir: Path, page: str) -> Path:
    """Write the page as ``out_dir/index.html`` atomically; returns its path."""
    index = out_dir / INDEX
    atomic_write_text(index, page)
    return index
