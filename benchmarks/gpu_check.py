"""GPU check (issue 7): every whole-tensor reduction stays on the CUDA device.

Run it on a machine with a CUDA GPU (about a minute)::

    python benchmarks/gpu_check.py

It checks that

1. the reductions give the same moments on the GPU as on the CPU (within 10⁻⁶
   relative: float32 sums are added in another order on each device);
2. no full-size tensor is copied to the host: every device-to-host copy made by
   the reductions and by a whole probed training step is small (subsamples,
   tracer coordinates, a few scalars), which is recorded by wrapping
   ``torch.Tensor.cpu``/``to``/``numpy``/``item``/``tolist`` while the probe runs;
3. the probe captures a ResNet-20 on the GPU without recording an error;

and prints the time of one captured step against a plain step. Exits non-zero
on any failure; prints "SKIP" and exits 0 when no GPU is present.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

import goup_probe as gp
from goup_probe.capture import reduce as red
from goup_probe.demo.models import resnet20

MAX_HOST_ELEMENTS = 2 * 5000
"""Largest tensor one reduction may move to the host: the θ and g subsamples of one tensor
(5000 values each), far below the 3·10⁶-value test tensors."""
SAMPLE = 5000


def _max_group(model: nn.Module) -> int:
    """Members of the largest group of same-size tensors (their subsamples travel together)."""
    from collections import Counter

    from goup_probe.capture.batch import group_key

    keys = Counter(group_key(p) for p in model.parameters())
    keys.pop(None, None)
    return max(keys.values(), default=1)


@contextmanager
def record_host_copies(device_type: str = "cuda") -> Iterator[list[tuple[str, int]]]:
    """Record (method, numel) of every tensor on ``device_type`` moved to the host inside the block.

    With ``device_type="cpu"`` it records every conversion to host objects, which
    lets the check itself be dry-run on a machine without a GPU (``--dry-run-cpu``).
    """
    seen: list[tuple[str, int]] = []
    originals = {name: getattr(torch.Tensor, name) for name in ("cpu", "numpy", "item", "tolist", "to")}

    def wrap(name):
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            if self.device.type == device_type:
                target = args[0] if args else kwargs.get("device")
                to_host = name != "to" or (
                    isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"
                )
                if to_host:
                    seen.append((name, self.numel()))
            return original(self, *args, **kwargs)

        return wrapper

    for name in originals:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield seen
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def check_reductions(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(3_000_001, generator=gen) * 0.05 + 0.01
    grad = torch.randn(3_000_001, generator=gen).exp() * 1e-3
    index = torch.from_numpy(np.sort(np.random.default_rng(0).choice(theta.numel(), 5000, replace=False)))
    cpu = red.reduce_components(theta, grad, index)
    on_device = (theta.to(device), grad.to(device), index.to(device))
    with record_host_copies(device.type) as copies:
        gpu = red.reduce_components(*on_device)
    big = [c for c in copies if c[1] > MAX_HOST_ELEMENTS]
    assert not big, f"reductions copied full tensors to the host: {big}"
    for a, b in zip((cpu.theta, cpu.grad, cpu.x), (gpu.theta, gpu.grad, gpu.x), strict=True):
        for field in ("mean", "std", "skew", "excess_kurtosis", "min", "max"):
            x, y = getattr(a.moments, field), getattr(b.moments, field)
            assert abs(x - y) <= 1e-6 * max(abs(x), a.moments.std), (field, x, y)
        np.testing.assert_array_equal(a.sample, b.sample)
    largest = max(c[1] for c in copies)
    print(f"reductions: CPU and GPU agree; {len(copies)} host copies, largest {largest} values")


def check_probe(device: torch.device) -> None:
    torch.manual_seed(0)
    model = resnet20(3, 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (128,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    plain = _seconds_per_step(step, 10, device)
    with tempfile.TemporaryDirectory() as tmp:
        probe = gp.attach(model, opt, run_dir=f"{tmp}/r", every=1, tested=("theta_minus_grad",))
        step()  # first capture builds the cached Lilliefors null tables
        with record_host_copies(device.type) as copies:
            probed = _seconds_per_step(step, 5, device)
        probe.detach()
        assert not probe.errors, probe.errors
        run = gp.load_run(f"{tmp}/r")
        assert len(run.stats) > 0 and (run.stats["status"] == "ok").mean() > 0.9
    # a group's θ and g subsamples come back in one copy: 2 × 5000 × members at most
    bound = 2 * SAMPLE * _max_group(model)
    big = [c for c in copies if c[1] > bound]
    assert not big, f"the probe copied more than subsamples to the host: {big[:5]}"
    largest = max((c[1] for c in copies), default=0)
    print(f"probe: {len(copies)} host copies in 5 captured steps, largest {largest} values")
    print(f"plain step {plain * 1e3:.1f} ms, captured step {probed * 1e3:.1f} ms ({probed / plain:.2f}×)")


def _seconds_per_step(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Mean wall seconds of ``steps`` calls of ``step``, the device's queue drained at both ends."""
    _synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return (time.perf_counter() - t0) / steps


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--dry-run-cpu" in argv:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        return 0
    else:
        device = torch.device("cuda")
        print(torch.cuda.get_device_name(device), "torch", torch.__version__)
    check_reductions(device)
    check_probe(device)
    print("OK: all reductions stayed on the device")
    return 0


if __name__ == "__main__":
    sys.exit(main())
