"""The TensorBoard mirror: per-layer effect sizes and verdict counts as scalars at each captured step."""

import math
from collections import Counter

import pytest
import torch
from torch import nn

import goup_probe as gp
from tests.helpers import TinyNet, batches


class RecordingWriter:
    """Anything with add_scalar is accepted as a writer; this one remembers every call."""

    def __init__(self):
        self.scalars = []
        self.flushed = 0

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, float(value), int(step)))

    def flush(self):
        self.flushed += 1


def _train(tmp_path, **options):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=2, **options):
        for x, y in batches(5):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    return gp.load_run(tmp_path / "r").stats


def test_mirror_writes_the_rows_effect_sizes_and_verdict_counts(tmp_path):
    writer = RecordingWriter()
    stats = _train(tmp_path, tensorboard=writer)
    assert writer.flushed == 1
    expected = set()
    for _, row in stats.iterrows():
        for column in ("w1_sigma", "excess_kurtosis"):
            if math.isfinite(row[column]):
                expected.add((f"goup/{row['quantity']}/{column}/{row['param']}", row[column], row["step"]))
    counts = Counter((r["quantity"], r["verdict"], r["step"]) for _, r in stats.iterrows())
    expected |= {(f"goup/{q}/verdict/{v}", float(n), s) for (q, v, s), n in counts.items()}
    assert set(writer.scalars) == expected
    assert {s for _, _, s in writer.scalars} == {0, 2, 4}


def test_mirror_into_a_log_directory_reads_back_with_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stats = _train(tmp_path, tensorboard=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tag = "goup/theta_minus_grad/w1_sigma/fc1.weight"
    got = [(e.step, e.value) for e in events.Scalars(tag)]
    rows = stats[(stats["quantity"] == "theta_minus_grad") & (stats["param"] == "fc1.weight")].sort_values(
        "step"
    )
    assert [s for s, _ in got] == list(rows["step"])
    assert [v for _, v in got] == pytest.approx(list(rows["w1_sigma"]), rel=1e-6)  # stored as float32


def test_mirror_refuses_a_target_it_cannot_write(tmp_path):
    with pytest.raises(TypeError, match="tensorboard"):
        _train(tmp_path, tensorboard=42)
    assert not (tmp_path / "r").exists()  # refused before anything was written
