"""Step state and the error guard: capture never kills training.

:class:`StepState` is what one optimizer step carries from its capture point
to the end of the step. :class:`ErrorGuard` runs each piece of capture work,
records a failure (and warns once per kind) instead of raising, and stops
capture for good when writing fails.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from goup_probe.capture.shadow import Snapshot

MAX_ERRORS_KEPT = 100
"""Errors kept in ``run.json`` (all are counted)."""


@dataclass
class StepState:
    """One optimizer step between its capture point and its end."""

    step: int
    due: frozenset[str]
    """Quantities captured at this step (empty: only tracers, if any)."""
    tracers: bool
    """Whether tracer coordinates are recorded at this step."""
    lrs: dict[str, float] = field(default_factory=dict)
    global_step: int | None = None
    """The training framework's own step counter, when known."""
    grad_scale: float = 1.0
    """The factor ``param.grad`` is scaled by (a GradScaler handing a fused optimizer ``grad_scale``)."""

    def unscale(self, grad: torch.Tensor | None) -> torch.Tensor | None:
        """``grad`` as the optimizer uses it: divided by :attr:`grad_scale` (None stays None)."""
        if grad is None or self.grad_scale == 1.0:
            return grad
        return grad / self.grad_scale

    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    """θ before the step, per tensor whose after-phase quantities are due."""
    pending: dict[str, Any] = field(default_factory=dict)
    """Per-strategy values kept from before the step to after it (keyed by strategy)."""

    @property
    def captured(self) -> bool:
        """Whether any quantity is captured at this step."""
        return bool(self.due)


class ErrorGuard:
    """Runs capture work; errors are recorded and warned once per kind, unless ``strict``.

    Parameters
    ----------
    strict : bool
        Re-raise instead of recording.
    on_error : callable
        Called after each recorded error (the probe rewrites ``run.json``).
    describe_target : callable
        Returns the run directory, for the message when writing fails.
    """

    def __init__(
        self, *, strict: bool, on_error: Callable[[], None], describe_target: Callable[[], object]
    ) -> None:
        self.strict = strict
        self.errors: list[dict[str, Any]] = []
        self.count = 0
        self.capture_disabled = False
        self.capture_stopped: dict[str, Any] | None = None
        self._warned: set[tuple[str | None, str, str]] = set()
        self._on_error = on_error
        self._target = describe_target

    def run(self, step: int, param: str | None, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; an error is recorded (and warned once) and None returned, unless strict.

        An ``OSError`` (writing failed) stops capture for the rest of the run.
        """
        try:
            return fn(*args)
        except OSError as exc:
            if self.strict:
                raise
            self.capture_disabled = True
            self.capture_stopped = {"step": step, "reason": f"{type(exc).__name__}: {exc}"}
            self.record(step, param, where, exc)
            warnings.warn(
                f"goup_probe: writing to {self._target()} failed at step {step} ({exc}); capture "
                "stopped, training continues",
                RuntimeWarning,
                stacklevel=4,
            )
        except Exception as exc:
            if self.strict:
                raise
            self.record(step, param, where, exc)
            key = (param, where, type(exc).__name__)
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(
                    f"goup_probe: capture of {param!r} ({where}) at step {step} failed "
                    f"({type(exc).__name__}: {exc}); recorded in run.json, training continues "
                    "(further failures of the same kind are recorded without a warning)",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return None

    def record(self, step: int, param: str | None, where: str, exc: BaseException) -> None:
        """Count an error and keep the first :data:`MAX_ERRORS_KEPT`."""
        self.count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(
                {"step": step, "param": param, "where": where, "error": f"{type(exc).__name__}: {exc}"}
            )
        with contextlib.suppress(OSError):
            self._on_error()
