"""CIFAR-10 from its Python-pickle batch files on disk; torchvision is not needed.

The layout is the one of ``cifar-10-python.tar.gz``::

    ROOT/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch

(``ROOT`` may also be that folder itself). Each batch is a pickled dict with
``b"data"`` (uint8, N × 3072, channel-major 3×32×32 rows) and ``b"labels"``.
Nothing is downloaded unless :func:`load_cifar10` is called with ``download=True``
(or :func:`download_cifar10` directly).

The batches are read with a restricted unpickler that only accepts dicts, lists,
bytes, numbers and NumPy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goup_probe.demo.data import ImageData

FOLDER = "cifar-10-batches-py"
TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only NumPy's array-reconstruction globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a CIFAR batch file")


def find_cifar10(root: str | os.PathLike[str]) -> Path:
    """The folder holding the CIFAR-10 batch files under ``root``.

    Raises
    ------
    FileNotFoundError
        Naming the files that are missing and how to get them.
    """
    root = Path(root)
    for candidate in (root / FOLDER, root):
        if (candidate / TEST_FILE).is_file() or (candidate / TRAIN_FILES[0]).is_file():
            missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (candidate / f).is_file()]
            if missing:
                raise FileNotFoundError(f"CIFAR-10 folder {candidate} lacks {', '.join(missing)}")
            return candidate
    raise FileNotFoundError(
        f"no CIFAR-10 batches under {root}: expected {root / FOLDER}/data_batch_1..5 and test_batch "
        f"(the Python version, {URL}); pass download=True (CLI: --download) to fetch it"
    )


def read_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 from one batch file.

    Raises
    ------
    ValueError
        If the file is not a CIFAR-10 batch (wrong keys, shapes or label range).
    """
    path = Path(path)
    with path.open("rb") as handle:
        try:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            raise ValueError(f"{path} is not a CIFAR-10 batch file: {exc}") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"{path} does not hold a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path} lacks the 'data' and 'labels' entries of a CIFAR-10 batch")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    size = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        raise ValueError(f"{path}: data must be uint8 of shape (N, {size}), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: labels outside 0..{NUM_CLASSES - 1}")
    return data.reshape(-1, *IMAGE_SHAPE), labels


def load_cifar10(
    root: str | os.PathLike[str],
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    download: bool = False,
) -> ImageData:
    """CIFAR-10 as float32 images standardised per channel with the training split's statistics.

    Parameters
    ----------
    root : path
        Folder holding ``cifar-10-batches-py`` (or that folder itself).
    train_limit, test_limit : int, optional
        Keep only the first ``n`` training / test images (the files are already
        in random order), to bound memory and time on a CPU.
    download : bool
        Fetch and unpack the archive into ``root`` when the batches are missing
        (never done otherwise).

    Returns
    -------
    ImageData
        Named ``"cifar10"``, images ``(N, 3, 32, 32)``.
    """
    for name, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and limit < 1:
            raise ValueError(f"{name} must be >= 1, got {limit}")
    try:
        folder = find_cifar10(root)
    except FileNotFoundError:
        if not download:
            raise
        download_cifar10(root)
        folder = find_cifar10(root)
    train = [read_batch(folder / f) for f in TRAIN_FILES]
    train_x = np.concatenate([x for x, _ in train])[:train_limit]
    train_y = np.concatenate([y for _, y in train])[:train_limit]
    test_x, test_y = read_batch(folder / TEST_FILE)
    test_x, test_y = test_x[:test_limit], test_y[:test_limit]
    scaled = train_x.astype(np.float64) / 255.0
    mean = scaled.mean(axis=(0, 2, 3), keepdims=True)
    std = scaled.std(axis=(0, 2, 3), keepdims=True)
    std[std == 0] = 1.0

    def standardise(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((images / 255.0 - mean) / std).astype(np.float32))

    return ImageData(
        "cifar10",
        standardise(train_x),
        torch.from_numpy(train_y),
        standardise(test_x),
        torch.from_numpy(test_y),
    )


def download_cifar10(root: str | os.PathLike[str], *, url: str = URL, md5: str = MD5) -> Path:
    """Download ``cifar-10-python.tar.gz`` (~163 MB), check its MD5 and unpack it into ``root``.

    Returns
    -------
    Path
        The folder holding the batch files.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".cifar-10-", suffix=".tar.gz")
    os.close(fd)
    try:
        urllib.request.urlretrieve(url, tmp)  # fixed https URL, explicit opt-in
        digest = hashlib.md5(Path(tmp).read_bytes()).hexdigest()
        if digest != md5:
            raise OSError(f"downloaded {url} has MD5 {digest}, expected {md5}")
        with tarfile.open(tmp, "r:gz") as archive:
            _safe_extract(archive, root)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return find_cifar10(root)


def _safe_extract(archive: tarfile.TarFile, target: Path) -> None:
    target = target.resolve()
    for member in archive.getmembers():
        dest = (target / member.name).resolve()
        if target not in dest.parents and dest != target:
            raise OSError(f"archive member {member.name!r} would be written outside {target}")
        if not (member.isfile() or member.isdir()):
            raise OSError(f"archive member {member.name!r} is not a regular file or folder")
    if hasattr(tarfile, "data_filter"):
        archive.extractall(target, filter="data")
    else:  # pragma: no cover - Python without extraction filters
        archive.extractall(target)  # members checked above
