"""Capture cost and peak host memory against tensor size (issue 7).

Each configuration runs in its own subprocess, so its peak RSS is its own:
one parameter tensor of 10⁵ … 10⁸ float32 elements, and 1000 small tensors of
1000 elements. The gradient is fixed and the optimizer is plain SGD, so a step
costs the same with and without the probe except for the capture itself.

Printed per configuration: elements, plain SGD step (ms), step with the probe
capturing every step (ms), capture cost (the difference, ms; it includes the
host statistics, a fixed cost per tensor and quantity since they run on a
≤5000-value subsample), the on-device reductions alone (θ, g, X and the update
over the whole tensors) and their cost per million elements, and the extra
peak RSS the probe adds over training's own peak (MiB), with all four
quantities and with the update left out (the update needs a copy of θ from
before the step, which on a CPU lives in host memory), and the run directory's
bytes per captured step (``run.json``'s ``disk.bytes_per_captured_step``, after
detach's compaction; the run is a few steps long, so the fixed files weigh in).

Usage::

    python benchmarks/scaling.py            # 1e5 … 1e8 and 1000 small tensors (a few minutes)
    python benchmarks/scaling.py --quick    # up to 1e7
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.capture import batch
from goup_probe.capture.fused import resolve_kernel
from goup_probe.capture.reduce import reduce_components, reduce_update

NO_UPDATE = tuple(q for q in schema.QUANTITIES if q != schema.UPDATE)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _device_reduction_ms(params: nn.ParameterList, reps: int) -> float:
    """Median ms of the on-device reductions alone, as the probe runs them over all tensors of a step.

    A lone tensor: θ, g and X in one pass (``reduce_components``) and the update
    with its dot product with g in another (``reduce_update``; θ stands in for
    θ_next), with the kernel the probe resolves (``"numba"`` where the `fast` extra is
    installed). Many small same-size tensors: the same, in groups (``capture.batch``).
    """
    kernel = resolve_kernel("auto")
    indices = [torch.arange(0, p.numel(), max(1, p.numel() // 5000))[:5000] for p in params]
    groups = batch.split_group(list(range(len(params))), params[0].numel()) if len(params) > 1 else []
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for members in groups:
            thetas = [params[i].detach() for i in members]
            grads = [params[i].grad for i in members]
            index = torch.stack([indices[i] for i in members])
            _, state = batch.reduce_group_components(thetas, grads, index)
            batch.reduce_group_update(thetas, state, index)
        if not groups:
            for p, index in zip(params, indices, strict=True):
                theta, grad = p.detach(), p.grad
                reduce_components(theta, grad, index, kernel=kernel)
                reduce_update(theta, grad, grad, index, kernel=kernel)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def child(numel: int, count: int, reps: int, without_update: bool) -> dict[str, float]:
    """Measure one configuration in this process (run through a subprocess)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    params = nn.ParameterList(nn.Parameter(torch.randn(numel) * 0.05) for _ in range(count))
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = torch.optim.SGD(params.parameters(), lr=1e-3)
    opt.step()  # warm-up: SGD's own temporaries belong to training

    plain = []
    for _ in range(reps):
        t0 = time.perf_counter()
        opt.step()
        plain.append(time.perf_counter() - t0)
    base_peak = _peak_mib()
    reduce_ms = _device_reduction_ms(params, reps)
    options = {"quantities": NO_UPDATE} if without_update else {}
    with tempfile.TemporaryDirectory() as tmp:
        probed = []
        with gp.attach(params, opt, run_dir=os.path.join(tmp, "r"), every=1, **options) as probe:
            opt.step()  # first capture builds the cached Lilliefors null tables
            for _ in range(reps):
                t0 = time.perf_counter()
                opt.step()
                probed.append(time.perf_counter() - t0)
        assert not probe.errors, probe.errors
        disk = gp.load_run(os.path.join(tmp, "r")).meta["disk"]  # written at detach
    return {
        "plain_ms": statistics.median(plain) * 1e3,
        "probed_ms": statistics.median(probed) * 1e3,
        "reduce_ms": reduce_ms,
        "extra_peak_mib": max(_peak_mib() - base_peak, 0.0),
        "tensor_mib": numel * count * 4 / 2**20,
        "disk_kb_per_captured_step": disk["bytes_per_captured_step"] / 1e3,
    }


def run_child(numel: int, count: int, reps: int, without_update: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(numel), str(count), str(reps)]
    if without_update:
        cmd.append("--without-update")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="sizes up to 1e7 only")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--child", nargs=3, type=int, metavar=("NUMEL", "COUNT", "REPS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--without-update", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, without_update=args.without_update)))
        return 0
    configs = [(10**5, 1), (10**6, 1), (10**7, 1)] + ([] if args.quick else [(10**8, 1)]) + [(1000, 1000)]
    print(
        f"date {dt.date.today().isoformat()}, {platform.platform()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, 2 threads, kernel {resolve_kernel('auto')}, every step captured, "
        f"median of {args.reps} steps"
    )
    print(
        "| tensors × elements | plain SGD step ms | step with probe ms | capture ms | device reductions ms "
        "| reductions ms per 10⁶ elements | extra peak RSS MiB (all quantities) "
        "| extra peak RSS MiB (no update) | tensor MiB | disk kB per captured step |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for numel, count in configs:
        reps = max(1, args.reps - 1) if numel * count >= 10**8 else args.reps
        full = run_child(numel, count, reps, without_update=False)
        lean = run_child(numel, count, reps, without_update=True)
        cost = full["probed_ms"] - full["plain_ms"]
        per_million = full["reduce_ms"] / (numel * count / 1e6)
        print(
            f"| {count} × {numel:.0e} | {full['plain_ms']:.1f} | {full['probed_ms']:.1f} | {cost:.1f} | "
            f"{full['reduce_ms']:.1f} | {per_million:.1f} | {full['extra_peak_mib']:.0f} | "
            f"{lean['extra_peak_mib']:.0f} | "
            f"{full['tensor_mib']:.0f} | {full['disk_kb_per_captured_step']:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
