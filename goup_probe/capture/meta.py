"""The metadata of a run (``run.json``): versions, model, optimizer, capture settings, status."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from goup_probe import schema
from goup_probe._version import __version__
from goup_probe.store import utc_now


def optimizer_summary(optimizer: torch.optim.Optimizer | None) -> dict[str, Any] | None:
    """Class, defaults and per-group hyperparameters of an optimizer (None without one)."""
    if optimizer is None:
        return None
    groups = []
    for group in optimizer.param_groups:
        entry = {k: v for k, v in group.items() if k != "params"}
        entry["num_tensors"] = len(group["params"])
        groups.append(entry)
    return {
        "class": type(optimizer).__name__,
        "defaults": dict(optimizer.defaults),
        "param_groups": groups,
    }


def model_summary(module: nn.Module, tracked: set[str], skipped: Mapping[str, str]) -> dict[str, Any]:
    """Class, sizes and every parameter tensor (shape, dtype, whether captured, why skipped)."""
    tensors = []
    for name, p in module.named_parameters():
        entry = {
            "name": name,
            "shape": list(p.shape),
            "dtype": str(p.dtype).replace("torch.", ""),
            "numel": p.numel(),
            "requires_grad": p.requires_grad,
            "tracked": name in tracked,
        }
        if name in skipped:
            entry["skipped"] = skipped[name]
        tensors.append(entry)
    return {
        "class": type(module).__name__,
        "num_tensors": len(tensors),
        "num_params": sum(t["numel"] for t in tensors),
        "num_trainable": sum(t["numel"] for t in tensors if t["requires_grad"]),
        "tensors": tensors,
    }


def initial_meta(
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    tracked: set[str],
    skipped: Mapping[str, str],
    capture: Mapping[str, Any],
    world_size: int,
    distributed: Mapping[str, Any] | None,
    user: Mapping[str, Any],
) -> dict[str, Any]:
    """The content of ``run.json`` when a probe attaches (status "running")."""
    return run_meta(
        "running",
        command=" ".join(sys.argv[:1]),
        model=model_summary(module, tracked, skipped),
        optimizer=optimizer_summary(optimizer),
        capture=dict(capture),
        world_size=world_size,
        distributed=distributed,
        steps=0,
        captured_steps=0,
        errors=[],
        error_count=0,
        user=dict(user),
    )


def probe_meta(
    module: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    tracked: Sequence[Any],
    *,
    mode: str,
    wrappers: Sequence[str],
    config: Mapping[str, Any],
    dist: Any,
    user: Mapping[str, Any],
) -> dict[str, Any]:
    """A probe's ``run.json`` at attach: :func:`initial_meta` with its capture settings and optimizers.

    ``tracked`` are the probe's :class:`~goup_probe.capture.plan.TrackedParam`;
    ``config`` is :meth:`ProbeConfig.describe`; ``dist`` the :class:`DistInfo`.
    """
    several = len(optimizers) > 1
    capture = {
        "mode": mode,
        "optimizer_wrappers": list(wrappers),
        "optimizer_of": {t.name: t.owner for t in tracked} if several else None,
        **config,
    }
    meta = initial_meta(
        module,
        optimizers[0] if optimizers else None,
        tracked={t.name for t in tracked if t.active},
        skipped={t.name: t.skip_reason for t in tracked if not t.active},
        capture=capture,
        world_size=dist.world_size,
        distributed=dist.describe(),
        user=user,
    )
    if several:
        meta["optimizers"] = [optimizer_summary(o) for o in optimizers]
    return meta


def versions() -> dict[str, str]:
    """The versions a run records: goup_probe, Python, torch, numpy and the platform."""
    return {
        "goup_probe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def run_meta(status: str, *, kind: str | None = None, **fields: Any) -> dict[str, Any]:
    """A new ``run.json``: schema version, [kind,] status, start time, versions, then ``fields``.

    The one place that starts a run's metadata, for probe runs (:func:`initial_meta`)
    and comparisons (``kind="compare"``).
    """
    head: dict[str, Any] = {"schema_version": schema.SCHEMA_VERSION}
    if kind is not None:
        head["kind"] = kind
    return {
        **head,
        "status": status,
        "status_reason": "",
        "started_at": utc_now(),
        "ended_at": None,
        "versions": versions(),
        **fields,
    }
