"""Read-side cost: seconds and peak RSS of loading, summarising and reporting large runs (issue 17).

Synthesises run directories directly with the store's :class:`~goup_probe.store.RunWriter`
(the real ``stats`` schema, :func:`goup_probe.schema.stats_schema`; ``samples`` of
1000 float32 values; tracer ``trajectories`` of 256 coordinates per tensor at every
optimizer step, float32 as the probe stores them), compacts them as a probe's
``detach`` does, then runs each operation in a fresh Python process, so that the
peak resident memory (``VmHWM`` of that process) belongs to that operation alone.

Runs (``--runs``):

* ``bert``: 41 tensors, 5000 optimizer steps, 2000 captured steps × 4 quantities
  = 328 000 stats rows, samples kept at every captured step (328 000 rows of
  1000 values), trajectories at every step (205 000 rows);
* ``soak``: the same 41 tensors over 20 000 steps, captured every 10 (328 000
  stats rows), samples thinned by the probe's default retention rule
  (:mod:`goup_probe.capture.retention`), trajectories at every step (820 000 rows);
* ``million``: 125 tensors × 2000 captured steps × 4 quantities = 10⁶ stats rows
  (stats only: the ``load`` operation).

Operations (``--ops``): ``load`` (``load_run(d).stats``), ``samples``
(``load_run(d).samples``), ``summary`` (``goup-probe summary``), ``report``
(``goup-probe report``), ``validate_ou`` (``gp.validate_ou(d)``),
``compare-runs`` (``goup-probe compare-runs bert soak``). ``base`` imports
what they all import (goup_probe's readers, analyses and report, matplotlib,
scipy) into an interpreter holding pandas and pyarrow: the floor of every time
and peak (each operation's figures include its imports).

Usage::

    python benchmarks/read_side.py                      # all runs and operations, once each
    python benchmarks/read_side.py --runs bert --ops report --repeat 3
    python benchmarks/read_side.py --root /tmp/rs       # keep (and reuse) the run directories

The machine this is written on is shared (2 cores): times move by ±20% between
repetitions, and double under a load of 5; the CPU seconds move less; the peak
RSS is steady to a few MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

N_QUANTITIES = 4
TRACERS = 256
KEEP_SAMPLES = 1000


@dataclass(frozen=True)
class RunSpec:
    """The shape of one synthetic run."""

    tensors: int
    steps: int
    """Optimizer steps (trajectories are recorded at each)."""
    captured: int
    """Captured steps, spread evenly over ``range(steps)``."""
    samples: str
    """``"all"`` (every captured step), ``"retention"`` (the probe's default rule) or ``"none"``."""
    trajectories: bool


RUNS = {
    "bert": RunSpec(tensors=41, steps=5000, captured=2000, samples="all", trajectories=True),
    "soak": RunSpec(tensors=41, steps=20_000, captured=2000, samples="retention", trajectories=True),
    "million": RunSpec(tensors=125, steps=2000, captured=2000, samples="none", trajectories=False),
    "smoke": RunSpec(tensors=8, steps=300, captured=60, samples="all", trajectories=True),
}
OPS = ("base", "load", "samples", "summary", "report", "validate_ou", "compare-runs")
RUN_OPS = {"million": ("base", "load")}
"""Operations that make sense per run (default: all but compare-runs, which takes bert and soak)."""


# ----------------------------------------------------------------------------- synthesis


def tensor_names(n: int) -> tuple[list[str], list[int]]:
    """BERT-like parameter names and their sizes (numel), ``n`` of them."""
    out = [("embeddings.word_embeddings.weight", 30522 * 768)]
    layer = 0
    while len(out) < n:
        for suffix, numel in (
            ("attention.self.query.weight", 768 * 768),
            ("attention.self.query.bias", 768),
            ("attention.output.dense.weight", 768 * 768),
            ("intermediate.dense.weight", 768 * 3072),
            ("output.LayerNorm.weight", 768),
        ):
            out.append((f"encoder.layer.{layer}.{suffix}", numel))
        layer += 1
    return [name for name, _ in out[:n]], [numel for _, numel in out[:n]]


def _stats_block(steps: np.ndarray, names: list[str], numels: np.ndarray, rng: np.random.Generator) -> object:
    """Stats rows of some captured steps (all tensors and quantities), as an Arrow table."""
    import pyarrow as pa

    from goup_probe import schema

    quantities = list(schema.QUANTITIES)
    n_t, n_q = len(names), len(quantities)
    rows = len(steps) * n_t * n_q
    step = np.repeat(steps, n_t * n_q)
    p_idx = np.tile(np.repeat(np.arange(n_t), n_q), len(steps))
    q_idx = np.tile(np.arange(n_q), len(steps) * n_t)
    tested = q_idx == quantities.index(schema.THETA_MINUS_GRAD)
    numel = numels[p_idx]
    n_tested = np.minimum(numel, 5000)
    uniform = p_idx % 3 == 0  # Kaiming-uniform-like tensors: kurtosis near -1.2
    kurt = np.where(uniform, -1.2, 0.0) + rng.normal(0.0, 0.05, rows)
    skew = rng.normal(0.0, 0.03, rows)
    p = rng.uniform(0.0, 1.0, rows) ** np.where(uniform, 8.0, 1.0)
    qq_r = 1.0 - np.abs(rng.normal(0.0, 0.002, rows)) - np.where(uniform, 0.01, 0.0)
    verdict = np.where(
        p >= 0.05,
        schema.VERDICT_GAUSSIAN,
        np.where(uniform, schema.VERDICT_NON_GAUSSIAN, _close_verdict()),
    )
    verdict = np.where(tested, verdict, schema.VERDICT_NOT_TESTED)
    std = rng.uniform(0.01, 0.05, rows)
    grad_norm = rng.lognormal(-3.0, 0.5, rows)
    param_norm = rng.lognormal(2.0, 0.3, rows)

    def tests(values: np.ndarray) -> np.ndarray:
        return np.where(tested, values, np.nan)

    columns = {
        "step": step.astype(np.int64),
        "param": np.asarray(names, dtype=object)[p_idx],
        "quantity": np.asarray(quantities, dtype=object)[q_idx],
        "axis": np.full(rows, schema.AXIS_POOLED, dtype=object),
        "micro_batch": pa.nulls(rows, pa.int64()),
        "global_step": step.astype(np.int64),
        "lr": np.full(rows, 1e-4),
        "status": np.full(rows, schema.STATUS_OK, dtype=object),
        "reason": np.full(rows, "", dtype=object),
        "numel": numel.astype(np.int64),
        "n_tested": n_tested.astype(np.int64),
        "nonfinite": np.zeros(rows, dtype=np.int64),
        "mean": rng.normal(0.0, 1e-3, rows),
        "std": std,
        "skew": skew,
        "skew_se": np.sqrt(6.0 / n_tested),
        "skew_se_null": np.sqrt(6.0 / n_tested),
        "excess_kurtosis": kurt,
        "kurtosis_se": np.sqrt(24.0 / n_tested),
        "kurtosis_se_null": np.sqrt(24.0 / n_tested),
        "min": -4.0 * std,
        "max": 4.0 * std,
        "param_norm": param_norm,
        "grad_norm": grad_norm,
        "grad_to_param": grad_norm / param_norm,
        "ks_d": tests(rng.uniform(0.005, 0.03, rows)),
        "lilliefors_p": tests(p),
        "lilliefors_p_floor": tests(np.full(rows, 1e-3)),
        "shapiro_w": tests(qq_r**2),
        "shapiro_p": tests(p),
        "anderson_a2": tests(rng.uniform(0.1, 2.0, rows)),
        "anderson_p": tests(p),
        "dagostino_p": tests(p),
        "jarque_bera_p": tests(p),
        "qq_r": tests(qq_r),
        "qq_r_crit05": tests(1.0 - 0.5 / np.sqrt(n_tested)),
        "shapiro_francia_p": tests(p),
        "w1_sigma": tests(np.abs(rng.normal(0.0, 0.02, rows)) + np.where(uniform, 0.05, 0.0)),
        "verdict": verdict.astype(object),
        "noise_to_signal": np.full(rows, np.nan),
        "goup_cosine": np.full(rows, np.nan),
        "goup_w2_rel": np.full(rows, np.nan),
    }
    table_schema = schema.stats_schema()
    arrays = [
        pa.array(columns[f.name], type=f.type, from_pandas=True) if f.name in columns else _filler(f, rows)
        for f in table_schema
    ]
    return pa.Table.from_arrays(arrays, schema=table_schema)


def _close_verdict() -> str:
    """The verdict of a rejected row whose deviation is small (its name changed between versions)."""
    from goup_probe import schema

    for name in ("VERDICT_CLOSE", "VERDICT_NEGLIGIBLE"):
        if hasattr(schema, name):
            return str(getattr(schema, name))
    return str(schema.VERDICT_NON_GAUSSIAN)


def _filler(field: object, rows: int) -> object:
    """A column the synthesis does not model: empty strings, NaN or nulls of the declared type."""
    import pyarrow as pa

    if pa.types.is_string(field.type):
        return pa.array([""] * rows, type=field.type)
    if pa.types.is_floating(field.type):
        return pa.array(np.full(rows, np.nan), type=field.type)
    return pa.nulls(rows, field.type)


def _list_column(values: np.ndarray, width: int) -> object:
    """A ``list<float>`` Arrow column from a (rows, width) array, without Python objects."""
    import pyarrow as pa

    rows = values.shape[0]
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def _sample_steps(captured: np.ndarray, how: str) -> np.ndarray:
    """The captured steps whose samples a probe stores: every one, none, or the retention rule's."""
    if how == "all":
        return captured
    if how == "none":
        return captured[:0]
    from goup_probe.capture.retention import DEFAULT_KEEP_SAMPLE_STEPS, SampleRetention

    rule = SampleRetention(DEFAULT_KEEP_SAMPLE_STEPS)
    kept = [int(s) for s in captured if rule.keeps(int(s))]
    return np.asarray(sorted(set(kept) | {int(captured[-1])}), dtype=np.int64)


def synthesise(path: Path, spec: RunSpec, seed: int = 0) -> Path:
    """Write one synthetic run directory (parts of the writer's default 2000 rows), then compact it."""
    import pyarrow as pa

    from goup_probe import schema
    from goup_probe.store import RunWriter, prepare_run_dir
    from goup_probe.store.compact import compact_run

    rng = np.random.default_rng(seed)
    names, numels = tensor_names(spec.tensors)
    numels_arr = np.asarray(numels, dtype=np.int64)
    prepare_run_dir(path, overwrite=True)
    writer = RunWriter(path)  # flush_rows=2000, as a probe's
    captured = np.unique(np.round(np.linspace(0, spec.steps - 1, spec.captured)).astype(np.int64))
    for block in np.array_split(captured, max(1, len(captured) // 20)):
        writer.append_arrow("stats", _stats_block(block, names, numels_arr, rng))
    n_t = len(names)
    quantities = list(schema.QUANTITIES)
    for step in _sample_steps(captured, spec.samples):
        rows = n_t * len(quantities)
        values = rng.normal(0.0, 0.02, (rows, KEEP_SAMPLES)).astype(np.float32)
        table = pa.table(
            {
                "step": pa.array(np.full(rows, step, dtype=np.int64)),
                "param": pa.array(np.repeat(names, len(quantities))),
                "quantity": pa.array(np.tile(quantities, n_t)),
                "values": _list_column(values, KEEP_SAMPLES),
            },
            schema=schema.SAMPLES_SCHEMA,
        )
        writer.append_arrow("samples", table)
    if spec.trajectories:
        _write_trajectories(writer, names, spec.steps, rng)
    writer.flush()
    writer.write_meta(_meta(names, numels, spec, captured))
    compact_run(path)
    return path


def _write_trajectories(writer: object, names: list[str], steps: int, rng: np.random.Generator) -> None:
    """AR(1) tracer coordinates (k ≈ 1e-3) with a gradient that drives them, float32 as stored."""
    import pyarrow as pa

    n_t = len(names)
    traj_schema = pa.schema(
        [
            ("step", pa.int64()),
            ("param", pa.string()),
            ("lr", pa.float64()),
            ("theta", pa.list_(pa.float32())),
            ("grad", pa.list_(pa.float32())),
            ("theta_next", pa.list_(pa.float32())),
        ]
    )
    writer.append_arrow(
        "tracers",
        pa.table(
            {"param": names, "coord": [list(range(TRACERS)) for _ in names]},
            schema=pa.schema([("param", pa.string()), ("coord", pa.list_(pa.int64()))]),
        ),
    )
    theta = rng.normal(0.0, 0.02, (n_t, TRACERS))
    lr, k = 1e-4, 1e-3
    chunk = 50
    for start in range(0, steps, chunk):
        block = range(start, min(start + chunk, steps))
        th, gr, nx = [], [], []
        for _ in block:
            grad = (k / lr) * theta + rng.normal(0.0, 0.5, theta.shape)
            nxt = theta - lr * grad
            th.append(theta), gr.append(grad), nx.append(nxt)
            theta = nxt
        rows = len(block) * n_t
        table = pa.Table.from_arrays(
            [
                pa.array(np.repeat(np.asarray(list(block), dtype=np.int64), n_t)),
                pa.array(np.tile(names, len(block))),
                pa.array(np.full(rows, lr)),
                *(_list_column(np.concatenate(a).astype(np.float32), TRACERS) for a in (th, gr, nx)),
            ],
            schema=traj_schema,
        )
        writer.append_arrow("trajectories", table)


def _meta(names: list[str], numels: list[int], spec: RunSpec, captured: np.ndarray) -> dict:
    from goup_probe import schema
    from goup_probe.stats.normality import DEFAULT_THRESHOLDS

    return {
        "schema_version": schema.SCHEMA_VERSION,
        "status": "completed",
        "status_reason": "",
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T01:00:00+00:00",
        "versions": {"goup_probe": "bench", "torch": "none", "python": "3", "numpy": np.__version__},
        "model": {
            "class": "SyntheticBert",
            "num_tensors": len(names),
            "num_params": int(sum(numels)),
            "num_trainable": int(sum(numels)),
            "tensors": [{"name": p, "shape": [n], "numel": n} for p, n in zip(names, numels, strict=True)],
        },
        "optimizer": {"class": "AdamW", "defaults": {"lr": 1e-4}, "param_groups": [{"lr": 1e-4}]},
        "capture": {
            "mode": "hooks",
            "schedule": "synthetic",
            "layers": None,
            "quantities": list(schema.QUANTITIES),
            "tested": [schema.THETA_MINUS_GRAD],
            "sample_size": 5000,
            "keep_samples": KEEP_SAMPLES if spec.samples != "none" else 0,
            "tracers": TRACERS if spec.trajectories else 0,
            "seed": 0,
            "thresholds": vars(DEFAULT_THRESHOLDS),
        },
        "steps": spec.steps,
        "captured_steps": len(captured),
        "errors": [],
        "error_count": 0,
        "user": {},
    }


def _marker(spec: RunSpec) -> str:
    return json.dumps(vars(spec), sort_keys=True)


def ensure_run(root: Path, name: str) -> Path:
    """The run directory ``root/name``, synthesised unless an identical one is there already."""
    path = root / name
    stamp = path / ".bench-spec"
    if stamp.is_file() and stamp.read_text() == _marker(RUNS[name]):
        return path
    start = time.perf_counter()
    synthesise(path, RUNS[name])
    stamp.write_text(_marker(RUNS[name]))
    print(f"# synthesised {name} in {time.perf_counter() - start:.0f} s: {path}", flush=True)
    return path


# ----------------------------------------------------------------------------- operations (in a child)


def _op(name: str, paths: Sequence[Path], out: Path) -> Callable[[], object]:
    import contextlib
    import io

    import goup_probe as gp
    from goup_probe.cli import main as cli

    def quiet(argv: list[str]) -> Callable[[], object]:
        def call() -> object:
            with contextlib.redirect_stdout(io.StringIO()):
                code = cli(argv)
            if code != 0:
                raise RuntimeError(f"goup-probe {' '.join(argv)} exited {code}")
            return code

        return call

    run = str(paths[0])
    table = {
        "base": _import_floor,
        "load": lambda: len(gp.load_run(run).stats),
        "samples": lambda: len(gp.load_run(run).samples),
        "summary": quiet(["summary", run]),
        "report": quiet(["report", run, "--out", str(out / "report")]),
        "validate_ou": lambda: len(gp.validate_ou(run)),
        "compare-runs": quiet(
            ["compare-runs", *map(str, paths), "--out", str(out / "compare"), "--overwrite"]
        ),
    }
    return table[name]


def _import_floor() -> None:
    """What every operation imports: the package's readers, analyses and report (and matplotlib)."""
    import goup_probe.ou
    import goup_probe.report.builder
    import goup_probe.summary  # noqa: F401
    from goup_probe import schema

    assert schema.TABLES


def _peak_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(op: str, paths: list[Path], out: Path) -> None:
    """Run one operation in this process and print a JSON line: seconds, CPU seconds and peak RSS (MB).

    CPU seconds (every thread of the process) move less than the wall clock when
    the machine is shared; Arrow decodes on several threads, so they can exceed it.
    """
    import pandas  # noqa: F401  (imports are the floor of every operation, not its cost)
    import pyarrow  # noqa: F401

    call = _op(op, paths, out)
    start, cpu = time.perf_counter(), time.process_time()
    call()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"op": op, "seconds": seconds, "cpu_seconds": cpu, "peak_mb": _peak_mb()}))


def measure(op: str, paths: list[Path], out: Path) -> dict:
    """One operation in a fresh interpreter."""
    cmd = [sys.executable, __file__, "--child", op, "--out", str(out), *map(str, paths)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"op": op, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    """Synthesise the runs (unless present) and print seconds and peak MB per run and operation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="bert,soak,million", help="comma-separated: " + ", ".join(RUNS))
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated: " + ", ".join(OPS))
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of each operation")
    parser.add_argument("--root", type=Path, default=None, help="folder of the run directories (kept)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.paths, args.out)
        return 0
    runs = [r for r in args.runs.split(",") if r]
    ops = [o for o in args.ops.split(",") if o]
    unknown = sorted(set(runs) - set(RUNS)) + sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"unknown runs or operations: {unknown}")
    root = args.root or Path(tempfile.mkdtemp(prefix="goup-read-side-"))
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: ensure_run(root, name) for name in runs}
    print(f"# {os.cpu_count()} CPUs; each operation in a fresh process; runs under {root}")
    print(f"{'run':<9} {'operation':<13} {'seconds':>18} {'cpu seconds':>18} {'peak MB':>16}")
    for name in runs:
        for op in ops:
            if op == "compare-runs":
                continue
            if op not in RUN_OPS.get(name, OPS):
                continue
            _report(name, op, [paths[name]], root, args.repeat)
    if "compare-runs" in ops and {"bert", "soak"} <= set(paths):
        _report("bert+soak", "compare-runs", [paths["bert"], paths["soak"]], root, args.repeat)
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _report(name: str, op: str, paths: list[Path], root: Path, repeat: int) -> None:
    results = []
    for _ in range(repeat):
        out = Path(tempfile.mkdtemp(prefix="out-", dir=root))
        results.append(measure(op, paths, out))
        shutil.rmtree(out, ignore_errors=True)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        print(f"{name:<9} {op:<13} failed: {errors[0]}", flush=True)
        return
    secs = " ".join(f"{r['seconds']:.2f}" for r in results)
    cpus = " ".join(f"{r['cpu_seconds']:.2f}" for r in results)
    peaks = " ".join(f"{r['peak_mb']:.0f}" for r in results)
    print(f"{name:<9} {op:<13} {secs:>18} {cpus:>18} {peaks:>16}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
