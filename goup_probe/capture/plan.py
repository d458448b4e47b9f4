"""Which parameter tensors the probe follows, with their seeded indices, and how each is reduced.

:func:`track_parameters` turns a model (and its optimizer) into
:class:`TrackedParam` records in model order; :func:`plan_groups` groups the
small same-size local tensors; the probe then gives each tensor or group one
capture strategy (local, grouped or sharded).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from goup_probe import schema
from goup_probe.capture.batch import MIN_GROUP, group_key, split_group
from goup_probe.capture.config import LayerSelector, ProbeConfig, check_layers
from goup_probe.dist.layout import ShardedTensor, UnsupportedLayout, is_dtensor, shard_layout


@dataclass
class TrackedParam:
    """One parameter tensor the probe follows, with its fixed seeded indices."""

    name: str
    param: torch.Tensor
    group: int | None
    """Index of its param group in its optimizer (None without one)."""
    index: torch.Tensor
    keep: np.ndarray
    tracers: torch.Tensor | None
    skip_status: str | None = None
    skip_reason: str = ""
    shard: ShardedTensor | None = None
    """Layout of a DTensor (FSDP2) parameter; None for plain tensors."""
    owner: int | None = None
    """Index of the optimizer that steps it, among the probe's optimizers (None without one)."""

    @property
    def active(self) -> bool:
        """Whether the tensor is captured (not frozen, unsupported or refused)."""
        return self.skip_status is None

    def skip(self, status: str, reason: str) -> None:
        """Stop capturing this tensor; its captured steps get a status row saying why."""
        self.skip_status, self.skip_reason = status, reason
        self.shard, self.tracers = None, None


@dataclass(frozen=True)
class Group:
    """Same-size tensors reduced together (see :mod:`goup_probe.capture.batch`)."""

    members: tuple[TrackedParam, ...]
    index: torch.Tensor
    """Members' subsample indices, one row each."""

    @property
    def label(self) -> str:
        """The first names of the members, for error messages."""
        names = [m.name for m in self.members]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def stable_seed(seed: int, name: str) -> int:
    """A per-tensor seed that depends only on the probe's seed and the tensor's name."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**32)


def step_subsample_indices(seed: int, name: str, numel: int, sample_size: int, step: int) -> np.ndarray:
    """Sorted subsample indices of tensor ``name`` at ``step`` under ``resample="step"``.

    Drawn from a generator seeded by (seed, tensor, step) alone: the same
    (seed, name, step) always gives the same indices, on every rank and after a
    resume; another step gives other indices (unless the tensor has at most
    ``sample_size`` elements, when every index is taken).
    """
    if numel <= sample_size:
        return np.arange(numel, dtype=np.int64)
    rng = np.random.default_rng([stable_seed(seed, name), int(step)])
    return np.sort(rng.choice(numel, size=sample_size, replace=False)).astype(np.int64)


def resample_indices(
    tracked: Iterable[TrackedParam], groups: Iterable[Group], config: ProbeConfig, step: int
) -> None:
    """Give every active tensor (and group row) the subsample indices of ``step`` (``resample="step"``).

    The index tensors are overwritten in place, so every strategy holding them
    sees the new indices; a sharded tensor's selection is recomputed from the
    new global indices. Tensors with at most ``sample_size`` elements keep all
    their indices. Call it before any capture of the step (the update of a
    step is measured at the indices θ was sampled at before it).
    """
    fresh: dict[str, torch.Tensor] = {}
    for t in tracked:
        numel = t.param.numel()
        if not t.active or numel <= config.sample_size:
            continue
        index_np = step_subsample_indices(config.seed, t.name, numel, config.sample_size, step)
        if t.shard is not None:
            t.shard = dataclasses.replace(t.shard, index=shard_layout(t.param, index_np, None).index)
        new = torch.from_numpy(index_np).to(t.index.device)
        t.index.copy_(new)
        fresh[t.name] = t.index
    for group in groups:
        for row, member in enumerate(group.members):
            if member.name in fresh:
                group.index[row].copy_(fresh[member.name])


def select_names(names: Iterable[str], layers: LayerSelector) -> set[str]:
    """The names matched by ``layers`` (glob patterns or a predicate; None: all).

    Raises
    ------
    TypeError
        When ``layers`` is not a selector (see :func:`~goup_probe.capture.config.check_layers`).
    """
    layers = check_layers(layers)
    names = list(names)
    if layers is None:
        return set(names)
    if callable(layers):
        return {n for n in names if layers(n)}
    patterns = [layers] if isinstance(layers, str) else list(layers)
    return {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose parameter names are recorded.

    Unwraps ``DistributedDataParallel`` and ``DataParallel`` (``.module``) and
    ``torch.compile``'s wrapper (``._orig_mod``), so names match the plain model.
    """
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


_WRAPPER_ATTRIBUTES = ("optimizer", "_optimizer")


def unwrap_optimizer(optimizer: Any) -> tuple[Any, list[str]]:
    """The optimizer inside framework wrappers, and the wrappers' class names (outermost first).

    Follows ``.optimizer`` (accelerate's ``AcceleratedOptimizer``, what a Hugging
    Face ``Trainer`` hands its callbacks, itself an ``Optimizer`` subclass without
    the step hooks' state) and ``._optimizer`` (Lightning's ``LightningOptimizer``)
    for as long as they hold something; the probe's hooks belong on the innermost.
    Anything that is no wrapper is returned as it is.
    """
    wrappers: list[str] = []
    current = optimizer
    for _ in range(16):
        attributes = getattr(current, "__dict__", {})
        inner = next(
            (attributes[a] for a in _WRAPPER_ATTRIBUTES if attributes.get(a) not in (None, current)), None
        )
        if inner is None:
            break
        wrappers.append(type(current).__name__)
        current = inner
    return current, wrappers


def to_float(value: Any) -> float:
    """A learning rate as a float; NaN when the group has none (``lr=None``, no key)."""
    try:
        if isinstance(value, torch.Tensor):
            return float(value.detach().cpu().item())
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return math.nan


def _optimizer_groups(
    optimizers: Sequence[torch.optim.Optimizer], module: nn.Module
) -> dict[int, tuple[int, int]]:
    """Parameter id to (optimizer index, param group index); refuses foreign or shared parameters."""
    group_of: dict[int, tuple[int, int]] = {}
    for oi, optimizer in enumerate(optimizers):
        for gi, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                if id(p) in group_of and group_of[id(p)][0] != oi:
                    raise ValueError(
                        f"optimizers {group_of[id(p)][0]} and {oi} both hold one parameter tensor; "
                        "each tensor must be stepped by one optimizer"
                    )
                group_of[id(p)] = (oi, gi)
    model_ids = {id(p) for p in module.parameters()}
    foreign = [p for p in group_of if p not in model_ids]
    if foreign:
        raise ValueError(
            f"the optimizer holds {len(foreign)} parameter tensor(s) that are not "
            f"parameters of {type(module).__name__}; attach the probe to the model "
            "the optimizer trains"
        )
    return group_of


def track_parameters(
    model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], config: ProbeConfig
) -> list[TrackedParam]:
    """Every selected parameter tensor of ``model`` in model order, captured or skipped with a reason.

    Raises
    ------
    ValueError
        When the model has no parameters, ``layers`` matches none, none is trainable,
        or a selected name cannot be written as UTF-8 (see :func:`check_layer_names`).
    """
    module = unwrap(model)
    named = list(module.named_parameters())  # tied parameters appear once
    if not named:
        raise ValueError(f"{type(module).__name__} has no parameters to probe")
    selected = select_names((n for n, _ in named), config.layers)
    if not selected:
        raise ValueError(f"layers={config.layers!r} matches none of the model's parameter names")
    check_layer_names(n for n, _ in named if n in selected)
    group_of = _optimizer_groups(optimizers, module)
    tracked = [
        _track(name, param, group_of.get(id(param)), config, with_optimizer=bool(optimizers))
        for name, param in named
        if name in selected
    ]
    if not any(t.active for t in tracked):
        raise ValueError(
            f"{type(module).__name__} has no trainable parameter tensors"
            + ("" if config.layers is None else f" matching layers={config.layers!r}")
            + " (all have requires_grad=False or are not in the optimizer)"
        )
    return tracked


def check_layer_names(names: Iterable[str]) -> None:
    """Refuse parameter names that cannot be stored: the tables' ``layer`` column is UTF-8 text.

    A module registered under a name holding a lone surrogate (such as
    ``os.fsdecode`` makes of undecodable bytes) has such a name; leave it out
    with ``layers`` or rename the module.

    Raises
    ------
    ValueError
        Naming the first such layer (its ``repr``).
    """
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"layer {name!r} cannot be recorded: its name is not valid UTF-8 ({exc.reason} at "
                f"position {exc.start}); rename the module or leave it out with layers="
            ) from None


def _track(
    name: str,
    param: torch.Tensor,
    owner_group: tuple[int, int] | None,
    config: ProbeConfig,
    *,
    with_optimizer: bool,
) -> TrackedParam:
    owner, group = owner_group if owner_group is not None else (None, None)
    numel = param.numel()
    rng = np.random.default_rng(stable_seed(config.seed, name))
    index_np = np.sort(rng.choice(numel, size=min(numel, config.sample_size), replace=False)).astype(np.int64)
    keep = np.sort(rng.choice(index_np.size, size=min(index_np.size, config.keep_samples), replace=False))
    n_tr = min(numel, config.tracers)
    tracers_np = np.sort(rng.choice(numel, size=n_tr, replace=False)).astype(np.int64) if n_tr else None
    shard, shard_error = None, ""
    if is_dtensor(param) and param.requires_grad:
        try:
            shard = shard_layout(param, index_np, tracers_np)
        except UnsupportedLayout as exc:
            shard_error = str(exc)
    tracked = TrackedParam(
        name=name,
        param=param,
        group=group,
        owner=owner,
        index=torch.from_numpy(index_np).to(param.device),
        keep=keep,
        tracers=None if tracers_np is None else torch.from_numpy(tracers_np).to(param.device),
        shard=shard,
    )
    if not param.requires_grad:
        tracked.skip(schema.STATUS_FROZEN, "requires_grad is False")
    elif with_optimizer and group is None:
        tracked.skip(schema.STATUS_FROZEN, "not in the optimizer's param groups")
    elif param.is_complex():
        tracked.skip(schema.STATUS_UNSUPPORTED, f"complex dtype {param.dtype} is not tested")
    elif shard_error:
        tracked.skip(schema.STATUS_UNSUPPORTED, shard_error)
    return tracked


def refuse_unshardable(tracked: Iterable[TrackedParam], quantities: Iterable[Any]) -> None:
    """Refuse user quantities that cannot be computed shard by shard when a tensor is sharded.

    Raises
    ------
    ValueError
        Naming the quantity and the first sharded tensor.
    """
    sharded = [t.name for t in tracked if t.active and t.shard is not None]
    if not sharded:
        return
    for quantity in quantities:
        if quantity.phase == "backward" or not quantity.elementwise:
            why = "backward-phase" if quantity.phase == "backward" else "not elementwise"
            raise ValueError(
                f"quantity {quantity.name!r} is {why} and cannot be computed shard by shard on the "
                f"sharded (FSDP2) tensor {sharded[0]!r}; select other layers or drop the quantity"
            )


def plan_groups(tracked: Iterable[TrackedParam]) -> list[Group]:
    """Group the small active local tensors of equal size, dtype and device."""
    by_key: dict[Any, list[TrackedParam]] = {}
    for t in tracked:
        if t.active and t.shard is None:
            key = group_key(t.param)
            if key is not None:
                by_key.setdefault(key, []).append(t)
    return [
        Group(tuple(part), torch.stack([m.index for m in part]))
        for key, members in by_key.items()
        for part in split_group(members, key.numel)
        if len(part) >= MIN_GROUP
    ]
