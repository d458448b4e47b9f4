"""Step-time overhead of the probe against training without any logging.

Two workloads (issue 7):

* ``cnn``: ResNet-20 (~270k parameters), random 3×32×32 inputs, batch 128, SGD with momentum;
* ``mlp``: 784-1024-1024-10, batch 256, SGD with momentum.

Configurations are interleaved (A B C A B C …) so that drift of a shared machine
hits all of them alike; each repetition builds a fresh model from the same seed,
attaches the probe, runs warm-up steps (which include a captured step, so the
one-off Lilliefors null tables are not charged), then times ``--steps`` steps
and the ``detach`` that ends training, whose final flush writes what those
steps buffered (the probe keeps its default flush settings, as in a real run;
TensorBoard's ``close`` is charged the same way).

Two ratios per configuration, both the median over repetitions of a ratio to
the baseline of the same repetition:

* **wall**: timed seconds over the baseline's (what training feels; on a shared
  2-core machine its spread is ±5–15%);
* **in-probe**: (baseline + the probe's own seconds, :class:`goup_probe.ProbeTime`)
  over the baseline: the time spent inside the probe's hooks, measured with a
  clock around them, which is far less noisy (it misses only the probe's effect
  on caches).

Usage::

    python benchmarks/overhead.py            # default, a few minutes on 2 cores
    python benchmarks/overhead.py --quick    # smoke run
    python benchmarks/overhead.py --profile cnn:every1   # cProfile of one configuration

After the interleaved repetitions the floor of a captured step of each workload
(``benchmarks/floor.py``: the θ snapshot copy, one read of θ and g, the battery
on its tested subsamples) is measured in the same run, and each probe
configuration's cost per captured step (in-probe ms/step × the capture period)
is printed as a multiple of it.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import importlib.util
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import goup_probe as gp
from goup_probe.demo.models import resnet20

NEVER = 10**9
"""``every`` large enough that only step 0 would be captured; combined with a schedule that never fires."""


@dataclass
class Workload:
    name: str
    make_model: Callable[[], nn.Module]
    batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    steps: int
    warmup: int


def _cnn_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(128, 3, 32, 32, generator=gen), torch.randint(0, 10, (128,), generator=gen)


def _mlp_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(256, 784, generator=gen), torch.randint(0, 10, (256,), generator=gen)


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )


def workloads(quick: bool) -> dict[str, Workload]:
    return {
        "cnn": Workload("cnn", lambda: resnet20(3, 10), _cnn_batch, 10 if quick else 20, 2 if quick else 3),
        "mlp": Workload("mlp", _mlp, _mlp_batch, 40 if quick else 300, 5 if quick else 10),
    }


def _never(step: int) -> bool:
    return False


# name -> (description, attach options or None for no probe)
CONFIGS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "baseline": ("no logging", None),
    "every10": ("probe every 10th step, default statistics", {"every": 10}),
    "every10_x": ("probe every 10th step, tests on X only", {"every": 10, "tested": ("theta_minus_grad",)}),
    "every1": (
        "probe every step, tests on X, moments on θ, g, update",
        {"every": 1, "tested": ("theta_minus_grad",)},
    ),
    "hooks": ("probe attached, nothing captured, tracers=0", {"schedule": _never, "tracers": 0}),
    "tracers": ("probe attached, only tracers (256/tensor) every step", {"schedule": _never}),
    "tb1": ("TensorBoard add_histogram of θ and g, every step", None),
    "tb10": ("TensorBoard add_histogram of θ and g, every 10th step", None),
    "wb1": ('wandb.watch(log="all", log_freq=1), offline, wandb.log each step', None),
    "wb10": ('wandb.watch(log="all", log_freq=10), offline, wandb.log each step', None),
}
TENSORBOARD_EVERY = {"tb1": 1, "tb10": 10}
"""TensorBoard configurations: histograms of every parameter and its gradient after ``step()``."""
WANDB_EVERY = {"wb1": 1, "wb10": 10}
"""wandb configurations: ``wandb.watch`` histograms, committed by a ``wandb.log`` call per step."""


def _tensorboard_logger(model: nn.Module, log_dir: Path, every: int) -> tuple[Callable[[int], None], Any]:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))

    def log(i: int) -> None:
        if i % every == 0:
            for name, p in model.named_parameters():
                writer.add_histogram(name, p, i)
                if p.grad is not None:
                    writer.add_histogram(f"{name}.grad", p.grad, i)

    return log, writer


def _wandb_logger(model: nn.Module, log_dir: Path, every: int) -> tuple[Callable[[int], None], Any]:
    """``wandb.watch`` in offline mode (nothing leaves the machine); its histograms are
    committed by the ``wandb.log`` call a user makes each step."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    log_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        mode="offline", dir=str(log_dir), project="goup-probe-bench", settings=wandb.Settings(console="off")
    )
    wandb.watch(model, log="all", log_freq=every)

    def log(i: int) -> None:
        run.log({"step": i})

    return log, run


def _attach(model: nn.Module, opt: torch.optim.Optimizer, options: dict[str, Any], run_dir: Path) -> Any:
    return gp.attach(model, opt, run_dir=run_dir, overwrite=True, **options)


def _probe_seconds(probe: Any) -> float:
    spent = probe.time
    return spent.captured_seconds + spent.other_seconds + spent.close_seconds


def run_once(work: Workload, config: str, root: Path, rep: int, extra: dict[str, Any]) -> tuple[float, float]:
    """Seconds per step of one repetition (timed steps plus detach), and the probe's own share."""
    torch.manual_seed(0)
    model = work.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    data = [work.batch(gen) for _ in range(4)]
    loss_fn = nn.CrossEntropyLoss()
    options = CONFIGS[config][1]
    probe = None
    if options is not None:
        probe = _attach(model, opt, {**options, **extra}, root / f"{work.name}-{config}-{rep}")
    log, tb_writer, wandb_run = None, None, None
    if config in TENSORBOARD_EVERY:
        log, tb_writer = _tensorboard_logger(
            model, root / f"{work.name}-{config}-{rep}", TENSORBOARD_EVERY[config]
        )
        options = {"every": TENSORBOARD_EVERY[config]}
    if config in WANDB_EVERY:
        log, wandb_run = _wandb_logger(model, root / f"{work.name}-{config}-{rep}", WANDB_EVERY[config])
        options = {"every": WANDB_EVERY[config]}

    def step(i: int) -> None:
        x, y = data[i % len(data)]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if log is not None:
            log(i)

    # warm-up: steps 0..warmup-1 (step 0 is a captured step for every schedule above)
    for i in range(work.warmup):
        step(i)
    # align the timed window to whole capture periods
    start_step = work.warmup
    if options is not None and options.get("every"):
        period = options["every"]
        while start_step % period:
            step(start_step)
            start_step += 1
    probe_before = _probe_seconds(probe) if probe is not None else 0.0
    t0 = time.perf_counter()  # timed window: the steps, then the writes they left buffered
    for i in range(start_step, start_step + work.steps):
        step(i)
    probe_seconds = 0.0
    if probe is not None:
        probe.detach()
        probe_seconds = _probe_seconds(probe) - probe_before
    if tb_writer is not None:
        tb_writer.close()
    elapsed = time.perf_counter() - t0
    if wandb_run is not None:
        wandb_run.finish()  # not charged: it shuts wandb's service process down (seconds, once)
    return elapsed / work.steps, probe_seconds / work.steps


@dataclass
class Row:
    workload: str
    config: str
    ms: float
    ratio: float
    ratio_lo: float
    ratio_hi: float
    probe_ms: float
    probe_ratio: float
    probe_ratio_lo: float
    probe_ratio_hi: float
    reps: int


def measure(names: list[str], configs: list[str], reps: int, quick: bool, extra: dict[str, Any]) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="goup-bench-"))
    rows = []
    try:
        for wname in names:
            work = workloads(quick)[wname]
            times: dict[str, list[float]] = {c: [] for c in configs}
            inside: dict[str, list[float]] = {c: [] for c in configs}
            for rep in range(reps):
                for config in configs:
                    seconds, probe_seconds = run_once(work, config, root, rep, extra)
                    times[config].append(seconds)
                    inside[config].append(probe_seconds)
                    shutil.rmtree(root / f"{work.name}-{config}-{rep}", ignore_errors=True)
                print(
                    f"  {wname} rep {rep + 1}/{reps}: "
                    + " ".join(f"{c}={times[c][-1] * 1e3:.1f}" for c in configs),
                    file=sys.stderr,
                    flush=True,
                )
            base = times["baseline"]
            for config in configs:
                ratios = [t / b for t, b in zip(times[config], base, strict=True)]
                probe_ratios = [1 + p / b for p, b in zip(inside[config], base, strict=True)]
                rows.append(
                    Row(
                        wname,
                        config,
                        statistics.median(times[config]) * 1e3,
                        statistics.median(ratios),
                        min(ratios),
                        max(ratios),
                        statistics.median(inside[config]) * 1e3,
                        statistics.median(probe_ratios),
                        min(probe_ratios),
                        max(probe_ratios),
                        reps,
                    )
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def capture_period(config: str) -> int | None:
    """Steps per captured step of a probe configuration (None: nothing is captured)."""
    options = CONFIGS[config][1]
    if options is None or "every" not in options:
        return None
    return int(options["every"])


def workload_floor_ms(name: str, quick: bool) -> float:
    """The floor of one captured step of a workload, measured now (``floor.py``).

    Elements are all of the model's parameters; the battery runs on one
    subsample of min(numel, 5000) values per tensor (the largest tensor's size,
    an upper bound for the grouped small tensors).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from floor import measure as measure_floor

    params = list(workloads(quick)[name].make_model().parameters())
    elements = sum(p.numel() for p in params)
    sample = min(5000, max(p.numel() for p in params))
    return measure_floor(elements, len(params), sample, reps=5 if quick else 11)["floor"]


def format_floor(rows: list[Row], floors: dict[str, float]) -> str:
    """Each probe configuration's cost per captured step as a multiple of its workload's floor."""
    lines = [
        "| workload | configuration | floor ms | captured-step ms (in-probe × period) | × floor |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        period = capture_period(r.config)
        if period is None or r.workload not in floors:
            continue
        step_ms = r.probe_ms * period
        floor_ms = floors[r.workload]
        lines.append(
            f"| {r.workload} | {r.config} | {floor_ms:.2f} | {step_ms:.2f} | {step_ms / floor_ms:.2f}× |"
        )
    return "\n".join(lines)


def format_rows(rows: list[Row]) -> str:
    lines = [
        "| workload | configuration | ms/step | wall ratio (min–max) | in-probe ms/step | "
        "in-probe ratio (min–max) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        desc = CONFIGS[r.config][0]
        probe = (
            f"{r.probe_ms:.2f} | {r.probe_ratio:.3f}× ({r.probe_ratio_lo:.3f}–{r.probe_ratio_hi:.3f})"
            if CONFIGS[r.config][1] is not None
            else "– | –"
        )
        lines.append(
            f"| {r.workload} | {r.config}: {desc} | {r.ms:.1f} | {r.ratio:.3f}× "
            f"({r.ratio_lo:.3f}–{r.ratio_hi:.3f}) | {probe} |"
        )
    if importlib.util.find_spec("tensorboard") is None:
        lines.append("| both | TensorBoard add_histogram (tb1, tb10) | not installed | – | – | – |")
    if importlib.util.find_spec("wandb") is None:
        lines.append("| both | wandb.watch (wb1, wb10) | not installed | – | – | – |")
    return "\n".join(lines)


def header(reps: int, quick: bool) -> str:
    return (
        f"date {dt.date.today().isoformat()}, {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{reps} interleaved repetitions{' (quick)' if quick else ''}"
    )


def profile(target: str, quick: bool, extra: dict[str, Any], sort: str = "tottime") -> None:
    wname, config = target.split(":")
    work = workloads(quick)[wname]
    root = Path(tempfile.mkdtemp(prefix="goup-prof-"))
    try:
        run_once(work, config, root, 0, extra)  # warm caches
        prof = cProfile.Profile()
        prof.enable()
        run_once(work, config, root, 1, extra)
        prof.disable()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    pstats.Stats(prof).sort_stats(sort).print_stats(40)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions (smoke run)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5, quick 3)")
    parser.add_argument("--workloads", default="cnn,mlp")
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated (default: baseline,every10,every1,hooks,tracers, plus tb1,tb10 "
        "and wb1,wb10 when tensorboard and wandb are installed)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", metavar="WORKLOAD:CONFIG", help="cProfile one configuration instead")
    parser.add_argument("--profile-sort", default="tottime", help="pstats sort key (e.g. cumulative)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    extra: dict[str, Any] = {}
    if args.profile:
        profile(args.profile, args.quick, extra, args.profile_sort)
        return 0
    reps = args.reps or (3 if args.quick else 5)
    default = "baseline,every10,every1,hooks,tracers"
    if importlib.util.find_spec("tensorboard") is not None:
        default += ",tb1,tb10"
    if importlib.util.find_spec("wandb") is not None:
        default += ",wb1,wb10"
    configs = (args.configs or default).split(",")
    if "baseline" not in configs:
        configs.insert(0, "baseline")
    rows = measure(args.workloads.split(","), configs, reps, args.quick, extra)
    print(header(reps, args.quick))
    print(format_rows(rows))
    floors = {name: workload_floor_ms(name, args.quick) for name in args.workloads.split(",")}
    print()
    print(format_floor(rows, floors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
