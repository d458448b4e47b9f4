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

Modules: :mod:`~goup_probe.store.paths` (creating and clearing the directory,
part names, atomic text writes), :mod:`~goup_probe.store.writer` (appending
parts), :mod:`~goup_probe.store.tables` (reading, listing, replacing and
deleting whole tables), :mod:`~goup_probe.store.meta` (``run.json``),
:mod:`~goup_probe.store.run` (:class:`Run`, :func:`load_run`), :mod:`~goup_probe.store.lock`
(one writer per run directory).
"""

from __future__ import annotations

from goup_probe.store.convert import arrow_to_pandas
from goup_probe.store.lock import LockHolder, RunLock, RunLockedError
from goup_probe.store.meta import read_meta, update_meta, utc_now
from goup_probe.store.paths import RUN_JSON, RunDirectoryError, atomic_write_text, prepare_run_dir
from goup_probe.store.run import Run, load_run
from goup_probe.store.tables import (
    Filters,
    delete_table,
    list_tables,
    read_arrow,
    read_table,
    replace_table,
    table_columns,
)
from goup_probe.store.writer import PARQUET_COMPRESSION, NullWriter, RunWriter

__all__ = [
    "PARQUET_COMPRESSION",
    "RUN_JSON",
    "Filters",
    "LockHolder",
    "NullWriter",
    "Run",
    "RunDirectoryError",
    "RunLock",
    "RunLockedError",
    "RunWriter",
    "arrow_to_pandas",
    "atomic_write_text",
    "delete_table",
    "list_tables",
    "load_run",
    "prepare_run_dir",
    "read_arrow",
    "read_meta",
    "read_table",
    "replace_table",
    "table_columns",
    "update_meta",
    "utc_now",
]
