"""In-run gradient noise from the micro-batches of one accumulated step.

A step that accumulates k >= 2 backward passes gives k contributions c_i with
Σ_i c_i the step's gradient G. Whatever the loss scaling (each micro-batch's
loss divided by k or not), g_i = k·c_i is micro-batch i's own estimate of G,
their mean is ḡ = Σ_j c_j, and the noise is ξ_i = g_i − ḡ. With the
micro-batch as the unit (B_small = 1 micro-batch, B_big = k), the estimators of
:mod:`goup_probe.noise.scale` give

    tr Σ_mb = Σ_i |ξ_i|² / (k − 1)         (covariance of one micro-batch's g_i),
    |G|²    = |ḡ|² − tr Σ_mb / k,           B_simple = tr Σ_mb / |G|²,

both unbiased; B_simple is in micro-batches (times the micro-batch size in
samples for McCandlish et al.'s per-sample B_simple, since Σ_mb = Σ / B_micro).
The interval of B_simple is the delete-one jackknife of
:func:`~goup_probe.noise.scale.noise_scale_from_sums` (k >= 3). The tail index is
Mohammadi's estimator (:func:`~goup_probe.noise.tails.tail_index`) on the
seeded subsample of ξ pooled over the k micro-batches.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch

from goup_probe.noise.scale import noise_scale_from_sums
from goup_probe.noise.tails import tail_index

__all__ = ["micro_noise", "noise_summary"]


def micro_noise(snapshots: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ξ_i for each micro-batch, and ḡ, from the gradient after each backward pass.

    Parameters
    ----------
    snapshots : sequence of Tensor
        Flat ``param.grad`` after pass 1, ..., k (the gradient before pass 1 is zero).

    Returns
    -------
    list of Tensor, Tensor
        ξ_1..ξ_k (new tensors) and ḡ = the step's gradient (the last snapshot, not copied).

    Raises
    ------
    ValueError
        With fewer than 2 snapshots.
    """
    k = len(snapshots)
    if k < 2:
        raise ValueError(f"gradient noise needs at least 2 micro-batches, got {k}")
    mean = snapshots[-1]
    xis = []
    for i, current in enumerate(snapshots):
        contribution = current if i == 0 else current - snapshots[i - 1]
        xis.append(contribution * k - mean)
    return xis, mean


def noise_summary(
    xis: Sequence[torch.Tensor], mean: torch.Tensor, samples: np.ndarray, *, seed: int = 0
) -> dict[str, float | int]:
    """The ``noise`` table's values for one tensor at one step (see the module notes).

    Parameters
    ----------
    xis : sequence of Tensor
        ξ_i of the k micro-batches (flat).
    mean : Tensor
        ḡ (flat).
    samples : ndarray, shape (k, n)
        ξ_i at the seeded subsample coordinates.
    seed : int
        Seed of the tail-index permutation.
    """
    k = len(xis)
    g64 = mean.to(torch.float64)
    msq = float(g64 @ g64)
    noise_sq, cross = np.empty(k), np.empty(k)
    for i, x in enumerate(xis):
        x64 = x.to(torch.float64)
        noise_sq[i], cross[i] = float(x64 @ x64), float(x64 @ g64)
    trace = float(noise_sq.sum()) / (k - 1)
    g2 = msq - trace / k
    b_simple = trace / g2 if g2 != 0 else math.inf
    low = high = math.nan
    if k >= 3:  # |g_i|² and ⟨g_i, ḡ⟩ from ξ_i: g_i = ξ_i + ḡ
        scale = noise_scale_from_sums(noise_sq + 2 * cross + msq, cross + msq, msq, 1)
        low, high = scale.b_simple_low, scale.b_simple_high
    pooled = np.asarray(samples, dtype=np.float64).ravel()
    pooled = pooled[np.isfinite(pooled) & (pooled != 0)]
    tail = None
    with contextlib.suppress(ValueError):  # too few values: the columns stay empty
        tail = tail_index(pooled, "mohammadi", seed=seed)
    numel = int(mean.numel())
    return {
        "n_micro": k,
        "numel": numel,
        "noise_var": trace / numel if numel else math.nan,
        "trace_sigma": trace,
        "grad_sq_norm": g2,
        "b_simple": b_simple,
        "b_simple_low": low,
        "b_simple_high": high,
        "tail_alpha": tail.alpha if tail is not None else math.nan,
        "tail_low": tail.ci_low if tail is not None else math.nan,
        "tail_high": tail.ci_high if tail is not None else math.nan,
        "tail_n": tail.n if tail is not None else 0,
    }
