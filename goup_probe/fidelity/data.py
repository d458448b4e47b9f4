"""What a comparison trains on: a train/held-out split, seeded mini-batches, held-out evaluation.

Any data set fits: :class:`ImageData` only holds tensors (the demo's digits and
CIFAR-10 loaders return one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

EVAL_CHUNK = 1000
"""Held-out examples evaluated at once."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(logits, targets) -> mean loss``."""


@dataclass(frozen=True)
class ImageData:
    """A train/held-out split of inputs ``(N, C, H, W)`` and integer labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def in_channels(self) -> int:
        """Number of image channels."""
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return int(max(self.train_y.max(), self.test_y.max()) + 1)


class BatchStream:
    """Seeded, reproducible sequence of shuffled mini-batches (epoch after epoch).

    Uses its own generator, so the order does not depend on (or disturb) the
    global RNG; two streams with the same seed yield identical batches.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = min(batch_size, len(x))
        self._generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next mini-batch (a new permutation starts when an epoch ends)."""
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.x), generator=self._generator)
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.x[idx], self.y[idx]


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy (argmax of the logits) of ``model`` on ``(x, y)``.

    In eval mode (the previous mode is restored), without gradients, in chunks
    of :data:`EVAL_CHUNK` examples moved to ``device`` (default: where they are).
    ``loss_fn`` defaults to cross-entropy.
    """
    loss_fn = nn.functional.cross_entropy if loss_fn is None else loss_fn
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(x), EVAL_CHUNK):
                xb, yb = x[start : start + EVAL_CHUNK], y[start : start + EVAL_CHUNK]
                if device is not None:
                    xb, yb = xb.to(device), yb.to(device)
                logits = model(xb)
                total_loss += float(loss_fn(logits, yb)) * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    n = len(x)
    return total_loss / n, correct / n


__all__ = ["EVAL_CHUNK", "BatchStream", "ImageData", "LossFn", "evaluate"]
