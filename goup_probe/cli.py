"""Command line: a thin argparse layer over the library. ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from goup_probe.store import RunDirectoryError

DEFAULT_OUT = Path("reports")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path


def _cmd_demo(args: argparse.Namespace) -> int:
    from goup_probe.demo.train import run_demo
    from goup_probe.summary import format_table

    result = run_demo(
        args.out,
        steps=args.steps,
        every=args.every,
        seed=args.seed,
        init=args.init,
        progress=not args.no_progress,
    )
    print(
        f"Trained SmallResNet on digits for {args.steps} steps (init={args.init}); "
        f"held-out accuracy {result.test_accuracy:.3f}."
    )
    print("Per-layer distribution of X = θ − ∂L/∂θ (first and last captured step):\n")
    print(format_table(result.summary))
    print(
        f"\nRun written to {result.run_dir} in {result.wall_seconds:.1f} s. "
        f"Summarise it again with: goup-probe summary {result.run_dir}"
    )
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from goup_probe.store import load_run
    from goup_probe.summary import format_table, layer_summary

    run = load_run(args.run_dir)
    print(
        f"{args.run_dir}: status {run.status}, {run.meta.get('steps', '?')} steps, "
        f"{run.meta.get('captured_steps', '?')} captured"
    )
    print(format_table(layer_summary(run, args.quantity)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``goup-probe`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="goup-probe",
        description="Is θ − ∂L/∂θ Gaussian per layer? Probe, summarise and report training runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small CNN on the bundled digits with the probe attached")
    demo.add_argument("--steps", type=_positive_int, default=1500, help="optimizer steps (default 1500)")
    demo.add_argument("--every", type=_positive_int, default=25, help="capture period (default 25)")
    demo.add_argument(
        "--out", type=Path, default=DEFAULT_OUT / "demo", help="run directory (default reports/demo)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--init",
        choices=("default", "normal"),
        default="default",
        help="PyTorch's Kaiming-uniform (default) or Gaussian Kaiming-normal init",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(func=_cmd_demo)

    summary = sub.add_parser("summary", help="print the per-layer summary of a run directory")
    summary.add_argument("run_dir", type=_existing_dir)
    summary.add_argument(
        "--quantity", default="theta_minus_grad", choices=("theta_minus_grad", "theta", "grad", "update")
    )
    summary.set_defaults(func=_cmd_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (RunDirectoryError, ValueError) as exc:
        print(f"goup-probe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("goup-probe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
