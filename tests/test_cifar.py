import os
import pickle
import struct
from typing import ClassVar

import numpy as np
import pytest
import torch

import goup_probe as gp
from goup_probe import schema
from goup_probe.cli import main
from goup_probe.demo.cifar import FOLDER, find_cifar10, load_cifar10, read_batch

PER_BATCH, N_TEST = 4, 6


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` (BINSTRING), as the original cPickle files do."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _write(path, data, labels, *, py2=True):
    # The layout of the original files: a protocol-2 pickle of a dict with str keys.
    batch = {b"batch_label": b"test", b"labels": [int(v) for v in labels], b"data": data}
    with open(path, "wb") as handle:
        if py2:
            _Py2Pickler(handle, protocol=2).dump(batch)
        else:
            pickle.dump(batch, handle, protocol=2)


@pytest.fixture()
def cifar_root(tmp_path):
    folder = tmp_path / FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5 * PER_BATCH + N_TEST, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=len(images))
    for i in range(5):
        rows = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        _write(folder / f"data_batch_{i + 1}", images[rows], labels[rows])
    _write(folder / "test_batch", images[5 * PER_BATCH :], labels[5 * PER_BATCH :])
    return tmp_path, images, labels


def test_reads_all_batches_in_order_and_standardises_per_channel(cifar_root):
    root, images, labels = cifar_root
    data = load_cifar10(root)
    assert data.name == "cifar10"
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (N_TEST, 3, 32, 32)
    assert data.train_x.dtype == torch.float32
    assert torch.equal(data.train_y, torch.from_numpy(labels[:20]))
    assert torch.equal(data.test_y, torch.from_numpy(labels[20:]))
    raw = images.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    mean = raw[:20].mean(axis=(0, 2, 3))
    std = raw[:20].std(axis=(0, 2, 3))
    # Pixel (image 21 = test 1, channel 2, row 5, column 7) standardised with training statistics.
    expected = (raw[21, 2, 5, 7] - mean[2]) / std[2]
    assert data.test_x[1, 2, 5, 7].item() == pytest.approx(expected, rel=1e-5)
    per_channel = data.train_x.double()
    assert np.allclose(per_channel.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-6)
    assert np.allclose(per_channel.std(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-5)
    assert data.in_channels == 3 and data.num_classes <= 10


def test_reads_batches_pickled_by_python3_too(tmp_path):
    path = tmp_path / "py3_batch"
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    _write(path, data, [3, 4], py2=False)
    images, labels = read_batch(path)
    assert np.array_equal(images.reshape(2, -1), data) and labels.tolist() == [3, 4]


def test_root_may_be_the_batch_folder_itself_and_limits_apply(cifar_root):
    root, _, labels = cifar_root
    data = load_cifar10(root / FOLDER, train_limit=7, test_limit=2)
    assert len(data.train_x) == 7 and len(data.test_x) == 2
    assert torch.equal(data.train_y, torch.from_numpy(labels[:7]))
    with pytest.raises(ValueError):
        load_cifar10(root, train_limit=0)


def test_missing_files_are_reported_without_downloading(tmp_path, cifar_root):
    with pytest.raises(FileNotFoundError, match="download"):
        load_cifar10(tmp_path / "empty")
    root = cifar_root[0]
    os.remove(root / FOLDER / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        find_cifar10(root)


def test_malformed_and_malicious_batches_are_refused(tmp_path):
    bad_shape = tmp_path / "bad_shape"
    _write(bad_shape, np.zeros((2, 100), dtype=np.uint8), [0, 1])
    with pytest.raises(ValueError, match="3072"):
        read_batch(bad_shape)
    bad_labels = tmp_path / "bad_labels"
    _write(bad_labels, np.zeros((2, 3072), dtype=np.uint8), [0, 10])
    with pytest.raises(ValueError, match="labels"):
        read_batch(bad_labels)

    class Evil:
        def __reduce__(self):
            return (os.remove, (str(tmp_path / "victim"),))

    (tmp_path / "victim").write_text("still here")
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match="refusing"):
        read_batch(evil)
    assert (tmp_path / "victim").exists()


def test_cli_compare_on_cifar_format_files(cifar_root, tmp_path, capsys):
    root = cifar_root[0]
    out = tmp_path / "cmp"
    code = main(["compare", "--dataset", "cifar10", "--data-root", str(root), "--steps", "2", "--seeds", "2",
                 "--batch-size", "4", "--eval-every", "1", "--modes", "seed", "--out", str(out),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    assert "goup-seed" in capsys.readouterr().out
    run = gp.load_run(out)
    assert run.meta["compare"]["data"] == "cifar10"
    layers = run.table(schema.COMPARE_LAYERS)
    assert "layers.8.conv2.weight" in set(layers["param"])  # ResNet-20: 9 residual blocks


def test_cli_cifar_needs_a_data_root(capsys):
    assert main(["compare", "--dataset", "cifar10", "--steps", "1"]) == 2
    assert "--data-root" in capsys.readouterr().err
