"""What a run directory takes on disk: :func:`disk_usage`, and the bytes per step ``run.json`` records."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goup_probe.store.lock import LOCK_NAME
from goup_probe.store.paths import RunDirectoryError
from goup_probe.store.tables import _table_dir, list_tables, part_files


@dataclass(frozen=True)
class DiskUsage:
    """Bytes and files of one run directory.

    ``bytes_total`` and ``files_total`` count every regular file under the
    directory (``run.json``, parts, the report, hidden temporaries; symlinks are
    not followed) but the writer's lock file (a few bytes, there only while a
    process writes the run); the per-table figures count the Parquet parts of each table.
    Sizes are apparent sizes (``st_size``).
    """

    bytes_total: int
    files_total: int
    bytes_by_table: dict[str, int] = field(default_factory=dict)
    files_by_table: dict[str, int] = field(default_factory=dict)


def disk_usage(run_dir: str | os.PathLike[str]) -> DiskUsage:
    """Measure a run directory (see :class:`DiskUsage`).

    Raises
    ------
    RunDirectoryError
        If ``run_dir`` is not a directory.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirectoryError(f"run directory {str(path)!r} does not exist")
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            if name == LOCK_NAME and root == str(path):
                continue
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # removed meanwhile
            if not os.path.islink(os.path.join(root, name)):
                total += info.st_size
                files += 1
    by_bytes: dict[str, int] = {}
    by_files: dict[str, int] = {}
    for name in list_tables(path):
        parts = part_files(_table_dir(path, name))
        by_bytes[name] = sum(_size(p) for p in parts)
        by_files[name] = len(parts)
    return DiskUsage(total, files, by_bytes, by_files)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def bytes_per_step(nbytes: int, steps: int | None, captured_steps: int | None) -> dict[str, float | None]:
    """``nbytes`` per optimizer step and per captured step (None where the count is 0 or unknown)."""

    def per(count: int | None) -> float | None:
        return nbytes / count if isinstance(count, int) and count > 0 else None

    return {"bytes_per_step": per(steps), "bytes_per_captured_step": per(captured_steps)}


def disk_meta(run_dir: str | os.PathLike[str], *, steps: int, captured_steps: int) -> dict[str, Any]:
    """The ``disk`` entry of ``run.json``: the directory's size, per table, and per (captured) step.

    Parameters
    ----------
    run_dir : path
        The run directory.
    steps, captured_steps : int
        The run's optimizer steps and captured steps (``run.json``'s ``steps`` and ``captured_steps``).
    """
    usage = disk_usage(run_dir)
    return {
        "bytes": usage.bytes_total,
        "files": usage.files_total,
        "bytes_by_table": dict(usage.bytes_by_table),
        "files_by_table": dict(usage.files_by_table),
        **bytes_per_step(usage.bytes_total, steps, captured_steps),
    }


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in decimal units: ``"812 B"``, ``"6.5 kB"``, ``"31.2 MB"``, ``"1.40 GB"``."""
    if nbytes < 1000:
        return f"{nbytes:.0f} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6)):
        if nbytes < 1000 * scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e9:.2f} GB"


def describe_disk(entry: Mapping[str, Any]) -> str:
    """One line for a ``run.json`` ``disk`` entry (see :func:`disk_meta`), e.g. for ``goup-probe summary``.

    ``"Disk: 31.2 MB in 8 files (trajectories 25.4 MB, samples 4.9 MB, ...); 20.8 kB per step,
    520 kB per captured step."``
    """
    tables = sorted(entry.get("bytes_by_table", {}).items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{name} {format_bytes(size)}" for name, size in tables[:4])
    if len(tables) > 4:
        detail += ", ..."
    line = f"Disk: {format_bytes(entry.get('bytes', 0))} in {entry.get('files', 0)} files"
    line += f" ({detail})" if detail else ""
    rates = [
        f"{format_bytes(value)} per {what}"
        for key, what in (("bytes_per_step", "step"), ("bytes_per_captured_step", "captured step"))
        if isinstance(value := entry.get(key), int | float)
    ]
    return line + ("; " + ", ".join(rates) if rates else "") + "."
