"""Synthetic run directories for the report tests and the report benchmark, written with RunWriter.

Each tensor's θ starts uniform (Kaiming-uniform-like), heavy-tailed or normal
and drifts towards a normal over training; g is a small normal (‖g‖/‖θ‖ ≈ 0.05).
Small runs get the real test battery (``normality``); large ones get the cheap,
vectorised subset the report draws (moments, qq_r, Shapiro–Francia p), so that
200 tensors × 100 steps can be written in seconds.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.stats.normality import (
    DEFAULT_THRESHOLDS,
    blom_positions,
    moments,
    normality,
    qq_r_critical,
    shapiro_francia_p,
)
from goup_probe.store import RunWriter, prepare_run_dir

KINDS = ("uniform", "heavy", "normal")


def _theta(kind: str, n: int, progress: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        base = rng.uniform(-0.1, 0.1, n)
    elif kind == "heavy":
        base = 0.05 * rng.standard_t(3, n)
    else:
        base = rng.normal(0.0, 0.06, n)
    return (1.0 - 0.6 * progress) * base + 0.6 * progress * rng.normal(0.0, 0.06, n)


def _cheap_row(values: np.ndarray, numel: int) -> dict:
    m = moments(values)
    z = np.sort((values - values.mean()) / values.std())
    qq = float(np.corrcoef(z, blom_positions(z.size))[0, 1])
    n = z.size
    p = shapiro_francia_p(qq, n)
    small = abs(m.skew) <= DEFAULT_THRESHOLDS.max_abs_skew and abs(m.excess_kurtosis) <= 1.0
    if p >= DEFAULT_THRESHOLDS.alpha:
        verdict = schema.VERDICT_GAUSSIAN
    elif small:
        verdict = schema.VERDICT_CLOSE
    else:
        verdict = schema.VERDICT_NON_GAUSSIAN
    return {
        "numel": numel,
        "n_tested": n,
        "nonfinite": 0,
        "mean": m.mean,
        "std": m.std,
        "skew": m.skew,
        "skew_se": float(np.sqrt(6.0 / n)),
        "excess_kurtosis": m.excess_kurtosis,
        "kurtosis_se": float(np.sqrt(24.0 / n)),
        "min": m.min,
        "max": m.max,
        "qq_r": qq,
        "qq_r_crit05": qq_r_critical(n),
        "shapiro_francia_p": p,
        "shapiro_p": p,
        "status": schema.STATUS_OK,
        "reason": "",
        "verdict": verdict,
    }


def synthetic_run(
    path: Path,
    *,
    params: list[str] | None = None,
    n_params: int = 6,
    steps: list[int] | None = None,
    numel: int = 400,
    keep: int = 200,
    status: str = "completed",
    full_tests: bool | None = None,
    seed: int = 0,
) -> Path:
    """Write a run directory with stats and samples (no trajectories) and return its path.

    Parameters
    ----------
    path : Path
        Run directory to create.
    params : list of str, optional
        Tensor names (default ``layer{i}.weight``).
    n_params : int
        Number of tensors when ``params`` is not given.
    steps : list of int, optional
        Captured steps (default 0, 10, ..., 90).
    numel : int
        Values per tensor and step (the tested subsample).
    keep : int
        Stored values per subsample.
    status : str
        Status in run.json ("interrupted" for a partial run).
    full_tests : bool, optional
        Run the real test battery (default: when the run is small).
    seed : int
        Seed of all values.
    """
    params = params if params is not None else [f"layer{i}.weight" for i in range(n_params)]
    steps = steps if steps is not None else list(range(0, 100, 10))
    full_tests = full_tests if full_tests is not None else len(params) * len(steps) <= 400
    rng = np.random.default_rng(seed)
    prepare_run_dir(path, overwrite=True)
    writer = RunWriter(path, flush_rows=50_000)
    stats_rows, sample_rows = [], []
    last = max(steps[-1], 1)
    for i, param in enumerate(params):
        kind = KINDS[i % len(KINDS)]
        for step in steps:
            theta = _theta(kind, numel, step / last, rng)
            grad = rng.normal(0.0, 0.05 * theta.std(), numel)
            x = theta - grad
            for quantity, values in (
                (schema.THETA_MINUS_GRAD, x),
                (schema.THETA, theta),
                (schema.GRAD, grad),
            ):
                row = asdict(normality(values, seed=seed)) if full_tests else _cheap_row(values, numel)
                row.update(
                    step=step,
                    param=param,
                    quantity=quantity,
                    axis=schema.AXIS_POOLED,
                    lr=0.1,
                    param_norm=float(np.linalg.norm(theta)),
                    grad_norm=float(np.linalg.norm(grad)),
                    grad_to_param=float(np.linalg.norm(grad) / np.linalg.norm(theta)),
                )
                stats_rows.append(row)
                sample_rows.append(
                    {
                        "step": step,
                        "param": param,
                        "quantity": quantity,
                        "values": values[:keep].astype(np.float32),
                    }
                )
    writer.write_table("stats", pd.DataFrame(stats_rows))
    writer.write_table("samples", pd.DataFrame(sample_rows))
    writer.write_meta(
        {
            "schema_version": schema.SCHEMA_VERSION,
            "status": status,
            "status_reason": "KeyboardInterrupt" if status == "interrupted" else "",
            "started_at": "2026-01-01T00:00:00+00:00",
            "ended_at": "2026-01-01T00:01:00+00:00",
            "versions": {"goup_probe": "test", "torch": "none", "python": "3", "numpy": np.__version__},
            "model": {
                "class": "Synthetic",
                "num_tensors": len(params),
                "num_params": numel * len(params),
                "num_trainable": numel * len(params),
                "tensors": [{"name": p, "shape": [numel], "numel": numel} for p in params],
            },
            "optimizer": {
                "class": "SGD",
                "defaults": {"lr": 0.1},
                "param_groups": [{"lr": 0.1, "momentum": 0}],
            },
            "capture": {
                "mode": "hooks",
                "schedule": "synthetic",
                "layers": None,
                "quantities": [schema.THETA_MINUS_GRAD, schema.THETA, schema.GRAD],
                "tested": [schema.THETA_MINUS_GRAD, schema.THETA, schema.GRAD],
                "sample_size": numel,
                "keep_samples": keep,
                "tracers": 0,
                "seed": seed,
                "thresholds": vars(DEFAULT_THRESHOLDS),
            },
            "steps": steps[-1] + 1,
            "captured_steps": len(steps),
            "errors": [],
            "error_count": 0,
            "user": {},
        }
    )
    return path
