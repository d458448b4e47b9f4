"""Command line: a thin argparse layer over the library. ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_OUT = Path("reports")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
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
        overwrite=args.overwrite or _is_demo_run(args.out),
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
    if not args.no_compare:
        from goup_probe.demo.compare import demo_comparison

        comparison = demo_comparison(
            result.run_dir, seed=args.seed, steps=args.compare_steps, progress=not args.no_progress
        )
        _print_comparison(comparison, "Short GO-UP comparison")
    _write_report(result.run_dir, None)
    return 0


def _is_demo_run(path: Path) -> bool:
    """Whether ``path`` holds a previous ``goup-probe demo`` run (which the demo may replace)."""
    from goup_probe.store import RunDirectoryError, load_run

    if not (path / "run.json").is_file():
        return False
    try:
        return "demo" in (load_run(path).meta.get("user") or {})
    except RunDirectoryError:
        return False


def _write_report(run_dir: Path, out: Path | None, **options: object) -> None:
    from goup_probe.report import report

    built = report(run_dir, out, **options)
    print(f"\nReport ({len(built.figures)} figures, built in {built.seconds:.1f} s): {built.index}")
    for section, note in built.notes.items():
        print(f"  {section}: {note}")


def _cmd_report(args: argparse.Namespace) -> int:
    _write_report(args.run_dir, args.out, per_side=args.per_side, layers=args.layers, steps=args.steps)
    return 0


def _print_comparison(result, title: str) -> None:
    from goup_probe.fidelity import summary_table
    from goup_probe.formatting import format_lr
    from goup_probe.summary import format_table

    cfg = result.config
    print(
        f"\n{title}: {cfg['data']}, {cfg['steps']} steps, lr {format_lr(cfg['lr'])}, "
        f"batch {cfg['batch_size']}, "
        f"seeds {cfg['seeds']}; same init and mini-batches in every arm; final held-out metrics, "
        "mean [95% t-interval over seeds], gap paired per seed:\n"
    )
    print(format_table(summary_table(result.summary)))
    where = f" to {result.run_dir}" if result.run_dir is not None else ""
    print(f"\nComparison written{where} in {result.wall_seconds:.1f} s.")


def _cmd_compare(args: argparse.Namespace) -> int:
    from goup_probe.fidelity import compare

    if args.dataset == "cifar10":
        from goup_probe.demo.cifar import load_cifar10
        from goup_probe.demo.models import resnet20

        if args.data_root is None:
            raise ValueError("--dataset cifar10 needs --data-root DIR (the folder with cifar-10-batches-py)")
        data = load_cifar10(
            args.data_root, train_limit=args.train_limit, test_limit=args.heldout, download=args.download
        )

        def model_fn():
            return resnet20(data.in_channels, data.num_classes)

    else:
        from goup_probe.demo.compare import digits_setup

        model_fn, data = digits_setup()
    result = compare(
        model_fn,
        data,
        modes=args.modes,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        seeds=args.seeds,
        eval_every=args.eval_every,
        max_heldout=args.heldout,
        num_threads=args.threads if args.threads is not None else (1 if args.dataset == "digits" else None),
        out=args.out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    _print_comparison(result, f"GO-UP vs {result.summary['arm'].iloc[0]}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from goup_probe.store import load_run
    from goup_probe.summary import format_table, layer_summary, moments_only, run_progress, was_tested

    run = load_run(args.run_dir)
    print(f"{args.run_dir}: {run_progress(run).describe(run.status)}")
    if run.meta.get("disk"):
        from goup_probe.store.usage import describe_disk

        print(describe_disk(run.meta["disk"]))
    table = layer_summary(run, args.quantity)
    if not table.empty and not was_tested(run, args.quantity):
        tested = ", ".join((run.meta.get("capture") or {}).get("tested") or []) or "none"
        print(
            f"{args.quantity} was not tested for Gaussianity in this run (tested: {tested}); "
            "moments only. Attach with tested=[..., "
            f"{args.quantity!r}] for verdicts."
        )
        table = moments_only(table)
    print(format_table(table))
    return 0


def _cmd_compare_runs(args: argparse.Namespace) -> int:
    from goup_probe.report.compare_runs import compare_runs

    result = compare_runs(args.run_dirs, args.out, overwrite=args.overwrite, max_layers=args.max_layers)
    shared = (
        f"{len(result.shared)} shared layers, {len(result.layers)} drawn"
        if result.shared
        else "no shared layer"
    )
    print(
        f"Compared {len(result.runs)} runs ({', '.join(result.runs)}; {shared}): "
        f"{len(result.figures)} figures, built in {result.seconds:.1f} s: {result.index}"
    )
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from goup_probe.watch import watch

    return watch(
        args.run_dir, lambda: _cmd_summary(args), interval=args.interval, max_updates=args.max_updates
    )


def _cmd_ou(args: argparse.Namespace) -> int:
    import time

    from goup_probe.order import in_model_order
    from goup_probe.ou import SUMMARY_COLUMNS, OUThresholds, validate_ou
    from goup_probe.store import load_run
    from goup_probe.summary import format_table
    from goup_probe.update_rule import ou_rule, rate_sentence

    start = time.perf_counter()
    run = load_run(args.run_dir)
    index = run.table("trajectories", columns=["step"])  # validate_ou reads the rest tensor by tensor
    steps = index["step"] if "step" in index.columns else []
    if len(steps) == 0:
        print(f"{args.run_dir}: no tracer trajectories in this run (was the probe attached with tracers=0?).")
        return 1
    first, last = int(steps.min()), int(steps.max())
    if args.from_step > last:
        raise ValueError(
            f"--from-step {args.from_step} is past the last recorded step {last} of {args.run_dir} "
            f"(trajectories cover steps {first}..{last}); pass --from-step {last} or less"
        )
    kept = sorted({int(s) for s in steps if s >= args.from_step})
    table = validate_ou(
        run, thresholds=OUThresholds(alpha=args.alpha), min_step=args.from_step, write=args.write
    )
    elapsed = time.perf_counter() - start
    print(
        f"{args.run_dir}: do the parameters of each tensor move like an Ornstein-Uhlenbeck process "
        f"(pulled back towards a mean, with fresh independent noise at every step)? One row per tensor, from "
        f"its tracer coordinates over {len(kept)} steps ({kept[0]}..{kept[-1]}); columns as in "
        "gp.validate_ou (goup_probe.ou.OU_FIELDS explains each)."
    )
    table = in_model_order(table, run.meta)
    print(format_table(table[[c for c in SUMMARY_COLUMNS if c in table.columns]]))
    rate = rate_sentence(ou_rule(run.meta, table), table)
    if rate:
        print(f"\nThe rate k̂ against the learning rate: {rate}.")
    print("\nReasons:")
    for param, verdict, reason in zip(table["param"], table["verdict"], table["reason"], strict=True):
        print(f"  {param}: {verdict}: {reason}")
    saved = f"; table 'ou' written to {args.run_dir}" if args.write else ""
    print(f"\nComputed in {elapsed:.1f} s{saved}.")
    return 0


def _cmd_noise(args: argparse.Namespace) -> int:
    from goup_probe.noise.inrun import b_simple_over_training, noise_layers, why_no_noise
    from goup_probe.report.sections.noise import layer_table
    from goup_probe.store import load_run
    from goup_probe.summary import format_table

    run = load_run(args.run_dir)
    reason = why_no_noise(run)
    if reason is not None:
        print(f"{args.run_dir}: {reason}", file=sys.stderr)
        return 1
    print(format_table(layer_table(noise_layers(run))))
    curve = b_simple_over_training(run)
    trace, g2 = float(curve["trace_sigma"].sum()), float(curve["grad_sq_norm"].sum())
    ratio = trace / g2 if g2 else float("inf")
    print(
        f"B_simple over the {len(curve)} steps with noise, all tensors: {ratio:.4g} micro-batches "
        "(times the micro-batch size for samples)"
    )
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from goup_probe.reproduce import reproduce

    result = reproduce(args.name, quick=args.quick, out=args.out, overwrite=args.overwrite)
    print(f"{args.name} ({'quick' if args.quick else 'full'}): computed in {result.wall_seconds:.1f} s")
    print(f"Our verdict: {result.verdict}")
    print(result.sentence)
    print(f"Report: {result.index}")
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from goup_probe.store.compact import compact_run
    from goup_probe.store.usage import format_bytes

    result = compact_run(args.run_dir, allow_running=args.force)
    print(
        f"{args.run_dir}: {result.files_before} files, {format_bytes(result.bytes_before)} → "
        f"{result.files_after} files, {format_bytes(result.bytes_after)}"
    )
    for name, (before, after) in result.parts.items():
        print(f"  {name}: {before} parts → {after}")
    if not result.parts:
        print("  every table was already compact")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
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
    demo.add_argument(
        "--compare-steps",
        type=_positive_int,
        default=150,
        help="steps of the short GO-UP comparison (3 seeds) run after the probe run (default 150)",
    )
    demo.add_argument("--no-compare", action="store_true", help="skip the short GO-UP comparison")
    demo.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run in --out that is not a previous demo run (a demo run is replaced anyway)",
    )
    demo.set_defaults(func=_cmd_demo)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    cmp_ = sub.add_parser(
        "compare", help="twin runs: SGD vs GO-UP from the same init on the same mini-batches"
    )
    cmp_.add_argument("--dataset", choices=("digits", "cifar10"), default="digits", help="default digits")
    cmp_.add_argument("--data-root", type=Path, default=None, help="folder with cifar-10-batches-py")
    cmp_.add_argument(
        "--download", action="store_true", help="download CIFAR-10 into --data-root if it is missing"
    )
    cmp_.add_argument("--steps", type=_positive_int, default=300, help="updates per run (default 300)")
    cmp_.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds (default 3)")
    cmp_.add_argument(
        "--modes", nargs="+", choices=("seed", "scalar"), default=["seed", "scalar"], help="GO-UP arms"
    )
    cmp_.add_argument("--lr", type=float, default=0.05, help="learning rate of every arm (default 0.05)")
    cmp_.add_argument("--batch-size", type=_positive_int, default=64, help="mini-batch size (default 64)")
    cmp_.add_argument(
        "--eval-every", type=_positive_int, default=25, help="held-out evaluation period (default 25)"
    )
    cmp_.add_argument("--heldout", type=_positive_int, default=None, help="evaluate on the first N held-out")
    cmp_.add_argument(
        "--train-limit", type=_positive_int, default=None, help="cifar10: first N training images only"
    )
    cmp_.add_argument(
        "--out", type=Path, default=DEFAULT_OUT / "compare", help="run directory (default reports/compare)"
    )
    cmp_.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="intra-op CPU threads (default: 1 for digits, whose model is too small to gain from more; "
        "torch's default for cifar10)",
    )
    cmp_.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmp_.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    cmp_.set_defaults(func=_cmd_compare)


def _add_report(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="write the HTML/PNG report of a run directory")
    rep.add_argument("run_dir", type=_existing_dir)
    rep.add_argument(
        "--out", type=Path, default=None, help="report folder (default RUN_DIR/report); opens offline"
    )
    rep.add_argument(
        "--layers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="detail exactly these parameter tensors (default: the most and least Gaussian)",
    )
    rep.add_argument(
        "--steps",
        nargs="+",
        type=_non_negative_int,
        default=None,
        metavar="STEP",
        help="captured steps of the per-layer figures (default first, middle, last)",
    )
    rep.add_argument(
        "--per-side",
        type=_non_negative_int,
        default=3,
        help="detail this many most and least Gaussian tensors (default 3)",
    )
    rep.set_defaults(func=_cmd_report)


_QUANTITY_CHOICES = ("theta_minus_grad", "theta", "grad", "update")
"""The built-in quantities ``summary`` and ``watch`` tabulate (``--quantity``)."""


def _add_summary(sub: argparse._SubParsersAction) -> None:
    summary = sub.add_parser("summary", help="print the per-layer summary of a run directory")
    summary.add_argument("run_dir", type=_existing_dir)
    summary.add_argument("--quantity", default="theta_minus_grad", choices=_QUANTITY_CHOICES)
    summary.set_defaults(func=_cmd_summary)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _add_compare_runs(sub: argparse._SubParsersAction) -> None:
    cmp_ = sub.add_parser(
        "compare-runs", help="one HTML/PNG page overlaying several runs, layers matched by parameter name"
    )
    cmp_.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run directories or quoted glob patterns"
    )
    cmp_.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT / "compare-runs",
        help="page folder (default reports/compare-runs)",
    )
    cmp_.add_argument(
        "--overwrite", action="store_true", help="replace an earlier goup_probe page in --out (nothing else)"
    )
    cmp_.add_argument(
        "--max-layers", type=_positive_int, default=6, help="shared layers drawn over training (default 6)"
    )
    cmp_.set_defaults(func=_cmd_compare_runs)


def _add_watch(sub: argparse._SubParsersAction) -> None:
    watch = sub.add_parser("watch", help="show a run's summary again every few seconds while it trains")
    watch.add_argument("run_dir", type=_existing_dir)
    watch.add_argument("--quantity", default="theta_minus_grad", choices=_QUANTITY_CHOICES)
    watch.add_argument(
        "--interval", type=_positive_float, default=5.0, help="seconds between updates (default 5)"
    )
    watch.add_argument(
        "--max-updates",
        type=_positive_int,
        default=None,
        help="stop after N updates (default: when the run ends)",
    )
    watch.set_defaults(func=_cmd_watch)


def _add_ou(sub: argparse._SubParsersAction) -> None:
    ou = sub.add_parser("ou", help="validate the Ornstein-Uhlenbeck model per layer from the trajectories")
    ou.add_argument("run_dir", type=_existing_dir)
    ou.add_argument("--alpha", type=float, default=0.05, help="level of every test (default 0.05)")
    ou.add_argument(
        "--from-step",
        type=_non_negative_int,
        default=0,
        help="ignore steps before this one (burn-in; default 0); at most the last recorded step",
    )
    ou.add_argument("--write", action="store_true", help="also store the result as table 'ou' in RUN_DIR")
    ou.set_defaults(func=_cmd_ou)


def _add_noise(sub: argparse._SubParsersAction) -> None:
    noise = sub.add_parser(
        "noise", help="print the per-layer in-run gradient noise (runs recorded with quantity grad_noise)"
    )
    noise.add_argument("run_dir", type=_existing_dir)
    noise.set_defaults(func=_cmd_noise)


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from goup_probe.reproduce.registry import RECIPES  # a dict of names: imports nothing heavy

    rep = sub.add_parser(
        "reproduce",
        help="reproduce a gradient-noise paper's figure on the bundled digits (report page with our verdict)",
        description="Recipes: " + "; ".join(f"{name}: {what}" for name, what in RECIPES.items()),
    )
    rep.add_argument("name", choices=list(RECIPES))
    rep.add_argument("--quick", action="store_true", help="small settings (under 2 minutes on 2 CPU cores)")
    rep.add_argument("--out", type=Path, default=None, help="output directory (default: runs/reproduce/NAME)")
    rep.add_argument("--overwrite", action="store_true", help="replace an earlier output there")
    rep.set_defaults(func=_cmd_reproduce)


def _add_compact(sub: argparse._SubParsersAction) -> None:
    compact = sub.add_parser(
        "compact",
        help="merge each table's Parquet parts into a few files (atomic: a crash leaves it readable)",
    )
    compact.add_argument("run_dir", type=_existing_dir)
    compact.add_argument(
        "--force", action="store_true", help="compact a run marked running whose process is gone (it crashed)"
    )
    compact.set_defaults(func=_cmd_compact)


SUBCOMMANDS = (
    _add_demo,
    _add_compare,
    _add_report,
    _add_summary,
    _add_watch,
    _add_compare_runs,
    _add_ou,
    _add_noise,
    _add_reproduce,
    _add_compact,
)
"""One function per subcommand, each adding its parser; the command's own imports wait for its run."""


def build_parser() -> argparse.ArgumentParser:
    """The ``goup-probe`` argument parser (imports nothing heavy: no torch, scipy or matplotlib)."""
    parser = argparse.ArgumentParser(
        prog="goup-probe",
        description="Is θ − ∂L/∂θ Gaussian per layer? Probe, summarise and report training runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``goup-probe summary RUN | head``): stop quietly, like a CLI tool.

    Points stdout at ``os.devnull`` so that the interpreter's final flush does not
    complain again, and returns 128 + SIGPIPE, the status of a tool killed by it.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests, IDEs)
        pass
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from goup_probe.store import RunDirectoryError  # here: `--help` needs neither pandas nor pyarrow

    try:
        code = int(args.func(args))
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (RunDirectoryError, ValueError, OSError) as exc:
        print(f"goup-probe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("goup-probe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
