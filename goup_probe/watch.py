"""Follow a run while it trains: show its summary again every few seconds until the run ends.

:func:`watch` is the loop behind ``goup-probe watch RUN_DIR``; what it shows is
the caller's (the CLI passes its ``summary`` command), so the two never drift apart.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from goup_probe.store import read_meta
from goup_probe.store.lock import LOCK_NAME, read_holder

CLEAR_SCREEN = "\x1b[H\x1b[2J"
"""ANSI: cursor home, then erase the screen (written before each update on a terminal)."""


def writer_gone(run_dir: Path) -> str | None:
    """Why nobody writes a run marked running any more, or None when a writer may still be at it.

    The writer's lock file names its process; a process of this host that no
    longer exists means the run crashed (or was killed) before it could record
    its end. Without a lock file, or with a holder on another host, nothing can
    be told: None.
    """
    holder = read_holder(Path(run_dir) / LOCK_NAME)
    if holder is not None and holder.is_alive() is False:
        return (
            f"run.json still says running, but its writer ({holder.describe()}) has exited: "
            "the run crashed or was killed"
        )
    return None


def watch(
    run_dir: str | os.PathLike[str],
    show: Callable[[], object],
    *,
    interval: float = 5.0,
    max_updates: int | None = None,
    stream: TextIO | None = None,
    clear: bool | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> int:
    """Call ``show`` every ``interval`` seconds while the run's status is ``running``; return 0.

    Each update reads the run's status from ``run.json`` first, then calls
    ``show`` (which prints the summary). The loop ends after the first update
    that found the run no longer running (completed, interrupted, failed: the
    final summary stays on screen), when the run's writer is gone
    (:func:`writer_gone`), after ``max_updates`` updates, or on Ctrl-C.

    Parameters
    ----------
    run_dir : path
        The run directory.
    show : callable
        Prints one update (e.g. the CLI's summary of ``run_dir``).
    interval : float
        Seconds between updates (> 0).
    max_updates : int, optional
        Stop after this many updates even if the run still runs.
    stream : text stream, optional
        Where the screen clearing and the status lines go (default ``sys.stdout``).
    clear : bool, optional
        Clear the screen (ANSI) before each update; default: when ``stream`` is a
        terminal. Otherwise updates are appended, separated by a blank line.
    sleep : callable
        Waits between updates (``time.sleep``).

    Returns
    -------
    int
        0, also on Ctrl-C (stopping the watch is not an error).

    Raises
    ------
    ValueError
        If ``interval`` is not a positive number or ``max_updates`` is below 1.
    RunDirectoryError
        If ``run_dir`` holds no readable ``run.json`` (at any update).
    """
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
    if max_updates is not None and (isinstance(max_updates, bool) or int(max_updates) < 1):
        raise ValueError(f"max_updates must be a positive integer, got {max_updates!r}")
    out = sys.stdout if stream is None else stream
    if clear is None:
        clear = bool(getattr(out, "isatty", lambda: False)())
    path = Path(run_dir)
    updates = 0
    try:
        while True:
            status = str(read_meta(path).get("status", "unknown"))
            out.write(CLEAR_SCREEN if clear else ("\n" if updates else ""))
            out.flush()
            show()
            updates += 1
            gone = writer_gone(path) if status == "running" else None
            if status != "running" or gone:
                end = gone or f"the run is {status}"
                out.write(f"\n{end}; watch ends.\n")
                out.flush()
                return 0
            if max_updates is not None and updates >= max_updates:
                out.write(f"\nstopped after {updates} updates (--max-updates); the run is still running.\n")
                out.flush()
                return 0
            out.write(f"\nupdated {time.strftime('%H:%M:%S')}; next in {interval:g} s (Ctrl-C to quit)\n")
            out.flush()
            sleep(interval)
    except KeyboardInterrupt:
        out.write("\nwatch stopped (Ctrl-C).\n")
        out.flush()
        return 0
