"""Gradient noise at a fixed θ: its shape and tail index, the noise scale, and the curvature.

:func:`gradient_noise` (per-sample via ``torch.func`` or per micro-batch),
:func:`tail_index` (Mohammadi et al.'s SαS estimator, Hill's estimator) and
:func:`curvature` (Lanczos and Hutchinson on Hessian-vector products), and
:class:`NoiseProbe`, which runs them inside a probed run. Each leaves the
model, its ``.grad`` and the global RNG states as it found them.
"""

import importlib

_LAZY = {
    "CurvatureBlock": "goup_probe.noise.hessian",
    "CurvatureResult": "goup_probe.noise.hessian",
    "curvature": "goup_probe.noise.hessian",
    "GradientNoiseResult": "goup_probe.noise.gradient",
    "gradient_noise": "goup_probe.noise.gradient",
    "NoiseProbe": "goup_probe.noise.probe",
    "NoiseScale": "goup_probe.noise.scale",
    "TailIndexResult": "goup_probe.noise.tails",
    "sample_sas": "goup_probe.noise.tails",
    "tail_index": "goup_probe.noise.tails",
}
"""Public name -> its module, imported on first access (PEP 562): ``goup_probe.noise.inrun``, which
the report reads run tables with, then loads no torch."""


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
    "CurvatureBlock",
    "CurvatureResult",
    "GradientNoiseResult",
    "NoiseProbe",
    "NoiseScale",
    "TailIndexResult",
    "curvature",
    "gradient_noise",
    "sample_sas",
    "tail_index",
]
