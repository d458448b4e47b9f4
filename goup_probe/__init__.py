"""goup_probe: test whether θ − ∂L/∂θ is Gaussian, whether an OU model holds, whether GO-UP trains.

Attach a probe to any PyTorch model and optimizer, and get per-layer statistics
of X = θ − g over training, written to Parquet::

    import goup_probe as gp

    with gp.attach(model, optimizer, run_dir="runs/exp1", every=10):
        ...  # the unchanged training loop

    run = gp.load_run("runs/exp1")
    run.stats
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from goup_probe import schedule
from goup_probe._version import __version__
from goup_probe.report import report  # a light entry point: matplotlib is imported when it is called
from goup_probe.schedule import every, explicit, log_spaced

if TYPE_CHECKING:
    from goup_probe.capture.probe import Probe, ProbeError, attach
    from goup_probe.capture.quantities import Quantity, QuantityInputs
    from goup_probe.capture.timing import ProbeTime
    from goup_probe.fidelity import CompareResult, compare, shadow_summary, write_comparison
    from goup_probe.noise import (
        CurvatureResult,
        GradientNoiseResult,
        NoiseProbe,
        NoiseScale,
        TailIndexResult,
        curvature,
        gradient_noise,
        tail_index,
    )
    from goup_probe.optim import GOUP
    from goup_probe.ou import OUThresholds, validate_ou
    from goup_probe.report.sections.base import Section
    from goup_probe.runs import load_runs
    from goup_probe.stats.battery import Statistic
    from goup_probe.stats.normality import NormalityResult, VerdictThresholds, normality
    from goup_probe.stats.ou import OUFit, fit_ou
    from goup_probe.store import Run, RunDirectoryError, load_run
    from goup_probe.summary import layer_summary

_LAZY: dict[str, str] = {
    # public name -> module that defines it; imported on first access (PEP 562), so that
    # `import goup_probe` (and the CLI's --help) does not pay for torch, scipy or matplotlib
    "Probe": "goup_probe.capture.probe",
    "ProbeError": "goup_probe.capture.probe",
    "attach": "goup_probe.capture.probe",
    "Quantity": "goup_probe.capture.quantities",
    "QuantityInputs": "goup_probe.capture.quantities",
    "ProbeTime": "goup_probe.capture.timing",
    "CompareResult": "goup_probe.fidelity",
    "compare": "goup_probe.fidelity",
    "shadow_summary": "goup_probe.fidelity",
    "write_comparison": "goup_probe.fidelity",
    "GOUP": "goup_probe.optim",
    "OUThresholds": "goup_probe.ou",
    "validate_ou": "goup_probe.ou",
    "update_rule": "goup_probe.update_rule",
    "UpdateRule": "goup_probe.update_rule",
    "load_runs": "goup_probe.runs",
    "Section": "goup_probe.report.sections.base",
    "Statistic": "goup_probe.stats.battery",
    "NormalityResult": "goup_probe.stats.normality",
    "VerdictThresholds": "goup_probe.stats.normality",
    "normality": "goup_probe.stats.normality",
    "OUFit": "goup_probe.stats.ou",
    "fit_ou": "goup_probe.stats.ou",
    "Run": "goup_probe.store",
    "RunDirectoryError": "goup_probe.store",
    "load_run": "goup_probe.store",
    "compact_run": "goup_probe.store.compact",
    "disk_usage": "goup_probe.store.usage",
    "layer_summary": "goup_probe.summary",
    "CurvatureResult": "goup_probe.noise.hessian",
    "GradientNoiseResult": "goup_probe.noise.gradient",
    "NoiseProbe": "goup_probe.noise.probe",
    "NoiseScale": "goup_probe.noise.scale",
    "TailIndexResult": "goup_probe.noise.tails",
    "curvature": "goup_probe.noise.hessian",
    "gradient_noise": "goup_probe.noise.gradient",
    "tail_index": "goup_probe.noise.tails",
}


def __getattr__(name: str) -> object:
    """A public name of :data:`_LAZY`, imported from its module on first access and then kept."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "GOUP",
    "CompareResult",
    "CurvatureResult",
    "GradientNoiseResult",
    "NoiseProbe",
    "NoiseScale",
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
    "TailIndexResult",
    "UpdateRule",
    "VerdictThresholds",
    "__version__",
    "attach",
    "compact_run",
    "compare",
    "curvature",
    "disk_usage",
    "every",
    "explicit",
    "fit_ou",
    "gradient_noise",
    "layer_summary",
    "load_run",
    "load_runs",
    "log_spaced",
    "normality",
    "report",
    "schedule",
    "shadow_summary",
    "tail_index",
    "update_rule",
    "validate_ou",
    "write_comparison",
]
