"""Helpers of the capture points: the optimizers to hook, and a closure that captures after its first call."""

from __future__ import annotations

from typing import Any

import torch

from goup_probe.capture.plan import unwrap_optimizer


def optimizer_list(optimizer: Any) -> tuple[tuple[torch.optim.Optimizer, ...], list[str]]:
    """The torch optimizers the probe hooks (wrappers unwrapped), and the wrappers' class names."""
    given = (
        [] if optimizer is None else list(optimizer) if isinstance(optimizer, list | tuple) else [optimizer]
    )
    optimizers, wrappers = [], []
    for item in given:
        inner, names = unwrap_optimizer(item)
        if not isinstance(inner, torch.optim.Optimizer):
            raise TypeError(
                "optimizer must be a torch.optim.Optimizer, a list of them, or None, "
                f"got {type(item).__name__}"
            )
        optimizers.append(inner)
        wrappers.extend(names)
    if len({id(o) for o in optimizers}) != len(optimizers):
        raise ValueError("optimizer: the same optimizer is given twice")
    return tuple(optimizers), wrappers


def capturing_closure(closure: Any, capture: Any) -> Any:
    """The closure, calling ``capture()`` once, after its first evaluation computed the gradient at θ_t."""
    fired = False

    def capturing_closure(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        result = closure(*args, **kwargs)
        if not fired:
            fired = True
            with torch.no_grad():
                capture()
        return result

    return capturing_closure


def wrap_step_closure(args: tuple, kwargs: dict, capture: Any) -> tuple[tuple, dict] | None:
    """An optimizer step pre hook's new ``(args, kwargs)`` with the closure capturing after its first call.

    ``args[0]`` is the optimizer; the closure is ``kwargs["closure"]`` or ``args[1]``.
    Returns None when ``step()`` got no closure (the caller captures right away).
    """
    closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
    if not callable(closure):
        return None
    wrapped = capturing_closure(closure, capture)
    if "closure" in kwargs:
        return args, {**kwargs, "closure": wrapped}
    return (args[0], wrapped, *args[2:]), kwargs
