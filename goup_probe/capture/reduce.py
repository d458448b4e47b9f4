"""On-device reduction of a parameter tensor to moments plus a seeded subsample.

The whole tensor never leaves its device: its power sums are computed there
(:mod:`goup_probe.capture.sums`) and only a few scalars and a small gathered
subsample are copied to the host. θ, g and X = θ − g are reduced in one pass,
and the update Δ = θ_new − θ_old with its dot product with g in another. With
``kernel="numba"`` a CPU tensor's pass is the compiled loop of
:mod:`goup_probe.capture.fused` instead of the eager chunk operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from goup_probe.capture import fused
from goup_probe.capture.sums import (
    CHUNK_ELEMENTS,
    CHUNK_ELEMENTS_FLOAT64,
    ChunkRows,
    PowerSums,
    chunked_power_sums,
    compute_dtype,
    shift_and_scale,
    shift_from_sample,
    sums_or_masked,
)
from goup_probe.stats.normality import Moments


def flat_view(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's values as a 1-D tensor in logical (row-major) order, detached.

    Copies only when the memory layout requires it (channels_last, transposed
    views); sparse tensors are densified.
    """
    t = tensor.detach()
    if t.is_sparse:
        t = t.coalesce().to_dense()
    return t.reshape(-1)


@dataclass(frozen=True)
class Reduction:
    """What the host receives for one quantity of one tensor."""

    sums: PowerSums
    sample: np.ndarray

    @property
    def moments(self) -> Moments:
        """Moments of the whole tensor."""
        return self.sums.to_moments()

    @property
    def norm(self) -> float:
        """L2 norm of the whole tensor; NaN when it holds NaN/Inf (never a made-up finite number)."""
        if self.sums.count < self.sums.numel:
            return math.nan
        return float(np.sqrt(max(self.sums.sum_of_squares, 0.0)))


def gather_many(tensors: Sequence[torch.Tensor], index: torch.Tensor) -> np.ndarray:
    """Values of each flat tensor at ``index`` as a float64 host array of shape (len(tensors), len(index)).

    One host transfer for all tensors.
    """
    picked = torch.stack([t.index_select(0, index).to(torch.float64) for t in tensors])
    return picked.cpu().numpy()


def _difference(numel: int, dtype: torch.dtype, device: torch.device) -> Callable[..., torch.Tensor]:
    """``diff(a, b)``: a − b written into one buffer reused chunk after chunk (no allocation per chunk).

    Each result is valid until the next call, which is how the chunk loop consumes rows.
    """
    size = min(numel, CHUNK_ELEMENTS if dtype == torch.float32 else CHUNK_ELEMENTS_FLOAT64)
    buffer = torch.empty(size, dtype=dtype, device=device)

    def diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sub(a, b, out=buffer[: a.numel()])

    return diff


def _reduce(
    numel: int,
    rows: ChunkRows,
    samples: Sequence[np.ndarray],
    dtype: torch.dtype,
    dot_with: Callable[[int, int], torch.Tensor] | None = None,
) -> tuple[list[Reduction], float]:
    plan = [shift_and_scale(x, dtype) for x in samples]
    sums, dot = chunked_power_sums(
        numel,
        rows,
        [c for c, _ in plan],
        [s for _, s in plan],
        chunk_elements=CHUNK_ELEMENTS if dtype == torch.float32 else CHUNK_ELEMENTS_FLOAT64,
        dot_with=dot_with,
    )
    return [Reduction(s, x) for s, x in zip(sums, samples, strict=True)], dot


def _fused_sums(
    table: np.ndarray, numel: int, shift: float, row: Callable[[int, int], torch.Tensor]
) -> PowerSums:
    """Power sums from a :mod:`~goup_probe.capture.fused` table (float64, unscaled); masked on NaN/Inf."""
    return sums_or_masked(
        table, numel, shift, 1.0, float32=False, row=row, chunk_elements=CHUNK_ELEMENTS_FLOAT64
    )


def reduce_flat(
    flat: torch.Tensor, index: torch.Tensor, *, precision: str = "fast", kernel: str = "eager"
) -> Reduction:
    """Moments of a flat tensor and its values at ``index``.

    ``kernel="numba"`` reduces a CPU float32/float64 tensor with the compiled loop.
    """
    dtype = compute_dtype(flat, precision)
    sample = gather_many([flat], index)[0]
    if kernel == "numba" and fused.takes(flat):
        shift = shift_from_sample(sample)
        table = fused.value_table(flat, shift)
        return Reduction(_fused_sums(table, flat.numel(), shift, lambda a, b: flat[a:b]), sample)
    (red,), _ = _reduce(flat.numel(), lambda a, b: [flat[a:b].to(dtype)], [sample], dtype)
    return red


def reduce_update(
    theta_new: torch.Tensor,
    theta_old: torch.Tensor,
    grad: torch.Tensor | None,
    index: torch.Tensor,
    *,
    precision: str = "fast",
    old_sample: np.ndarray | None = None,
    kernel: str = "eager",
) -> tuple[Reduction, float]:
    """Moments of the update Δ = θ_new − θ_old and, in the same pass, Σ Δ·g.

    ``old_sample``, θ_old at ``index`` when the host already holds it (the θ
    subsample of the step), saves gathering it again. ``kernel="numba"`` reduces
    CPU float32/float64 tensors with the compiled loop (Δ and Σ Δ·g in float64).

    Returns
    -------
    Reduction, float
        The update's reduction, and its dot product with ``grad`` (NaN without one).
    """
    if old_sample is None:
        new_sample, old_sample = gather_many([theta_new, theta_old], index)
    else:
        new_sample = gather_many([theta_new], index)[0]
    sample = new_sample - old_sample
    with_grad = [theta_new, theta_old] + ([grad] if grad is not None else [])
    if kernel == "numba" and fused.takes(*with_grad):
        shift = shift_from_sample(sample)
        table, dot = fused.update_table(theta_new, theta_old, grad, shift)

        def delta(a: int, b: int) -> torch.Tensor:
            return theta_new[a:b].to(torch.float64) - theta_old[a:b].to(torch.float64)

        return Reduction(_fused_sums(table, theta_new.numel(), shift, delta), sample), dot
    dtype = compute_dtype(theta_new, precision)
    diff = _difference(theta_new.numel(), dtype, theta_new.device)

    def rows(a: int, b: int) -> list[torch.Tensor]:
        return [diff(theta_new[a:b].to(dtype), theta_old[a:b].to(dtype))]

    dot_with = None if grad is None else (lambda a, b: grad[a:b])
    (red,), dot = _reduce(theta_new.numel(), rows, [sample], dtype, dot_with)
    return red, dot


@dataclass(frozen=True)
class Components:
    """Reductions of θ, g and X = θ − g of one tensor, from one pass."""

    theta: Reduction
    grad: Reduction
    x: Reduction


def reduce_components(
    theta: torch.Tensor,
    grad: torch.Tensor,
    index: torch.Tensor,
    *,
    precision: str = "fast",
    kernel: str = "eager",
) -> Components:
    """Moments and subsamples of θ, g and X = θ − g (flat tensors) in one pass.

    Gives the same values as ``reduce_flat(theta)``, ``reduce_flat(grad)`` and
    ``reduce_update(theta, grad, None, index)``, with one pass over the tensors and two
    host transfers in all. ``kernel="numba"`` makes the pass over CPU float32/float64
    tensors the compiled loop (X formed in float64).
    """
    pair = gather_many([theta, grad], index)
    samples = (pair[0], pair[1], pair[0] - pair[1])
    if kernel == "numba" and fused.takes(theta, grad):
        shifts = tuple(shift_from_sample(x) for x in samples)
        tables = fused.component_tables(theta, grad, shifts)
        rows = (
            lambda a, b: theta[a:b],
            lambda a, b: grad[a:b],
            lambda a, b: theta[a:b].to(torch.float64) - grad[a:b].to(torch.float64),
        )
        return Components(
            *(
                Reduction(_fused_sums(table, theta.numel(), c, row), x)
                for table, c, row, x in zip(tables, shifts, rows, samples, strict=True)
            )
        )
    dtype = compute_dtype(theta, precision)
    diff = _difference(theta.numel(), dtype, theta.device)

    def rows(a: int, b: int) -> list[torch.Tensor]:
        t, g = theta[a:b].to(dtype), grad[a:b].to(dtype)
        return [t, g, diff(t, g)]

    reds, _ = _reduce(theta.numel(), rows, samples, dtype)
    return Components(*reds)
