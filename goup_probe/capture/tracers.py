"""Tracer coordinates recorded at every optimizer step, cheaply.

For the OU analysis the probe follows a fixed seeded set of coordinates per
tensor (θ_t, g_t, θ_{t+1}) at *every* step. Doing that tensor by tensor, with
Python lists per row, costs more than a small network's step; here all
tensors' tracer values are gathered into one device tensor per phase, copied to
the host once per step, and handed to the writer as a ready Arrow table.

Trajectories are stored in float32 by default (``trajectory_dtype``): exact
for float32, bfloat16 and float16 parameters, and half the bytes of float64.
Readers, and the OU fit, convert them to float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from goup_probe import schema
from goup_probe.capture.reduce import flat_view

TRAJECTORY_VALUE_COLUMNS = ("theta", "grad", "theta_next")
"""The list columns of the ``trajectories`` table (their value type is the stored dtype)."""


def trajectory_schema(dtype: str = "float32") -> pa.Schema:
    """:data:`schema.TRAJECTORY_SCHEMA` with its value lists stored as ``dtype`` ("float32" or "float64").

    Raises
    ------
    ValueError
        For another ``dtype``, naming ``trajectory_dtype``.
    """
    value = {"float32": pa.float32(), "float64": pa.float64()}.get(dtype)
    if value is None:
        raise ValueError(f"trajectory_dtype must be 'float32' or 'float64', got {dtype!r}")
    return pa.schema(
        [
            pa.field(f.name, pa.list_(value)) if f.name in TRAJECTORY_VALUE_COLUMNS else f
            for f in schema.TRAJECTORY_SCHEMA
        ]
    )


def stored_dtype(writer: Any) -> torch.dtype:
    """The torch dtype the writer's ``trajectories`` schema stores (float64 when it declares none)."""
    declared = getattr(writer, "schemas", {}).get("trajectories", schema.TRAJECTORY_SCHEMA)
    value = declared.field("theta").type.value_type
    return torch.float32 if value == pa.float32() else torch.float64


@dataclass(frozen=True)
class TracerSet:
    """One tensor's tracer coordinates."""

    name: str
    param: torch.Tensor
    index: torch.Tensor


class TracerRecorder:
    """Gathers the tracer values of many tensors per step into one Arrow table.

    Call :meth:`before` in the optimizer's pre-step hook and :meth:`after` in its
    post-step hook; the values of each step are kept as one small array and
    :meth:`drain` turns every step kept so far into one Arrow table (one row per
    step and tensor), so no per-step table is ever built.

    Parameters
    ----------
    tracers : sequence of TracerSet
        The tensors and their tracer indices.
    dtype : torch.dtype
        How values are kept and stored: ``torch.float32`` (default) or ``torch.float64``.
    """

    def __init__(self, tracers: Sequence[TracerSet], dtype: torch.dtype = torch.float32) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        self._np_dtype = np.float32 if dtype == torch.float32 else np.float64
        self.schema = trajectory_schema("float32" if dtype == torch.float32 else "float64")
        self.tracers = list(tracers)
        self._sizes = np.array([t.index.numel() for t in self.tracers], dtype=np.int64)
        ends = np.cumsum(self._sizes)
        self._spans = [(int(e - n), int(e)) for e, n in zip(ends, self._sizes, strict=True)]
        self._width = int(ends[-1]) if len(ends) else 0
        """Tracer values of all tensors in one step's row."""
        self._host_index = [t.index.cpu().numpy() for t in self.tracers]
        self._names = [t.name for t in self.tracers]
        self._pending: tuple[int, np.ndarray] | None = None
        self._steps: list[int] = []
        self._lrs: list[list[float]] = []
        self._values: list[np.ndarray] = []

    @property
    def rows(self) -> int:
        """Rows (step × tensor) kept and not yet drained."""
        return len(self._steps) * len(self.tracers)

    def __len__(self) -> int:
        return len(self.tracers)

    def _gather(self, tensors: Sequence[torch.Tensor | None], out: np.ndarray) -> None:
        """Tracer values of every tensor into the host row ``out``, in :attr:`dtype`.

        CPU tensors are read with numpy fancy indexing straight into ``out`` (about
        a microsecond a tensor, where torch's index_select, cat and conversion cost
        0.9 ms a step for the 6 tensors of benchmarks/overhead.py's MLP); tensors on
        other devices are gathered there, concatenated and copied to the host once.
        A contiguous CPU tensor is viewed as numpy first and flattened there
        (half the cost of torch's reshape and conversion, which were most of the
        recorder's time); no view outlives the gather, so a parameter whose
        storage is replaced (``p.data = ...``) frees the old one as before.
        """
        on_device: list[tuple[tuple[int, int], torch.Tensor]] = []
        for tracer, tensor, index, span in zip(
            self.tracers, tensors, self._host_index, self._spans, strict=True
        ):
            if tensor is None:
                out[span[0] : span[1]] = math.nan
                continue
            if _host_flat(tensor):
                out[span[0] : span[1]] = tensor.detach().numpy().reshape(-1)[index]
                continue
            flat = flat_view(tensor)
            if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
                out[span[0] : span[1]] = flat.numpy()[index]
            else:
                on_device.append((span, flat.index_select(0, tracer.index)))
        if on_device:
            if len({(p.dtype, p.device) for _, p in on_device}) == 1:  # one cat, one copy to the host
                values = torch.cat([p for _, p in on_device]).to(self.dtype).cpu().numpy()
            else:
                values = np.concatenate([p.to(self.dtype).cpu().numpy() for _, p in on_device])
            start = 0
            for (a, b), _ in on_device:
                out[a:b] = values[start : start + b - a]
                start += b - a

    def before(self, step: int, grad_scale: float = 1.0) -> None:
        """Gather θ_t and g_t (NaN where a tensor has no gradient), g divided by ``grad_scale``."""
        block = np.empty((3, self._width), dtype=self._np_dtype)
        self._gather([t.param for t in self.tracers], block[0])
        self._gather([t.param.grad for t in self.tracers], block[1])
        if grad_scale != 1.0:
            block[1] /= grad_scale
        self._pending = (step, block)

    def after(self, lrs: Mapping[str, float]) -> None:
        """Gather θ_{t+1} and keep this step's values (nothing if :meth:`before` was not called)."""
        if self._pending is None:
            return
        step, block = self._pending
        self._pending = None
        self._gather([t.param for t in self.tracers], block[2])
        self._values.append(block)
        self._steps.append(step)
        self._lrs.append([lrs.get(name, math.nan) for name in self._names])

    def drain(self) -> pa.Table | None:
        """All kept steps as one table with :func:`trajectory_schema` of :attr:`dtype` (None if none)."""
        if not self._steps:
            return None
        n, k = len(self.tracers), len(self._steps)
        values = np.concatenate(self._values, axis=1)  # (3, k · Σ sizes), step-major
        offsets = pa.array(np.concatenate([[0], np.cumsum(np.tile(self._sizes, k))]).astype(np.int32))
        columns = {
            "step": pa.array(np.repeat(np.asarray(self._steps, dtype=np.int64), n)),
            "param": pa.array(self._names * k, pa.string()),
            "lr": pa.array(np.asarray(self._lrs, dtype=np.float64).ravel()),
            "theta": pa.ListArray.from_arrays(offsets, pa.array(values[0])),
            "grad": pa.ListArray.from_arrays(offsets, pa.array(values[1])),
            "theta_next": pa.ListArray.from_arrays(offsets, pa.array(values[2])),
        }
        self._steps, self._lrs, self._values = [], [], []
        return pa.table(columns).cast(self.schema)

    def discard(self) -> None:
        """Forget a step whose post-hook never came (the optimizer step raised)."""
        self._pending = None


def _host_flat(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` flattened as numpy lists its values in order (a contiguous CPU float tensor)."""
    return (
        tensor.device.type == "cpu"
        and tensor.dtype in (torch.float32, torch.float64)
        and tensor.layout == torch.strided
        and tensor.is_contiguous()
    )


class LocalTracers:
    """The tracer coordinates of every local tensor, recorded on the tracer schedule and written in bulk.

    Parameters
    ----------
    tracked : sequence of TrackedParam
        Tensors with tracer indices (sharded ones record theirs in their strategy).
    writer : RunWriter
        Where the trajectories go; they are stored in the dtype of its
        ``trajectories`` schema (:func:`stored_dtype`, float32 as the probe opens it by default).
    """

    def __init__(self, tracked: Sequence[Any], writer: Any) -> None:
        sets = [
            TracerSet(t.name, t.param, t.tracers)
            for t in tracked
            if t.tracers is not None and t.shard is None
        ]
        self.recorder = TracerRecorder(sets, stored_dtype(writer)) if sets else None
        self.writer = writer

    def before(self, step: int, grad_scale: float = 1.0) -> None:
        """θ_t and g_t at the capture point."""
        if self.recorder is not None:
            self.recorder.before(step, grad_scale)

    def after(self, lrs: Mapping[str, float]) -> None:
        """θ_{t+1}; the kept steps go to the writer once a flush's worth is buffered."""
        if self.recorder is None:
            return
        self.recorder.after(lrs)
        if self.recorder.rows >= self.writer.flush_rows:
            self.drain()

    def discard(self) -> None:
        """Forget a step whose end never came."""
        if self.recorder is not None:
            self.recorder.discard()

    def drain(self) -> None:
        """Hand every kept step to the writer as one Arrow table."""
        if self.recorder is not None:
            table = self.recorder.drain()
            if table is not None:
                self.writer.append_arrow("trajectories", table)


def write_tracer_index(tracked: Sequence[Any], writer: Any) -> None:
    """The ``tracers`` table: each tensor's tracer coordinates (flat indices), written at attach."""
    rows = [{"param": t.name, "coord": t.tracers.cpu().tolist()} for t in tracked if t.tracers is not None]
    if rows:
        writer.append("tracers", rows)
        writer.flush("tracers")
