"""The demo's comparison: GO-UP against SGD on the bundled digits with the demo's ResNet.

:func:`goup_probe.fidelity.compare` takes any model factory and data; this module
supplies its defaults (the digits and :class:`~goup_probe.demo.models.SmallResNet`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from goup_probe.demo.data import load_digits_data
from goup_probe.demo.models import SmallResNet
from goup_probe.fidelity.data import ImageData
from goup_probe.fidelity.twin import CompareResult, compare, write_comparison


def digits_setup(
    model_fn: Callable[[], nn.Module] | None = None, data: ImageData | None = None
) -> tuple[Callable[[], nn.Module], ImageData]:
    """``(model_fn, data)``, the missing ones filled in: the bundled digits, a SmallResNet for ``data``."""
    data = load_digits_data() if data is None else data
    if model_fn is None:
        in_channels, num_classes = data.in_channels, data.num_classes

        def model_fn() -> nn.Module:
            return SmallResNet(in_channels, num_classes)

    return model_fn, data


def demo_comparison(
    run_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 150,
    seeds: int = 3,
    num_threads: int | None = 1,
    progress: bool = False,
) -> CompareResult:
    """A short comparison on the digits, written into an existing run directory (the demo's).

    Runs :func:`~goup_probe.fidelity.compare` on the digits with its defaults
    except ``steps``, ``seeds`` (seeds ``seed, seed + 1, ...``) and
    ``num_threads`` (1: the model is tiny), then
    :func:`~goup_probe.fidelity.write_comparison` into ``run_dir``.
    """
    model_fn, data = digits_setup()
    result = compare(
        model_fn,
        data,
        steps=steps,
        seeds=[seed + i for i in range(seeds)],
        num_threads=num_threads,
        progress=progress,
    )
    write_comparison(result, run_dir)
    return result


__all__ = ["demo_comparison", "digits_setup"]
