"""A probe run's record, ``run.json``, over the probe's life: started or resumed, updated, closed.

:class:`RunRecord` owns what the probe writes besides rows: the metadata, the
tracer index, the room reserved for the final status, and the directory's lock
(taken by :func:`~goup_probe.capture.writer.open_writer`, released here at the
end). The probe hands it the progress to record (:meth:`RunRecord.update`).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goup_probe.capture.dispatch import StepDispatcher
from goup_probe.capture.meta import utc_now
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.tracers import write_tracer_index
from goup_probe.capture.writer import OpenedRun
from goup_probe.dist.context import DistInfo
from goup_probe.store.compact import compact_run
from goup_probe.store.errors import RunDirectoryError
from goup_probe.store.reserve import release_space, reserve_space
from goup_probe.store.resume import check_resumable, resume_point
from goup_probe.store.usage import disk_meta

RESERVE_FACTOR = 4
"""Room kept for the final ``run.json``, in multiples of its size at attach."""


class RunRecord:
    """The ``run.json`` of one probe run, and the lock and reserved room that go with it.

    Parameters
    ----------
    opened : OpenedRun
        The writer (a :class:`~goup_probe.store.NullWriter` on ranks that write
        nothing) and, on rank 0, the directory's lock.
    dist : DistInfo
        Which rank this is.
    """

    def __init__(self, opened: OpenedRun, dist: DistInfo) -> None:
        self.opened = opened
        self.dist = dist
        self.meta: dict[str, Any] = {}

    @property
    def writer(self) -> Any:
        """The run's writer."""
        return self.opened.writer

    def start(
        self,
        fresh: dict[str, Any],
        tracked: Sequence[TrackedParam],
        dispatchers: Sequence[StepDispatcher],
        resume: bool | int,
    ) -> None:
        """Write the run's first ``run.json`` (``fresh``), or continue the run there when ``resume``.

        Raises
        ------
        OSError
            When the directory cannot take the record (a full disk): the caller
            removes what was written.
        RunDirectoryError
            When the run to resume records other tensors or tracers.
        """
        self.meta = fresh if resume is False else self._resume(fresh, resume, dispatchers)
        lock = self.opened.lock
        if lock is not None and lock.took_over is not None:
            self.meta["lock_taken_over"] = f"a stale lock of {lock.took_over.describe()}"
        if self.opened.temporaries_removed:
            self.meta["temporaries_removed"] = self.opened.temporaries_removed
        self.writer.write_meta(self.meta)
        if not self.meta.get("resumes"):
            write_tracer_index(tracked, self.writer)
        if self.dist.writes:
            reserve_space(Path(self.writer.path), RESERVE_FACTOR * len(json.dumps(self.meta, default=str)))

    def _resume(
        self, fresh: dict[str, Any], resume: bool | int, dispatchers: Sequence[StepDispatcher]
    ) -> dict[str, Any]:
        """The continued run's metadata, with a ``resumes`` entry; the dispatchers continue its step count."""
        at = None if resume is True else int(resume)
        if at is None and self.dist.world_size > 1:
            raise ValueError("under torch.distributed pass resume=<step> (every rank must agree on it)")
        meta, captured = fresh, 0
        if self.dist.writes:
            path = Path(self.writer.path)
            check_resumable(path, fresh)
            point = resume_point(path, at)
            at, captured, meta = point.step, point.captured_steps, point.meta
            meta.update(
                status="running",
                status_reason="",
                ended_at=None,
                capture=fresh["capture"],
                optimizer=fresh["optimizer"],
                user={**meta.get("user", {}), **fresh["user"]},
                resumes=[*meta.get("resumes", []), {**point.describe(), "at": utc_now()}],
            )
        for steps in dispatchers:
            steps.step, steps.captured_steps = at, captured
        return meta

    def update(self, progress: Mapping[str, Any]) -> None:
        """Merge ``progress`` into the record and rewrite ``run.json``."""
        self.meta.update(progress)
        self.writer.write_meta(self.meta)

    def compact(self) -> None:
        """Merge each table's parts into a few files (at detach, once everything is flushed)."""
        compact_run(self.writer.path, allow_running=True, holding_lock=True)

    def close(self, status: str, reason: str, progress: Mapping[str, Any]) -> None:
        """Record the final status and the disk use in the room reserved for it, then release the lock."""
        self.meta.update(status=status, status_reason=reason, ended_at=utc_now())
        if self.dist.writes:
            path = Path(self.writer.path)
            with contextlib.suppress(OSError):
                release_space(path)
            with contextlib.suppress(OSError, RunDirectoryError):
                self.meta["disk"] = disk_meta(
                    path, steps=progress["steps"], captured_steps=progress["captured_steps"]
                )
        try:
            self.update(progress)
        except OSError as exc:
            warnings.warn(
                f"goup_probe: cannot write {self.writer.path}/run.json: {exc}", RuntimeWarning, stacklevel=4
            )
        finally:
            self.opened.release()

    def abort(self) -> None:
        """Undo a start that failed (see :meth:`OpenedRun.abort`)."""
        self.opened.abort()
