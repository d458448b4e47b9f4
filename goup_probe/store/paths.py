"""The run directory itself: creating or clearing it, naming its parts, atomic text writes."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from goup_probe import schema
from goup_probe.store.errors import RunDirectoryError
from goup_probe.store.lock import LOCK_NAME, RunLock
from goup_probe.store.reserve import RESERVE_NAME

RUN_JSON = "run.json"


_PART_RE = re.compile(r"^part-(\d{6,})\.parquet$")


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    On Linux it is read from ``/proc/self/status``. Elsewhere it is read the
    only portable way, ``os.umask`` set and set back; the value set in between
    is ``0o077``, so a file another thread creates in that instant gets
    stricter permissions, never looser ones.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    previous = os.umask(0o077)
    os.umask(previous)
    return previous


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename.

    The file gets ``mode`` (default ``0o666`` less the umask, as ``open`` would
    give it; ``mkstemp`` alone makes it 0600) before it is renamed into place.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask() if mode is None else mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_run_dir(
    run_dir: str | os.PathLike[str], *, overwrite: bool = False, lock: bool = False, resume: bool = False
) -> Path | tuple[Path, RunLock]:
    """Create ``run_dir`` (or validate an existing one) and return it.

    Parameters
    ----------
    run_dir : path
        The run directory.
    overwrite : bool
        Replace the run there (only what a run consists of; see :func:`_clear_run_dir`).
    lock : bool
        Take the directory's :class:`~goup_probe.store.lock.RunLock` first, before
        looking at what it holds, and return ``(path, lock)``; the caller releases it.
    resume : bool
        The directory must hold a run (``run.json``), which the caller continues.

    Raises
    ------
    RunDirectoryError
        If the directory is not empty and ``overwrite`` is false, if the path
        is a file, or if it cannot be created or written.
    RunLockedError
        With ``lock``, when another live process holds the directory's lock.
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"run_dir {str(path)!r} exists and is not a directory")
    if resume and not (path / RUN_JSON).is_file():  # checked again under the lock; creates nothing
        raise RunDirectoryError(f"run_dir {str(path)!r} holds no {RUN_JSON}: there is no run to resume")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"run_dir {str(path)!r} cannot be created: {exc}") from exc
    held = RunLock(path).acquire() if lock else None
    try:
        if resume:
            if not (path / RUN_JSON).is_file():
                raise RunDirectoryError(
                    f"run_dir {str(path)!r} holds no {RUN_JSON}: there is no run to resume"
                )
        else:
            _check_empty(path, overwrite)
        _check_writable(path)
    except BaseException:
        if held is not None:
            held.release()
        raise
    return (path, held) if held is not None else path


def _check_empty(path: Path, overwrite: bool) -> None:
    if any(child.name != LOCK_NAME for child in path.iterdir()):
        if not overwrite:
            raise RunDirectoryError(
                f"run_dir {str(path)!r} is not empty; choose a new directory or pass overwrite=True "
                "(--overwrite on the command line)"
            )
        _clear_run_dir(path)


def _check_writable(path: Path) -> None:
    """Create and remove a uniquely named file (two processes checking at once do not collide)."""
    try:
        fd, probe_file = tempfile.mkstemp(dir=path, prefix=".write-test-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe_file)
    except OSError as exc:
        raise RunDirectoryError(f"run_dir {str(path)!r} is not writable: {exc}") from exc


def _clear_run_dir(path: Path) -> None:
    """Remove what a previous run wrote; refuse, deleting nothing, when anything else is there.

    A run consists of ``run.json``, table folders of Parquet parts, the
    writers' hidden temporary files, a replace interrupted by a crash and a
    ``report/`` folder of HTML and PNG files. A user's own file or folder
    (notes, scripts, an empty folder) makes the whole overwrite fail, naming it.
    """
    if not (path / RUN_JSON).exists():
        raise RunDirectoryError(
            f"run_dir {str(path)!r} is not empty and holds no {RUN_JSON}; refusing to overwrite "
            "a directory that is not a goup_probe run"
        )
    foreign = [child.name for child in sorted(path.iterdir()) if not _is_run_content(child)]
    if foreign:
        raise RunDirectoryError(
            f"run_dir {str(path)!r} holds files goup_probe did not write ({', '.join(foreign[:3])}"
            + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            + "); refusing to overwrite it: move them or choose another directory"
        )
    for child in path.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


_REPORT_SUFFIXES = (".html", ".png", ".css", ".js", ".svg")


def _is_run_content(child: Path) -> bool:
    """Whether ``child`` of a run directory is something the toolkit writes."""
    name = child.name
    if name in (LOCK_NAME, RESERVE_NAME) or name.startswith(f"{LOCK_NAME}.stale-"):
        return True
    if child.is_symlink():
        return False
    if child.is_file():
        return name == RUN_JSON or (name.startswith(".") and name.endswith(".tmp"))
    if name.startswith(".") and name.endswith(".replace"):
        return True  # a replace_table a crash interrupted
    entries = list(child.iterdir())
    if not entries:
        return False  # an empty folder is not something a run leaves
    if name in schema.TABLES or _looks_like_table(child):
        return all(e.is_file() and not e.is_symlink() for e in entries)
    if name == "report":  # index.html and figures/*.png, as goup_probe.report writes them
        return all(
            not e.is_symlink() and (e.is_dir() or e.suffix in _REPORT_SUFFIXES) for e in child.rglob("*")
        )
    return False


def _looks_like_table(folder: Path) -> bool:
    return all(_PART_RE.match(p.name) or p.name.startswith(".") for p in folder.iterdir())


def discard_new_run(path: Path) -> None:
    """Remove what a run that could not be started wrote (its directory held nothing else); the lock stays."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink() and not any(child.iterdir()):
            child.rmdir()  # a table folder whose first part could not be written
            continue
        if child.name == LOCK_NAME or not _is_run_content(child):
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
