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
from types import FrameType


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives while a probe is attached."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


class SigtermGuard:
    """Installs the SIGTERM handler on :meth:`install`, restores the previous one on :meth:`restore`."""

    def __init__(self) -> None:
        self._previous: object | None = None
        self._installed = False

    def install(self) -> bool:
        """Install if possible (main thread, default handler); returns whether it did."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGTERM)
        if current is not signal.SIG_DFL:
            return False
        self._previous = current
        signal.signal(signal.SIGTERM, _raise_terminated)
        self._installed = True
        return True

    def restore(self) -> None:
        """Put the previous handler back (only if ours is still the one installed)."""
        if not self._installed:
            return
        self._installed = False
        if signal.getsignal(signal.SIGTERM) is _raise_terminated:
            signal.signal(signal.SIGTERM, self._previous)
