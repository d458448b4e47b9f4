"""goup_probe: test whether θ − ∂L/∂θ is Gaussian, whether an OU model holds, whether GO-UP trains.

Attach a probe to any PyTorch model and optimizer, and get per-layer statistics
of X = θ − g over training, written to Parquet::

    import goup_probe as gp

    with gp.attach(model, optimizer, run_dir="runs/exp1", every=10):
        ...  # the unchanged training loop

    run = gp.load_run("runs/exp1")
    run.stats
"""

from goup_probe import schedule
from goup_probe._version import __version__
from goup_probe.capture.probe import Probe, ProbeError, attach
from goup_probe.capture.quantities import Quantity, QuantityInputs
from goup_probe.capture.timing import ProbeTime
from goup_probe.fidelity import CompareResult, compare, shadow_summary, write_comparison
from goup_probe.optim import GOUP
from goup_probe.ou import OUThresholds, validate_ou
from goup_probe.report import report
from goup_probe.report.sections.base import Section
from goup_probe.schedule import every, explicit, log_spaced
from goup_probe.stats.battery import Statistic
from goup_probe.stats.normality import NormalityResult, VerdictThresholds, normality
from goup_probe.stats.ou import OUFit, fit_ou
from goup_probe.store import Run, RunDirectoryError, load_run
from goup_probe.summary import layer_summary

__all__ = [
    "GOUP",
    "CompareResult",
    "NormalityResult",
    "OUFit",
    "OUThresholds",
    "Probe",
    "ProbeError",
    "ProbeTime",
    "Quantity",
    "QuantityInputs",
    "Run",
    "RunDirectoryError",
    "Section",
    "Statistic",
    "VerdictThresholds",
    "__version__",
    "attach",
    "compare",
    "every",
    "explicit",
    "fit_ou",
    "layer_summary",
    "load_run",
    "log_spaced",
    "normality",
    "report",
    "schedule",
    "shadow_summary",
    "validate_ou",
    "write_comparison",
]
