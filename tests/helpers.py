"""Small models and loops shared by the capture tests."""

import contextlib

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, d_in=6, hidden=16, d_out=3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def batches(n, batch=32, d_in=6, d_out=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, d_in, generator=g), torch.randint(0, d_out, (batch,), generator=g))
        for _ in range(n)
    ]


def train(model, optimizer, data, loss_fn=nn.functional.cross_entropy):
    for x, y in data:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@contextlib.contextmanager
def uncompacted():
    """Runs detached inside keep the parts their flushes wrote (as a run written before compaction,
    or one whose detach was cut short): for tests of multi-part tables."""
    from goup_probe.capture.record import RunRecord

    real = RunRecord.compact
    RunRecord.compact = lambda self: None
    try:
        yield
    finally:
        RunRecord.compact = real
