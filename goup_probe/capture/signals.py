"""Turn SIGTERM into an exception while a probe is attached, so its data is flushed.

By default SIGTERM ends Python without running ``finally`` blocks or ``__exit__``;
a probe attached to a job that a scheduler stops would then leave ``run.json``
saying "running" and lose its buffered rows. While a probe is attached (from the
main thread, and only if nobody else installed a SIGTERM handler), SIGTERM
raises :class:`Terminated`, a ``SystemExit`` with exit code 143, which unwinds
the training loop through the probe's ``__exit__``.
"""

from __future__ import annotations

import signal
import threading
import warnings
from types import FrameType


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives while a probe is attached."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


class SigtermGuard:
    """One probe's claim on the process's SIGTERM handler, shared by every attached probe.

    A signal handler is process-wide, so the claims are counted: the first probe
    to :meth:`install` (from the main thread, when no one else installed a
    handler) puts :class:`Terminated` in place, and the last one to
    :meth:`restore` puts the previous handler back. A probe that detaches while
    another is attached leaves the handler to the other, so SIGTERM still
    unwinds (and flushes) every probe that is left.
    """

    _claims = 0
    """Attached probes holding a claim (class-level: the handler it counts is process-wide)."""
    _previous: object | None = None

    def __init__(self) -> None:
        self._installed = False

    def install(self) -> bool:
        """Claim the handler if possible (main thread, default handler or ours); returns whether it did."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGTERM)
        if current is _raise_terminated:
            SigtermGuard._claims += 1
        elif current is signal.SIG_DFL:
            SigtermGuard._previous = current
            signal.signal(signal.SIGTERM, _raise_terminated)
            SigtermGuard._claims = 1
        else:
            return False
        self._installed = True
        return True

    def restore(self) -> None:
        """Give up the claim; the last claim puts the previous handler back (if ours is still there)."""
        if not self._installed:
            return
        self._installed = False
        SigtermGuard._claims = max(SigtermGuard._claims - 1, 0)
        if SigtermGuard._claims == 0 and signal.getsignal(signal.SIGTERM) is _raise_terminated:
            signal.signal(signal.SIGTERM, SigtermGuard._previous or signal.SIG_DFL)


NOT_MAIN_THREAD = "none: attached from a non-main thread"
"""What ``run.json`` (``capture.sigterm_handler``) records for a probe attached from another thread."""


def warn_if_not_main_thread() -> str | None:
    """Warn when called from a thread other than the main one (SIGTERM cannot be handled there).

    Returns the note ``run.json`` records in that case, else None. The text of
    the warning is fixed, so Python's default filter shows it once per process.
    """
    if threading.current_thread() is threading.main_thread():
        return None
    warnings.warn(
        "goup_probe: attached from a thread other than the main thread, so SIGTERM cannot be turned "
        "into a clean shutdown: a scheduler's SIGTERM loses the rows not yet flushed. Attach from the "
        "main thread, or call probe.detach() from your own SIGTERM handling",
        RuntimeWarning,
        stacklevel=4,
    )
    return NOT_MAIN_THREAD
