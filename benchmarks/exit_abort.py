"""Does a rank abort at interpreter exit under FSDP2/DDP, with and without the probe? (issue 18)

Each run launches a plain user worker as two separate interpreters (ranks 0 and
1, gloo on CPU, ``MASTER_ADDR``/``MASTER_PORT`` on a fresh free port): build a
2-layer MLP, wrap it (``fully_shard`` on each Linear and the model, or DDP),
train 6 steps (inside ``with gp.attach(...)`` when the mode has the probe),
optionally apply a shutdown workaround, ``dist.destroy_process_group()``, and
return from ``main``, leaving everything else to interpreter exit. Each rank's
exit code is recorded (SIGABRT: -6 for a process killed by the signal, 134 from
a shell); "terminate called" in its stderr is recorded too.

Runs are sequential and the modes interleaved (run 1 of every mode, then run 2,
...), so a slow patch of a shared machine hits every mode alike. Printed: per
mode, how many runs had a rank abort (with a 95% Clopper-Pearson interval) and
which rank, and other failures.

``--inspect`` instead runs one worker pair that reports, after detach and
``del`` of the user's own references (before any ``gc.collect()``), how many
DTensors, DeviceMeshes and probe objects are still alive, whether the model,
its parameters and the optimizer are, and how many Python references the
default ProcessGroup has, with and without the probe, plus atexit callbacks,
threads and the SIGTERM handler before attach and after detach.

Usage::

    python benchmarks/exit_abort.py --runs 30                 # the four main modes
    python benchmarks/exit_abort.py --runs 30 --modes fsdp2-probe-gc,ddp-probe-gc
    python benchmarks/exit_abort.py --inspect
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

WORLD = 2
STEPS = 6
FINISHES = ("none", "gc", "barrier", "gc-barrier", "del-gc")
"""Shutdown before ``destroy_process_group``: nothing, ``gc.collect()``, ``dist.barrier()``,
both, or ``del`` of the model/optimizer/probe then ``gc.collect()``."""


@dataclass(frozen=True)
class Mode:
    """One configuration of the worker."""

    wrap: str  # "fsdp2" or "ddp"
    probe: bool
    finish: str = "none"

    @property
    def name(self) -> str:
        """``fsdp2-probe-gc`` style name."""
        parts = [self.wrap, "probe" if self.probe else "plain"]
        if self.finish != "none":
            parts.append(self.finish)
        return "-".join(parts)


def parse_mode(name: str) -> Mode:
    """The :class:`Mode` of a name such as ``ddp-plain`` or ``fsdp2-probe-gc-barrier``."""
    parts = name.split("-")
    if len(parts) < 2 or parts[0] not in ("fsdp2", "ddp") or parts[1] not in ("probe", "plain"):
        raise ValueError(f"--modes: bad mode {name!r} (expected fsdp2|ddp - probe|plain [- finish])")
    finish = "-".join(parts[2:]) or "none"
    if finish not in FINISHES:
        raise ValueError(f"--modes: bad finish {finish!r} in {name!r} (one of {', '.join(FINISHES)})")
    return Mode(parts[0], parts[1] == "probe", finish)


DEFAULT_MODES = "fsdp2-plain,fsdp2-probe,ddp-plain,ddp-probe"


# ---------------------------------------------------------------------- the worker (one rank)
def _build(wrap: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    if wrap == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model)


def _train(model, opt, rank: int) -> None:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1 + rank)
    for _ in range(STEPS):
        x, y = torch.randn(8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def worker(mode: Mode, run_dir: Path, *, keep: bool = False) -> None:
    """One rank of the user's script, a function returning after ``destroy_process_group``.

    ``keep`` holds its locals in a module global until interpreter exit (a top-level script).
    """
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=dt.timedelta(seconds=60))
    rank = dist.get_rank()
    model = _build(mode.wrap)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    probe = None
    if mode.probe:
        import goup_probe as gp

        with gp.attach(model, opt, run_dir=run_dir, every=2, sample_size=200, tracers=8) as probe:
            _train(model, opt, rank)
    else:
        _train(model, opt, rank)
    if mode.finish == "del-gc":
        del model, opt, probe
    if mode.finish in ("gc", "gc-barrier", "del-gc"):
        gc.collect()
    if mode.finish in ("barrier", "gc-barrier"):
        dist.barrier()
    dist.destroy_process_group()
    if keep:  # like a top-level script: everything lives until interpreter exit
        _KEEP.append(locals())
    # else, like a ``mp.spawn`` target: what is not in a reference cycle dies on return


_KEEP: list[object] = []


# ---------------------------------------------------------------------- inspection
def _live(kinds: dict[str, type]) -> dict[str, int]:
    counts = dict.fromkeys(kinds, 0)
    for obj in gc.get_objects():
        for name, cls in kinds.items():
            if isinstance(obj, cls):
                counts[name] += 1
    return counts


def _kinds() -> dict[str, type]:
    """Python-level classes to count (pybind objects such as ProcessGroup, Work and the DDP
    Reducer are not tracked by ``gc``; the default group's refcount stands in for them)."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor

    from goup_probe.capture.probe import Probe

    return {"DTensor": DTensor, "DeviceMesh": DeviceMesh, "Probe": Probe}


def inspect_worker(wrap: str, probe_on: bool, run_dir: Path) -> dict[str, object]:
    """Live distributed objects after detach and ``del`` of the user's references (no gc)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=dt.timedelta(seconds=60))
    rank = dist.get_rank()
    kinds = _kinds()
    group = dist.distributed_c10d._get_default_group()
    gc.collect()
    before = {
        "group_refs": sys.getrefcount(group),
        "atexit": atexit._ncallbacks(),
        "threads": threading.active_count(),
        "sigterm": repr(signal.getsignal(signal.SIGTERM)),
        "live": _live(kinds),
    }
    model = _build(wrap)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    param_refs = [weakref.ref(p) for p in model.parameters()]
    model_ref, opt_ref = weakref.ref(model), weakref.ref(opt)
    probe_ref = None
    if probe_on:
        import goup_probe as gp

        with gp.attach(model, opt, run_dir=run_dir, every=2, sample_size=200, tracers=8) as probe:
            _train(model, opt, rank)
        probe_ref = weakref.ref(probe)
        after_detach = {
            "group_refs": sys.getrefcount(group),
            "atexit": atexit._ncallbacks(),
            "threads": threading.active_count(),
            "sigterm": repr(signal.getsignal(signal.SIGTERM)),
        }
        del probe
    else:
        _train(model, opt, rank)
        after_detach = {
            "group_refs": sys.getrefcount(group),
            "atexit": atexit._ncallbacks(),
            "threads": threading.active_count(),
            "sigterm": repr(signal.getsignal(signal.SIGTERM)),
        }
    del model, opt
    alive = {
        "group_refs": sys.getrefcount(group),
        "live": _live(kinds),
        "model_alive": model_ref() is not None,
        "optimizer_alive": opt_ref() is not None,
        "params_alive": sum(r() is not None for r in param_refs),
        "probe_alive": probe_ref is not None and probe_ref() is not None,
    }
    if probe_ref is not None and probe_ref() is not None:
        alive["probe_referrers"] = sorted({type(r).__name__ for r in gc.get_referrers(probe_ref())})
    collected = gc.collect()
    after_gc = {
        "group_refs": sys.getrefcount(group),
        "live": _live(kinds),
        "model_alive": model_ref() is not None,
        "optimizer_alive": opt_ref() is not None,
        "params_alive": sum(r() is not None for r in param_refs),
        "probe_alive": probe_ref is not None and probe_ref() is not None,
        "collected": collected,
    }
    dist.barrier()
    dist.destroy_process_group()
    after_gc["group_refs_after_destroy"] = sys.getrefcount(group)
    return {
        "rank": rank,
        "wrap": wrap,
        "probe": probe_on,
        "before": before,
        "after_detach": after_detach,
        "after_del": alive,
        "after_gc": after_gc,
    }


def summarise(report: dict) -> str:
    """Compact lines of one rank's :func:`inspect_worker` report."""
    head = f"{report['wrap']} probe={int(report['probe'])} rank {report['rank']}"
    b, d = report["before"], report["after_detach"]
    lines = [
        f"{head}: atexit callbacks {b['atexit']} -> {d['atexit']} after detach, threads {b['threads']} -> "
        f"{d['threads']}, SIGTERM {d['sigterm']}; default group Python refs {b['group_refs']} before, "
        f"{d['group_refs']} after detach"
    ]
    for phase in ("after_del", "after_gc"):
        a = report[phase]
        alive = [k for k in ("model_alive", "optimizer_alive", "probe_alive") if a[k]]
        extra = f" (probe referrers: {a['probe_referrers']})" if "probe_referrers" in a else ""
        lines.append(
            f"  {phase}: live {a['live']}, params alive {a['params_alive']}, alive {alive or 'none'}, "
            f"group refs {a['group_refs']}{extra}"
        )
    lines[-1] += f", after destroy {report['after_gc']['group_refs_after_destroy']}"
    return "\n".join(lines)


# ---------------------------------------------------------------------- the launcher
def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Outcome:
    """Exit codes of one run's ranks and whether stderr said ``terminate called``."""

    codes: list[int | None]
    terminate: list[bool]
    tails: list[str] = field(default_factory=list)

    def aborted(self, rank: int) -> bool:
        """SIGABRT (-6 killed by the signal, 134 through a shell) or a ``terminate called`` message."""
        return self.codes[rank] in (-signal.SIGABRT, 128 + signal.SIGABRT) or self.terminate[rank]

    @property
    def any_abort(self) -> bool:
        """Whether some rank aborted."""
        return any(self.aborted(r) for r in range(len(self.codes)))

    @property
    def other_failure(self) -> bool:
        """A rank that failed in another way (non-zero exit, timeout)."""
        return any(c != 0 and not self.aborted(r) for r, c in enumerate(self.codes))


def launch(args: list[str], timeout: float, tmp: Path) -> Outcome:
    """Run ``exit_abort.py <args>`` as ranks 0 and 1 on a fresh port; their exit codes."""
    port = free_port()
    procs, errs = [], []
    for rank in range(WORLD):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE=str(WORLD),
            OMP_NUM_THREADS="1",
        )
        err = open(tmp / f"stderr{rank}.txt", "w+b")  # noqa: SIM115 - closed below
        errs.append(err)
        cmd = [sys.executable, __file__, *args]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err))
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(None)
    tails, term = [], []
    for err in errs:
        err.seek(0)
        text = err.read().decode(errors="replace")
        err.close()
        term.append("terminate called" in text)
        tails.append(text[-600:])
    return Outcome(codes, term, tails)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for ``k`` successes in ``n`` trials."""
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def run_modes(
    modes: list[Mode], runs: int, timeout: float, log: Path | None, *, keep: bool = False
) -> dict[str, list[Outcome]]:
    """``runs`` launches of every mode, interleaved; outcomes per mode name."""
    results: dict[str, list[Outcome]] = {m.name: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="exit_abort_") as tmp:
        root = Path(tmp)
        for i in range(runs):
            for mode in modes:
                run_dir = root / f"{mode.name}-{i}"
                extra = ["--keep"] if keep else []
                out = launch(["--worker", mode.name, str(run_dir), *extra], timeout, root)
                results[mode.name].append(out)
                mark = "ABORT" if out.any_abort else ("FAIL" if out.other_failure else "ok")
                print(f"run {i + 1:3d}/{runs} {mode.name:24s} codes={out.codes} {mark}", flush=True)
                if log is not None:
                    with log.open("a") as f:
                        row = {"run": i, "mode": mode.name, "codes": out.codes, "terminate": out.terminate}
                        if out.any_abort or out.other_failure:
                            row["stderr"] = out.tails
                        f.write(json.dumps(row) + "\n")
    return results


def table(results: dict[str, list[Outcome]]) -> str:
    """Markdown table of abort counts per mode."""
    lines = [
        "| mode | runs | runs with an abort | 95% CI | rank 0 aborts | rank 1 aborts | other failures |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for name, outs in results.items():
        n = len(outs)
        k = sum(o.any_abort for o in outs)
        lo, hi = clopper_pearson(k, n) if n else (float("nan"), float("nan"))
        r0 = sum(o.aborted(0) for o in outs)
        r1 = sum(o.aborted(1) for o in outs)
        other = sum(o.other_failure for o in outs)
        lines.append(
            f"| {name} | {n} | {k} ({k / max(n, 1):.0%}) | {lo:.2f}–{hi:.2f} | {r0} | {r1} | {other} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: launch the runs (default), or be one rank (``--worker``/``--inspect-worker``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="launches per mode")
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated (default {DEFAULT_MODES})")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per rank before it is killed")
    parser.add_argument("--log", type=Path, help="append one JSON line per run here")
    parser.add_argument(
        "--keep", action="store_true", help="workers keep their objects until interpreter exit (module scope)"
    )
    parser.add_argument("--inspect", action="store_true", help="report live distributed objects after detach")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "RUN_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--inspect-worker", nargs=3, metavar=("WRAP", "PROBE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(parse_mode(args.worker[0]), Path(args.worker[1]), keep=args.keep)
        return
    if args.inspect_worker:
        wrap, probe_on, out = args.inspect_worker
        report = inspect_worker(wrap, probe_on == "1", Path(out) / "run")
        Path(out, f"inspect{report['rank']}.json").write_text(json.dumps(report, indent=1))
        return
    if args.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {args.runs}")
    if args.inspect:
        with tempfile.TemporaryDirectory(prefix="exit_inspect_") as tmp:
            for wrap in ("fsdp2", "ddp"):
                for probe_on in ("0", "1"):
                    out = Path(tmp) / f"{wrap}{probe_on}"
                    out.mkdir()
                    res = launch(["--inspect-worker", wrap, probe_on, str(out)], args.timeout, out)
                    for rank in range(WORLD):
                        path = out / f"inspect{rank}.json"
                        if not path.exists():
                            print(f"{wrap} probe={probe_on} rank {rank}: no report (exit {res.codes[rank]})")
                            continue
                        print(summarise(json.loads(path.read_text())))
        return
    modes = [parse_mode(m) for m in args.modes.split(",") if m]
    results = run_modes(modes, args.runs, args.timeout, args.log, keep=args.keep)
    print()
    print(table(results))


if __name__ == "__main__":
    main()
