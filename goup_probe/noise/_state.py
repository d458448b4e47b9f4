"""What the on-demand measurements share: parameter selection and leaving the model as found.

A measurement at a fixed θ must not change training: the model's mode, its
buffers (BatchNorm running statistics are updated by a train-mode forward),
every ``.grad`` and the global RNG streams (torch's CPU and CUDA generators:
dropout masks, data order; numpy's and Python's global generators, which a
user's ``loss_fn`` or data may draw from) are the same afterwards as before.
Gradients are taken with ``torch.autograd.grad`` or ``torch.func``, which never
write ``.grad``; the rest is restored by :func:`preserved`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from goup_probe.capture.plan import select_names, unwrap

__all__ = ["Batch", "LossFn", "preserved", "selected_parameters", "split_batch"]

LossFn = Callable[[Any, Any], torch.Tensor]
"""``loss_fn(model(inputs), targets) -> scalar``, the mean over the batch."""
Batch = tuple[Any, Any]
"""``(inputs, targets)``; ``inputs`` a tensor (or a tuple of tensors) with the batch first."""


def selected_parameters(
    model: nn.Module, layers: str | Sequence[str] | Callable[[str], bool] | None
) -> dict[str, torch.Tensor]:
    """The trainable parameters matched by ``layers`` (glob patterns or a predicate), in model order.

    Raises
    ------
    ValueError
        If nothing is selected.
    """
    named = [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]
    chosen = select_names([n for n, _ in named], layers)
    params = {n: p for n, p in named if n in chosen}
    if not params:
        raise ValueError(f"layers={layers!r} selects no trainable parameter")
    return params


def split_batch(batch: object) -> tuple[tuple[torch.Tensor, ...], Any]:
    """``(inputs, targets)`` as a tuple of input tensors and the targets.

    Raises
    ------
    ValueError
        If the batch is not a pair.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError("batches must yield (inputs, targets) pairs")
    inputs, targets = batch
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    return inputs, targets


def _cuda_devices(model: nn.Module) -> list[int]:
    devices = {t.device.index for t in model.parameters() if t.device.type == "cuda"}
    return sorted(d if d is not None else torch.cuda.current_device() for d in devices)


@contextlib.contextmanager
def preserved(model: nn.Module, train: bool | None = None) -> Iterator[nn.Module]:
    """Run a measurement and restore the model's mode, buffers, ``.grad`` and the RNG states afterwards.

    Parameters
    ----------
    model : nn.Module
        The model; yielded in the requested mode.
    train : bool, optional
        Mode to measure in (None: the current mode).
    """
    module = unwrap(model)
    modes = [(m, m.training) for m in module.modules()]
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    grads = [(p, p.grad) for p in module.parameters()]
    host_rngs = (random.getstate(), np.random.get_state())  # noqa: NPY002 (the legacy global stream users draw from)
    with torch.random.fork_rng(devices=_cuda_devices(module)):
        try:
            if train is not None:
                module.train(train)
            yield module
        finally:
            with torch.no_grad():
                for buf, saved in buffers:
                    buf.copy_(saved)
            for m, mode in modes:
                m.training = mode
            for p, g in grads:
                p.grad = g
            random.setstate(host_rngs[0])
            np.random.set_state(host_rngs[1])  # noqa: NPY002
