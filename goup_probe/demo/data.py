"""The embedded default data set: scikit-learn's bundled 8×8 digits, offline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ImageData:
    """A train/held-out split of images ``(N, C, H, W)`` and integer labels."""

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


def load_digits_data(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """Digits 0-9 as 1×8×8 images, standardised with the training split's statistics.

    The 1797 images ship with scikit-learn; nothing is downloaded.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(test_fraction * len(labels))
    test, train = order[:n_test], order[n_test:]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return ImageData(
        "digits",
        torch.from_numpy(images[train]),
        torch.from_numpy(labels[train]),
        torch.from_numpy(images[test]),
        torch.from_numpy(labels[test]),
    )


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
