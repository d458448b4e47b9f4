"""Where this process stands in the process group, and flags agreed across ranks.

Three modes, chosen once by :func:`detect`:

* ``single``: no process group (or a world of one).
* ``replicated``: a process group and no DTensor parameter (DDP, or any loop
  whose parameters are identical on every rank after the gradient all-reduce).
* ``sharded``: at least one parameter is a DTensor (FSDP2 ``fully_shard``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from goup_probe.dist.layout import is_dtensor

MODE_SINGLE = "single"
MODE_REPLICATED = "replicated"
MODE_SHARDED = "sharded"


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group, and how the probe behaves.

    Attributes
    ----------
    rank, world_size : int
        Rank in and size of the default process group (0 and 1 without one).
    backend : str or None
        The default group's backend (``"gloo"``, ``"nccl"``), ``None`` without one.
    mode : str
        ``"single"``, ``"replicated"`` or ``"sharded"`` (see the module docstring).
    """

    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    mode: str = MODE_SINGLE

    @property
    def writes(self) -> bool:
        """Only rank 0 writes the run directory."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether ranks reduce their shards together (collectives on every rank)."""
        return self.mode == MODE_SHARDED

    @property
    def passive(self) -> bool:
        """A replicated run's rank > 0: captures nothing, writes nothing."""
        return self.mode == MODE_REPLICATED and self.rank != 0

    @property
    def distributed(self) -> bool:
        """Whether a process group of more than one rank is in use."""
        return self.mode != MODE_SINGLE

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for ``run.json``."""
        return {"mode": self.mode, "backend": self.backend, "world_size": self.world_size, "writer_rank": 0}


def detect(module: nn.Module) -> DistInfo:
    """Rank, world size and mode for a probe attached to ``module`` (already unwrapped)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    world = dist.get_world_size()
    if world == 1:
        return DistInfo(0, 1, str(dist.get_backend()), MODE_SINGLE)
    sharded = any(is_dtensor(p) for p in module.parameters())
    return DistInfo(
        dist.get_rank(), world, str(dist.get_backend()), MODE_SHARDED if sharded else MODE_REPLICATED
    )


def collective_device() -> torch.device:
    """Device of small control tensors: the current CUDA device under NCCL, else CPU."""
    if dist.is_initialized() and "nccl" in str(dist.get_backend()).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(flags: Sequence[bool], info: DistInfo) -> list[bool]:
    """Element-wise AND of ``flags`` over all ranks (one ``all_reduce``; identity without a group).

    Every rank must call it with the same number of flags.
    """
    if not info.distributed or not flags:
        return [bool(f) for f in flags]
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return [bool(v) for v in t.cpu().tolist()]


def any_rank(flag: bool, info: DistInfo) -> bool:
    """Whether ``flag`` is true on at least one rank."""
    return not agree([not flag], info)[0]


__all__ = [
    "MODE_REPLICATED",
    "MODE_SHARDED",
    "MODE_SINGLE",
    "DistInfo",
    "agree",
    "any_rank",
    "collective_device",
    "detect",
]
