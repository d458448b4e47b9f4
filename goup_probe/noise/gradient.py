"""Mini-batch gradient noise at a fixed θ: per-tensor shape, tail index and noise scale.

:func:`gradient_noise` computes one gradient per *unit* (a mini-batch, or with
``per_sample=True`` a single sample), the mean ḡ of the units (the gradient
of all the data given) and the noise ξ_u = g_u − ḡ. Per parameter tensor it
reports

* ``pooled`` rows: the normality battery on all coordinates of ξ over all
  units pooled (Simsekli et al. 2019's axis; a mixture of coordinates with
  different scales is heavy-tailed even when each coordinate is Gaussian);
* ``coordinate`` rows: the battery on one coordinate of ξ across units, for a
  seeded subsample of coordinates (Panigrahi et al. 2019's axis; Xie et al.
  2023 find the two disagree);
* the tail index of the pooled ξ (:func:`goup_probe.noise.tails.tail_index`);
* the noise scale B_simple = tr Σ / |G|² (:mod:`goup_probe.noise.scale`),
  per tensor and for the selected tensors together.

Per-sample gradients come from ``torch.func`` in one pass
(``vmap(grad(functional_call ...))``). A model with a BatchNorm layer in train
mode has no per-sample gradient in that sense (each sample's output depends on
the batch statistics): the function then falls back to a loop of one backward
per sample through the batch's forward (g_i = ∂ℓ_i/∂θ with the batch statistics
as in the batch, so mean_i g_i is the batch gradient) and says so in a warning
and in ``note``. The same loop serves any model ``vmap`` refuses.

Memory: the unit gradients of the selected tensors are held on the host in
float64 (8 · n_units · numel bytes); select tensors with ``layers=``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from goup_probe.capture.plan import stable_seed
from goup_probe.noise._state import Batch, LossFn, preserved, selected_parameters, split_batch
from goup_probe.noise.scale import NoiseScale, noise_scale_from_sums
from goup_probe.noise.tails import TailIndexResult, tail_index
from goup_probe.stats.normality import (
    MAX_TESTED,
    assess_samples,
    moments,
    normality,
    subsample_indices,
)

__all__ = ["AXIS_COORDINATE", "GradientNoiseResult", "gradient_noise"]

AXIS_COORDINATE = "coordinate"
"""Axis label of one coordinate of the noise across units (batches or samples)."""
AXIS_POOLED = "pooled"


@dataclass(frozen=True)
class GradientNoiseResult:
    """Gradient noise of each selected tensor at one θ.

    Attributes
    ----------
    stats : pandas.DataFrame
        Normality rows: ``param``, ``coordinate`` (-1 on pooled rows), ``n_units``,
        ``unit_size`` and the columns of :class:`goup_probe.NormalityResult`
        (``axis`` is ``"pooled"`` or ``"coordinate"``).
    tail_index : mapping of str to TailIndexResult
        Tail index of each tensor's pooled noise (tensors too small are absent).
    noise_scale : NoiseScale
        B_simple, tr Σ and |G|² of the selected tensors together.
    noise_scale_per_tensor : mapping of str to NoiseScale
        The same per tensor.
    per_sample : bool
        Whether the units are single samples.
    method : str
        ``"vmap"``, ``"loop"`` (per-sample fallback) or ``"micro-batch"``.
    n_units, unit_size : int
        Units used and samples per unit.
    note : str
        What was done (and any fallback).
    """

    stats: pd.DataFrame
    tail_index: Mapping[str, TailIndexResult]
    noise_scale: NoiseScale
    noise_scale_per_tensor: Mapping[str, NoiseScale]
    per_sample: bool
    method: str
    n_units: int
    unit_size: int
    note: str
    numel: Mapping[str, int] = field(default_factory=dict)

    def to_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """One row per tensor: pooled verdict, share of coordinates rejected, tail index, noise scale.

        Parameters
        ----------
        alpha : float
            Level at which a coordinate's Shapiro-Wilk test counts as a rejection.
        """
        rows = []
        for name, scale in self.noise_scale_per_tensor.items():
            pooled = self.stats[(self.stats.param == name) & (self.stats.axis == AXIS_POOLED)]
            coords = self.stats[(self.stats.param == name) & (self.stats.axis == AXIS_COORDINATE)]
            tested = coords.shapiro_p.dropna()
            rate = float((tested < alpha).mean()) if len(tested) else float("nan")
            row: dict[str, object] = {
                "param": name,
                "numel": self.numel.get(name),
                "n_units": self.n_units,
                "unit_size": self.unit_size,
                "pooled_verdict": pooled.verdict.iloc[0] if len(pooled) else None,
                "pooled_excess_kurtosis": pooled.excess_kurtosis.iloc[0] if len(pooled) else None,
                "coordinates_tested": len(tested),
                "coordinate_reject_rate": rate,
            }
            tail = self.tail_index.get(name)
            row.update(tail.to_dict() if tail is not None else {})
            row.update({k: v for k, v in scale.to_dict().items() if k != "note"})
            rows.append(row)
        return pd.DataFrame(rows)


def _vmap_blocker(module: nn.Module) -> str | None:
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            return f"BatchNorm in train mode ({name or type(m).__name__}) is not per-sample"
    return None


def _to(values: object, device: torch.device) -> object:
    return values.to(device) if isinstance(values, torch.Tensor) else values


def _vmap_grads(
    module: nn.Module, loss_fn: LossFn, params: dict[str, torch.Tensor], batch: Batch
) -> dict[str, torch.Tensor]:
    from torch.func import functional_call, grad, vmap

    inputs, targets = batch
    fixed = {n: p.detach() for n, p in module.named_parameters() if n not in params}
    buffers = dict(module.named_buffers())

    def sample_loss(sel: dict[str, torch.Tensor], xs: tuple, y: torch.Tensor) -> torch.Tensor:
        batch_of_one = tuple(x.unsqueeze(0) for x in xs)
        out = functional_call(module, ({**fixed, **sel}, buffers), batch_of_one)
        return loss_fn(out, y.unsqueeze(0))

    detached = {n: p.detach() for n, p in params.items()}
    per = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="different")
    return per(detached, inputs, targets)


def _loop_grads(
    module: nn.Module, loss_fn: LossFn, params: dict[str, torch.Tensor], batch: Batch
) -> dict[str, torch.Tensor]:
    inputs, targets = batch
    out = module(*inputs)
    names, tensors = list(params), list(params.values())
    size = len(targets)
    rows: list[tuple[torch.Tensor, ...]] = []
    for i in range(size):
        loss = loss_fn(out[i : i + 1], targets[i : i + 1])
        rows.append(torch.autograd.grad(loss, tensors, retain_graph=i < size - 1, allow_unused=True))
    return {
        n: torch.stack([r[k] if r[k] is not None else torch.zeros_like(tensors[k]) for r in rows])
        for k, n in enumerate(names)
    }


def _batch_grads(
    module: nn.Module, loss_fn: LossFn, params: dict[str, torch.Tensor], batch: Batch
) -> dict[str, torch.Tensor]:
    inputs, targets = batch
    tensors = list(params.values())
    grads = torch.autograd.grad(loss_fn(module(*inputs), targets), tensors, allow_unused=True)
    return {
        n: (g if g is not None else torch.zeros_like(p)).unsqueeze(0)
        for (n, p), g in zip(params.items(), grads, strict=True)
    }


def _collect(
    module: nn.Module,
    loss_fn: LossFn,
    params: dict[str, torch.Tensor],
    batches: Iterable[object],
    per_sample: bool,
) -> tuple[dict[str, np.ndarray], list[int], str, str]:
    """Unit gradients per tensor (host, float64, shape (units, numel)), batch sizes, method, note."""
    device = next(iter(params.values())).device
    blocker = _vmap_blocker(module) if per_sample else None
    method = "micro-batch" if not per_sample else ("loop" if blocker else "vmap")
    note = ""
    if blocker:
        note = f"{blocker}: per-sample gradients by a loop of backward passes through the batch"
        warnings.warn(note, stacklevel=3)
    units: dict[str, list[np.ndarray]] = {n: [] for n in params}
    sizes: list[int] = []
    for raw in batches:
        inputs, targets = split_batch(raw)
        batch = (tuple(_to(x, device) for x in inputs), _to(targets, device))
        sizes.append(len(batch[1]))
        if method == "vmap":
            try:
                grads = _vmap_grads(module, loss_fn, params, batch)
            except Exception as error:  # any vmap refusal falls back to the loop
                method = "loop"
                note = f"vmap failed ({type(error).__name__}: {error}); per-sample loop used"
                warnings.warn(note, stacklevel=3)
        if method == "loop":
            grads = _loop_grads(module, loss_fn, params, batch)
        elif method == "micro-batch":
            grads = _batch_grads(module, loss_fn, params, batch)
        for n, g in grads.items():
            units[n].append(g.detach().reshape(g.shape[0], -1).to("cpu", torch.float64).numpy())
    if not sizes:
        raise ValueError("batches yielded no batch")
    return {n: np.concatenate(u) for n, u in units.items()}, sizes, method, note


def _equal_units(units: dict[str, np.ndarray], sizes: list[int]) -> tuple[dict[str, np.ndarray], int, str]:
    """Micro-batches of one size: a smaller last batch is dropped (with a warning)."""
    if len(set(sizes)) == 1:
        return units, sizes[0], ""
    if len(set(sizes[:-1])) == 1 and sizes[-1] < sizes[0]:
        msg = f"the last batch ({sizes[-1]} samples, the others {sizes[0]}) was left out"
        warnings.warn(msg, stacklevel=3)
        return {n: u[:-1] for n, u in units.items()}, sizes[0], msg
    raise ValueError(f"batches must all hold the same number of samples, got sizes {sorted(set(sizes))}")


def _tensor_rows(
    name: str, xi: np.ndarray, unit_size: int, max_coordinates: int, seed: int
) -> list[dict[str, object]]:
    """The pooled row and the coordinate rows of one tensor's noise ξ (units × numel)."""
    n_units, numel = xi.shape
    base = {"param": name, "n_units": n_units, "unit_size": unit_size}
    rows = [{**base, "coordinate": -1, **normality(xi.ravel(), axis=AXIS_POOLED, seed=seed).to_dict()}]
    rng = np.random.default_rng(stable_seed(seed, name))
    chosen = np.sort(rng.choice(numel, size=min(max_coordinates, numel), replace=False))
    series = xi[:, chosen].T  # one coordinate across units per row
    if np.isfinite(series).all():  # the battery runs on all rows at once, as normality() would
        tested = series[:, subsample_indices(n_units, MAX_TESTED, seed)]
        fulls = [moments(row) for row in series]
        results = assess_samples(fulls, tested, axis=AXIS_COORDINATE)
    else:
        results = [normality(row, axis=AXIS_COORDINATE, seed=seed) for row in series]
    for j, result in zip(chosen, results, strict=True):
        rows.append({**base, "coordinate": int(j), **result.to_dict()})
    return rows


def _tail(xi: np.ndarray, method: str, seed: int) -> TailIndexResult | None:
    values = xi.ravel()
    values = values[values != 0]  # coordinates with no gradient at all carry no noise
    try:
        return tail_index(values, method, seed=seed)
    except ValueError:
        return None


def _summarise(
    units: dict[str, np.ndarray],
    unit_size: int,
    max_coordinates: int,
    seed: int,
    tail_method: str,
    level: float,
) -> tuple[list[dict[str, object]], dict[str, TailIndexResult], dict[str, NoiseScale], NoiseScale]:
    """Normality rows, tail indices and noise scales per tensor, and the noise scale of all."""
    n_units = next(iter(units.values())).shape[0]
    rows: list[dict[str, object]] = []
    tails: dict[str, TailIndexResult] = {}
    scales: dict[str, NoiseScale] = {}
    sums = np.zeros((2, n_units))
    total_sq = 0.0
    for name, g in units.items():
        mean = g.mean(axis=0)
        xi = g - mean
        rows.extend(_tensor_rows(name, xi, unit_size, max_coordinates, seed))
        tail = _tail(xi, tail_method, seed)
        if tail is not None:
            tails[name] = tail
        sq, dots, msq = np.einsum("ij,ij->i", g, g), g @ mean, float(mean @ mean)
        scales[name] = noise_scale_from_sums(sq, dots, msq, unit_size, level=level)
        sums += np.stack([sq, dots])
        total_sq += msq
    overall = noise_scale_from_sums(sums[0], sums[1], total_sq, unit_size, level=level)
    return rows, tails, scales, overall


def gradient_noise(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Batch],
    *,
    per_sample: bool = False,
    layers: str | Sequence[str] | Callable[[str], bool] | None = None,
    max_coordinates: int = 100,
    seed: int = 0,
    tail_method: str = "mohammadi",
    train: bool | None = None,
    level: float = 0.95,
) -> GradientNoiseResult:
    """Measure the mini-batch gradient noise of each parameter tensor at the current θ.

    Parameters
    ----------
    model : nn.Module
        The model; its mode, buffers, ``.grad`` and the global RNG state are
        restored afterwards, so a training loop around the call is unchanged.
    loss_fn : callable
        ``loss_fn(model(*inputs), targets)``, the *mean* loss over the batch.
    batches : iterable of (inputs, targets)
        The data; with ``per_sample=False`` each batch is one unit (at least 3
        batches of one size; a smaller last batch is dropped).
    per_sample : bool
        Units are single samples (``torch.func``; see the module notes).
    layers : str, sequence of str or callable, optional
        Glob patterns of parameter names, or a predicate on the name (None: all).
    max_coordinates : int
        Coordinates per tensor tested across units (seeded subsample).
    seed : int
        Seed of the subsamples and of the tail-index estimator.
    tail_method : {"mohammadi", "hill"}
        Tail-index estimator of the pooled noise.
    train : bool, optional
        Mode to measure in (None: the model's current mode).
    level : float
        Confidence level of the noise-scale intervals.

    Returns
    -------
    GradientNoiseResult

    Raises
    ------
    ValueError
        If no parameter is selected, fewer than 3 units are given, the batches
        differ in size, ``max_coordinates`` < 1 or ``tail_method`` is unknown.
    """
    if max_coordinates < 1:
        raise ValueError(f"max_coordinates must be >= 1, got {max_coordinates}")
    if tail_method not in ("mohammadi", "hill"):
        raise ValueError(f"tail_method must be 'mohammadi' or 'hill', got {tail_method!r}")
    with preserved(model, train) as module:
        params = selected_parameters(module, layers)
        units, sizes, method, note = _collect(module, loss_fn, params, batches, per_sample)
    unit_size = 1
    if not per_sample:
        units, unit_size, dropped = _equal_units(units, sizes)
        note = "; ".join(s for s in (note, dropped) if s)
    n_units = next(iter(units.values())).shape[0]
    if n_units < 3:
        raise ValueError(f"batches must give at least 3 units (batches or samples), got {n_units}")
    rows, tails, scales, overall = _summarise(units, unit_size, max_coordinates, seed, tail_method, level)
    what = f"{n_units} {'samples' if per_sample else f'batches of {unit_size}'} ({method})"
    return GradientNoiseResult(
        stats=pd.DataFrame(rows),
        tail_index=tails,
        noise_scale=overall,
        noise_scale_per_tensor=scales,
        per_sample=per_sample,
        method=method,
        n_units=n_units,
        unit_size=unit_size,
        note="; ".join(s for s in (what, note) if s),
        numel={n: int(g.shape[1]) for n, g in units.items()},
    )
