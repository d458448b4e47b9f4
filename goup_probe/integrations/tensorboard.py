"""Mirror the probe's per-layer effect sizes and verdict counts into TensorBoard.

``gp.attach(..., tensorboard="runs/tb")`` (a log directory) or
``tensorboard=SummaryWriter(...)`` (your own writer) writes, at each captured
step, scalars beside your loss:

* ``goup/<quantity>/w1_sigma/<param>`` and ``goup/<quantity>/excess_kurtosis/<param>``
  for every tested row;
* ``goup/<quantity>/verdict/<verdict>``: how many tensors got each verdict.

The x-axis is the framework's ``global_step`` when the capture point gave one,
else the probe's step. Needs the ``tensorboard`` package (the ``[tensorboard]``
extra) only when a log directory is given; a writer of your own is used as is.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

EFFECT_SIZES = ("w1_sigma", "excess_kurtosis")
"""The per-tensor columns mirrored as scalars."""


class TensorBoardMirror:
    """Collects a captured step's stats rows and writes them as TensorBoard scalars at the step's end.

    Parameters
    ----------
    target : path or SummaryWriter-like
        A log directory (a ``torch.utils.tensorboard.SummaryWriter`` is created
        and closed at detach) or any object with ``add_scalar(tag, value, step)``.
    """

    def __init__(self, target: str | os.PathLike[str] | Any) -> None:
        if hasattr(target, "add_scalar"):
            self.writer, self._owned = target, False
        elif isinstance(target, str | os.PathLike):
            from torch.utils.tensorboard import SummaryWriter

            self.writer, self._owned = SummaryWriter(log_dir=os.fspath(target)), True
        else:
            raise TypeError(
                f"tensorboard must be a log directory or a SummaryWriter, got {type(target).__name__}"
            )
        self._rows: list[Mapping[str, Any]] = []

    def row(self, row: Mapping[str, Any]) -> None:
        """Keep one stats row of the open step."""
        self._rows.append(row)

    def end_step(self, step: int) -> None:
        """Write the kept rows' scalars and verdict counts."""
        rows, self._rows = self._rows, []
        if not rows:
            return
        x = rows[0].get("global_step")
        x = step if x is None else int(x)
        verdicts: Counter[tuple[str, str]] = Counter()
        for row in rows:
            quantity = row["quantity"]
            if row.get("verdict") is not None and row.get("micro_batch") is None:
                verdicts[(quantity, row["verdict"])] += 1
            for column in EFFECT_SIZES:
                value = row.get(column)
                if isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(f"goup/{quantity}/{column}/{row['param']}", value, x)
        for (quantity, verdict), count in sorted(verdicts.items()):
            self.writer.add_scalar(f"goup/{quantity}/verdict/{verdict}", count, x)

    def close(self) -> None:
        """Flush; close the writer if the mirror created it."""
        self._rows = []
        if self._owned:
            self.writer.close()
        elif hasattr(self.writer, "flush"):
            self.writer.flush()
