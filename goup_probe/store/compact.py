"""Merging a run's many small Parquet parts into few: :func:`compact_run`.

The writers append one part per flush, so a long run holds hundreds of small
files per table. Compaction rewrites each table into parts of up to
``target_rows`` rows, with the same rows in the same order, and swaps the new
folder in with :func:`~goup_probe.store.tables.replace_table`'s protocol, so
every state a crash can leave is one :func:`~goup_probe.store.tables.read_table`
reads completely and without duplicates:

1. the new parts are written under hidden temporary names into
   ``RUN_DIR/.<table>.replace/<table>/``, fsynced and renamed to their part names
   (a crash here leaves the old table in place; the staging folder is ignored
   and removed by the next compaction or replace);
2. the old folder is renamed to ``.<table>.replace/.old`` (a crash right after
   leaves only the complete new folder, which ``read_table`` finds in the
   staging folder);
3. the new folder is renamed to ``RUN_DIR/<table>`` and the run directory fsynced;
4. the staging folder, with the old parts, is removed.

Compacted parts are written with zstd and the byte-stream-split encoding of
float columns (float lists included): read many times, written once, they are
smaller than the writer's lz4 parts (tracer trajectories in float32: 25 MB
instead of 35 MB for the demo run). Their row groups are bounded in rows and
bytes, and ``trajectories`` is written clustered by tensor
(:mod:`goup_probe.store.layout`): the rows of each part grouped by ``param``,
so a read of some tensors decodes only their row groups.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from goup_probe.store.layout import ClusterOrder, cluster_column, is_clustered, row_group_rows
from goup_probe.store.lock import RunLock
from goup_probe.store.meta import read_meta
from goup_probe.store.paths import RunDirectoryError
from goup_probe.store.tables import _settle, _staging, list_tables, part_files
from goup_probe.store.usage import disk_usage
from goup_probe.store.writer import _dictionary_columns

DEFAULT_TARGET_ROWS = 100_000
"""Rows per compacted part (the demo's tables fit one part each)."""
COMPACT_COMPRESSION = "zstd"
"""Codec of compacted parts."""


@dataclass(frozen=True)
class CompactionResult:
    """What :func:`compact_run` did: the run directory's files and bytes before and after.

    ``files_*`` and ``bytes_*`` count every file of the directory (see
    :class:`~goup_probe.store.usage.DiskUsage`); ``parts`` maps each table that
    was rewritten to its part count ``(before, after)``.
    """

    run_dir: Path
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)


def compact_run(
    run_dir: str | os.PathLike[str],
    *,
    target_rows: int = DEFAULT_TARGET_ROWS,
    allow_running: bool = False,
    holding_lock: bool = False,
) -> CompactionResult:
    """Merge each table's parts into parts of up to ``target_rows`` rows, atomically per table.

    Rows and their values are unchanged; only the files are. So is the rows'
    order, except in the tables :mod:`goup_probe.store.layout` clusters
    (``trajectories``): each new part (``target_rows`` consecutive rows) holds
    its rows grouped by tensor, the tensors in order of first appearance, each
    tensor's rows in the order written. A table
    already in ``ceil(rows / target_rows)`` parts or fewer is left as it is,
    unless it should be clustered, is not, and holds more rows than one row group.

    Parameters
    ----------
    run_dir : path
        The run directory.
    target_rows : int
        Rows per compacted part (at least 1).
    allow_running : bool
        Compact a run whose ``run.json`` says ``running``. Only for the process
        that writes the run, once its writer has flushed (the probe at detach),
        or for a run whose writer is known to be gone (it crashed): a writer
        appending parts during the swap would lose them.
    holding_lock : bool
        The caller holds the run's lock (the probe at detach). Otherwise the
        lock is taken for the compaction, so a live writer (another process)
        is refused even with ``allow_running``; a stale one is taken over.

    Returns
    -------
    CompactionResult

    Raises
    ------
    RunDirectoryError
        If ``run_dir`` is no run, is still running (without ``allow_running``:
        its ``run.json`` says so, or another live process holds its lock,
        :class:`~goup_probe.store.RunLockedError`),
        or a table cannot be compacted (a damaged part, parts whose schemas do
        not merge, a file in a table folder that is not a part); the message
        names it. Tables compacted before the error stay compacted; the one
        that failed is left as it was.
    TypeError, ValueError
        If ``target_rows`` is not an integer >= 1.
    """
    if isinstance(target_rows, bool) or not isinstance(target_rows, int):
        raise TypeError(f"target_rows must be an integer, got {target_rows!r}")
    if target_rows < 1:
        raise ValueError(f"target_rows must be >= 1, got {target_rows}")
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirectoryError(f"run directory {str(path)!r} does not exist")
    meta = read_meta(path)
    if meta.get("status") == "running" and not allow_running:
        raise RunDirectoryError(
            f"{path / 'run.json'} says the run is still running: compacting it while a probe writes "
            "parts would lose them. Compact it once it ended (the probe compacts it at detach); "
            "if its process is gone (it crashed), pass allow_running=True (goup-probe compact --force)"
        )
    lock = None if holding_lock else RunLock(path).acquire()
    try:
        before = disk_usage(path)
        parts = {}
        for name in list_tables(path):
            counts = _compact_table(path, name, target_rows)
            if counts is not None:
                parts[name] = counts
        after = disk_usage(path)
    finally:
        if lock is not None:
            lock.release()
    return CompactionResult(
        path, before.files_total, after.files_total, before.bytes_total, after.bytes_total, parts
    )


def _compact_table(run_dir: Path, name: str, target_rows: int) -> tuple[int, int] | None:
    """Rewrite table ``name`` in few parts; ``(parts before, after)``, or None when already compact."""
    _settle(run_dir, name)  # finish (or clean up after) an interrupted replace or compaction
    folder = run_dir / name
    parts = part_files(folder)
    foreign = sorted(p.name for p in folder.iterdir() if p not in parts and not p.name.startswith("."))
    if foreign:
        raise RunDirectoryError(
            f"{folder} holds files that are not parts ({', '.join(foreign[:3])}); "
            "refusing to compact the table (compaction replaces the whole folder)"
        )
    footers = [_footer(p) for p in parts]
    rows = sum(f.num_rows for f in footers)
    n_out = max(1, math.ceil(rows / target_rows))
    cluster = cluster_column(name)
    if cluster is not None and not any(cluster in f.schema.names for f in footers):
        cluster = None  # a table of that name without the column: compacted as any other
    unclustered = cluster is not None and not is_clustered(footers, cluster)
    one_group = row_group_rows(sum(g.total_byte_size for f in footers for g in _groups(f)), rows)
    if len(parts) <= n_out and not (unclustered and rows > one_group):
        return None
    try:
        unified = pa.unify_schemas(
            [f.schema.to_arrow_schema() for f in footers], promote_options="permissive"
        )
    except (pa.ArrowException, TypeError) as exc:
        raise RunDirectoryError(f"the parts of {folder} have schemas that do not merge: {exc}") from exc
    staging = _staging(run_dir, name)
    staging.mkdir()
    fresh = staging / name
    try:
        fresh.mkdir()
        written = _write_parts(parts, unified, fresh, target_rows, cluster)
        if written != rows:
            raise RunDirectoryError(f"compacting {folder}: wrote {written} rows of {rows}; left it as it was")
        _fsync_dir(fresh)
        _fsync_dir(staging)
        os.replace(folder, staging / ".old")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the old table is untouched
        raise
    try:
        os.replace(fresh, folder)
    except BaseException:
        if not folder.exists():  # put the old table back; should that fail too, the staging folder
            os.replace(staging / ".old", folder)  # stays, and read_table reads the new table there
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(run_dir)
    shutil.rmtree(staging)
    return len(parts), len(part_files(folder))


def _footer(part: Path) -> pq.FileMetaData:
    try:
        return pq.read_metadata(part)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RunDirectoryError(
            f"cannot read {part}: the Parquet part is damaged or truncated ({exc}); "
            "its table was not compacted"
        ) from exc


def _groups(footer: pq.FileMetaData) -> list[pq.RowGroupMetaData]:
    return [footer.row_group(i) for i in range(footer.num_row_groups)]


def _write_parts(
    parts: list[Path], unified: pa.Schema, folder: Path, target_rows: int, cluster: str | None = None
) -> int:
    """Stream ``parts`` into new parts of ``target_rows`` rows in ``folder``; returns the rows written.

    With ``cluster``, each new part holds its rows grouped by that column (see
    :mod:`goup_probe.store.layout`).
    """
    order = ClusterOrder() if cluster is not None else None
    pending: list[pa.Table] = []
    buffered = written = index = 0
    for part in parts:
        try:
            table = _conform(pq.read_table(part), unified)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise RunDirectoryError(f"cannot compact {part}: {exc}; its table was left as it was") from exc
        pending.append(table)
        buffered += table.num_rows
        while buffered >= target_rows:
            merged = pa.concat_tables(pending)
            _write_part(merged.slice(0, target_rows), folder, index, cluster, order)
            index, written = index + 1, written + target_rows
            rest = merged.slice(target_rows)
            pending, buffered = [rest], rest.num_rows
    if buffered:
        _write_part(pa.concat_tables(pending), folder, index, cluster, order)
        written += buffered
    return written


def _conform(table: pa.Table, unified: pa.Schema) -> pa.Table:
    """``table`` with the columns of ``unified``, in its order and types (absent columns: nulls)."""
    columns = []
    for target in unified:
        if target.name in table.column_names:
            column = table.column(target.name)
            columns.append(column if column.type == target.type else column.cast(target.type))
        else:
            columns.append(pa.nulls(table.num_rows, target.type))
    return pa.Table.from_arrays(columns, schema=unified)


def _float_leaves(data: pa.Table) -> list[str]:
    """Parquet column paths of the float columns and float lists (byte-stream-split encoded)."""

    def wide_float(t: pa.DataType) -> bool:
        return pa.types.is_float32(t) or pa.types.is_float64(t)

    out = []
    for f in data.schema:
        if wide_float(f.type):
            out.append(f.name)
        elif pa.types.is_list(f.type) and wide_float(f.type.value_type):
            out.append(f"{f.name}.list.{f.type.value_field.name}")
    return out


def _write_part(
    data: pa.Table,
    folder: Path,
    index: int,
    cluster: str | None = None,
    order: ClusterOrder | None = None,
) -> None:
    """One compacted part: written to a hidden name, fsynced, renamed to ``part-<index>.parquet``.

    With ``cluster`` (and the table's ``order``), the rows of each value of that
    column are written together, in row groups of their own.
    """
    tmp = folder / f".part-{index:06d}.compact.tmp"
    group_rows = row_group_rows(data.nbytes, data.num_rows)
    with pq.ParquetWriter(
        tmp,
        data.schema,
        compression=COMPACT_COMPRESSION,
        use_dictionary=_dictionary_columns(data),
        use_byte_stream_split=_float_leaves(data) or False,
    ) as writer:
        if cluster is None or order is None:
            writer.write_table(data, row_group_size=group_rows)
        else:
            for group in order.groups(data, cluster):
                writer.write_table(group, row_group_size=group_rows)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / f"part-{index:06d}.parquet")


def _fsync_dir(path: Path) -> None:
    """Make the entries of ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
