"""Opening the run directory for a probe, on one rank or all of them together."""

from __future__ import annotations

import os
from collections.abc import Sequence

from goup_probe import schema
from goup_probe.capture.config import ProbeConfig
from goup_probe.capture.plan import TrackedParam
from goup_probe.dist.context import DistInfo, agree
from goup_probe.store import NullWriter, RunWriter, prepare_run_dir


class RankError(RuntimeError):
    """Rank 0 could not create the run directory (raised on the other ranks)."""


def open_writer(
    run_dir: str | os.PathLike[str], config: ProbeConfig, info: DistInfo, tracked: Sequence[TrackedParam]
) -> RunWriter | NullWriter:
    """Rank 0 creates the run directory; other ranks get a writer that writes nothing.

    Under ``torch.distributed`` every rank agrees on the outcome (and on which
    sharded layouts are usable: a tensor whose local shard does not match its
    placements is skipped on every rank), so a failure raises on every rank
    instead of leaving one waiting in a collective. The stats schema includes
    the columns of the user statistics.
    """
    writer, error = None, None
    if info.writes:
        try:
            path = prepare_run_dir(run_dir, overwrite=config.overwrite)
            writer = RunWriter(
                path,
                flush_rows=config.flush_rows,
                flush_seconds=config.flush_seconds,
                schemas={"stats": schema.stats_schema(config.statistics)},
            )
        except Exception as exc:
            error = exc
    sharded = [t for t in tracked if t.shard is not None]
    flags = agree([error is None] + [t.shard.check(t.param) for t in sharded], info)
    for t, ok in zip(sharded, flags[1:], strict=True):
        if not ok:
            t.skip(schema.STATUS_UNSUPPORTED, "the DTensor's local shard does not match its placements")
    if error is not None:
        raise error
    if not flags[0]:
        raise RankError(f"rank 0 could not create the run directory {run_dir}")
    return writer if writer is not None else NullWriter(run_dir)
