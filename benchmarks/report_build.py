"""Report build time for a large model: 200 tensors × 100 captured steps (synthetic run directory).

Usage::

    python benchmarks/report_build.py [--tensors 200] [--steps 100] [--keep 1000] [--out /tmp/bench-report]

Writes the synthetic run with RunWriter, then times ``goup_probe.report`` on it
and prints the wall time of each phase.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from goup_probe.report import report
from tests.report_synth import synthetic_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--numel", type=int, default=2000)
    parser.add_argument("--keep", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="goup-report-bench-"))
    run_dir = root / "run"
    start = time.perf_counter()
    synthetic_run(
        run_dir,
        n_params=args.tensors,
        steps=[10 * i for i in range(args.steps)],
        numel=args.numel,
        keep=args.keep,
        full_tests=False,
    )
    written = time.perf_counter() - start
    start = time.perf_counter()
    result = report(run_dir, root / "report")
    built = time.perf_counter() - start
    print(f"synthetic run: {args.tensors} tensors x {args.steps} captured steps, {args.keep} stored values")
    print(f"  written in {written:.1f} s to {run_dir}")
    print(f"  report built in {built:.1f} s ({len(result.figures)} PNG files): {result.index}")
    print(f"  sections: {', '.join(result.sections)}")
    print(f"  per-layer detail for: {', '.join(result.detail_layers)}")


if __name__ == "__main__":
    main()
