"""``run.json``: reading it, merging changes into it, and the timestamps it holds."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goup_probe import schema
from goup_probe.store.paths import RUN_JSON, RunDirectoryError
from goup_probe.store.writer import RunWriter


def read_meta(run_dir: Path) -> dict[str, Any]:
    """Parse ``run.json`` and check its ``schema_version``.

    Parameters
    ----------
    run_dir : Path
        The run directory.

    Returns
    -------
    dict
        The JSON object ``run.json`` holds.

    Raises
    ------
    RunDirectoryError
        Naming the file, when it is missing or unreadable, is not UTF-8 text,
        is not valid JSON, is nested too deeply to parse, does not hold an
        object, or holds a ``schema_version`` that is not an integer between 1
        and :data:`goup_probe.schema.SCHEMA_VERSION` (a string, float, bool or
        null is refused, not converted). A ``run.json`` without
        ``schema_version`` is accepted: the comparison runs of
        :mod:`goup_probe.fidelity` write none.
    """
    meta_path = Path(run_dir) / RUN_JSON
    try:
        raw = meta_path.read_bytes()
    except FileNotFoundError as exc:
        raise RunDirectoryError(f"{meta_path} not found: is {str(run_dir)!r} a run?") from exc
    except OSError as exc:
        raise RunDirectoryError(f"cannot read {meta_path}: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunDirectoryError(
            f"{meta_path} is not UTF-8 text (byte {exc.start}: {exc.reason}); it is damaged"
        ) from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{meta_path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise RunDirectoryError(
            f"{meta_path} is nested too deeply to parse; it is not a run.json goup_probe wrote"
        ) from exc
    if not isinstance(meta, dict):
        raise RunDirectoryError(f"{meta_path} must hold a JSON object, not {type(meta).__name__}")
    _check_schema_version(meta_path, meta)
    return meta


def _check_schema_version(meta_path: Path, meta: Mapping[str, Any]) -> None:
    """``schema_version``, when present, is an int (not a bool) in ``1 .. schema.SCHEMA_VERSION``."""
    if "schema_version" not in meta:
        return
    version = meta["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise RunDirectoryError(
            f"{meta_path} has schema_version {version!r} ({type(version).__name__}); "
            f"it must be an integer from 1 to {schema.SCHEMA_VERSION}"
        )
    if version < 1:
        raise RunDirectoryError(
            f"{meta_path} has schema_version {version!r}; "
            f"it must be an integer from 1 to {schema.SCHEMA_VERSION}"
        )
    if version > schema.SCHEMA_VERSION:
        raise RunDirectoryError(
            f"{meta_path} has schema_version {version}, newer than this goup_probe "
            f"understands ({schema.SCHEMA_VERSION}); upgrade goup_probe"
        )


def update_meta(run_dir: str | os.PathLike[str], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into ``run.json`` (top-level keys replaced), rewrite it atomically, return it."""
    path = Path(run_dir)
    meta = read_meta(path)
    meta.update(changes)
    RunWriter(path).write_meta(meta)
    return meta


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (every timestamp of ``run.json`` and reports)."""
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
