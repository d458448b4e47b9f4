"""The floor of one captured step on this machine, measured in this run (issue 17).

What a captured step cannot avoid, for a model of N float32 parameter elements
whose tested subsamples are k tensors of n values:

* reading θ and g once and keeping the θ snapshot the update needs: a copy of
  N elements (memory bandwidth, measured with ``torch.Tensor.copy_``);
* one pass over θ and g for the moments of θ, g and X = θ − g: its floor is one
  read of each (measured as ``theta.sum()`` + ``grad.sum()``, bandwidth-bound);
  an eager float32 pass computing the sums of x, x², x³, x⁴ of the three is
  printed beside it (what a kernel without fusion costs), not counted;
* the test battery on the k subsamples (``goup_probe.stats.battery.run_battery``
  on a (k, n) block, float64).

The floor is their sum; ``benchmarks/overhead.py``'s per-step probe cost can be
divided by it. Each figure is the median of ``--reps`` timings.

Usage::

    python benchmarks/floor.py                      # the MLP of overhead.py: 1.86 M elements, 6 tensors
    python benchmarks/floor.py --elements 272474 --tensors 65   # ResNet-20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from goup_probe.stats.battery import run_battery
from goup_probe.stats.normal_tests import standardise

MLP_ELEMENTS = 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10
"""Parameters of overhead.py's MLP (784-1024-1024-10)."""


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm up (allocations, caches)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(elements: int, tensors: int, sample: int, reps: int) -> dict[str, float]:
    """Milliseconds of each part of the floor, and their sum."""
    theta, grad = torch.randn(elements), torch.randn(elements)
    snapshot = torch.empty_like(theta)

    def copy() -> None:
        snapshot.copy_(theta)
        snapshot.copy_(grad)

    def one_read() -> None:
        theta.sum()
        grad.sum()

    def eager_power_sums() -> None:
        for x in (theta, grad, theta - grad):
            x2 = x * x
            torch.stack([x.sum(), x2.sum(), (x2 * x).sum(), (x2 * x2).sum()])

    block = standardise(np.random.default_rng(0).standard_normal((tensors, min(sample, 5000))))

    def battery() -> None:
        run_battery(block)

    parts = {
        "copy θ, g (snapshot)": _median_ms(copy, reps),
        "one read of θ, g (moments)": _median_ms(one_read, reps),
        f"battery on {tensors}×{block.shape[1]} values": _median_ms(battery, reps),
    }
    parts["floor"] = sum(parts.values())
    parts["(eager power sums, not counted)"] = _median_ms(eager_power_sums, reps)
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=MLP_ELEMENTS, help="float32 parameter elements")
    parser.add_argument("--tensors", type=int, default=6, help="tensors tested (subsamples)")
    parser.add_argument("--sample", type=int, default=5000, help="values per tested subsample")
    parser.add_argument("--reps", type=int, default=21)
    args = parser.parse_args(argv)
    parts = measure(args.elements, args.tensors, args.sample, args.reps)
    mb = 2 * 4 * args.elements / 1e6
    print(
        f"floor of a captured step: {args.elements} elements ({mb:.1f} MB of θ and g), {args.tensors} tensors"
    )
    for name, ms in parts.items():
        print(f"  {name:<32} {ms:8.2f} ms")
    print(f"  copy bandwidth ≈ {2 * mb / parts['copy θ, g (snapshot)']:.1f} GB/s (read + write)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
