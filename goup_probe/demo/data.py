"""The embedded default data set: scikit-learn's bundled 8×8 digits, offline.

:class:`ImageData` and :class:`BatchStream` live in :mod:`goup_probe.fidelity.data` (re-exported here).
"""

from __future__ import annotations

import numpy as np
import torch

from goup_probe.fidelity.data import BatchStream, ImageData


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


__all__ = ["BatchStream", "ImageData", "load_digits_data"]
