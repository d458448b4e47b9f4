"""Does GO-UP train like the optimizer it replaces? Twin runs and shadow (one-step) fidelity."""

from goup_probe.fidelity.data import BatchStream, ImageData, evaluate
from goup_probe.fidelity.intervals import Interval, summarise, summary_table, t_interval
from goup_probe.fidelity.shadow import SHADOW_COLUMNS, shadow_summary
from goup_probe.fidelity.twin import CompareResult, compare, sgd, write_comparison

__all__ = [
    "SHADOW_COLUMNS",
    "BatchStream",
    "CompareResult",
    "ImageData",
    "Interval",
    "compare",
    "evaluate",
    "sgd",
    "shadow_summary",
    "summarise",
    "summary_table",
    "t_interval",
    "write_comparison",
]
