"""Opening the run directory for a probe, on one rank or all of them together."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from goup_probe import schema
from goup_probe.capture.config import ProbeConfig
from goup_probe.capture.plan import TrackedParam
from goup_probe.capture.tracers import trajectory_schema
from goup_probe.dist.context import DistInfo, agree
from goup_probe.store import NullWriter, RunLock, RunWriter, prepare_run_dir
from goup_probe.store.paths import discard_new_run
from goup_probe.store.tables import remove_stale_temporaries


class RankError(RuntimeError):
    """Rank 0 could not create the run directory (raised on the other ranks)."""


@dataclass
class OpenedRun:
    """What :func:`open_writer` hands the probe: the writer, and on rank 0 the lock it holds."""

    writer: RunWriter | NullWriter
    lock: RunLock | None = None
    created: bool = False
    """Whether the directory was created for this run (an aborted start removes it again)."""
    resumed: bool = False
    """Whether the directory holds a run being continued (an aborted start leaves it as it was)."""
    temporaries_removed: int = 0
    """Hidden temporaries of killed writers deleted at attach (recorded in ``run.json``)."""

    def abort(self) -> None:
        """Undo a start that failed: remove what was written, release the lock, remove a new directory."""
        path = Path(self.writer.path)
        if self.lock is not None:
            try:
                if not self.resumed:
                    discard_new_run(path)
            finally:
                self.lock.release()
            if self.created:
                with contextlib.suppress(OSError):
                    path.rmdir()

    def release(self) -> None:
        """Release the lock (at detach)."""
        if self.lock is not None:
            self.lock.release()


def open_writer(
    run_dir: str | os.PathLike[str], config: ProbeConfig, info: DistInfo, tracked: Sequence[TrackedParam]
) -> OpenedRun:
    """Rank 0 takes the run directory's lock and creates it; other ranks get a writer that writes nothing.

    Returns the writer and the lock rank 0 holds until the probe detaches.
    A directory that exists but is locked by another live process is refused
    (:class:`~goup_probe.store.RunLockedError`).

    Under ``torch.distributed`` every rank agrees on the outcome (and on which
    sharded layouts are usable: a tensor whose local shard does not match its
    placements is skipped on every rank), so a failure raises on every rank
    instead of leaving one waiting in a collective. The stats schema includes
    the columns of the user statistics.
    """
    writer, lock, error, created, removed = None, None, None, False, []
    if info.writes:
        created = not Path(run_dir).exists()
        try:
            path, lock = prepare_run_dir(
                run_dir, overwrite=config.overwrite, lock=True, resume=config.resume is not False
            )
            # holding the lock, no writer of this run is alive: every temporary left is a dead one's
            removed = remove_stale_temporaries(path, older_than_s=0.0)
            writer = RunWriter(
                path,
                flush_rows=config.flush_rows,
                flush_seconds=config.flush_seconds,
                schemas={
                    "stats": schema.stats_schema(config.statistics),
                    "trajectories": trajectory_schema(config.trajectory_dtype),
                },
            )
        except Exception as exc:
            error = exc
    sharded = [t for t in tracked if t.shard is not None]
    flags = agree([error is None] + [t.shard.check(t.param) for t in sharded], info)
    for t, ok in zip(sharded, flags[1:], strict=True):
        if not ok:
            t.skip(schema.STATUS_UNSUPPORTED, "the DTensor's local shard does not match its placements")
    if error is not None:
        if lock is not None:
            lock.release()
        raise error
    if not flags[0]:
        raise RankError(f"rank 0 could not create the run directory {run_dir}")
    writer = writer if writer is not None else NullWriter(run_dir)
    return OpenedRun(
        writer, lock, created, resumed=config.resume is not False, temporaries_removed=len(removed)
    )
