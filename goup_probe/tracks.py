"""A run's tracer trajectories, per tensor, as float64 matrices: what the OU validation reads.

:func:`read_tracks` reads them from a run directory a batch of tensors at a time (Arrow list
columns straight into matrices, no Python object per row); :func:`frame_tracks` takes a
``trajectories`` DataFrame already in memory. Both yield :class:`Tracks` lazily, in the order the
tensors first appear, with the size of the largest, which bounds the memory of fitting them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from goup_probe.store import Run
from goup_probe.store.layout import table_is_clustered

READ_BATCH_BYTES = 128 * 2**20
"""Tracer values (as float64) read from disk per pass of a table not clustered by tensor: each pass
decodes every row group, so tensors are read in batches of about this size."""

CLUSTERED_READ_BATCH_BYTES = 32 * 2**20
"""The same for trajectories clustered by tensor (a compacted run): a pass decodes only its tensors'
row groups, so smaller batches cost no extra decoding (a 5000-step, 41-tensor run: validate_ou's peak
−82 MB and 0.6 s faster than with :data:`READ_BATCH_BYTES`)."""

_TRACER_COLUMNS = ("theta", "grad", "theta_next")
_TRAJECTORY_COLUMNS = ["step", "param", "lr", *_TRACER_COLUMNS]


def _analysed_order(present: Iterable[str], wanted: list[str] | None) -> list[str]:
    """Tensors in order of first appearance, restricted to ``wanted`` (all of which must be present)."""
    order = list(dict.fromkeys(present))
    if wanted is None:
        return order
    missing = sorted(set(wanted) - set(order))
    if missing:
        raise ValueError(f"no trajectories for {missing}")
    return [p for p in order if p in wanted]


@dataclass(frozen=True)
class Tracks:
    """One tensor's tracer trajectories: a row per recorded step, in step order, a column per tracer.

    The matrices may be read-only views of the Arrow memory they were read into (a compacted run's
    tensor whose rows sit in one part): copy one before writing to it.
    """

    steps: np.ndarray
    lr: np.ndarray
    theta: np.ndarray
    grad: np.ndarray
    theta_next: np.ndarray

    @classmethod
    def ordered(cls, param: str, steps: np.ndarray, lr: np.ndarray, *matrices: np.ndarray) -> Tracks:
        """The tracks with rows sorted by step; ValueError naming ``param`` if a step repeats."""
        steps = np.asarray(steps)
        if np.any(np.diff(steps) < 0):
            order = np.argsort(steps, kind="stable")
            steps, lr, matrices = steps[order], lr[order], tuple(m[order] for m in matrices)
        if np.any(np.diff(steps) == 0):
            raise ValueError(f"{param!r}: several trajectory rows for the same step")
        return cls(steps, np.asarray(lr, dtype=np.float64), *matrices)


TensorTracks = tuple[Iterator[tuple[str, Tracks]], int]
"""Per tensor its tracks (lazily), and the tracer values (steps × tracers) of the largest tensor."""


def frame_tracks(traj: pd.DataFrame, wanted: list[str] | None, min_step: int) -> TensorTracks:
    """Per tensor, its tracks from a trajectories table already in memory.

    Parameters
    ----------
    traj : DataFrame
        A ``trajectories`` table (``step``, ``param``, ``lr``, ``theta``, ``grad``, ``theta_next``).
    wanted : list of str, optional
        Only these tensors (each must be present); None for all.
    min_step : int
        Leave out the rows of earlier steps.

    Returns
    -------
    iterator of (str, Tracks), int
        The tracks, made as they are drawn, and the tracer values of the largest tensor.
    """
    if min_step > 0 and not traj.empty:
        traj = traj[traj["step"] >= min_step]
    if traj.empty:
        return iter(()), 0
    order = _analysed_order(traj["param"], wanted)
    groups = dict(tuple(traj.groupby("param", sort=False)))
    largest = max(len(groups[name]) * len(groups[name]["theta"].iloc[0]) for name in order)

    def tracks(name: str) -> Tracks:
        rows = groups[name]
        stacks = (stack_column(rows[column]) for column in _TRACER_COLUMNS)
        return Tracks.ordered(name, rows["step"].to_numpy(), rows["lr"].to_numpy(dtype=np.float64), *stacks)

    return ((name, tracks(name)) for name in order), largest


def _arrow_tracks(param: str, rows: pa.Table) -> Tracks:
    """One tensor's tracks from its rows of an Arrow trajectories table (no Python object per row)."""
    stacks = (_list_matrix(param, column, rows.column(column)) for column in _TRACER_COLUMNS)
    lr = rows.column("lr").to_numpy().astype(np.float64)
    return Tracks.ordered(param, rows.column("step").to_numpy(), lr, *stacks)


def _list_matrix(param: str, name: str, column: pa.ChunkedArray) -> np.ndarray:
    """A list column of equal-length rows as a float64 ``(rows, length)`` matrix (null values NaN)."""
    lists = column.combine_chunks()
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if len(lengths) and (np.any(lengths != lengths[0]) or lists.null_count):
        raise ValueError(f"{param!r}: the {name} tracer rows differ in length or are missing")
    values = lists.flatten().to_numpy(zero_copy_only=False)  # float64 values: a view, not a copy
    return np.asarray(values, dtype=np.float64).reshape(len(lengths), -1 if len(lengths) else 0)


def _tracer_count(meta: dict) -> int:
    """Tracers per tensor recorded in run.json (256, the probe's default, when it does not say)."""
    tracers = (meta.get("capture") or {}).get("tracers")
    return tracers if isinstance(tracers, int) and not isinstance(tracers, bool) and tracers > 0 else 256


def read_tracks(run: Run, wanted: list[str] | None, min_step: int) -> TensorTracks:
    """Per tensor, its tracks read from disk, a batch of tensors per pass (as :func:`frame_tracks`).

    The ``step`` and ``param`` columns are read first, in Arrow (the order of the
    tensors and their row counts: 0.04 s for 205 000 rows, 0.76 s through pandas);
    the tracer values are then read with a filter on the tensors of each batch
    pushed into the Parquet reader, so at most about
    :data:`READ_BATCH_BYTES` (:data:`CLUSTERED_READ_BATCH_BYTES` when clustered) of
    them are held at once, whatever the run's length.
    A compacted run holds its trajectories clustered by tensor
    (:mod:`goup_probe.store.layout`), so each batch decodes only its own row
    groups and the table is decoded once in all; the parts of a run not yet
    compacted hold every tensor in each row group, and each batch decodes them
    all (``goup-probe compact`` clusters them).
    """
    steps = [("step", ">=", int(min_step))] if min_step > 0 else []
    index = run.arrow("trajectories", columns=["step", "param"], filters=steps or None)
    if index is None or index.num_rows == 0:
        return iter(()), 0
    counted = pc.value_counts(index.column("param")).flatten()  # in order of first appearance
    counts = dict(zip(counted[0].to_pylist(), counted[1].to_pylist(), strict=True))
    counts.pop(None, None)  # a row without a tensor name belongs to no tensor
    order = _analysed_order(counts, wanted)
    width = _tracer_count(run.meta)
    per_tensor = {name: 3 * 8 * width * int(counts[name]) for name in order}  # the float64 stacks
    clustered = table_is_clustered(run.path / "trajectories", "param")
    budget = CLUSTERED_READ_BATCH_BYTES if clustered else READ_BATCH_BYTES
    del index, counted

    def read(names: list[str]) -> pa.Table:
        filters = [*steps, ("param", "in", names)]
        table = run.arrow("trajectories", columns=_TRAJECTORY_COLUMNS, filters=filters)
        if table is None:
            raise ValueError(f"the trajectories of {names} vanished while being read")
        return table

    def batches() -> Iterator[tuple[str, Tracks]]:
        batch: list[str] = []
        size = 0
        for name in [*order, None]:
            if batch and (name is None or size + per_tensor[name] > budget):
                # Once a tensor's matrices are made (a copy when its rows span parts) its rows go, and
                # with the last tensor's the batch: a fit holds its own tracks, not the batch.
                for member, rows in _rows_by_param(read(batch), batch):
                    tracks = _arrow_tracks(member, rows)
                    del rows
                    yield member, tracks
                    del tracks
                batch, size = [], 0
            if name is not None:
                batch.append(name)
                size += per_tensor[name]

    return batches(), max(int(counts[name]) for name in order) * width


def _rows_by_param(table: pa.Table, names: list[str]) -> Iterator[tuple[str, pa.Table]]:
    """Each of ``names`` with its rows of ``table``: a slice (no copy) where they are contiguous.

    A compacted run holds each tensor's rows together, so a batch splits into
    slices; the parts of a run not yet compacted interleave the tensors, whose
    rows are then gathered (``take``) one tensor at a time, as drawn.
    ``table.filter`` per name copied every row of a one-tensor batch (0.8 s of
    a 41-tensor, 5000-step run). No reference to a tensor's rows is kept once
    they are yielded, and the caller passes the only reference to ``table``:
    it is released with the last tensor's rows, so what a consumer drops is freed.
    """
    encoded = pc.dictionary_encode(table.column("param").combine_chunks())
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(encoded.dictionary) + 1))
    where = {name: i for i, name in enumerate(encoded.dictionary.to_pylist())}
    held = [table]  # popped for the last tensor: while a generator waits, its names keep objects alive
    del table
    for index, name in enumerate(names):
        code = where.get(name)
        at = order[bounds[code] : bounds[code + 1]] if code is not None else order[:0]
        yield name, _rows_at(held.pop() if index == len(names) - 1 else held[0], at)


def _rows_at(table: pa.Table, at: np.ndarray) -> pa.Table:
    """Rows ``at`` (ascending) of ``table``: a slice when they are contiguous, else gathered."""
    if len(at) and at[-1] - at[0] == len(at) - 1:
        return table.slice(int(at[0]), len(at))
    return table.take(at)


def stack_column(column: pd.Series) -> np.ndarray:
    """A column of equal-length arrays as one float64 matrix (one copy: 3× faster than per row)."""
    return np.asarray(np.stack(column.to_numpy()), dtype=np.float64)
