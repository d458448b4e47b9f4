"""A run directory read back: :class:`Run` and :func:`load_run`."""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from goup_probe import schema
from goup_probe.store.meta import read_meta
from goup_probe.store.paths import RunDirectoryError
from goup_probe.store.tables import Filters, list_tables, read_arrow, read_table

_CACHED = frozenset({"stats", "samples", "trajectories"})
"""Tables a :class:`Run` keeps in memory once read through their property."""


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

    def table(
        self, name: str, columns: Sequence[str] | None = None, filters: Filters | None = None
    ) -> pd.DataFrame:
        """Read one table (all its parts, in order) as a DataFrame; empty if absent.

        Parameters
        ----------
        name : str
            The table.
        columns : sequence of str, optional
            Read only these columns (projection pushed into the Parquet reader).
        filters : list of tuples or pyarrow.compute.Expression, optional
            Read only the rows that pass (see :func:`~goup_probe.store.tables.read_table`).

        Returns
        -------
        DataFrame
            Read from disk at every call (the cached ``stats``, ``samples`` and
            ``trajectories`` properties are not consulted); damaged parts follow
            ``on_error`` and are listed in ``skipped_files``.
        """
        return read_table(
            self.path, name, columns, filters, on_error=self.on_error, skipped=self.skipped_files
        )

    def arrow(
        self, name: str, columns: Sequence[str] | None = None, filters: Filters | None = None
    ) -> pa.Table | None:
        """:meth:`table` as an Arrow table (no pandas conversion); None if absent or no row passes.

        For readers that turn list columns into matrices themselves
        (:func:`~goup_probe.store.tables.read_arrow`).
        """
        return read_arrow(
            self.path, name, columns, filters, on_error=self.on_error, skipped=self.skipped_files
        )

    def is_read(self, name: str) -> bool:
        """Whether table ``name`` is in memory whole (read by its property: stats, samples, trajectories).

        A selection of such a table costs no disk read; of any other, read it with :meth:`table`.
        """
        return name in _CACHED and name in self.__dict__

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
        """The stored subsample of one quantity as a float64 array (only its row is read from disk)."""
        import numpy as np

        if self.is_read("samples"):
            s = self.samples
            hit = s[(s["step"] == step) & (s["param"] == param) & (s["quantity"] == quantity)]
        else:  # one row: read it alone, not the whole table
            wanted = [
                ("step", "==", int(step)),
                ("param", "==", str(param)),
                ("quantity", "==", str(quantity)),
            ]
            hit = self.table("samples", columns=["values"], filters=wanted)
        if hit.empty:
            raise KeyError(f"no sample for step={step}, param={param!r}, quantity={quantity!r}")
        return np.asarray(hit.iloc[0]["values"], dtype=np.float64)


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
        A part whose columns do not match its table's declared schema is
        handled the same way (see :func:`~goup_probe.store.tables.read_table`),
        and so is a missing or malformed ``run.json`` (with ``"skip"`` the
        metadata is left empty).

    Returns
    -------
    Run
        Metadata and lazily-read tables.

    Raises
    ------
    RunDirectoryError
        If ``run_dir`` is not a directory, saying what it is instead (missing,
        a file, a broken symlink, a symlink loop), whatever ``on_error``.
        Loading never deletes or rewrites anything.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(run_dir)
    _check_is_directory(path)
    try:
        meta = read_meta(path)
    except RunDirectoryError as exc:
        if on_error == "raise":
            raise
        warnings.warn(f"{exc}; metadata left empty", RuntimeWarning, stacklevel=2)
        meta = {}
    return Run(path=path, meta=meta, on_error=on_error)


def _check_is_directory(path: Path) -> None:
    """Raise :class:`RunDirectoryError` saying what ``path`` is when it is not a directory."""
    if path.is_dir():
        return
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunDirectoryError(
                f"run directory {str(path)!r} is a symlink loop (it never resolves to a directory)"
            ) from exc
        if path.is_symlink():
            raise RunDirectoryError(
                f"run directory {str(path)!r} is a broken symlink (to {os.readlink(path)!r})"
            ) from exc
        if exc.errno == errno.ENOENT:
            raise RunDirectoryError(f"run directory {str(path)!r} does not exist") from exc
        raise RunDirectoryError(f"cannot open run directory {str(path)!r}: {exc}") from exc
    if path.is_file():
        raise RunDirectoryError(f"run directory {str(path)!r} is a file, not a run directory")
    raise RunDirectoryError(f"run directory {str(path)!r} is not a directory (a device, FIFO or socket)")
