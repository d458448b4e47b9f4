"""GO-UP on FSDP2 DTensors: σ and μ of the global tensor, and each rank's block of the global draw.

Every rank must call these for the same tensors in the same order (each
:func:`global_moments` is one ``all_gather``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from goup_probe.dist.layout import shard_blocks
from goup_probe.dist.wire import all_gather
from goup_probe.stats.moments import CentralSums, merge_all


def global_moments(
    param: torch.Tensor, grad: torch.Tensor, mode: str = "seed"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """σ = std(θ − g) (unbiased, like ``torch.std``) over the GLOBAL DTensor, and μ in scalar mode.

    Each rank reduces its shard in float64 and one ``all_gather`` of (count,
    mean, M2) per tensor combines them (every rank merges in rank order, so σ is
    bitwise equal on all ranks). Results are 0-dim tensors in the parameter's
    dtype on the local device; σ is 0 for a one-element tensor.
    """
    p, g = param.to_local().detach().reshape(-1), grad.to_local().detach().reshape(-1)
    blocks = shard_blocks(param)
    if not blocks[dist.get_rank()].owner:
        p, g = p[:0], g[:0]
    x = p.to(torch.float64) - g.to(torch.float64)
    n = float(x.numel())
    mean = float(x.mean()) if n else 0.0
    m2 = float(((x - mean) ** 2).sum()) if n else 0.0
    gathered, _ = all_gather(np.array([n, mean, m2]), p.device)
    total = merge_all(
        [CentralSums(float(c), float(mu), float(s2), 0.0, 0.0, math.inf, -math.inf) for c, mu, s2 in gathered]
    )
    numel = int(total.count)
    var = total.m2 / (numel - 1) if numel > 1 else 0.0
    if not math.isfinite(total.mean):
        var = math.nan
    dtype, device = p.dtype, p.device
    sigma = torch.tensor(math.sqrt(var) if var >= 0 else math.nan, dtype=dtype, device=device)
    mu = torch.tensor(total.mean, dtype=dtype, device=device) if mode == "scalar" else None
    return sigma, mu


def local_normal(param: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The calling rank's block of ``torch.randn(param.shape, generator=generator)``.

    Every rank draws the full global tensor from the same-seeded generator and
    keeps its block, so the noise equals the single-process draw for any world
    size and the generators stay in step across ranks. Costs one temporary of
    the tensor's global size (one tensor at a time, not the model).
    """
    local = param.to_local()
    full = torch.randn(param.shape, generator=generator, dtype=local.dtype, device=local.device)
    block = shard_blocks(param)[dist.get_rank()]
    slices = tuple(slice(o, o + s) for o, s in zip(block.offset, block.shape, strict=True))
    return full[slices].reshape(local.shape)


__all__ = ["global_moments", "local_normal"]
