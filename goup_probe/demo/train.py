"""The main job: train the small CNN on digits with the probe attached."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from goup_probe import schema
from goup_probe.capture.probe import attach
from goup_probe.demo.data import BatchStream, load_digits_data
from goup_probe.demo.models import Init, SmallResNet
from goup_probe.fidelity.data import evaluate
from goup_probe.store import Run, load_run
from goup_probe.summary import layer_summary

DEFAULT_STEPS = 1500
DEFAULT_EVERY = 25
DEMO_TRACERS = 20
"""Tracer coordinates per tensor in the demo (default 256). Trajectories at every step dominate a
run's size (256 made 25.5 of the demo's 31.8 MB; 24 made 5.3 of 10.4 MB); 20 per tensor, pooled
over 1500 steps, keep every OU analysis (its per-coordinate diagnostics need 20) and the whole
demo directory, report included, under 10 MB."""
DEMO_KEEP_SAMPLES = 400
"""Stored values per histogram/QQ plot in the demo (default 1000)."""


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced."""

    run_dir: Path
    run: Run
    summary: pd.DataFrame
    test_accuracy: float
    wall_seconds: float


def run_demo(
    out: str | Path = "reports/demo",
    *,
    steps: int = DEFAULT_STEPS,
    every: int = DEFAULT_EVERY,
    seed: int = 0,
    init: Init = "default",
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    progress: bool = True,
    overwrite: bool = True,
    num_threads: int | None = 1,
) -> DemoResult:
    """Train :class:`SmallResNet` on the bundled digits with plain SGD, probe attached.

    Parameters
    ----------
    out : path
        Run directory (a previous demo run there is replaced when ``overwrite``).
    steps, every : int
        Optimizer steps, and capture period.
    seed : int
        Seed of the initialisation, batch order and probe subsamples.
    init : {"default", "normal"}
        PyTorch's Kaiming-uniform or Kaiming-normal initialisation.
    lr, weight_decay, batch_size : float, float, int
        SGD hyperparameters.
    progress : bool
        Show a progress bar on stderr.
    overwrite : bool
        Replace an earlier run in ``out``.
    num_threads : int or None
        Intra-op threads while training (restored afterwards). One thread is as
        fast as two for this tiny CNN on an idle CPU, and many times faster on a
        busy one; ``None`` keeps torch's setting.
    """
    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be >= 1, got steps={steps}, every={every}")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train_probed(out, steps, every, seed, init, lr, weight_decay, batch_size, progress, overwrite)
    finally:
        torch.set_num_threads(previous_threads)


def _train_probed(
    out: str | Path,
    steps: int,
    every: int,
    seed: int,
    init: Init,
    lr: float,
    weight_decay: float,
    batch_size: int,
    progress: bool,
    overwrite: bool,
) -> DemoResult:
    start = time.perf_counter()
    torch.manual_seed(seed)
    data = load_digits_data(seed=seed)
    model = SmallResNet(data.in_channels, data.num_classes, init=init)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    batches = BatchStream(data.train_x, data.train_y, batch_size, seed)
    criterion = nn.CrossEntropyLoss()
    meta = {"demo": {"data": data.name, "init": init, "batch_size": batch_size, "steps": steps}}
    options = {
        "seed": seed,
        "overwrite": overwrite,
        "metadata": meta,
        "tested": schema.QUANTITIES,
        "tracers": DEMO_TRACERS,
        "keep_samples": DEMO_KEEP_SAMPLES,
    }
    with attach(model, optimizer, run_dir=out, every=every, **options) as probe:  # small model: test all
        for _ in _progress(range(steps), progress):
            x, y = batches.next()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    _, accuracy = evaluate(model, data.test_x, data.test_y)
    run = load_run(probe.run_dir)
    return DemoResult(Path(probe.run_dir), run, layer_summary(run), accuracy, time.perf_counter() - start)


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc="training", unit="step", leave=False)
