"""One writer per run directory: an exclusive lock file that names its holder.

A probe takes the lock before it looks at the directory and holds it until it
detaches, so two processes attaching to the same directory at once, or an
``overwrite=True`` while another process writes there, cannot both succeed:
the second gets a :class:`RunLockedError` naming the holder's pid and host.

The lock is ``RUN_DIR/.goup-probe.lock``, created with ``O_CREAT | O_EXCL``
(atomic on local file systems) and holding JSON ``{"pid", "host", "since"}``.
A lock whose holder is gone is *stale*: one left by a process of this host
that no longer runs, detected with ``os.kill(pid, 0)``, is taken over (the
takeover renames the stale file to a unique name first, so of two processes
breaking it at once only one wins). A lock held by another host cannot be
checked and is never broken: remove the file by hand once that run is over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from goup_probe.store.errors import RunDirectoryError

LOCK_NAME = ".goup-probe.lock"


class RunLockedError(RunDirectoryError):
    """Another live process holds the run directory's lock."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run directory's lock."""

    pid: int
    host: str
    since: str

    def is_alive(self) -> bool | None:
        """Whether the holder still runs: None when it is on another host (unknown)."""
        if self.host != socket.gethostname():
            return None
        if self.pid == os.getpid():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, owned by someone else
        except OSError:
            return None
        return True

    def describe(self) -> str:
        """``pid 123 on host h since T``."""
        return f"pid {self.pid} on host {self.host!r} since {self.since}"


def read_holder(path: Path) -> LockHolder | None:
    """The holder written in lock file ``path``; None when it is unreadable or half written."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockHolder(pid=int(data["pid"]), host=str(data["host"]), since=str(data.get("since", "?")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """The exclusive lock of one run directory, held from :meth:`acquire` to :meth:`release`.

    Parameters
    ----------
    run_dir : Path
        The run directory (it must exist).

    Attributes
    ----------
    took_over : LockHolder or None
        The holder of a stale lock this one replaced (recorded in ``run.json``).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.took_over: LockHolder | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this process holds the lock through this object."""
        return self._held

    def acquire(self) -> RunLock:
        """Take the lock, breaking a stale one; raise :class:`RunLockedError` if a live process holds it."""
        from goup_probe.store.meta import utc_now

        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._break_if_stale()
                continue
            except OSError as exc:
                raise RunDirectoryError(f"cannot create the lock {self.path}: {exc}") from exc
            try:
                os.write(fd, record.encode("utf-8"))
                os.fsync(fd)
            except OSError as exc:
                os.close(fd)
                self.path.unlink(missing_ok=True)
                raise RunDirectoryError(f"cannot write the lock {self.path}: {exc}") from exc
            os.close(fd)
            self._held = True
            return self
        raise RunLockedError(f"run_dir {str(self.path.parent)!r} is locked by another writer; try again")

    def _break_if_stale(self) -> None:
        holder = read_holder(self.path)
        if holder is None:  # another process is between creating and writing it: give it a moment
            if _age_seconds(self.path) < 10.0:
                raise RunLockedError(
                    f"run_dir {str(self.path.parent)!r} is being opened by another process "
                    f"(its lock {self.path.name} is not yet written); choose another directory or retry"
                )
        elif holder.is_alive() is not False:
            where = "" if holder.is_alive() else " (on another host: remove the lock file once it is over)"
            raise RunLockedError(
                f"run_dir {str(self.path.parent)!r} is being written by {holder.describe()}{where}; "
                f"two writers would mix their rows. Lock: {self.path}"
            )
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)  # atomic: of two processes breaking it, one renames it
        except FileNotFoundError:
            return  # somebody else broke it; race for the new one
        if read_holder(aside) != holder:  # renamed a fresh lock taken meanwhile: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        self.took_over = holder

    def release(self) -> None:
        """Remove the lock file if this object holds it (safe to call more than once)."""
        if not self._held:
            return
        self._held = False
        holder = read_holder(self.path)
        if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
            try:
                self.path.unlink()
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise


def _age_seconds(path: Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
