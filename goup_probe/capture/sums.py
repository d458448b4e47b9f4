"""Shifted power sums of tensors on their device: the arithmetic under the probe's moments.

One pass over a quantity, in bounded chunks, computes Σd, Σd², Σd³, Σd⁴
(d = x − shift) plus its minimum and maximum with six device reductions per
chunk; all chunks' sums come back to the host in a single transfer, where they
are added in float64.

Precision. Float32 (and 16-bit) tensors of 2¹² elements or more are reduced in
float32 by default (``precision="fast"``): the shift is the float32-rounded
subsample mean, so x − shift is exact near the mean, values are scaled by a
power of two when needed so that d⁴ stays a normal float32, and each chunk's
sums (torch's cascade sums over 2¹⁸ elements) are added in float64. Against
float64 on 2¹⁸-element tensors (normal, uniform, t(3), log-normal, offset,
10⁻¹¹- and 10⁷-scaled) this moves the standard deviation by < 10⁻⁶ relative,
and skewness and excess kurtosis by < 10⁻⁵ absolute on light-tailed data and
< 10⁻⁴ relative on heavy-tailed data, far below their sampling error
(√(6/n), √(24/n)), in less than half the time (θ, g and X of 10⁶ elements:
2.4 ms against 5.5 ms on 2 CPU cores). ``precision="float64"``, smaller
tensors and float64 tensors take the float64 path. Values that are NaN or Inf,
and fourth powers that overflow or may have underflowed, send a quantity to a
masked float64 path, so counts and moments always describe the finite values.

The sums are :class:`~goup_probe.stats.moments.PowerSums` (re-exported here);
their conversion to moments is :mod:`goup_probe.stats.moments`, the one rule
shared with the sharded reduction (:mod:`goup_probe.capture.distributed`) and GO-UP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from goup_probe.stats.moments import PowerSums

CHUNK_ELEMENTS = 1 << 18
"""Elements per quantity reduced at once on the float32 path (1 MiB per temporary).
Small enough to stay in cache across the passes of a chunk and to be served by
the allocator without page faults: the chunk sums alone of θ, g and X of a
10⁶-element tensor take 1.3 ms with 2¹⁸, 2.0 ms with 2¹⁶ and 4.3 ms with 2²⁰
(2 CPU cores)."""
CHUNK_ELEMENTS_FLOAT64 = 1 << 17
"""The same bound in bytes on the float64 path."""
PRECISIONS = ("fast", "float64")
"""``"fast"``: large float32/16-bit tensors are reduced in float32 (chunk sums added
in float64); ``"float64"``: every value is converted to float64 first."""
FAST_MIN_NUMEL = 1 << 12
"""Tensors smaller than this are always reduced in float64 (it costs next to nothing there)."""
_FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLOAT32_SAFE_SPREAD = (2.0**-20, 2.0**12)
"""σ range kept unscaled on the float32 path: there d⁴ of a value at σ lies between 2⁻⁸⁰ and 2⁴⁸,
and values up to 10⁴ σ stay below float32's overflow (3·10³⁸). Outside it values are scaled by a
power of two; an overflow anyway gives Inf (float64 fallback), an underflow see :func:`sums_from_table`."""


def _masked_row_sums(d: torch.Tensor) -> np.ndarray:
    """[count, Σd, Σd², Σd³, Σd⁴, min d, max d] of the finite values of a float64 row (slow path)."""
    d = d[torch.isfinite(d)]
    if d.numel() == 0:
        return np.array([0.0, 0.0, 0.0, 0.0, 0.0, np.inf, -np.inf])
    d2 = d * d
    lo, hi = torch.aminmax(d)
    sums = torch.stack([d.sum(), d2.sum(), torch.dot(d2, d), torch.dot(d2, d2), lo, hi]).cpu().numpy()
    return np.concatenate([[float(d.numel())], sums])


class Workspace:
    """Reusable temporaries of one chunk's sums: d = (x − shift)·scale and d², written with ``out=``.

    Fresh temporaries of a chunk (1 MiB each) are new allocations at every chunk
    and quantity, each paid in page faults; writing into two buffers allocated
    once per call gives the same values bit for bit (the same element-wise
    products and the same reductions over contiguous, aligned memory) in about a
    quarter of the time (a 2¹⁸-element float32 chunk: 0.26 against 0.95 ms on one
    thread, 0.12 against 1.1–130 ms on two threads of a loaded 2-core machine).
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}

    def buffers(self, like: torch.Tensor, count: int) -> list[torch.Tensor]:
        """``count`` 1-D buffers of ``like``'s dtype and device, each sliced to ``like.numel()`` elements."""
        key = (like.dtype, like.device)
        held = self._buffers.setdefault(key, [])
        n = like.numel()
        for i in range(count):
            if i == len(held):
                held.append(torch.empty(n, dtype=like.dtype, device=like.device))
            elif held[i].numel() < n:
                held[i] = torch.empty(n, dtype=like.dtype, device=like.device)
        return [b[:n] for b in held[:count]]


def _chunk_sums(raw: torch.Tensor, shift: float, scale: float, work: Workspace | None = None) -> torch.Tensor:
    """[Σd, Σd², Σd³, Σd⁴, min, max] of one chunk, d = (raw − shift)·scale, in raw's dtype, on its device.

    Six reductions that stay on the device (one host transfer for all chunks
    and rows later). ``min`` and ``max`` are of the raw values, so they are exact.
    ``work`` holds the temporaries (a fresh one when None); raw must be 1-D.
    """
    work = Workspace() if work is None else work
    d_buf, d2 = work.buffers(raw, 2)
    lo, hi = torch.aminmax(raw)
    d = raw
    if shift != 0.0:
        d = torch.sub(raw, shift, out=d_buf)
    if scale != 1.0:
        d = torch.mul(d, scale, out=d_buf)
    torch.mul(d, d, out=d2)
    s1, s2 = d.sum(), d2.sum()
    # Σd⁴ (all terms positive) is summed by torch's cascade sum: a float32 BLAS dot product of d²
    # with itself is 100× less accurate on heavy-tailed data (t(3): 1.2e-6 against 1.6e-8 relative).
    # Σd³ cancels, so its error is set by the rounding of the terms: the dot product is as accurate
    # there (3e-7 relative to Σ|d|³ either way) and saves a pass.
    s3 = torch.dot(d2, d)
    s4 = d2.mul_(d2).sum()
    return torch.stack([s1, s2, s3, s4, lo, hi])


ChunkRows = Callable[[int, int], Sequence[torch.Tensor]]
"""``rows(start, stop)`` returns elements ``start:stop`` of each of k quantities,
as 1-D tensors of the compute dtype."""


def chunked_power_sums(
    numel: int,
    rows: ChunkRows,
    shifts: Sequence[float],
    scales: Sequence[float] | None = None,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
    dot_with: Callable[[int, int], torch.Tensor] | None = None,
) -> tuple[list[PowerSums], float]:
    """Shifted power sums of k same-length quantities, chunk by chunk, with one host transfer.

    Each chunk's sums are reduced on the device in the dtype ``rows`` returns
    (float32 on the fast path, float64 otherwise) and added up in float64 on the
    host. A quantity whose sums cannot be trusted (:func:`sums_from_table`: NaN/Inf
    values, a fourth power that overflowed or may have underflowed) is redone in
    float64 with the non-finite values masked out, so counts and moments always
    describe the finite values.

    Parameters
    ----------
    numel : int
        Elements of each quantity.
    rows : callable
        ``rows(start, stop)`` returns the k quantities' elements ``start:stop``.
    shifts : sequence of float
        One shift per quantity (exactly representable in the compute dtype).
    scales : sequence of float, optional
        One power of two per quantity: d = (x − shift)·scale keeps d⁴ in the
        range of float32; the sums are unscaled exactly on the host. Default 1.
    chunk_elements : int
        Elements per chunk and quantity; bounds the device temporaries.
    dot_with : callable, optional
        ``dot_with(start, stop)`` gives a tensor whose dot product with the
        first quantity is accumulated in the same pass (the update's Σ Δ·g).

    Returns
    -------
    list of PowerSums, float
        One per quantity, and the dot product (NaN without ``dot_with``).
    """
    k = len(shifts)
    scales = [1.0] * k if scales is None else list(scales)
    if numel == 0:
        empty = [PowerSums(float(c), 0, 0, 0.0, 0.0, 0.0, 0.0, np.nan, np.nan) for c in shifts]
        return empty, (0.0 if dot_with is not None else math.nan)
    tables = []
    float32 = False
    work = Workspace()
    for start in range(0, numel, chunk_elements):
        stop = min(start + chunk_elements, numel)
        chunk = rows(start, stop)
        float32 = chunk[0].dtype != torch.float64
        table = [_chunk_sums(r, c, s, work) for r, c, s in zip(chunk, shifts, scales, strict=True)]
        if dot_with is not None:
            (product,) = work.buffers(chunk[0], 1)
            dot = torch.mul(chunk[0], dot_with(start, stop).to(chunk[0].dtype), out=product).sum()
            table.append(dot.expand(6))
        tables.append(torch.stack(table))
    host = torch.stack(tables).to(torch.float64).cpu().numpy()  # (chunks, k [+1], 6)
    dot_total = float(host[:, k, 0].sum()) if dot_with is not None else math.nan
    result = [
        sums_or_masked(
            host[:, i, :],
            numel,
            float(c),
            s,
            float32=float32,
            row=lambda a, b, i=i: rows(a, b)[i],
            chunk_elements=chunk_elements,
        )
        for i, (c, s) in enumerate(zip(shifts, scales, strict=True))
    ]
    return result, dot_total


def sums_or_masked(
    table: np.ndarray,
    numel: int,
    shift: float,
    scale: float,
    *,
    float32: bool,
    row: Callable[[int, int], torch.Tensor],
    chunk_elements: int,
) -> PowerSums:
    """:func:`sums_from_table`, or the finite values' sums in float64 when the table cannot be trusted.

    ``row(start, stop)`` gives the quantity's elements for the masked float64 pass.
    """
    sums = sums_from_table(table, numel, shift, scale, float32=float32)
    if sums is None:
        sums = _masked_power_sums(numel, row, shift, chunk_elements)
    return sums


def sums_from_table(
    table: np.ndarray, numel: int, shift: float, scale: float, *, float32: bool
) -> PowerSums | None:
    """Power sums from per-chunk rows [Σd, Σd², Σd³, Σd⁴, min, max] of d = (x − shift)·scale.

    Returns None — redo the quantity in float64 with masking — when a sum is not
    finite (NaN/Inf values, a fourth power that overflowed) or, for sums taken in
    float32, when even the largest |d| is below 2⁻²⁰: then d⁴ may have underflowed
    without a trace (a tensor of tiny values whose subsample was constant, so no
    scale could be chosen). Above that bound every lost term is < 10⁻¹³ of the largest.
    """
    if not np.isfinite(table).all():
        return None
    minimum, maximum = float(table[:, 4].min()), float(table[:, 5].max())
    extent = max(abs(minimum - shift), abs(maximum - shift)) * scale
    if float32 and 0 < extent < _FLOAT32_SAFE_SPREAD[0]:
        return None
    totals = table[:, :4].sum(axis=0)
    inv = 1.0 / scale  # a power of two: unscaling is exact
    return PowerSums(
        shift=shift,
        numel=numel,
        count=numel,
        s1=float(totals[0]) * inv,
        s2=float(totals[1]) * inv**2,
        s3=float(totals[2]) * inv**3,
        s4=float(totals[3]) * inv**4,
        minimum=minimum,
        maximum=maximum,
    )


def _masked_power_sums(
    numel: int, row: Callable[[int, int], torch.Tensor], shift: float, chunk_elements: int
) -> PowerSums:
    """Power sums of the finite values only, in float64 (the slow path for NaN/Inf or overflow)."""
    parts = np.stack(
        [
            _masked_row_sums(row(a, min(a + chunk_elements, numel)).to(torch.float64) - shift)
            for a in range(0, numel, chunk_elements)
        ]
    )
    count = int(parts[:, 0].sum())
    return PowerSums(
        shift=shift,
        numel=numel,
        count=count,
        s1=float(parts[:, 1].sum()),
        s2=float(parts[:, 2].sum()),
        s3=float(parts[:, 3].sum()),
        s4=float(parts[:, 4].sum()),
        minimum=float(parts[:, 5].min()) + shift if count else float("nan"),
        maximum=float(parts[:, 6].max()) + shift if count else float("nan"),
    )


def power_sums(
    numel: int,
    chunk: Callable[[int, int], torch.Tensor],
    shift: float,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> PowerSums:
    """Shifted power sums of one tensor given by a chunk accessor, in float64.

    Parameters
    ----------
    numel : int
        Number of elements.
    chunk : callable
        ``chunk(start, stop)`` returns those elements as a 1-D tensor (converted to float64).
    shift : float
        Subtracted before raising to powers; choose it near the mean.
    chunk_elements : int
        Maximum chunk length.
    """
    (sums,), _ = chunked_power_sums(
        numel, lambda a, b: [chunk(a, b).to(torch.float64)], [shift], chunk_elements=chunk_elements
    )
    return sums


def shift_from_sample(sample: np.ndarray) -> float:
    """A shift near the mean: the mean of the finite values of the subsample (0 if none)."""
    return shift_and_scale(sample, torch.float64)[0]


def compute_dtype(tensor: torch.Tensor, precision: str = "fast") -> torch.dtype:
    """The dtype a tensor's power sums are computed in.

    float32 for float32, float16 and bfloat16 tensors of at least
    :data:`FAST_MIN_NUMEL` elements when ``precision="fast"``; float64 otherwise
    (small tensors cost nothing either way, and float64 tensors keep their precision).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    fast = precision == "fast" and tensor.dtype in _FAST_DTYPES and tensor.numel() >= FAST_MIN_NUMEL
    return torch.float32 if fast else torch.float64


def shift_and_scale(sample: np.ndarray, dtype: torch.dtype) -> tuple[float, float]:
    """Shift and power-of-two scale for the power sums of a quantity, from its subsample.

    In float64: the subsample mean, unscaled. In float32 the shift is rounded to
    float32 (so that x − shift is exact for x near it), dropped when the mean is
    within σ/16 of 0 (shifting would cost a pass and gain nothing), and values
    are scaled by a power of two when σ lies outside [2⁻²⁰, 2¹²], so that d⁴
    neither underflows nor overflows float32 for any value within 10⁴ σ.
    Non-finite values of the subsample are ignored.
    """
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 1.0
    shifts, scales = shifts_and_scales(finite[None, :], dtype)
    return float(shifts[0]), float(scales[0])


def shifts_and_scales(samples: np.ndarray, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shift_and_scale` for every row of ``samples`` (finite values, shape (..., n)) at once."""
    shifts = samples.mean(axis=-1)
    if dtype == torch.float64:
        return shifts, np.ones_like(shifts)
    shifts = shifts.astype(np.float32).astype(np.float64)
    spread = np.sqrt(np.mean((samples - shifts[..., None]) ** 2, axis=-1))
    spread_ok = spread > 0
    shifts = np.where(spread_ok & (np.abs(shifts) <= spread / 16), 0.0, shifts)
    low, high = _FLOAT32_SAFE_SPREAD
    rescale = spread_ok & ((spread < low) | (spread > high))
    exponent = np.clip(np.round(np.log2(np.where(rescale, spread, 1.0))), -120, 120)
    return shifts, np.where(rescale, np.ldexp(1.0, -exponent.astype(np.int64)), 1.0)
