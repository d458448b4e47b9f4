"""The store's error: a run directory that cannot be created, written or read."""

from __future__ import annotations


class RunDirectoryError(ValueError):
    """A run directory that cannot be created, written or read; the message names the path."""
