"""Whole tables of a run directory: read (with projection and filters), list, replace, delete."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from goup_probe import schema
from goup_probe.store.paths import RUN_JSON, RunDirectoryError, _part_files
from goup_probe.store.writer import RunWriter

Filters = list[tuple[str, str, Any]] | list[list[tuple[str, str, Any]]] | Any
"""Row filters of :func:`read_table`: DNF tuples or a ``pyarrow.compute.Expression``."""


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
