"""On-device reduction of a tensor to moments plus a seeded subsample.

The whole tensor never leaves its device: one pass over it (in bounded chunks)
accumulates shifted power sums in float64, and only a few scalars and a small
gathered subsample are copied to the host.

Power sums are taken around a shift close to the mean (the mean of the
subsample), which keeps the conversion to central moments numerically stable,
and makes sums from several shards or ranks add up exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from goup_probe.stats.normality import Moments

CHUNK_ELEMENTS = 1 << 22
"""Elements reduced at once; bounds the float64 temporaries to 32 MiB each."""


@dataclass(frozen=True)
class PowerSums:
    """Sums of powers of ``x - shift`` over the finite values of a tensor.

    Two ``PowerSums`` with the same shift merge by adding fields, which is how
    sharded tensors are combined.
    """

    shift: float
    numel: int
    count: int
    s1: float
    s2: float
    s3: float
    s4: float
    minimum: float
    maximum: float

    def merge(self, other: PowerSums) -> PowerSums:
        """Sums of the union of both sets of values (shifts must agree)."""
        if self.shift != other.shift:
            raise ValueError("cannot merge power sums taken around different shifts")
        return PowerSums(
            self.shift,
            self.numel + other.numel,
            self.count + other.count,
            self.s1 + other.s1,
            self.s2 + other.s2,
            self.s3 + other.s3,
            self.s4 + other.s4,
            min(self.minimum, other.minimum),
            max(self.maximum, other.maximum),
        )

    def to_moments(self) -> Moments:
        """Mean, std, skewness, excess kurtosis, min and max of the values."""
        n = self.count
        if n == 0:
            nan = float("nan")
            return Moments(self.numel, self.numel, nan, nan, nan, nan, nan, nan)
        d = self.s1 / n
        r2, r3, r4 = self.s2 / n, self.s3 / n, self.s4 / n
        m2 = max(r2 - d * d, 0.0)
        m3 = r3 - 3 * d * r2 + 2 * d**3
        m4 = r4 - 4 * d * r3 + 6 * d * d * r2 - 3 * d**4
        return Moments.from_central_moments(
            numel=self.numel,
            nonfinite=self.numel - n,
            mean=self.shift + d,
            m2=m2,
            m3=m3,
            m4=max(m4, 0.0),
            minimum=self.minimum,
            maximum=self.maximum,
        )

    @property
    def sum_of_squares(self) -> float:
        """Σ x² over the finite values (for the L2 norm), from the shifted sums."""
        c = self.shift
        return self.s2 + 2 * c * self.s1 + self.count * c * c


def flat_view(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's values as a 1-D tensor in logical (row-major) order, detached.

    Copies only when the memory layout requires it (channels_last, transposed
    views); sparse tensors are densified.
    """
    t = tensor.detach()
    if t.is_sparse:
        t = t.coalesce().to_dense()
    return t.reshape(-1)


def gather(flat: torch.Tensor, index: torch.Tensor) -> np.ndarray:
    """Values at ``index`` as a float64 host array."""
    return flat.index_select(0, index).to(torch.float64).cpu().numpy()


def power_sums(
    numel: int,
    chunk: Callable[[int, int], torch.Tensor],
    shift: float,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> PowerSums:
    """Shifted power sums of a tensor given by a chunk accessor.

    Parameters
    ----------
    numel : int
        Number of elements.
    chunk : callable
        ``chunk(start, stop)`` returns those elements as a float64 1-D tensor.
        Lets X = θ − g be reduced without materialising it whole.
    shift : float
        Subtracted before raising to powers; choose it near the mean.
    chunk_elements : int
        Maximum chunk length.
    """
    partial = []
    for start in range(0, max(numel, 1), chunk_elements):
        if numel == 0:
            break
        d = chunk(start, min(start + chunk_elements, numel)) - shift
        finite = torch.isfinite(d)
        all_finite = bool(finite.all())
        if not all_finite:
            d = d[finite]
        if d.numel() == 0:
            partial.append(torch.tensor([0, 0, 0, 0, 0, np.inf, -np.inf], dtype=torch.float64))
            continue
        d2 = d * d
        lo, hi = torch.aminmax(d)
        partial.append(
            torch.stack(
                [
                    torch.tensor(float(d.numel()), dtype=torch.float64, device=d.device),
                    d.sum(),
                    d2.sum(),
                    (d2 * d).sum(),
                    (d2 * d2).sum(),
                    lo,
                    hi,
                ]
            ).cpu()
        )
    if not partial:
        return PowerSums(shift, 0, 0, 0.0, 0.0, 0.0, 0.0, np.nan, np.nan)
    table = torch.stack(partial).numpy()
    count = int(table[:, 0].sum())
    minimum = float(table[:, 5].min()) + shift if count else float("nan")
    maximum = float(table[:, 6].max()) + shift if count else float("nan")
    return PowerSums(
        shift=shift,
        numel=numel,
        count=count,
        s1=float(table[:, 1].sum()),
        s2=float(table[:, 2].sum()),
        s3=float(table[:, 3].sum()),
        s4=float(table[:, 4].sum()),
        minimum=minimum,
        maximum=maximum,
    )


def shift_from_sample(sample: np.ndarray) -> float:
    """A shift near the mean: the mean of the finite values of the subsample (0 if none)."""
    finite = sample[np.isfinite(sample)]
    return float(finite.mean()) if finite.size else 0.0


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
        """L2 norm of the finite values of the whole tensor."""
        return float(np.sqrt(max(self.sums.sum_of_squares, 0.0)))


def reduce_flat(flat: torch.Tensor, index: torch.Tensor) -> Reduction:
    """Moments of a flat tensor and its values at ``index``."""
    sample = gather(flat, index)
    shift = shift_from_sample(sample)
    sums = power_sums(flat.numel(), lambda a, b: flat[a:b].to(torch.float64), shift)
    return Reduction(sums, sample)


def reduce_difference(left: torch.Tensor, right: torch.Tensor, index: torch.Tensor) -> Reduction:
    """Moments of ``left − right`` (flat tensors) computed in float64, chunk by chunk."""
    sample = gather(left, index) - gather(right, index)
    shift = shift_from_sample(sample)

    def chunk(a: int, b: int) -> torch.Tensor:
        return left[a:b].to(torch.float64) - right[a:b].to(torch.float64)

    sums = power_sums(left.numel(), chunk, shift)
    return Reduction(sums, sample)
