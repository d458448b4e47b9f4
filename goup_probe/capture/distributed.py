"""The probe's sharded reduction under FSDP2: each rank reduces its shard, one all_gather merges.

Under ``sharded`` mode (:mod:`goup_probe.dist.context`) every rank reduces only
its local shard; per tensor and phase one ``all_gather`` of a fixed-size float64
buffer of named fields (:mod:`goup_probe.dist.wire`) carries each rank's
central-moment sums, its part of the seeded subsample and of the tracer
coordinates. Every rank merges the same gathered buffers in rank order
(Chan/Pébay pairwise formulas, exact in exact arithmetic:
:mod:`goup_probe.stats.moments`), so every rank holds the same global result and
takes the same path; rank 0 writes. Subsample and tracer indices are global flat
indices (:mod:`goup_probe.dist.layout`), so the assembled subsample equals the
single-process one value for value. Full tensors are never gathered.

Failures: a rank whose local reduction fails still joins the collective, with
its ``ok`` flag cleared; every rank then raises :class:`~goup_probe.dist.wire.ShardCaptureError`, so
no collective is left waiting and the probe's error handling runs on all ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from goup_probe.capture.reduce import Reduction
from goup_probe.capture.sums import power_sums, shift_from_sample
from goup_probe.dist.layout import ShardedTensor
from goup_probe.dist.wire import Fields, exchange, raise_if_failed
from goup_probe.stats.moments import SUMS_WIDTH, CentralSums, PowerSums, combine


def local_sums(values: torch.Tensor, sample: np.ndarray) -> CentralSums:
    """Central sums of a flat float64-convertible tensor (one pass, shifted near its mean)."""
    shift = shift_from_sample(sample) if sample.size else _cheap_shift(values)
    return CentralSums.from_power_sums(
        power_sums(values.numel(), lambda a, b: values[a:b].to(torch.float64), shift)
    )


def _cheap_shift(values: torch.Tensor) -> float:
    head = values[:1024].to(torch.float64)
    head = head[torch.isfinite(head)]
    return float(head.mean()) if head.numel() else 0.0


@dataclass(frozen=True)
class BeforeResult:
    """Global reductions of θ, g and X = θ − g and tracer values, identical on every rank."""

    theta: Reduction | None
    grad: Reduction | None
    x: Reduction | None
    tracer_theta: np.ndarray | None
    tracer_grad: np.ndarray | None
    bytes_received: int


@dataclass(frozen=True)
class AfterResult:
    """Global reduction of the update θ' − θ, Σ(θ' − θ)·g, and the tracers' θ'."""

    update: Reduction | None
    dot: float
    tracer_next: np.ndarray | None
    bytes_received: int


def reduce_before(
    layout: ShardedTensor,
    theta: torch.Tensor,
    grad: torch.Tensor | None,
    *,
    captured: bool,
    tracers: bool,
) -> BeforeResult:
    """Reduce the local shards of θ and g before the step; one ``all_gather`` on every rank.

    Parameters
    ----------
    layout : ShardedTensor
        The parameter's layout.
    theta, grad : Tensor
        Flat local shards (``grad`` None when this rank has no gradient).
    captured : bool
        Whether moments and subsamples are wanted (else tracers only).
    tracers : bool
        Whether tracer values are wanted.

    Returns
    -------
    BeforeResult
        ``grad`` and ``x`` are None when any rank had no gradient.

    Raises
    ------
    ShardCaptureError
        On every rank, when any rank's local reduction failed.
    """
    iw = layout.index.width if captured else 0
    tw = layout.tracers.width if (tracers and layout.tracers is not None) else 0
    sw = SUMS_WIDTH if captured else 0
    widths = {
        "has_grad": 1, "theta": sw, "grad": sw, "x": sw,
        "sample_theta": iw, "sample_grad": iw, "tracer_theta": tw, "tracer_grad": tw,
    }  # fmt: skip
    if not captured and not tw:  # the same decision on every rank
        return BeforeResult(None, None, None, None, None, 0)
    error: BaseException | None = None
    fields = None
    try:
        fields = _before_fields(layout, theta, grad, captured, tw > 0)
    except Exception as exc:  # joined below, so no rank is left waiting
        error = exc
    parts, oks, nbytes = exchange(fields, widths, theta.device)
    raise_if_failed(oks, error, "reduction before the step")
    has_grad = all(p["has_grad"][0] == 1.0 for p in parts)
    tr_theta = tr_grad = None
    if tw:
        tr_theta = layout.tracers.assemble([p["tracer_theta"] for p in parts])
        tr_grad = layout.tracers.assemble([p["tracer_grad"] for p in parts]) if has_grad else None
        if tr_grad is None:
            tr_grad = np.full(tr_theta.shape, np.nan)
    if not captured:
        return BeforeResult(None, None, None, tr_theta, tr_grad, nbytes)
    s_theta = layout.index.assemble([p["sample_theta"] for p in parts])
    red_theta = Reduction(_combined(parts, "theta", layout.numel), s_theta)
    if not has_grad:
        return BeforeResult(red_theta, None, None, tr_theta, tr_grad, nbytes)
    s_grad = layout.index.assemble([p["sample_grad"] for p in parts])
    red_grad = Reduction(_combined(parts, "grad", layout.numel), s_grad)
    red_x = Reduction(_combined(parts, "x", layout.numel), s_theta - s_grad)
    return BeforeResult(red_theta, red_grad, red_x, tr_theta, tr_grad, nbytes)


def _before_fields(
    layout: ShardedTensor, theta: torch.Tensor, grad: torch.Tensor | None, captured: bool, tracers: bool
) -> Fields:
    has = np.array([1.0 if grad is not None else 0.0])
    empty = np.zeros(0)
    f_theta = f_grad = f_x = s_theta = s_grad = t_theta = t_grad = empty
    if tracers:
        t_theta = _values(theta, layout.tracers.local)
        t_grad = _values(grad, layout.tracers.local) if grad is not None else empty
    if captured:
        s_theta = _values(theta, layout.index.local)
        f_theta = local_sums(theta, s_theta).to_array()
        if grad is not None:
            s_grad = _values(grad, layout.index.local)
            f_grad = local_sums(grad, s_grad).to_array()
            s_x = s_theta - s_grad
            shift = shift_from_sample(s_x) if s_x.size else 0.0

            def chunk(a: int, b: int) -> torch.Tensor:
                return theta[a:b].to(torch.float64) - grad[a:b].to(torch.float64)

            f_x = CentralSums.from_power_sums(power_sums(theta.numel(), chunk, shift)).to_array()
    return {
        "has_grad": has, "theta": f_theta, "grad": f_grad, "x": f_x,
        "sample_theta": s_theta, "sample_grad": s_grad, "tracer_theta": t_theta, "tracer_grad": t_grad,
    }  # fmt: skip


def _combined(parts: list[Fields], name: str, numel: int) -> PowerSums:
    """Power sums of the whole tensor from every rank's central sums in field ``name`` (rank order)."""
    return combine([CentralSums.from_array(p[name]) for p in parts], numel)


def _values(flat: torch.Tensor, local: torch.Tensor) -> np.ndarray:
    return flat.index_select(0, local).to(torch.float64).cpu().numpy()


def reduce_after(
    layout: ShardedTensor,
    theta_new: torch.Tensor,
    theta_old: torch.Tensor | None,
    grad: torch.Tensor | None,
    *,
    tracers: bool,
) -> AfterResult:
    """Reduce the update θ' − θ of the local shard after the step; one ``all_gather``.

    ``theta_old`` is the local shard saved before the step (None: no update wanted,
    which must be the same on every rank); ``grad`` the local gradient for the
    shadow-fidelity dot product Σ(θ' − θ)·g (NaN when None).
    """
    want = theta_old is not None
    iw = layout.index.width if want else 0
    tw = layout.tracers.width if (tracers and layout.tracers is not None) else 0
    sw = SUMS_WIDTH if want else 0
    widths = {"update": sw, "dot": 1 if want else 0, "sample_update": iw, "tracer_next": tw}
    if not want and not tw:
        return AfterResult(None, math.nan, None, 0)
    error: BaseException | None = None
    fields = None
    try:
        fields = _after_fields(layout, theta_new, theta_old, grad, want, tw > 0)
    except Exception as exc:
        error = exc
    parts, oks, nbytes = exchange(fields, widths, theta_new.device)
    raise_if_failed(oks, error, "reduction after the step")
    tr_next = layout.tracers.assemble([p["tracer_next"] for p in parts]) if tw else None
    if not want:
        return AfterResult(None, math.nan, tr_next, nbytes)
    sample = layout.index.assemble([p["sample_update"] for p in parts])
    update = Reduction(_combined(parts, "update", layout.numel), sample)
    dot = math.fsum(float(p["dot"][0]) for p in parts)
    return AfterResult(update, dot, tr_next, nbytes)


def _after_fields(
    layout: ShardedTensor,
    theta_new: torch.Tensor,
    theta_old: torch.Tensor | None,
    grad: torch.Tensor | None,
    want: bool,
    tracers: bool,
) -> Fields:
    empty = np.zeros(0)
    f_upd = dot = s_upd = t_next = empty
    if tracers:
        t_next = _values(theta_new, layout.tracers.local)
    if want:
        s_upd = _values(theta_new, layout.index.local) - _values(theta_old, layout.index.local)
        shift = shift_from_sample(s_upd) if s_upd.size else 0.0

        def chunk(a: int, b: int) -> torch.Tensor:
            return theta_new[a:b].to(torch.float64) - theta_old[a:b].to(torch.float64)

        f_upd = CentralSums.from_power_sums(power_sums(theta_new.numel(), chunk, shift)).to_array()
        if grad is None:
            dot = np.array([np.nan])
        else:
            delta = theta_new.to(torch.float64) - theta_old.to(torch.float64)
            dot = (
                np.array([float(torch.dot(delta, grad.to(torch.float64)))]) if delta.numel() else np.zeros(1)
            )
    return {"update": f_upd, "dot": dot, "sample_update": s_upd, "tracer_next": t_next}


__all__ = ["AfterResult", "BeforeResult", "local_sums", "reduce_after", "reduce_before"]
