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
