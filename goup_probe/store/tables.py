"""Whole tables of a run directory: read (with projection and filters), list, replace, delete.

Also what counts as a part (:func:`part_files`) and the clean-up of the hidden
temporaries killed writers leave (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from goup_probe import schema
from goup_probe.store.convert import consume_to_pandas
from goup_probe.store.paths import _PART_RE, RUN_JSON, RunDirectoryError
from goup_probe.store.row_groups import passes_whole
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
        skipped with a warning. So does a part of a table that
        :mod:`goup_probe.schema` declares when it lacks a declared column or holds
        one with an incompatible type (extra columns, such as a user statistic's
        in ``stats``, are allowed), and an entry named like a part that is not a
        regular file (a folder, a symlink; see :func:`part_files`).
    skipped : list, optional
        Paths of skipped parts are appended here.

    Returns
    -------
    DataFrame
        Empty, with the table's columns when :mod:`goup_probe.schema` knows them,
        if the table is absent or no row passes the filter.
    """
    wanted = None if columns is None else list(columns)
    pieces = _read_pieces(Path(run_dir), name, wanted, filters, on_error, skipped)
    if not pieces:
        return _project(_empty_frame(schema.TABLES.get(name)), wanted)
    held = [_concat(pieces, _table_dir(Path(run_dir), name))]
    pieces.clear()  # the conversion then holds the only reference: each list chunk is freed once copied
    return _project(consume_to_pandas(held), wanted)


def read_arrow(
    run_dir: str | os.PathLike[str],
    name: str,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list[str] | None = None,
) -> pa.Table | None:
    """:func:`read_table` without the conversion to pandas: the parts as one Arrow table.

    For readers that turn list columns into matrices themselves (a list column
    as pandas is one Python object per row). The parameters, checks and
    ``on_error`` are those of :func:`read_table`.

    Returns
    -------
    pyarrow.Table or None
        Declared columns cast to their declared types; None when the table is
        absent or no row passes the filter.
    """
    wanted = None if columns is None else list(columns)
    pieces = _read_pieces(Path(run_dir), name, wanted, filters, on_error, skipped)
    return _concat(pieces, _table_dir(Path(run_dir), name)) if pieces else None


def _read_pieces(
    run_dir: Path,
    name: str,
    columns: list[str] | None,
    filters: Filters | None,
    on_error: Literal["raise", "skip"],
    skipped: list[str] | None,
) -> list[pa.Table]:
    """The rows of each part that pass ``filters``, in part order (damaged parts as ``on_error`` says)."""
    folder = _table_dir(run_dir, name)
    arrow_schema = schema.TABLES.get(name)
    pieces = []
    for part in _part_entries(folder) if folder.is_dir() else []:
        try:
            piece = _read_part(part, name, arrow_schema, columns, filters)
        except (_BadPart, pa.ArrowException, OSError, ValueError) as exc:
            skip_or_raise(exc, part, on_error, skipped)
            continue
        if piece is not None:
            pieces.append(piece)
    return pieces


def _concat(pieces: list[pa.Table], folder: Path) -> pa.Table:
    """The parts' rows as one table (no copy), or :class:`RunDirectoryError` if their schemas clash."""
    try:
        return pa.concat_tables(pieces, promote_options="default")
    except pa.ArrowException as exc:
        raise RunDirectoryError(f"parts of {folder} have incompatible schemas: {exc}") from exc


def skip_or_raise(
    exc: Exception, part: Path, on_error: Literal["raise", "skip"], skipped: list[str] | None
) -> None:
    """A part that cannot be read: raise :class:`RunDirectoryError`, or warn and note it in ``skipped``."""
    message = (
        str(exc)
        if isinstance(exc, _BadPart)
        else f"cannot read {part}: the Parquet part is damaged or truncated ({exc})"
    )
    if on_error == "raise":
        raise RunDirectoryError(message) from exc
    warnings.warn(message + "; skipped", RuntimeWarning, stacklevel=4)
    if skipped is not None:
        skipped.append(str(part))


def _filter_columns(filters: Filters | None) -> set[str]:
    """Column names a tuple-form filter uses (none for an Expression)."""
    if not isinstance(filters, list):
        return set()
    terms = [t for f in filters for t in (f if isinstance(f, list) else [f])]
    return {str(t[0]) for t in terms if isinstance(t, tuple) and t}


class _BadPart(Exception):
    """A part that is readable but is not what its table holds; the message names it."""


def _read_part(
    part: Path,
    name: str,
    declared: pa.Schema | None,
    columns: list[str] | None,
    filters: Filters | None,
) -> pa.Table | None:
    """One part, checked against ``declared``, with projection and filter pushed down.

    Returns None when the part lacks a column the filter uses. Declared
    columns are cast to their declared types (e.g. int32 to int64), so that
    the parts of a table concatenate.
    """
    with open_part(part, name, declared) as handle:  # one open: footer for the check, then the rows
        names = set(handle.schema_arrow.names)
        present = None if columns is None else [c for c in columns if c in names]
        if filters is None:
            data = _read_unfiltered(handle, present)
        elif not _filter_columns(filters) <= names:
            return None
        else:
            data = _read_filtered(part, present, filters)
    if declared is None:
        return data
    data = _cast_declared(part, data, declared)
    return _add_missing(data, declared, schema.optional_columns(name, declared), columns)


def _read_unfiltered(handle: pq.ParquetFile, columns: list[str] | None) -> pa.Table:
    """Every row of an open part; one with a list column is decoded a row group at a time.

    ``ParquetFile.read`` decodes a list column of all row groups into one
    chunk, growing its buffers by copying: a 400 MB part of ``samples`` (100
    row groups) took 2.2 s with a 1.7 GB peak, against 0.9 s and 0.58 GB a
    row group at a time (the part's other columns with it). A part of flat
    columns only is read whole: a chunk per row group made the 10⁶-row
    ``stats`` conversion peak 350 MB higher.
    """
    fields = handle.schema_arrow if columns is None else [handle.schema_arrow.field(c) for c in columns]
    if handle.num_row_groups < 2 or not any(pa.types.is_nested(f.type) for f in fields):
        return handle.read(columns=columns)
    return pa.concat_tables(
        [handle.read_row_group(group, columns=columns) for group in range(handle.num_row_groups)]
    )


def open_part(part: Path, name: str, declared: pa.Schema | None) -> pq.ParquetFile:
    """A part of table ``name``, open, its footer checked against ``declared`` (:class:`_BadPart` if not)."""
    kind = _entry_kind(part)
    if kind != "file":
        raise _BadPart(
            f"{part} is {kind}, not a Parquet part: only regular files named part-NNNNNN.parquet are parts"
        )
    handle = pq.ParquetFile(part)
    if declared is not None:
        try:
            _check_part_schema(
                part, name, handle.schema_arrow, declared, schema.optional_columns(name, declared)
            )
        except BaseException:
            handle.close()
            raise
    return handle


def _add_missing(
    data: pa.Table, declared: pa.Schema, added: frozenset[str] | None, columns: list[str] | None
) -> pa.Table:
    """``data`` with the declared columns an older part lacks (:func:`schema.optional_columns`) as nulls."""
    for column in sorted(added or ()):
        if column not in data.column_names and (columns is None or column in columns):
            field = declared.field(column)
            data = data.append_column(field, pa.nulls(data.num_rows, field.type))
    return data


def _read_filtered(part: Path, columns: list[str] | None, filters: Filters) -> pa.Table:
    """The rows of one part that pass ``filters``, decoded one row group at a time.

    Row groups whose statistics rule the filter out are skipped unread, those
    whose statistics prove every row passes are read unfiltered
    (:func:`~goup_probe.store.row_groups.passes_whole`); the others are
    filtered as each is decoded, so a part of 100 000 rows of
    tracer values is never held whole (``pq.read_table(filters=...)`` decodes
    several row groups ahead and peaked at 2.5× the part's size).
    """
    expression = pq.filters_to_expression(filters) if isinstance(filters, list) else filters
    (fragment,) = ds.dataset(part, format="parquet").get_fragments()
    footer = fragment.metadata
    pieces = [
        group.to_table(columns=columns)
        if passes_whole(footer.row_group(group.row_groups[0].id), filters)
        else group.to_table(columns=columns, filter=expression)
        for group in fragment.split_by_row_group(filter=expression)
    ]
    if pieces:
        return pa.concat_tables(pieces)
    empty = fragment.physical_schema.empty_table()
    return empty if columns is None else empty.select(columns)


def _check_part_schema(
    part: Path, name: str, found: pa.Schema, declared: pa.Schema, added: frozenset[str] = frozenset()
) -> None:
    """Raise :class:`_BadPart` when ``found`` lacks a declared column (not in ``added``) or mistypes one."""
    types = dict(zip(found.names, found.types, strict=True))
    missing = [f.name for f in declared if f.name not in types and f.name not in added]
    wrong = [
        f"{f.name} is {types[f.name]}, declared {f.type}"
        for f in declared
        if f.name in types and types[f.name] != f.type and not _compatible(types[f.name], f.type)
    ]
    if missing or wrong:
        problems = ([f"lacks columns {missing}"] if missing else []) + wrong
        raise _BadPart(
            f"{part} does not match the schema of table {name!r}: {'; '.join(problems)} "
            f"(it holds {found.names[:8]}{' ...' if len(found.names) > 8 else ''})"
        )


_KINDS = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_timestamp)


def _compatible(found: pa.DataType, declared: pa.DataType) -> bool:
    """Whether a part's column of type ``found`` can stand for a column declared ``declared``.

    Same kind (any integer width for an integer, any float width for a float,
    string or large string, a list of a compatible value type), dictionary
    encoding ignored; an all-null column fits any type.
    """
    if found == declared or pa.types.is_null(found):
        return True
    if pa.types.is_dictionary(found):
        found = found.value_type
    if pa.types.is_string(declared) or pa.types.is_large_string(declared):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if any(is_list(declared) for is_list in lists):
        return any(is_list(found) for is_list in lists) and _compatible(found.value_type, declared.value_type)
    for is_kind in _KINDS:
        if is_kind(declared):
            return is_kind(found)
    return False


def _cast_declared(part: Path, data: pa.Table, declared: pa.Schema) -> pa.Table:
    """Cast the declared columns of ``data`` to their declared types (out of range: :class:`_BadPart`)."""
    targets = dict(zip(declared.names, declared.types, strict=True))
    for index, field in enumerate(data.schema):
        target = targets.get(field.name)
        if target is None or field.type == target:
            continue
        try:
            data = data.set_column(index, field.name, data.column(index).cast(target))
        except pa.ArrowException as exc:
            raise _BadPart(
                f"{part}: column {field.name} ({field.type}) does not convert to {target}: {exc}"
            ) from exc
    return data


def _project(frame: pd.DataFrame, columns: list[str] | None) -> pd.DataFrame:
    if columns is None:
        return frame
    return frame[[c for c in columns if c in frame.columns]]


def _empty_frame(arrow_schema: pa.Schema | None) -> pd.DataFrame:
    if arrow_schema is None:
        return pd.DataFrame()
    return arrow_schema.empty_table().to_pandas()


# ----------------------------------------------------------------------------- parts and temporaries


def _entry_kind(path: Path) -> str:
    """``"file"`` for a regular file (not a symlink), else what ``path`` is, for a message."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return f"unreadable ({exc})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        try:
            target = "a folder" if stat.S_ISDIR(os.stat(path).st_mode) else "a file"
        except OSError:
            target = "nothing (broken or looping)"
        return f"a symlink to {target}"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _part_entries(folder: Path) -> list[Path]:
    """Every entry of ``folder`` named like a part, whatever it is, sorted by name."""
    return sorted(p for p in folder.iterdir() if _PART_RE.match(p.name))


def part_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The parts of a table folder, sorted: regular files named ``part-NNNNNN.parquet``.

    Symlinks are never parts, even to a regular file (the writer never makes
    one, and one to a folder would be read as a whole dataset); nor are
    folders or anything else named like a part. :func:`read_table` reports
    those (raises, or skips them with a warning). The writers' hidden
    temporaries (``.part-*.tmp``) do not match the name and are never read.
    """
    return [p for p in _part_entries(Path(folder)) if _entry_kind(p) == "file"]


_TEMP_RANDOM = r"[a-z0-9_]{8}"  # tempfile.mkstemp's random part: 8 of a-z, 0-9, _
_PART_TEMP_RE = re.compile(rf"^\.part-{_TEMP_RANDOM}\.tmp$")
"""RunWriter's part being written: ``mkstemp(prefix=".part-", suffix=".tmp")`` in the table folder."""
_META_TEMP_RE = re.compile(rf"^\.{re.escape(RUN_JSON)}\.{_TEMP_RANDOM}\.tmp$")
"""run.json being rewritten: atomic_write_text's ``mkstemp(prefix=".run.json.", suffix=".tmp")``."""

STALE_TEMPORARY_AGE_S = 3600.0
"""Default age (seconds since last modified) past which a hidden temporary counts as stale."""


def remove_stale_temporaries(
    run_dir: str | os.PathLike[str], older_than_s: float = STALE_TEMPORARY_AGE_S
) -> list[Path]:
    """Delete the hidden temporaries killed writers left in a run directory; return what went.

    Only regular files (not symlinks) of the toolkit's own naming are touched:
    ``.run.json.XXXXXXXX.tmp`` in ``run_dir`` (from
    :func:`~goup_probe.store.paths.atomic_write_text`) and
    ``.part-XXXXXXXX.tmp`` in its table folders (from :class:`RunWriter`),
    ``XXXXXXXX`` being :func:`tempfile.mkstemp`'s random part; and only those
    last modified more than ``older_than_s`` seconds ago, so a file another
    writer is still writing is left alone. Symlinked and hidden folders are not
    entered (a ``replace_table`` staging folder is settled by the next replace).
    Call it while holding the run's lock; loading a run never calls it
    (reading never deletes anything). A file that cannot be deleted is left,
    with a :class:`RuntimeWarning` naming it.

    Parameters
    ----------
    run_dir : path
        The run directory.
    older_than_s : float
        Minimum age in seconds (``0`` removes every such temporary).

    Returns
    -------
    list of Path
        The files deleted, sorted.

    Raises
    ------
    TypeError, ValueError
        If ``older_than_s`` is not a finite number ``>= 0``.
    RunDirectoryError
        If ``run_dir`` is not a directory.
    """
    if isinstance(older_than_s, bool) or not isinstance(older_than_s, (int, float)):
        raise TypeError(f"older_than_s must be a number of seconds, got {older_than_s!r}")
    if not (0 <= older_than_s < float("inf")):
        raise ValueError(f"older_than_s must be finite and >= 0, got {older_than_s!r}")
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirectoryError(f"run directory {str(path)!r} is not a directory")
    candidates = [p for p in path.iterdir() if _META_TEMP_RE.match(p.name)]
    for folder in path.iterdir():
        if folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue
        candidates += [p for p in folder.iterdir() if _PART_TEMP_RE.match(p.name)]
    now = time.time()
    removed = []
    for candidate in sorted(candidates):
        try:
            info = os.lstat(candidate)
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime <= older_than_s:
                continue
            candidate.unlink()
        except FileNotFoundError:
            continue  # its writer finished (renamed it) or removed it meanwhile
        except OSError as exc:
            warnings.warn(f"cannot remove stale temporary {candidate}: {exc}", RuntimeWarning, stacklevel=2)
            continue
        removed.append(candidate)
    return removed


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
    return sorted(n for n in names if (d := _table_dir(path, n)).is_dir() and part_files(d))


def table_columns(run_dir: str | os.PathLike[str], name: str) -> list[str]:
    """Column names over all parts of a table, read from the Parquet footers only (no rows)."""
    folder = _table_dir(Path(run_dir), name)
    out: dict[str, None] = {}
    for part in part_files(folder) if folder.is_dir() else []:
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
