"""goup_probe: is θ − ∂L/∂θ Gaussian, does an OU model hold, does GO-UP train?

Attach a probe to any PyTorch model and optimizer, and get per-layer statistics
of X = θ − g over training, written to Parquet::

    import goup_probe as gp

    with gp.attach(model, optimizer, run_dir="runs/exp1", every=10):
        ...  # the unchanged training loop

    run = gp.load_run("runs/exp1")
    run.stats
"""

from goup_probe import schedule
from goup_probe.capture.probe import Probe, ProbeError, attach
from goup_probe.schedule import every, explicit, log_spaced
from goup_probe.stats.normality import NormalityResult, VerdictThresholds, normality
from goup_probe.store import Run, RunDirectoryError, load_run
from goup_probe.summary import layer_summary

__version__ = "0.1.0"

__all__ = [
    "NormalityResult",
    "Probe",
    "ProbeError",
    "Run",
    "RunDirectoryError",
    "VerdictThresholds",
    "__version__",
    "attach",
    "every",
    "explicit",
    "layer_summary",
    "load_run",
    "log_spaced",
    "normality",
    "schedule",
]
