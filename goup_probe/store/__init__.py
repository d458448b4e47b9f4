"""The run directory: ``run.json`` plus append-only Parquet parts, and :func:`load_run`.

Layout::

    RUN_DIR/
      run.json                      metadata, status, errors (rewritten atomically)
      stats/part-000000.parquet     one folder per table, parts appended in order
      samples/part-000000.parquet
      trajectories/...

Each part is written to a hidden temporary file and renamed into place, so a
part is either complete or absent; a crash loses at most the rows not yet
flushed. Loading never unpickles anything: metadata is JSON, tables are Parquet.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from goup_probe import schema

RUN_JSON = "run.json"
PARQUET_COMPRESSION = "lz4"
"""Codec of every part: 2.3× faster to write than zstd on float64 tracer trajectories, 3% smaller."""


def _dictionary_columns(data: pa.Table) -> list[str]:
    """Columns worth dictionary-encoding: the strings (parameter names, quantities, verdicts).

    Parquet's default tries a dictionary on every column; on float lists (samples,
    trajectories) that hash table is pure cost: writing 2000 trajectory rows took
    56 ms with it and 18 ms without, and the file was 7% larger.
    """
    return [f.name for f in data.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


_PART_RE = re.compile(r"^part-(\d{6,})\.parquet$")


class RunDirectoryError(ValueError):
    """A run directory that cannot be created, written or read; the message names the path."""


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return repr(value)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_run_dir(run_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Create ``run_dir`` (or validate an existing one) and return it.

    Raises
    ------
    RunDirectoryError
        If the directory is not empty and ``overwrite`` is false, if the path
        is a file, or if it cannot be created or written.
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"run_dir {str(path)!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise RunDirectoryError(
                f"run_dir {str(path)!r} is not empty; choose a new directory or pass overwrite=True"
            )
        _clear_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_file = path / ".write-test"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as exc:
        raise RunDirectoryError(f"run_dir {str(path)!r} is not writable: {exc}") from exc
    return path


def _clear_run_dir(path: Path) -> None:
    """Remove what a previous run wrote (only files this toolkit creates)."""
    if not (path / RUN_JSON).exists():
        raise RunDirectoryError(
            f"run_dir {str(path)!r} is not empty and holds no {RUN_JSON}; refusing to overwrite "
            "a directory that is not a goup_probe run"
        )
    for child in path.iterdir():
        if child.is_dir() and (child.name in schema.TABLES or _looks_like_table(child)):
            for part in child.iterdir():
                part.unlink()
            child.rmdir()
        elif child.is_dir() and child.name.startswith(".") and child.name.endswith(".replace"):
            shutil.rmtree(child)  # a replace_table a crash interrupted
        elif child.is_file():
            child.unlink()


def _looks_like_table(folder: Path) -> bool:
    return all(_PART_RE.match(p.name) or p.name.startswith(".") for p in folder.iterdir())


class RunWriter:
    """Appends rows to the tables of one run directory, in atomic Parquet parts.

    Parameters
    ----------
    path : Path
        A prepared run directory (see :func:`prepare_run_dir`).
    flush_rows : int
        A table is written out when this many rows are buffered.
    flush_seconds : float
        :meth:`maybe_flush` writes every buffered table at least this often.
    schemas : Mapping[str, pa.Schema], optional
        Per table, a schema that replaces :data:`goup_probe.schema.TABLES`'s for
        this writer, e.g. ``{"stats": schema.stats_schema(user_statistics)}``.
    """

    def __init__(
        self,
        path: Path,
        *,
        flush_rows: int = 2000,
        flush_seconds: float = 10.0,
        schemas: Mapping[str, pa.Schema] | None = None,
    ) -> None:
        self.path = path
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.schemas: dict[str, pa.Schema] = {**schema.TABLES, **(schemas or {})}
        """Table name to the schema its rows are written with (tables not listed: inferred)."""
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._arrow_buffers: dict[str, list[pa.Table]] = {}
        self._next_part: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self.rows_written: dict[str, int] = {}

    def append(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Buffer rows for ``table``; writes a part when the buffer is full."""
        buffer = self._buffers.setdefault(table, [])
        buffer.extend(dict(r) for r in rows)
        if len(buffer) >= self.flush_rows:
            self.flush(table)

    def append_arrow(self, table: str, data: pa.Table) -> None:
        """Buffer a ready Arrow table for ``table`` (the fast path for bulk rows)."""
        buffer = self._arrow_buffers.setdefault(table, [])
        buffer.append(data)
        if sum(t.num_rows for t in buffer) >= self.flush_rows:
            self.flush(table)

    def flush_due(self) -> bool:
        """Whether ``flush_seconds`` have passed since the last full flush."""
        return time.monotonic() - self._last_flush >= self.flush_seconds

    def maybe_flush(self) -> None:
        """Flush everything if ``flush_seconds`` have passed since the last flush."""
        if self.flush_due():
            self.flush()

    def flush(self, table: str | None = None) -> None:
        """Write buffered rows of one table (or all tables) as new parts."""
        names = [table] if table is not None else list({**self._buffers, **self._arrow_buffers})
        for name in names:
            rows = self._buffers.get(name)
            if rows:
                self._write_part(name, rows)
                self._buffers[name] = []
            tables = self._arrow_buffers.get(name)
            if tables:
                self._write_arrow(name, pa.concat_tables(tables))
                self._arrow_buffers[name] = []
        if table is None:
            self._last_flush = time.monotonic()

    def _write_part(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` as one part, with the table's schema; a column outside it raises ValueError.

        A declared column missing from a row is written as null.
        """
        arrow_schema = self.schemas.get(table)
        if arrow_schema is not None:
            declared = set(arrow_schema.names)
            undeclared = sorted(set().union(*rows) - declared, key=str)
            if undeclared:
                raise ValueError(
                    f"rows for table {table!r} hold columns its schema does not declare: {undeclared} "
                    "(a statistic's columns are declared with the statistic; see schema.stats_schema)"
                )
            columns = {f.name: [r.get(f.name) for r in rows] for f in arrow_schema}
            data = pa.table(columns, schema=arrow_schema)
        else:
            data = pa.Table.from_pylist(rows)
        self._write_arrow(table, data)

    def _write_arrow(self, table: str, data: pa.Table) -> None:
        folder = self.path / table
        folder.mkdir(exist_ok=True)
        index = self._next_part.get(table)
        if index is None:
            index = 1 + max(
                (int(m.group(1)) for p in folder.iterdir() if (m := _PART_RE.match(p.name))),
                default=-1,
            )
        target = folder / f"part-{index:06d}.parquet"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(
                data, tmp, compression=PARQUET_COMPRESSION, use_dictionary=_dictionary_columns(data)
            )
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._next_part[table] = index + 1
        self.rows_written[table] = self.rows_written.get(table, 0) + data.num_rows

    def write_table(self, table: str, frame: pd.DataFrame) -> None:
        """Write a whole DataFrame as one new part of ``table`` (used by analyses).

        Missing values (NaN, None, NaT) become Parquet nulls, so a string column
        with gaps keeps its type.
        """
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        self._write_part(table, records)

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Rewrite ``run.json`` atomically."""
        text = json.dumps(meta, indent=2, default=_json_default, allow_nan=True)
        atomic_write_text(self.path / RUN_JSON, text + "\n")


@dataclass
class Run:
    """A run directory read back: metadata and tables as pandas DataFrames.

    Tables are read on first access. ``stats`` has one row per
    ``(step, param, quantity)``; see :mod:`goup_probe.schema` for every column.
    """

    path: Path
    meta: dict[str, Any]
    on_error: Literal["raise", "skip"] = "raise"
    skipped_files: list[str] = field(default_factory=list)

    @property
    def tables(self) -> list[str]:
        """Names of the tables present on disk."""
        return list_tables(self.path)

    def table(self, name: str) -> pd.DataFrame:
        """Read one table (all its parts, in order) as a DataFrame; empty if absent."""
        return read_table(self.path, name, on_error=self.on_error, skipped=self.skipped_files)

    @cached_property
    def stats(self) -> pd.DataFrame:
        """Per (step, param, quantity) statistics."""
        return self.table("stats")

    @cached_property
    def samples(self) -> pd.DataFrame:
        """Stored subsamples (column ``values`` holds arrays) per (step, param, quantity)."""
        return self.table("samples")

    @cached_property
    def trajectories(self) -> pd.DataFrame:
        """Tracer coordinates per step: θ_t, g_t and θ_{t+1} as arrays."""
        return self.table("trajectories")

    @property
    def status(self) -> str:
        """Final status recorded in run.json: running, completed, interrupted or failed."""
        return str(self.meta.get("status", "unknown"))

    def sample(self, step: int, param: str, quantity: str = schema.THETA_MINUS_GRAD):
        """The stored subsample of one quantity as a float64 array."""
        import numpy as np

        s = self.samples
        hit = s[(s["step"] == step) & (s["param"] == param) & (s["quantity"] == quantity)]
        if hit.empty:
            raise KeyError(f"no sample for step={step}, param={param!r}, quantity={quantity!r}")
        return np.asarray(hit.iloc[0]["values"], dtype=np.float64)


def _part_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _PART_RE.match(p.name))


def read_table(
    run_dir: str | os.PathLike[str],
    name: str,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list[str] | None = None,
) -> pd.DataFrame:
    """Read a table (all its parts, in order), optionally only some columns and rows.

    Parameters
    ----------
    run_dir : path
        The run directory.
    name : str
        Table name (a folder of Parquet parts).
    columns : sequence of str, optional
        Read only these columns (projection pushed into the Parquet reader);
        columns no part holds are left out.
    filters : list of tuples or pyarrow.compute.Expression, optional
        Row filter pushed into the Parquet reader, in :func:`pyarrow.parquet.read_table`'s
        form, e.g. ``[("param", "in", names), ("step", ">=", 10)]`` (a list of such
        lists is a disjunction). A part lacking a column a tuple filters on contributes no rows.
    on_error : {"raise", "skip"}
        A damaged part raises :class:`RunDirectoryError` naming the file, or is
        skipped with a warning.
    skipped : list, optional
        Paths of skipped parts are appended here.

    Returns
    -------
    DataFrame
        Empty, with the table's columns when :mod:`goup_probe.schema` knows them,
        if the table is absent or no row passes the filter.
    """
    run_dir = Path(run_dir)
    folder = _table_dir(run_dir, name)
    arrow_schema = schema.TABLES.get(name)
    wanted = None if columns is None else list(columns)
    pieces = []
    for part in _part_files(folder) if folder.is_dir() else []:
        try:
            piece = _read_part(part, wanted, filters)
        except (pa.ArrowException, OSError, ValueError) as exc:
            message = f"cannot read {part}: the Parquet part is damaged or truncated ({exc})"
            if on_error == "raise":
                raise RunDirectoryError(message) from exc
            warnings.warn(message + "; skipped", RuntimeWarning, stacklevel=3)
            if skipped is not None:
                skipped.append(str(part))
            continue
        if piece is not None:
            pieces.append(piece)
    if not pieces:
        return _project(_empty_frame(arrow_schema), wanted)
    try:
        combined = pa.concat_tables(pieces, promote_options="default")
    except pa.ArrowException as exc:
        raise RunDirectoryError(f"parts of {folder} have incompatible schemas: {exc}") from exc
    return _project(combined.to_pandas(), wanted)


Filters = list[tuple[str, str, Any]] | list[list[tuple[str, str, Any]]] | Any
"""Row filters of :func:`read_table`: DNF tuples or a ``pyarrow.compute.Expression``."""


def _filter_columns(filters: Filters | None) -> set[str]:
    """Column names a tuple-form filter uses (none for an Expression)."""
    if not isinstance(filters, list):
        return set()
    terms = [t for f in filters for t in (f if isinstance(f, list) else [f])]
    return {str(t[0]) for t in terms if isinstance(t, tuple) and t}


def _read_part(part: Path, columns: list[str] | None, filters: Filters | None) -> pa.Table | None:
    """One part with projection and filter pushed down; None when it lacks a filtered column."""
    if columns is None and filters is None:
        return pq.read_table(part)
    names = set(pq.read_schema(part).names)
    if not _filter_columns(filters) <= names:
        return None
    present = None if columns is None else [c for c in columns if c in names]
    return pq.read_table(part, columns=present, filters=filters)


def _project(frame: pd.DataFrame, columns: list[str] | None) -> pd.DataFrame:
    if columns is None:
        return frame
    return frame[[c for c in columns if c in frame.columns]]


def _empty_frame(arrow_schema: pa.Schema | None) -> pd.DataFrame:
    if arrow_schema is None:
        return pd.DataFrame()
    return arrow_schema.empty_table().to_pandas()


# ----------------------------------------------------------------------------- whole tables
# A replace writes the new table under RUN_DIR/.<name>.replace/<name>/, then swaps folders with two
# renames. A crash before the first rename leaves the old table in place; one between the two leaves
# only the complete new table under the staging folder, where _table_dir finds it; the next replace
# or delete of that table finishes the swap.

_STAGING = ".{}.replace"


def _staging(run_dir: Path, name: str) -> Path:
    return run_dir / _STAGING.format(name)


def _table_dir(run_dir: Path, name: str) -> Path:
    """The folder holding table ``name``: its own, or a staged replacement a crash left unswapped."""
    folder = run_dir / name
    if not folder.is_dir():
        staged = _staging(run_dir, name) / name
        if staged.is_dir():
            return staged
    return folder


def _check_table_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name == RUN_JSON:
        raise ValueError(f"invalid table name {name!r}")


def _settle(run_dir: Path, name: str) -> None:
    """Finish (or clean up after) an interrupted replace of ``name``."""
    staging = _staging(run_dir, name)
    if not staging.is_dir():
        return
    if not (run_dir / name).is_dir() and (staging / name).is_dir():
        os.replace(staging / name, run_dir / name)
    shutil.rmtree(staging)


def list_tables(run_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the tables of a run directory that hold at least one part, sorted."""
    path = Path(run_dir)
    names = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    names |= {p.name[1 : -len(".replace")] for p in path.glob(_STAGING.format("*")) if p.is_dir()}
    return sorted(n for n in names if (d := _table_dir(path, n)).is_dir() and any(_part_files(d)))


def table_columns(run_dir: str | os.PathLike[str], name: str) -> list[str]:
    """Column names over all parts of a table, read from the Parquet footers only (no rows)."""
    folder = _table_dir(Path(run_dir), name)
    out: dict[str, None] = {}
    for part in _part_files(folder) if folder.is_dir() else []:
        try:
            out.update(dict.fromkeys(pq.read_schema(part).names))
        except (pa.ArrowException, OSError, ValueError):
            continue  # a damaged part: read_table reports it
    return list(out)


def replace_table(run_dir: str | os.PathLike[str], name: str, frame: pd.DataFrame) -> Path:
    """Make ``frame`` the whole content of table ``name``, atomically; returns the table's folder.

    The new part is written to a hidden staging folder first and swapped in with
    two renames, so a crash at any point leaves the old or the new table
    readable by :func:`read_table` (never a mix, never nothing). Missing values
    become Parquet nulls, as in :meth:`RunWriter.write_table`. One process
    replaces a given table at a time.
    """
    _check_table_name(name)
    path = Path(run_dir)
    _settle(path, name)
    staging = _staging(path, name)
    staging.mkdir()
    try:
        RunWriter(staging).write_table(name, frame)
        target = path / name
        if target.is_dir():
            os.replace(target, staging / ".old")
        try:
            os.replace(staging / name, target)
        except BaseException:
            if (staging / ".old").is_dir() and not target.exists():
                os.replace(staging / ".old", target)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return target


def delete_table(run_dir: str | os.PathLike[str], name: str) -> bool:
    """Remove table ``name`` (its folder of parts); returns whether there was one.

    The folder is first renamed aside, so a crash leaves the table either whole or gone.
    """
    _check_table_name(name)
    path = Path(run_dir)
    _settle(path, name)
    target = path / name
    if not target.is_dir():
        return False
    staging = _staging(path, name)
    staging.mkdir()
    os.replace(target, staging / ".old")
    shutil.rmtree(staging)
    return True


def update_meta(run_dir: str | os.PathLike[str], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into ``run.json`` (top-level keys replaced), rewrite it atomically, return it."""
    path = Path(run_dir)
    meta = read_meta(path)
    meta.update(changes)
    RunWriter(path).write_meta(meta)
    return meta


def read_meta(run_dir: Path) -> dict[str, Any]:
    """Parse ``run.json``; raises :class:`RunDirectoryError` naming the file when malformed."""
    meta_path = run_dir / RUN_JSON
    try:
        text = meta_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RunDirectoryError(f"{meta_path} not found: is {str(run_dir)!r} a run?") from exc
    except OSError as exc:
        raise RunDirectoryError(f"cannot read {meta_path}: {exc}") from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise RunDirectoryError(f"{meta_path} must hold a JSON object")
    version = meta.get("schema_version")
    if isinstance(version, int) and version > schema.SCHEMA_VERSION:
        raise RunDirectoryError(
            f"{meta_path} has schema_version {version}, newer than this goup_probe "
            f"understands ({schema.SCHEMA_VERSION}); upgrade goup_probe"
        )
    return meta


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    on_error: Literal["raise", "skip"] = "raise",
) -> Run:
    """Open a run directory written by the probe, complete, interrupted or still running.

    Parameters
    ----------
    run_dir : path
        The run directory.
    on_error : {"raise", "skip"}
        What to do with a damaged Parquet part: raise :class:`RunDirectoryError`
        naming the file, or skip it with a warning (listed in ``Run.skipped_files``).
        A missing or malformed ``run.json`` is handled the same way (with
        ``"skip"`` the metadata is left empty).

    Returns
    -------
    Run
        Metadata and lazily-read tables.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirectoryError(f"run directory {str(path)!r} does not exist")
    try:
        meta = read_meta(path)
    except RunDirectoryError as exc:
        if on_error == "raise":
            raise
        warnings.warn(f"{exc}; metadata left empty", RuntimeWarning, stacklevel=2)
        meta = {}
    return Run(path=path, meta=meta, on_error=on_error)


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (every timestamp of ``run.json`` and reports)."""
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class NullWriter:
    """Stands in for :class:`RunWriter` on ranks that write nothing (ranks > 0)."""

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
