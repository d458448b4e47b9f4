"""Disk use of a run (issue 17): MB and files per table, before and after compaction, bytes per step.

Two workloads:

* ``demo``: ``goup-probe demo --out DIR --no-progress`` exactly as a user runs it
  (SmallResNet on digits, 1500 steps, capture every 25, the short GO-UP
  comparison and the HTML report written into the run directory);
* ``mlp``: a 784-1024-1024-10 MLP (6 tensors), batch 256, SGD, captured at
  every step for 1000 steps with the probe's default options.

For each: the directory's size and files per table as the run left it, then
after :func:`goup_probe.store.compact.compact_run` (a no-op where the probe
already compacted at detach), and bytes per step and per captured step.

Usage::

    python benchmarks/disk.py                      # both, a few minutes on 2 cores
    python benchmarks/disk.py --quick              # demo 300 steps, MLP 150 steps
    python benchmarks/disk.py --only mlp --trajectory-dtype float64 --keep-sample-steps all
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import goup_probe as gp
from goup_probe.cli import main as cli_main
from goup_probe.store import read_meta
from goup_probe.store.compact import compact_run
from goup_probe.store.usage import DiskUsage, bytes_per_step, disk_usage


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )


def run_mlp(out: Path, steps: int, options: dict[str, Any]) -> None:
    """The MLP at every=1 for ``steps`` steps, random inputs, written to ``out``."""
    torch.manual_seed(0)
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    with gp.attach(model, optimizer, run_dir=out, every=1, **options):
        for _ in range(steps):
            x, y = torch.randn(256, 784, generator=gen), torch.randint(0, 10, (256,), generator=gen)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()


def run_demo_cli(out: Path, steps: int) -> None:
    """``goup-probe demo`` as the CLI runs it (its printout swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["demo", "--out", str(out), "--no-progress", "--steps", str(steps), "--overwrite"])
    if code != 0:
        raise SystemExit(f"goup-probe demo failed with exit code {code}")


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def describe(label: str, usage: DiskUsage) -> list[str]:
    """Lines for one measurement: total, then each table's MB and files."""
    lines = [f"  {label}: {_mb(usage.bytes_total)} in {usage.files_total} files"]
    for name in sorted(usage.bytes_by_table, key=lambda n: -usage.bytes_by_table[n]):
        lines.append(
            f"    {name:<16} {_mb(usage.bytes_by_table[name]):>10}  {usage.files_by_table[name]:>4} files"
        )
    return lines


def measure(name: str, run_dir: Path) -> dict[str, Any]:
    """Print and return the usage before and after compaction, and bytes per (captured) step."""
    before = disk_usage(run_dir)
    result = compact_run(run_dir)
    after = disk_usage(run_dir)
    meta = read_meta(run_dir)
    rates = bytes_per_step(after.bytes_total, meta.get("steps"), meta.get("captured_steps"))
    capture = meta.get("capture", {})
    print(
        f"{name}: {meta.get('steps')} steps, {meta.get('captured_steps')} captured; "
        f"trajectory_dtype={capture.get('trajectory_dtype', 'float64 (old)')}, "
        f"keep_sample_steps={capture.get('keep_sample_steps', 'all (old)')}"
    )
    print("\n".join(describe("as written", before)))
    print("\n".join(describe(f"compacted ({len(result.parts)} tables rewritten)", after)))
    per_step, per_captured = rates["bytes_per_step"], rates["bytes_per_captured_step"]
    print(
        f"  {per_step / 1e3:.1f} kB per step, {per_captured / 1e3:.1f} kB per captured step"
        if per_step and per_captured
        else "  no steps"
    )
    return {
        "before": before.__dict__,
        "after": after.__dict__,
        **rates,
        "steps": meta.get("steps"),
        "captured_steps": meta.get("captured_steps"),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the workloads and print the measurements (and write them as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--only", choices=("demo", "mlp"), default=None)
    parser.add_argument("--trajectory-dtype", choices=("float32", "float64"), default=None, help="MLP only")
    parser.add_argument(
        "--keep-sample-steps", default=None, help="MLP only: an integer, or 'all' (keep_sample_steps=None)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="write the runs here and keep them")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.trajectory_dtype is not None:
        options["trajectory_dtype"] = args.trajectory_dtype
    if args.keep_sample_steps is not None:
        options["keep_sample_steps"] = (
            None if args.keep_sample_steps == "all" else int(args.keep_sample_steps)
        )
    root = args.keep or Path(tempfile.mkdtemp(prefix="goup-disk-"))
    figures: dict[str, Any] = {}
    try:
        if args.only in (None, "demo"):
            start = time.perf_counter()
            run_demo_cli(root / "demo", 300 if args.quick else 1500)
            print(f"(demo ran in {time.perf_counter() - start:.0f} s)")
            figures["demo"] = measure("demo (goup-probe demo)", root / "demo")
        if args.only in (None, "mlp"):
            start = time.perf_counter()
            run_mlp(root / "mlp", 150 if args.quick else 1000, options)
            print(f"(MLP ran in {time.perf_counter() - start:.0f} s)")
            figures["mlp"] = measure("MLP 784-1024-1024-10 at every=1", root / "mlp")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
