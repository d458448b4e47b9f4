"""A table read a column at a time: the peak is the result and one column, not the result twice.

Reading a whole table and then converting it holds the Arrow table beside the
DataFrame it becomes (and, reordered, a copy of each column beside that): a
328 000-row ``stats`` table of 130 MB took the report 280 MB above its floor.
:class:`TableColumns` opens and checks a table's parts once, then decodes one
column of all of them per call; :func:`columns_to_frame` converts columns one by
one into a DataFrame of one block per column, each Arrow column released as
soon as it is converted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from goup_probe import schema
from goup_probe.memory import release_free_memory
from goup_probe.store.convert import column_to_pandas
from goup_probe.store.paths import RunDirectoryError
from goup_probe.store.tables import (
    _add_missing,
    _BadPart,
    _cast_declared,
    _part_entries,
    _table_dir,
    open_part,
    skip_or_raise,
)

MAX_OPEN_PARTS = 64
"""Most parts :class:`TableColumns` holds open (a compacted run has a few per table; one still being
written may have thousands, more than a process may open)."""


def fits_column_reads(run_dir: str | os.PathLike[str], name: str) -> bool:
    """Whether table ``name`` has at most :data:`MAX_OPEN_PARTS` parts, so :class:`TableColumns` reads it."""
    folder = _table_dir(Path(run_dir), name)
    return len(_part_entries(folder) if folder.is_dir() else []) <= MAX_OPEN_PARTS


class TableColumns:
    """The parts of one table, open and checked, read a column at a time.

    Every part is opened and its schema checked against the declared one on
    entry, with the rules and ``on_error`` handling of
    :func:`~goup_probe.store.tables.read_table` (a part that cannot be opened
    or does not match is skipped with a warning, or raises). The files stay
    open until exit, so every column comes from the same parts even while a
    writer appends or a compaction replaces them; a table of more than
    :data:`MAX_OPEN_PARTS` parts is refused (ValueError). A part that opens but fails
    while a column is decoded raises :class:`RunDirectoryError` whatever
    ``on_error`` says: the columns already read include its rows.

    Parameters
    ----------
    run_dir : path
        The run directory.
    name : str
        The table.
    on_error : {"raise", "skip"}
        What a damaged or mismatched part does on entry.
    skipped : list of str, optional
        Receives the paths of skipped parts.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        name: str,
        *,
        on_error: Literal["raise", "skip"] = "raise",
        skipped: list[str] | None = None,
    ) -> None:
        self.name = name
        self._folder = _table_dir(Path(run_dir), name)
        self._declared = schema.TABLES.get(name)
        self._on_error = on_error
        self._skipped = skipped
        self._parts: list[tuple[Path, pq.ParquetFile]] = []

    def __enter__(self) -> TableColumns:
        entries = _part_entries(self._folder) if self._folder.is_dir() else []
        if len(entries) > MAX_OPEN_PARTS:
            raise ValueError(
                f"{self._folder} has {len(entries)} parts; a column-wise read holds at most "
                f"{MAX_OPEN_PARTS} open: read the table whole (read_arrow) or compact the run first"
            )
        for part in entries:
            try:
                self._parts.append((part, open_part(part, self.name, self._declared)))
            except (_BadPart, pa.ArrowException, OSError, ValueError) as exc:
                skip_or_raise(exc, part, self._on_error, self._skipped)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for _, handle in self._parts:
            handle.close()
        self._parts.clear()

    def column(self, name: str) -> pa.ChunkedArray | None:
        """One column of every part, in part order, cast to its declared type.

        A declared optional column an older part lacks is nulls there; None when
        no part has the column (and it is not declared) or there are no parts.
        """
        pieces = []
        for part, handle in self._parts:
            try:
                pieces.append(self._piece(part, handle, name))
            except (_BadPart, pa.ArrowException, OSError, ValueError) as exc:
                raise RunDirectoryError(
                    f"cannot read column {name!r} of {part}: the Parquet part is damaged ({exc})"
                ) from exc
        if not any(name in p.column_names for p in pieces):
            return None
        try:
            return pa.concat_tables(pieces, promote_options="default").column(name)
        except pa.ArrowException as exc:
            raise RunDirectoryError(
                f"parts of {self._folder} have incompatible types of {name}: {exc}"
            ) from exc

    def _piece(self, part: Path, handle: pq.ParquetFile, name: str) -> pa.Table:
        """``name`` of one part; a part without it gives its rows and no column (nulls once concatenated)."""
        data = handle.read(columns=[name] if name in handle.schema_arrow.names else [])
        if self._declared is None:
            return data
        data = _cast_declared(part, data, self._declared)
        return _add_missing(data, self._declared, schema.optional_columns(self.name, self._declared), [name])


def columns_to_frame(columns: Iterable[tuple[str, pa.ChunkedArray]]) -> pd.DataFrame:
    """A DataFrame of one block per column, each converted and released as it is drawn.

    Each column converts as :func:`~goup_probe.store.convert.arrow_to_pandas`
    converts a table's (writable arrays, the same dtypes); drawn lazily from a
    generator that keeps no reference to what it yields, at most one Arrow
    column is alive beside the frame.
    """
    converted: dict[str, pd.Series] = {}
    for name, column in columns:
        converted[name] = column_to_pandas(name, column)
        del column  # gone once converted, if ``columns`` keeps no reference to it
    release_free_memory()
    return pd.DataFrame(converted, copy=False)
