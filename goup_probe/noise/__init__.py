"""Gradient noise at a fixed θ: its shape and tail index, the noise scale, and the curvature.

:func:`gradient_noise` (per-sample via ``torch.func`` or per micro-batch),
:func:`tail_index` (Mohammadi et al.'s SαS estimator, Hill's estimator) and
:func:`curvature` (Lanczos and Hutchinson on Hessian-vector products), and
:class:`NoiseProbe`, which runs them inside a probed run. Each leaves the
model, its ``.grad`` and the global RNG states as it found them.
"""

from goup_probe.noise.curvature import CurvatureBlock, CurvatureResult, curvature
from goup_probe.noise.gradient import GradientNoiseResult, gradient_noise
from goup_probe.noise.probe import NoiseProbe
from goup_probe.noise.scale import NoiseScale
from goup_probe.noise.tails import TailIndexResult, sample_sas, tail_index

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
