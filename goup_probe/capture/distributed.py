"""The probe under ``torch.distributed``: DDP (replicated) and FSDP2 (sharded DTensors).

Three modes, chosen once at attach time by :func:`detect`:

* ``single``: no process group (or a world of one); nothing here is used.
* ``replicated``: a process group and no DTensor parameter (DDP, or any loop
  whose parameters are identical on every rank after the gradient all-reduce).
  Rank 0 captures and writes; the other ranks' probes stay passive (no rows, no
  files, no collectives).
* ``sharded``: at least one parameter is a DTensor (FSDP2 ``fully_shard``). Every
  rank reduces only its local shard; per tensor and phase one ``all_gather`` of a
  fixed-size float64 buffer carries each rank's central-moment sums, its part of
  the seeded subsample and of the tracer coordinates. Every rank merges the same
  gathered buffers in rank order (Chan/Pébay pairwise formulas, exact in exact
  arithmetic), so every rank holds the same global result and takes the same
  path; rank 0 writes. Subsample and tracer indices are global flat indices, so
  the assembled subsample equals the single-process one value for value. Full
  tensors are never gathered.

Failures: a rank whose local reduction fails still joins the collective, with
its ``ok`` flag cleared; every rank then raises :class:`ShardCaptureError`, so
no collective is left waiting and the probe's error handling runs on all ranks.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from goup_probe.capture.reduce import Reduction
from goup_probe.capture.sums import PowerSums, power_sums, shift_from_sample

MODE_SINGLE = "single"
MODE_REPLICATED = "replicated"
MODE_SHARDED = "sharded"

_SUMS = 7  # count, mean, M2, M3, M4, min, max


class ShardCaptureError(RuntimeError):
    """The reduction of a sharded tensor failed on at least one rank (raised on every rank)."""


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


# ---------------------------------------------------------------------- context
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group, and how the probe behaves.

    Attributes
    ----------
    rank, world_size : int
        Rank in and size of the default process group (0 and 1 without one).
    backend : str or None
        The default group's backend (``"gloo"``, ``"nccl"``), ``None`` without one.
    mode : str
        ``"single"``, ``"replicated"`` or ``"sharded"`` (see the module docstring).
    """

    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    mode: str = MODE_SINGLE

    @property
    def writes(self) -> bool:
        """Only rank 0 writes the run directory."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether ranks reduce their shards together (collectives on every rank)."""
        return self.mode == MODE_SHARDED

    @property
    def passive(self) -> bool:
        """A replicated run's rank > 0: captures nothing, writes nothing."""
        return self.mode == MODE_REPLICATED and self.rank != 0

    @property
    def distributed(self) -> bool:
        """Whether a process group of more than one rank is in use."""
        return self.mode != MODE_SINGLE

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for ``run.json``."""
        return {"mode": self.mode, "backend": self.backend, "world_size": self.world_size, "writer_rank": 0}


def detect(module: nn.Module) -> DistInfo:
    """Rank, world size and mode for a probe attached to ``module`` (already unwrapped)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    world = dist.get_world_size()
    if world == 1:
        return DistInfo(0, 1, str(dist.get_backend()), MODE_SINGLE)
    sharded = any(is_dtensor(p) for p in module.parameters())
    return DistInfo(
        dist.get_rank(), world, str(dist.get_backend()), MODE_SHARDED if sharded else MODE_REPLICATED
    )


def collective_device() -> torch.device:
    """Device of small control tensors: the current CUDA device under NCCL, else CPU."""
    if dist.is_initialized() and "nccl" in str(dist.get_backend()).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(flags: Sequence[bool], info: DistInfo) -> list[bool]:
    """Element-wise AND of ``flags`` over all ranks (one ``all_reduce``; identity without a group).

    Every rank must call it with the same number of flags.
    """
    if not info.distributed or not flags:
        return [bool(f) for f in flags]
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return [bool(v) for v in t.cpu().tolist()]


def any_rank(flag: bool, info: DistInfo) -> bool:
    """Whether ``flag`` is true on at least one rank."""
    return not agree([not flag], info)[0]


class NullWriter:
    """Stands in for :class:`~goup_probe.store.RunWriter` on ranks that write nothing."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.flush_rows = 0

    def append(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Discard ``rows``."""

    def append_arrow(self, table: str, data: Any) -> None:
        """Discard ``data``."""

    def flush_due(self) -> bool:
        """Never: nothing is buffered."""
        return False

    def maybe_flush(self) -> None:
        """Do nothing."""

    def flush(self, table: str | None = None) -> None:
        """Do nothing."""

    def write_table(self, table: str, frame: Any) -> None:
        """Discard ``frame``."""

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Discard ``meta``."""


# ---------------------------------------------------------------------- layout
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


# ---------------------------------------------------------------------- moments
@dataclass(frozen=True)
class CentralSums:
    """Count, mean and central sums M_k = Σ(x − mean)^k of finite values, plus min and max."""

    count: float
    mean: float
    m2: float
    m3: float
    m4: float
    minimum: float
    maximum: float

    @classmethod
    def from_power_sums(cls, s: PowerSums) -> CentralSums:
        """Convert shifted power sums (any shift) to central sums."""
        n = s.count
        if n == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0, math.inf, -math.inf)
        d = s.s1 / n
        r2, r3, r4 = s.s2 / n, s.s3 / n, s.s4 / n
        m2 = max(r2 - d * d, 0.0)
        m3 = r3 - 3 * d * r2 + 2 * d**3
        m4 = max(r4 - 4 * d * r3 + 6 * d * d * r2 - 3 * d**4, 0.0)
        return cls(float(n), s.shift + d, n * m2, n * m3, n * m4, s.minimum, s.maximum)

    def to_array(self) -> np.ndarray:
        """The seven fields as a float64 array (the wire format)."""
        return np.array([self.count, self.mean, self.m2, self.m3, self.m4, self.minimum, self.maximum])

    @classmethod
    def from_array(cls, a: np.ndarray) -> CentralSums:
        """Inverse of :meth:`to_array`."""
        return cls(*(float(v) for v in a[:_SUMS]))

    def merge(self, other: CentralSums) -> CentralSums:
        """Sums of the union (Chan et al. 1979; Pébay 2008, eqs. 2.1-2.3)."""
        na, nb = self.count, other.count
        if nb == 0:
            return self
        if na == 0:
            return other
        n = na + nb
        delta = other.mean - self.mean
        mean = self.mean + delta * nb / n
        m2 = self.m2 + other.m2 + delta**2 * na * nb / n
        m3 = (
            self.m3
            + other.m3
            + delta**3 * na * nb * (na - nb) / n**2
            + 3 * delta * (na * other.m2 - nb * self.m2) / n
        )
        m4 = (
            self.m4
            + other.m4
            + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
            + 6 * delta**2 * (na * na * other.m2 + nb * nb * self.m2) / n**2
            + 4 * delta * (na * other.m3 - nb * self.m3) / n
        )
        return CentralSums(
            n, mean, m2, m3, m4, min(self.minimum, other.minimum), max(self.maximum, other.maximum)
        )

    def to_power_sums(self, numel: int) -> PowerSums:
        """Power sums around the mean (s1 = 0) of a tensor with ``numel`` elements."""
        if self.count == 0:
            return PowerSums(0.0, numel, 0, 0.0, 0.0, 0.0, 0.0, math.nan, math.nan)
        return PowerSums(
            self.mean, numel, int(self.count), 0.0, self.m2, self.m3, self.m4, self.minimum, self.maximum
        )


def combine(parts: Sequence[CentralSums], numel: int) -> PowerSums:
    """Merge per-rank sums in rank order into the power sums of the whole tensor."""
    total = CentralSums(0.0, 0.0, 0.0, 0.0, 0.0, math.inf, -math.inf)
    for part in parts:
        total = total.merge(part)
    return total.to_power_sums(numel)


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


# ---------------------------------------------------------------------- wire
def _all_gather(buffer: np.ndarray, device: torch.device) -> tuple[list[np.ndarray], int]:
    """All-gather equal-length float64 buffers; returns each rank's and the bytes received."""
    world = dist.get_world_size()
    t = torch.from_numpy(np.ascontiguousarray(buffer, dtype=np.float64)).to(device)
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t)
    return [o.cpu().numpy() for o in out], t.numel() * 8 * (world - 1)


def _pad(values: np.ndarray | None, width: int) -> np.ndarray:
    out = np.full(width, np.nan)
    if values is not None and width:
        out[: values.size] = values
    return out


def _exchange(
    fields: list[np.ndarray] | None, widths: list[int], device: torch.device
) -> tuple[list[list[np.ndarray]], list[bool], int]:
    """Pack ``fields`` (or NaNs with ok=0 when ``fields`` is None), all-gather, unpack per rank."""
    total = 1 + sum(widths)
    if fields is None:
        buf = np.full(total, np.nan)
        buf[0] = 0.0
    else:
        buf = np.concatenate([[1.0]] + [_pad(f, w) for f, w in zip(fields, widths, strict=True)])
    gathered, nbytes = _all_gather(buf, device)
    per_rank, oks = [], []
    for g in gathered:
        oks.append(g[0] == 1.0)
        cuts = np.cumsum([1, *widths])
        per_rank.append([g[a:b] for a, b in itertools.pairwise(cuts)])
    return per_rank, oks, nbytes


def _raise_if_failed(oks: list[bool], error: BaseException | None, what: str) -> None:
    failed = [r for r, ok in enumerate(oks) if not ok]
    if not failed:
        return
    message = f"{what}: the local reduction failed on rank(s) {failed}"
    if error is not None:
        raise ShardCaptureError(f"{message}; here: {type(error).__name__}: {error}") from error
    raise ShardCaptureError(message)


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
    sw = _SUMS if captured else 0
    widths = [1, sw, sw, sw, iw, iw, tw, tw]
    if not captured and not tw:  # the same decision on every rank
        return BeforeResult(None, None, None, None, None, 0)
    error: BaseException | None = None
    fields = None
    try:
        fields = _before_fields(layout, theta, grad, captured, tw > 0)
    except Exception as exc:  # joined below, so no rank is left waiting
        error = exc
    parts, oks, nbytes = _exchange(fields, widths, theta.device)
    _raise_if_failed(oks, error, "reduction before the step")
    has_grad = all(p[0][0] == 1.0 for p in parts)
    tr_theta = tr_grad = None
    if tw:
        tr_theta = layout.tracers.assemble([p[6] for p in parts])
        tr_grad = layout.tracers.assemble([p[7] for p in parts]) if has_grad else None
        if tr_grad is None:
            tr_grad = np.full(tr_theta.shape, np.nan)
    if not captured:
        return BeforeResult(None, None, None, tr_theta, tr_grad, nbytes)
    s_theta = layout.index.assemble([p[4] for p in parts])
    red_theta = Reduction(combine([CentralSums.from_array(p[1]) for p in parts], layout.numel), s_theta)
    if not has_grad:
        return BeforeResult(red_theta, None, None, tr_theta, tr_grad, nbytes)
    s_grad = layout.index.assemble([p[5] for p in parts])
    red_grad = Reduction(combine([CentralSums.from_array(p[2]) for p in parts], layout.numel), s_grad)
    red_x = Reduction(combine([CentralSums.from_array(p[3]) for p in parts], layout.numel), s_theta - s_grad)
    return BeforeResult(red_theta, red_grad, red_x, tr_theta, tr_grad, nbytes)


def _before_fields(
    layout: ShardedTensor, theta: torch.Tensor, grad: torch.Tensor | None, captured: bool, tracers: bool
) -> list[np.ndarray]:
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
    return [has, f_theta, f_grad, f_x, s_theta, s_grad, t_theta, t_grad]


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
    sw = _SUMS if want else 0
    widths = [sw, 1 if want else 0, iw, tw]
    if not want and not tw:
        return AfterResult(None, math.nan, None, 0)
    error: BaseException | None = None
    fields = None
    try:
        fields = _after_fields(layout, theta_new, theta_old, grad, want, tw > 0)
    except Exception as exc:
        error = exc
    parts, oks, nbytes = _exchange(fields, widths, theta_new.device)
    _raise_if_failed(oks, error, "reduction after the step")
    tr_next = layout.tracers.assemble([p[3] for p in parts]) if tw else None
    if not want:
        return AfterResult(None, math.nan, tr_next, nbytes)
    sample = layout.index.assemble([p[2] for p in parts])
    update = Reduction(combine([CentralSums.from_array(p[0]) for p in parts], layout.numel), sample)
    dot = math.fsum(float(p[1][0]) for p in parts)
    return AfterResult(update, dot, tr_next, nbytes)


def _after_fields(
    layout: ShardedTensor,
    theta_new: torch.Tensor,
    theta_old: torch.Tensor | None,
    grad: torch.Tensor | None,
    want: bool,
    tracers: bool,
) -> list[np.ndarray]:
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
    return [f_upd, dot, s_upd, t_next]


# ---------------------------------------------------------------------- GO-UP
def global_moments(
    param: torch.Tensor, grad: torch.Tensor, mode: str = "seed"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """σ = std(θ − g) (unbiased, like ``torch.std``) over the GLOBAL tensor, and μ in scalar mode.

    For a DTensor ``param``/``grad`` (FSDP2) each rank reduces its shard in
    float64 and one ``all_gather`` of (count, mean, M2) per tensor combines them
    (every rank merges in rank order, so σ is bitwise equal on all ranks). For a
    plain tensor this is ``torch.std(param - grad)``. Every rank must call it for
    the same tensors in the same order. Results are 0-dim tensors in the
    parameter's dtype on the local device; σ is 0 for a one-element tensor.
    """
    if not is_dtensor(param):
        x = param - grad
        sigma = torch.std(x) if x.numel() > 1 else torch.zeros((), dtype=x.dtype, device=x.device)
        return sigma, (x.mean() if mode == "scalar" else None)
    p, g = param.to_local().detach().reshape(-1), grad.to_local().detach().reshape(-1)
    blocks = shard_blocks(param)
    if not blocks[dist.get_rank()].owner:
        p, g = p[:0], g[:0]
    x = p.to(torch.float64) - g.to(torch.float64)
    n = float(x.numel())
    mean = float(x.mean()) if n else 0.0
    m2 = float(((x - mean) ** 2).sum()) if n else 0.0
    gathered, _ = _all_gather(np.array([n, mean, m2]), p.device)
    total = CentralSums(0.0, 0.0, 0.0, 0.0, 0.0, math.inf, -math.inf)
    for c, mu, s2 in gathered:
        total = total.merge(CentralSums(float(c), float(mu), float(s2), 0.0, 0.0, math.inf, -math.inf))
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


__all__ = [
    "MODE_REPLICATED",
    "MODE_SHARDED",
    "MODE_SINGLE",
    "AfterResult",
    "BeforeResult",
    "Block",
    "CentralSums",
    "DistInfo",
    "NullWriter",
    "Selection",
    "ShardCaptureError",
    "ShardedTensor",
    "UnsupportedLayout",
    "agree",
    "any_rank",
    "collective_device",
    "combine",
    "detect",
    "global_moments",
    "is_dtensor",
    "local_normal",
    "local_sums",
    "reduce_after",
    "reduce_before",
    "shard_blocks",
    "shard_layout",
]
