"""Bookkeeping of hook handles, so that every hook the probe adds is removed."""

from __future__ import annotations

from torch.utils.hooks import RemovableHandle


class HookSet:
    """A set of :class:`~torch.utils.hooks.RemovableHandle` removed together.

    ``remove()`` is idempotent and removes every handle even if one removal fails.
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def add(self, handle: RemovableHandle) -> RemovableHandle:
        """Keep ``handle`` for later removal and return it."""
        self._handles.append(handle)
        return handle

    def __len__(self) -> int:
        return len(self._handles)

    def remove(self) -> None:
        """Remove every kept handle."""
        handles, self._handles = self._handles, []
        errors = []
        for handle in handles:
            try:
                handle.remove()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
