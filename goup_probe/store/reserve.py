"""Room for the final status: a file of reserved bytes, given back just before ``run.json``'s last write.

On a disk that fills up during training, the probe's data writes fail (capture
stops, training goes on), and so would the final rewrite of ``run.json``,
leaving it saying ``running`` forever. At attach the probe reserves a few times
the size of ``run.json`` in ``RUN_DIR/.goup-probe.reserve``; at detach it
deletes that file right before writing the final status, so the status fits.
"""

from __future__ import annotations

import os
from pathlib import Path

RESERVE_NAME = ".goup-probe.reserve"
MIN_RESERVE_BYTES = 64 * 1024


def reserve_space(run_dir: Path, nbytes: int) -> Path:
    """Allocate ``max(nbytes, MIN_RESERVE_BYTES)`` real (not sparse) bytes in the run's reserve file.

    Raises
    ------
    OSError
        When the disk has no room for them (the partial file is removed).
    """
    path = Path(run_dir) / RESERVE_NAME
    size = max(int(nbytes), MIN_RESERVE_BYTES)
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    try:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: the file system cannot; write zeros
                    raise
                _write_zeros(fd, size)
        else:
            _write_zeros(fd, size)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


def _write_zeros(fd: int, size: int) -> None:
    block = bytes(min(size, 1 << 16))
    written = 0
    while written < size:
        written += os.write(fd, block[: size - written])


def release_space(run_dir: Path) -> None:
    """Delete the reserve file (nothing happens when there is none)."""
    (Path(run_dir) / RESERVE_NAME).unlink(missing_ok=True)
