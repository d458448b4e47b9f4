"""How a DTensor parameter is split across ranks, and global flat indices split by rank.

A ``Shard(d)`` placement on a mesh dimension of size ``n`` splits dimension ``d``
like ``torch.chunk`` (FSDP2's ``Shard(0)``); ``Replicate`` placements keep one
owner per replica group. Indices (a seeded subsample, tracer coordinates) are
global flat indices, so what every rank assembles equals the single-process
selection value for value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch built without distributed
        return None
    return DTensor


def is_dtensor(tensor: object) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor``."""
    cls = _dtensor_type()
    return cls is not None and isinstance(tensor, cls)


@dataclass(frozen=True)
class Block:
    """One rank's rectangular block of a sharded tensor (global offset and local shape)."""

    offset: tuple[int, ...]
    shape: tuple[int, ...]
    owner: bool
    """False for a replica that another rank already counts (Replicate placements)."""


class UnsupportedLayout(ValueError):
    """A DTensor whose placements this module cannot map to global indices."""


def shard_blocks(tensor: torch.Tensor) -> list[Block]:
    """The block each global rank holds of a DTensor with ``Shard``/``Replicate`` placements.

    ``Shard(d)`` on a mesh dimension of size ``n`` splits the current local size
    ``s`` of dimension ``d`` like ``torch.chunk``: chunks of ``ceil(s / n)``, the
    last ones shorter or empty. That is FSDP2's layout (``Shard(0)``).

    Raises
    ------
    UnsupportedLayout
        For ``Partial``/strided placements, or a mesh that does not span the default group.
    """
    from torch.distributed.tensor import Replicate, Shard

    mesh = tensor.device_mesh
    ranks = mesh.mesh.cpu().numpy()
    world = dist.get_world_size()
    if ranks.size != world or sorted(ranks.ravel().tolist()) != list(range(world)):
        raise UnsupportedLayout("the device mesh does not span the default process group")
    global_shape = tuple(int(s) for s in tensor.shape)
    blocks = []
    for rank in range(world):
        coord = [int(c) for c in np.argwhere(ranks == rank)[0]]
        offset = [0] * len(global_shape)
        shape = list(global_shape)
        owner = True
        for mesh_dim, placement in enumerate(tensor.placements):
            n, c = ranks.shape[mesh_dim], coord[mesh_dim]
            if type(placement) is Shard:
                d = placement.dim % max(len(global_shape), 1)
                size = shape[d]
                step = -(-size // n)
                start, stop = min(c * step, size), min((c + 1) * step, size)
                offset[d] += start
                shape[d] = stop - start
            elif isinstance(placement, Replicate):
                owner = owner and c == 0
            else:
                raise UnsupportedLayout(f"placement {placement} is not supported (Shard/Replicate only)")
        blocks.append(Block(tuple(offset), tuple(shape), owner))
    return blocks


@dataclass(frozen=True)
class Selection:
    """Global flat indices split by the rank that holds them.

    ``positions[r]`` are the positions in the global index array of the indices
    rank ``r`` holds (increasing); ``local`` the local flat positions of this
    rank's ones, in the same order.
    """

    size: int
    positions: tuple[np.ndarray, ...]
    local: torch.Tensor

    @property
    def width(self) -> int:
        """Buffer slots per rank: the largest per-rank count."""
        return max((p.size for p in self.positions), default=0)

    def assemble(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """The global-order array from each rank's part (padded parts are trimmed)."""
        out = np.full(self.size, np.nan)
        for pos, part in zip(self.positions, parts, strict=True):
            out[pos] = part[: pos.size]
        return out


def _select(blocks: Sequence[Block], global_shape: tuple[int, ...], index: np.ndarray, rank: int, device):
    if len(global_shape) == 0:
        coords = np.zeros((0, index.size), dtype=np.int64)
    else:
        coords = (
            np.stack(np.unravel_index(index, global_shape))
            if index.size
            else np.zeros((len(global_shape), 0), dtype=np.int64)
        )
    positions = []
    local = np.zeros(0, dtype=np.int64)
    for r, block in enumerate(blocks):
        mask = np.full(index.size, block.owner)
        for d, (o, s) in enumerate(zip(block.offset, block.shape, strict=True)):
            mask &= (coords[d] >= o) & (coords[d] < o + s)
        pos = np.flatnonzero(mask)
        positions.append(pos)
        if r == rank:
            if len(global_shape) == 0:
                local = np.zeros(pos.size, dtype=np.int64)
            else:
                rel = coords[:, pos] - np.asarray(block.offset)[:, None]
                local = np.ravel_multi_index(tuple(rel), block.shape) if pos.size else local
    return Selection(index.size, tuple(positions), torch.from_numpy(np.asarray(local, np.int64)).to(device))


@dataclass(frozen=True)
class ShardedTensor:
    """How one DTensor parameter is split across ranks, with its selections.

    Build it with :func:`shard_layout`.
    """

    rank: int
    numel: int
    blocks: tuple[Block, ...]
    index: Selection
    tracers: Selection | None

    @property
    def block(self) -> Block:
        """The block of the calling rank."""
        return self.blocks[self.rank]

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """The calling rank's shard of ``tensor`` (laid out like the parameter), flat, detached."""
        t = tensor.to_local() if is_dtensor(tensor) else tensor
        return t.detach().reshape(-1)

    def check(self, param: torch.Tensor) -> bool:
        """Whether the computed block matches the actual local shard of ``param``."""
        local_shape = tuple(int(s) for s in param.to_local().shape)
        return local_shape == self.block.shape


def shard_layout(param: torch.Tensor, index: np.ndarray, tracers: np.ndarray | None) -> ShardedTensor:
    """Layout of a DTensor parameter and the split of its global subsample/tracer indices.

    Parameters
    ----------
    param : DTensor
        The parameter.
    index, tracers : ndarray
        Sorted global flat indices of the subsample and of the tracer coordinates.
    """
    blocks = tuple(shard_blocks(param))
    rank = dist.get_rank()
    shape = tuple(int(s) for s in param.shape)
    device = param.to_local().device
    return ShardedTensor(
        rank=rank,
        numel=int(param.numel()),
        blocks=blocks,
        index=_select(blocks, shape, index, rank, device),
        tracers=None if tracers is None else _select(blocks, shape, tracers, rank, device),
    )


__all__ = [
    "Block",
    "Selection",
    "ShardedTensor",
    "UnsupportedLayout",
    "is_dtensor",
    "shard_blocks",
    "shard_layout",
]
