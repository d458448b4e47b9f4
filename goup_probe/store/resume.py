"""Continuing a run in its own directory: a training job resumed from a checkpoint appends to its run.

A job that resumes from a checkpoint taken at step N re-runs steps N, N+1, ...
If the first job wrote rows for steps past N before it stopped (it crashed, or
was stopped, after the checkpoint), those rows describe a trajectory the
resumed job does not follow; :func:`truncate_for_resume` removes them from
every captured table (atomically, table by table, with
:func:`~goup_probe.store.tables.replace_table`), so the run holds each step
once. Analysis tables (``ou`` and the like) are left as they are: rebuild them
once the run is over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goup_probe.store.errors import RunDirectoryError
from goup_probe.store.meta import read_meta
from goup_probe.store.tables import list_tables, read_table, replace_table

CAPTURED_TABLES = ("stats", "samples", "trajectories", "noise", "noise_probe")
"""The tables a probe appends to at each step (keyed by ``step``)."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues.

    Attributes
    ----------
    step : int
        The probe step the resumed job's first optimizer step gets.
    previous_status : str
        The status the run had (``completed``, ``interrupted``, ``failed``, or
        ``running`` when its writer died without a word).
    dropped_rows : dict
        Rows removed per table because they were at ``step`` or later.
    captured_steps : int
        Captured steps kept (those before ``step``).
    meta : dict
        The run's ``run.json`` as it was.
    """

    step: int
    previous_status: str
    dropped_rows: dict[str, int]
    captured_steps: int
    meta: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """The entry recorded in ``run.json``'s ``resumes`` list."""
        return {
            "at_step": self.step,
            "previous_status": self.previous_status,
            "previous_steps": self.meta.get("steps"),
            "dropped_rows": self.dropped_rows,
        }


def resume_point(run_dir: Path, at_step: int | None) -> ResumePoint:
    """Read the run in ``run_dir`` and drop its rows at ``at_step`` or later (the caller holds its lock).

    Parameters
    ----------
    run_dir : Path
        A goup_probe probe run.
    at_step : int or None
        The first probe step of the resumed job (e.g. the step of the checkpoint
        it restarts from). None: right after the last step on record.

    Raises
    ------
    RunDirectoryError
        When ``run_dir`` holds no probe run, or ``at_step`` is negative.
    """
    meta = read_meta(run_dir)
    if meta.get("kind") not in (None, "probe"):
        raise RunDirectoryError(f"{run_dir} holds a {meta['kind']!r} run, not a probe run; cannot resume it")
    last = _last_step(run_dir)
    recorded = int(meta.get("steps") or 0)
    if at_step is None:
        at_step = max(recorded, last + 1)
    if at_step < 0:
        raise RunDirectoryError(f"resume must be a step >= 0, got {at_step}")
    dropped = {}
    for table in CAPTURED_TABLES:
        if table in list_tables(run_dir):
            frame = read_table(run_dir, table)
            keep = frame["step"] < at_step
            if not keep.all():
                replace_table(run_dir, table, frame[keep].reset_index(drop=True))
                dropped[table] = int((~keep).sum())
    captured = 0
    if "stats" in list_tables(run_dir):
        captured = int(read_table(run_dir, "stats", columns=["step"])["step"].nunique())
    return ResumePoint(
        step=at_step,
        previous_status=str(meta.get("status")),
        dropped_rows=dropped,
        captured_steps=captured,
        meta=meta,
    )


def check_resumable(run_dir: Path, fresh: dict[str, Any]) -> None:
    """Refuse to continue a run whose tensors or tracers differ from the new probe's (``fresh``: its meta).

    A resumed run must record the same tensors with the same tracer coordinates,
    or its trajectories and per-layer series would not join.

    Raises
    ------
    RunDirectoryError
        Naming what differs.
    """
    meta = read_meta(run_dir)
    problems = []
    before, now = _tracked_names(meta), _tracked_names(fresh)
    if before != now:
        gone, new = sorted(before - now), sorted(now - before)
        problems.append(f"tracked tensors differ (only before: {gone[:3]}, only now: {new[:3]})")
    for option in ("tracers", "seed", "sample_size"):
        old, new_value = meta.get("capture", {}).get(option), fresh["capture"].get(option)
        if old != new_value:
            problems.append(f"{option} was {old!r}, now {new_value!r}")
    if problems:
        raise RunDirectoryError(
            f"cannot resume the run in {str(run_dir)!r}: " + "; ".join(problems) + " (use a new run_dir)"
        )


def _tracked_names(meta: dict[str, Any]) -> set[str]:
    return {t["name"] for t in meta.get("model", {}).get("tensors", []) if t.get("tracked")}


def _last_step(run_dir: Path) -> int:
    """The last step any captured table holds (-1 when none)."""
    last = -1
    for table in CAPTURED_TABLES:
        if table in list_tables(run_dir):
            steps = read_table(run_dir, table, columns=["step"])["step"]
            if len(steps):
                last = max(last, int(steps.max()))
    return last
