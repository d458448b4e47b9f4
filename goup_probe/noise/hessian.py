"""Curvature of the loss at a fixed θ: top Hessian eigenvalues (Lanczos) and trace (Hutchinson).

Both use only Hessian-vector products Hv, by double backward: the gradient is
taken once with ``create_graph=True`` and each Hv is the gradient of ⟨∇L, v⟩,
so one HVP costs about two backward passes and nothing of size P² is formed.

* **Top eigenvalues**: Lanczos with full re-orthogonalisation from a seeded
  Gaussian start, stopped when the Ritz residuals |β_m s_{m,i}| of the wanted
  eigenvalues fall below ``tol`` · max|θ_i| or after ``iters`` HVPs. The
  eigenvalues are the largest *algebraic* ones (a saddle's negative
  eigenvalues are not reported as "top").
* **Trace**: Hutchinson's estimator tr H ≈ mean_p vᵀHv over ``probes``
  Rademacher vectors v, with its standard error sd/√probes. The same probes
  give the trace of each tensor's diagonal block H_tt (E[v_t vᵀ_s] = 0 for s ≠ t).
* **Per tensor block**: with ``blocks=True`` Lanczos also runs on each
  diagonal block H_tt (HVPs with v zero outside tensor t), ``iters`` HVPs each.

Everything runs on the parameters' device; vectors are float64 and cast to
the parameter dtype for each product. The model's mode, buffers, ``.grad`` and
the global RNG state are restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from goup_probe import schema
from goup_probe.noise._state import Batch, LossFn, preserved, selected_parameters, split_batch

__all__ = ["CurvatureBlock", "CurvatureResult", "curvature"]

_Spectrum = tuple[tuple[float, ...], tuple[float, ...], int]
"""Eigenvalues, residual bounds, Lanczos steps."""
MODEL = schema.MODEL_ROW
"""Name of the whole-model block in :attr:`CurvatureResult.blocks` and ``to_frame()``."""


@dataclass(frozen=True)
class CurvatureBlock:
    """Curvature of one block of the Hessian (the whole model, or one tensor's diagonal block).

    Attributes
    ----------
    name : str
        Tensor name, or ``"<model>"``.
    numel : int
        Size of the block.
    eigenvalues : tuple of float
        The largest eigenvalues, descending (empty if not computed).
    residuals : tuple of float
        Lanczos residual bound of each eigenvalue (an eigenvalue of H lies within it).
    lanczos_steps : int
        HVPs the eigenvalues took.
    trace, trace_se : float
        Hutchinson trace and its standard error (NaN without ``trace=True``).
    """

    name: str
    numel: int
    eigenvalues: tuple[float, ...]
    residuals: tuple[float, ...]
    lanczos_steps: int
    trace: float
    trace_se: float


@dataclass(frozen=True)
class CurvatureResult:
    """Top Hessian eigenvalues and trace, for the whole model and per tensor.

    Attributes
    ----------
    model : CurvatureBlock
        The whole (selected) Hessian.
    blocks : mapping of str to CurvatureBlock
        Each tensor's diagonal block.
    hvps : int
        Hessian-vector products used in all.
    probes : int
        Hutchinson probes (0 without the trace).
    note : str
        What was done.
    """

    model: CurvatureBlock
    blocks: Mapping[str, CurvatureBlock]
    hvps: int
    probes: int
    note: str

    @property
    def top_eigenvalue(self) -> float:
        """The largest eigenvalue of the whole Hessian (NaN if not computed)."""
        return self.model.eigenvalues[0] if self.model.eigenvalues else float("nan")

    def to_frame(self) -> pd.DataFrame:
        """One row per block (the model first): eigenvalues as ``eig_1`` ..., trace and its SE."""
        rows = []
        for block in (self.model, *self.blocks.values()):
            row: dict[str, object] = {"block": block.name, "numel": block.numel}
            for i, (lam, res) in enumerate(zip(block.eigenvalues, block.residuals, strict=True)):
                row[f"eig_{i + 1}"], row[f"eig_{i + 1}_residual"] = lam, res
            row.update(lanczos_steps=block.lanczos_steps, trace=block.trace, trace_se=block.trace_se)
            rows.append(row)
        return pd.DataFrame(rows)


class _Hessian:
    """Hv for flat float64 vectors over the selected parameters, counting the products."""

    def __init__(self, loss: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.sizes = [p.numel() for p in self.params]
        self.count = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        pieces = [
            piece.view_as(p).to(p.dtype)
            for piece, p in zip(torch.split(v, self.sizes), self.params, strict=True)
        ]
        hv = torch.autograd.grad(
            self.grads, self.params, grad_outputs=pieces, retain_graph=True, allow_unused=True
        )
        self.count += 1
        flat = [
            (h if h is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
            for h, p in zip(hv, self.params, strict=True)
        ]
        return torch.cat(flat)


def _lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    top: int,
    iters: int,
    tol: float,
) -> _Spectrum:
    """Largest ``top`` Ritz values, their residual bounds, and the number of products used."""
    dim = start.numel()
    steps = min(iters, dim)
    basis = [start / start.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    values, vectors = np.zeros(0), np.zeros((0, 0))
    for j in range(steps):
        w = matvec(basis[j])
        alphas.append(float(basis[j] @ w))
        stacked = torch.stack(basis)
        for _ in range(2):  # full re-orthogonalisation, twice is enough
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        values, vectors = np.linalg.eigh(_tridiagonal(alphas, betas))
        wanted = min(top, len(values))
        residuals = np.abs(beta * vectors[-1, ::-1][:wanted])
        scale = max(float(np.max(np.abs(values))), 1e-300)
        if j + 1 >= min(top, dim) and (np.all(residuals <= tol * scale) or beta <= 1e-12 * scale):
            break
        if j + 1 < steps:
            betas.append(beta)
            basis.append(w / beta)
    wanted = min(top, len(values))
    order = np.argsort(values)[::-1][:wanted]
    residuals = np.abs(beta * vectors[-1, order])
    return tuple(float(v) for v in values[order]), tuple(float(r) for r in residuals), len(alphas)


def _tridiagonal(alphas: list[float], betas: list[float]) -> np.ndarray:
    t = np.diag(np.asarray(alphas, dtype=np.float64))
    k = len(alphas) - 1
    if k > 0:
        off = np.asarray(betas[:k], dtype=np.float64)
        t += np.diag(off, 1) + np.diag(off, -1)
    return t


def _hutchinson(
    hessian: _Hessian, names: list[str], probes: int, gen: torch.Generator, device: torch.device
) -> dict[str, tuple[float, float]]:
    """Trace and SE of the whole Hessian and of each tensor block from Rademacher probes."""
    dim = sum(hessian.sizes)
    values = np.zeros((probes, len(names)))
    for p in range(probes):
        v = (torch.randint(0, 2, (dim,), generator=gen).to(torch.float64) * 2 - 1).to(device)
        products = v * hessian(v)
        values[p] = [float(s.sum()) for s in torch.split(products, hessian.sizes)]
    totals = values.sum(axis=1, keepdims=True)
    out = {}
    for i, name in enumerate([*names, MODEL]):
        column = totals[:, 0] if name == MODEL else values[:, i]
        se = float(column.std(ddof=1)) / math.sqrt(probes) if probes > 1 else float("nan")
        out[name] = (float(column.mean()), se)
    return out


def _block_lanczos(
    hessian: _Hessian, k: int, top: int, iters: int, tol: float, start: torch.Tensor
) -> _Spectrum:
    """Lanczos on tensor ``k``'s diagonal block (HVPs with v zero outside the block)."""
    offsets = np.cumsum([0, *hessian.sizes])
    lo, hi = int(offsets[k]), int(offsets[k + 1])
    total = int(offsets[-1])

    def matvec(v: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(total, dtype=torch.float64, device=v.device)
        full[lo:hi] = v
        return hessian(full)[lo:hi]

    return _lanczos(matvec, start, top, iters, tol)


def _measure(
    module: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    layers: str | Sequence[str] | Callable[[str], bool] | None,
    lanczos: tuple[int, int, float, bool],
    probes: int,
    seed: int,
) -> tuple[list[str], list[int], _Spectrum, list[_Spectrum], dict[str, tuple[float, float]], int]:
    """Names, sizes, whole and per-block spectra, traces and the HVP count."""
    top, iters, tol, blocks = lanczos
    gen = torch.Generator().manual_seed(int(seed))
    params = selected_parameters(module, layers)
    device = next(iter(params.values())).device
    inputs, targets = split_batch(batch)
    inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
    targets = targets.to(device) if isinstance(targets, torch.Tensor) else targets
    hessian = _Hessian(loss_fn(module(*inputs), targets), list(params.values()))

    def start(size: int) -> torch.Tensor:
        return torch.randn(size, generator=gen, dtype=torch.float64).to(device)

    empty: _Spectrum = ((), (), 0)
    whole = _lanczos(hessian, start(sum(hessian.sizes)), top, iters, tol) if top else empty
    per_block = [
        _block_lanczos(hessian, k, top, iters, tol, start(size)) if top and blocks else empty
        for k, size in enumerate(hessian.sizes)
    ]
    traces = _hutchinson(hessian, list(params), probes, gen, device) if probes else {}
    return list(params), hessian.sizes, whole, per_block, traces, hessian.count


def curvature(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    *,
    top: int = 1,
    trace: bool = True,
    iters: int = 50,
    probes: int = 100,
    blocks: bool = True,
    layers: str | Sequence[str] | Callable[[str], bool] | None = None,
    tol: float = 1e-6,
    seed: int = 0,
    train: bool | None = None,
) -> CurvatureResult:
    """Top Hessian eigenvalue(s) and Hutchinson trace of the loss on one batch, whole and per tensor.

    Parameters
    ----------
    model : nn.Module
        The model (mode, buffers, ``.grad`` and the global RNG state restored afterwards).
    loss_fn : callable
        ``loss_fn(model(*inputs), targets)``, a scalar.
    batch : (inputs, targets)
        The data the loss is evaluated on.
    top : int
        Number of largest eigenvalues (0: none).
    trace : bool
        Estimate the trace (``probes`` HVPs).
    iters : int
        Most Lanczos steps (HVPs) per block.
    probes : int
        Rademacher probes of Hutchinson's estimator (at least 2).
    blocks : bool
        Also compute the eigenvalues of each tensor's diagonal block.
    layers : str, sequence of str or callable, optional
        Which parameters span the Hessian (glob patterns or a predicate; None: all).
    tol : float
        Relative Ritz residual at which Lanczos stops.
    seed : int
        Seed of the Lanczos start vectors and the probes.
    train : bool, optional
        Mode to evaluate in (None: the current mode).

    Returns
    -------
    CurvatureResult

    Raises
    ------
    ValueError
        For a negative ``top``, ``iters`` < 1, ``probes`` < 2 with ``trace``, or no parameter selected.
    """
    if top < 0 or iters < 1 or (trace and probes < 2):
        raise ValueError(f"need top >= 0, iters >= 1, probes >= 2; got {top}, {iters}, {probes}")
    with preserved(model, train) as module:
        names, sizes, whole, per_block, traces, count = _measure(
            module, loss_fn, batch, layers, (top, iters, tol, blocks), probes if trace else 0, seed
        )
    nan = (float("nan"), float("nan"))
    result_blocks = {
        name: CurvatureBlock(name, size, *per_block[k], *traces.get(name, nan))
        for k, (name, size) in enumerate(zip(names, sizes, strict=True))
    }
    note = (
        f"Lanczos (top {top}, at most {iters} steps per block, tol {tol:g}); "
        f"Hutchinson with {probes if trace else 0} Rademacher probes; {count} HVPs"
    )
    return CurvatureResult(
        model=CurvatureBlock(MODEL, sum(sizes), *whole, *traces.get(MODEL, nan)),
        blocks=result_blocks,
        hvps=count,
        probes=probes if trace else 0,
        note=note,
    )
