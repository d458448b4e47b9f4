"""The probe's own cost: seconds spent on the training thread."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class ProbeTime:
    """Wall-clock seconds the probe spent on the training thread, by kind of step.

    The probe works synchronously inside the optimizer's step hooks, so these
    seconds are what it adds to training (on a GPU they include the waits for
    the few scalars it copies back).
    """

    captured_seconds: float = 0.0
    """In the hooks of captured steps: reductions, tests, rows, writes due then."""
    other_seconds: float = 0.0
    """In the hooks of the other steps: tracers and periodic writes."""
    close_seconds: float = 0.0
    """Final flush and ``run.json`` at :meth:`Probe.detach`."""
    captured_steps: int = 0
    other_steps: int = 0

    @property
    def per_captured_step(self) -> float:
        """Mean seconds per captured step (NaN before the first)."""
        return self.captured_seconds / self.captured_steps if self.captured_steps else math.nan

    @property
    def per_other_step(self) -> float:
        """Mean seconds per step that was not captured (NaN before the first)."""
        return self.other_seconds / self.other_steps if self.other_steps else math.nan

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form, as stored in ``run.json`` under ``probe_time``."""
        return {
            "captured_seconds": self.captured_seconds,
            "other_seconds": self.other_seconds,
            "close_seconds": self.close_seconds,
            "captured_steps": self.captured_steps,
            "other_steps": self.other_steps,
        }
