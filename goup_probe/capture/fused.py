"""Fused power sums of CPU tensors: one compiled pass per chunk, when numba is installed.

The eager reduction (:mod:`goup_probe.capture.sums`) spends about nine torch
operations per chunk and quantity, each a pass over memory; for θ, g and X of a
CPU tensor that is most of a captured step (7.3 of 28.6 ms on overhead.py's MLP,
and 4.5 more for the update). With numba installed (``pip install
"goup_probe[fast]"``), CPU tensors of float32 or float64 are reduced instead by
:mod:`goup_probe.capture.numba_kernels`: one loop per chunk reads θ and g once
and adds every power sum of θ, g and X = θ − g in float64; X's extremes come
from a second compiled loop over the chunk, θ's and g's from ``torch.aminmax``.
The sums are as accurate as the eager float64 path (the same float64
arithmetic, summed in another order) at a third of the eager float32 path's
time, and so more accurate than ``precision="fast"``.

The choice is the probe's ``kernel`` option (:data:`KERNELS`): ``"auto"``
(default) uses numba where it is installed and the tensor qualifies
(:func:`takes`), ``"numba"`` requires it, ``"eager"`` never uses it. Other
devices and dtypes, and all sharded tensors, keep the eager path. Results come
back as the per-chunk tables :func:`goup_probe.capture.sums.sums_from_table`
reads, so NaN/Inf values take the same masked float64 path as before.
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType

import numpy as np
import torch

KERNELS = ("auto", "numba", "eager")
"""Values of the probe's ``kernel`` option."""
CHUNK_ELEMENTS = 1 << 16
"""Elements per compiled call: the float64 difference buffer (512 KiB) stays in cache for its min and max."""
_DTYPES = (torch.float32, torch.float64)


@functools.cache
def numba_kernels() -> ModuleType | None:
    """The compiled loops, or None when numba is not installed or cannot compile them.

    Imported and compiled once per process, for float32 and float64, on tiny
    arrays: about 0.3 s with numba's on-disk cache, a few seconds the first time on
    a machine. A failure to compile warns and leaves the eager path in use.
    """
    try:
        from goup_probe.capture import numba_kernels as kernels
    except ImportError:
        return None
    try:
        for dtype in (np.float32, np.float64):
            one, diff = np.ones(1, dtype=dtype), np.empty(1)
            kernels.component_sums(one, one, diff, np.zeros(3), np.empty(14))
            kernels.difference_sums(one, one, diff, 0.0, np.empty(6))
            kernels.difference_dot_sums(one, one, one, diff, 0.0, np.empty(7))
            kernels.value_sums(one, 0.0, np.empty(4))
    except Exception as exc:  # an LLVM or numba failure must not stop training: fall back, loudly
        warnings.warn(
            f"numba is installed but its kernels failed to compile ({type(exc).__name__}: {exc}); "
            "goup_probe reduces CPU tensors with torch operations instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return kernels


def resolve_kernel(kernel: str) -> str:
    """The kernel a probe uses: ``"numba"`` or ``"eager"``.

    Raises
    ------
    ValueError
        For a value outside :data:`KERNELS`.
    ImportError
        For ``"numba"`` when numba is not installed.
    """
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "eager":
        return "eager"
    available = numba_kernels() is not None
    if kernel == "numba" and not available:
        raise ImportError('kernel="numba" needs numba: pip install "goup_probe[fast]" (or kernel="auto")')
    return "numba" if available else "eager"


def takes(*tensors: torch.Tensor | None) -> bool:
    """Whether the fused loops can reduce these flat tensors: non-empty, on the CPU, one float32/64 dtype."""
    first = tensors[0]
    if first is None or first.dtype not in _DTYPES or first.device.type != "cpu" or first.numel() == 0:
        return False
    return all(
        t is not None and t.dtype == first.dtype and t.device.type == "cpu" and t.numel() == first.numel()
        for t in tensors
    )


def _host(tensor: torch.Tensor) -> np.ndarray:
    """The CPU tensor's values as a numpy view (detached, so a leaf that requires grad is read too)."""
    return tensor.detach().numpy()


def _extremes(tensor: torch.Tensor) -> tuple[float, float]:
    lo, hi = torch.aminmax(tensor.detach())
    return lo.item(), hi.item()


def _table(sums: np.ndarray, extremes: np.ndarray) -> np.ndarray:
    """Per-chunk rows [Σd, Σd², Σd³, Σd⁴, min, max] (the layout of ``sums_from_table``)."""
    return np.concatenate([sums, np.broadcast_to(extremes, (len(sums), 2))], axis=1)


def _chunks(numel: int) -> range:
    return range(0, numel, CHUNK_ELEMENTS)


def component_tables(
    theta: torch.Tensor, grad: torch.Tensor, shifts: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-chunk power-sum tables of θ, g and X = θ − g (flat CPU tensors :func:`takes` accepts)."""
    kernels = numba_kernels()
    numel = theta.numel()
    t, g = _host(theta), _host(grad)
    diff = np.empty(min(numel, CHUNK_ELEMENTS))
    chunks = _chunks(numel)
    rows = np.empty((len(chunks), 14))  # θ, g, X sums; X's extremes
    c = np.asarray(shifts, dtype=np.float64)
    for j, start in enumerate(chunks):
        stop = min(start + CHUNK_ELEMENTS, numel)
        kernels.component_sums(t[start:stop], g[start:stop], diff[: stop - start], c, rows[j])
    # after the loops: torch's second intra-op thread spins a while after each call, which slowed
    # the compiled loop sharing its core (θ, g, X of 802 816 values: 1.37 against 0.98 ms)
    return (
        _table(rows[:, 0:4], _extremes(theta)),
        _table(rows[:, 4:8], _extremes(grad)),
        rows[:, 8:14],
    )


def update_table(
    new: torch.Tensor, old: torch.Tensor, grad: torch.Tensor | None, shift: float
) -> tuple[np.ndarray, float]:
    """Per-chunk power-sum table of Δ = new − old and Σ Δ·g (NaN without ``grad``), in one pass."""
    kernels = numba_kernels()
    numel = new.numel()
    a, b = _host(new), _host(old)
    g = _host(grad) if grad is not None else None
    diff = np.empty(min(numel, CHUNK_ELEMENTS))
    chunks = _chunks(numel)
    rows = np.empty((len(chunks), 7))  # Δ sums, Δ's extremes, Σ Δ·g
    for j, start in enumerate(chunks):
        stop = min(start + CHUNK_ELEMENTS, numel)
        out = diff[: stop - start]
        if g is None:
            kernels.difference_sums(a[start:stop], b[start:stop], out, shift, rows[j, :6])
        else:
            kernels.difference_dot_sums(a[start:stop], b[start:stop], g[start:stop], out, shift, rows[j])
    dot = float(rows[:, 6].sum()) if g is not None else float("nan")
    return rows[:, :6], dot


def value_table(values: torch.Tensor, shift: float) -> np.ndarray:
    """Per-chunk power-sum table of one flat CPU tensor."""
    kernels = numba_kernels()
    x = _host(values)
    chunks = _chunks(values.numel())
    rows = np.empty((len(chunks), 4))
    for j, start in enumerate(chunks):
        kernels.value_sums(x[start : start + CHUNK_ELEMENTS], shift, rows[j])
    return _table(rows, _extremes(values))
