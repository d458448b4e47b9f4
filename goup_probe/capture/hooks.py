"""Bookkeeping of hook handles, so that every hook the probe adds is removed; callbacks held weakly."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch.utils.hooks import RemovableHandle


def weak_callback(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` through a weak reference to its object: a callback that keeps no probe alive.

    Calls after the object is gone do nothing and return None.
    """
    ref = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = ref()
        return bound(*args, **kwargs) if bound is not None else None

    return call


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
