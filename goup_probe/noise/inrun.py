"""Reading the in-run gradient noise of a run: the per-layer table and B_simple over training.

A run records it when attached with ``quantities=[..., "grad_noise"]`` and its
loop accumulates >= 2 micro-batches per optimizer step: ``grad_noise`` rows in
the stats table (one per micro-batch) and the ``noise`` table (one row per
step and tensor; see :mod:`goup_probe.noise.micro`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from goup_probe import schema

__all__ = ["NO_NOISE", "b_simple_over_training", "noise_layers", "why_no_noise"]

VERDICTS = (
    schema.VERDICT_GAUSSIAN,
    schema.VERDICT_CLOSE,
    schema.VERDICT_NON_GAUSSIAN,
    schema.VERDICT_INCONCLUSIVE,
)
NO_NOISE = (
    "no in-run gradient noise: attach with quantities=[..., 'grad_noise'] and accumulate >= 2 "
    "micro-batch backward passes per optimizer step"
)


def why_no_noise(run: object) -> str | None:
    """A one-line reason when ``run`` holds no grad_noise rows, else None."""
    if schema.NOISE in run.tables and not run.table(schema.NOISE, columns=["step"]).empty:
        return None
    declared = schema.GRAD_NOISE in (run.meta.get("capture", {}).get("quantities") or [])
    if declared:
        return (
            "grad_noise was recorded, but no captured step accumulated >= 2 micro-batches "
            "(one backward pass per optimizer step has no micro-batch noise)"
        )
    return NO_NOISE


def noise_layers(run: object) -> pd.DataFrame:
    """One row per tensor (model order): shape of the noise, tail index, variance and B_simple.

    Columns: ``param``, ``steps`` (steps with noise), ``n_micro`` (median k), one
    count per verdict over the micro-batch rows, ``excess_kurtosis`` and ``skew``
    (medians over the rows), ``tail_alpha`` (median over steps), ``tail_alpha_last``
    with ``tail_low``/``tail_high`` (last step's 95% interval), ``noise_var``
    (median), ``b_simple`` (Σ_steps tr Σ / Σ_steps |G|², in micro-batches).

    Raises
    ------
    ValueError
        When the run holds no in-run noise (the message says how to record it).
    """
    reason = why_no_noise(run)
    if reason is not None:
        raise ValueError(reason)
    noise = run.table(schema.NOISE)
    stats = run.table(
        "stats",
        columns=["step", "param", "quantity", "verdict", "excess_kurtosis", "skew"],
        filters=[("quantity", "==", schema.GRAD_NOISE)],
    )
    order = [t["name"] for t in run.meta.get("model", {}).get("tensors", [])]
    names = [n for n in order if n in set(noise["param"])] + sorted(set(noise["param"]) - set(order))
    rows = []
    for name in names:
        mine = noise[noise["param"] == name].sort_values("step")
        rows_of = stats[stats["param"] == name]
        counts = rows_of["verdict"].value_counts()
        last = mine.iloc[-1]
        g2 = float(mine["grad_sq_norm"].sum())
        rows.append(
            {
                "param": name,
                "steps": int(mine["step"].nunique()),
                "n_micro": int(mine["n_micro"].median()),
                **{v: int(counts.get(v, 0)) for v in VERDICTS},
                "excess_kurtosis": float(rows_of["excess_kurtosis"].median()),
                "skew": float(rows_of["skew"].median()),
                "tail_alpha": float(mine["tail_alpha"].median()),
                "tail_alpha_last": float(last["tail_alpha"]),
                "tail_low": float(last["tail_low"]),
                "tail_high": float(last["tail_high"]),
                "noise_var": float(mine["noise_var"].median()),
                "b_simple": float(mine["trace_sigma"].sum()) / g2 if g2 != 0 else np.inf,
            }
        )
    return pd.DataFrame(rows)


def b_simple_over_training(run: object, window: int | None = None) -> pd.DataFrame:
    """B_simple of all the tensors together at each step with noise, and over a moving window.

    ``b_simple`` is Σ_tensors tr Σ / Σ_tensors |G|² at the step (unbiased numerator
    and denominator, noisy ratio); ``b_simple_window`` the ratio of their sums over
    the last ``window`` steps (McCandlish et al. average the two estimates before
    dividing). In micro-batches: times the micro-batch size for samples.

    Parameters
    ----------
    run : Run
        A loaded run with a ``noise`` table.
    window : int, optional
        Steps per window (default: a tenth of the steps, at least 1).
    """
    noise = run.table(schema.NOISE, columns=["step", "trace_sigma", "grad_sq_norm"])
    per = noise.groupby("step")[["trace_sigma", "grad_sq_norm"]].sum().sort_index()
    if window is None:
        window = max(1, len(per) // 10)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    rolled = per.rolling(window, min_periods=1).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame(
            {
                "step": per.index.to_numpy(),
                "trace_sigma": per["trace_sigma"].to_numpy(),
                "grad_sq_norm": per["grad_sq_norm"].to_numpy(),
                "b_simple": (per["trace_sigma"] / per["grad_sq_norm"]).to_numpy(),
                "b_simple_window": (rolled["trace_sigma"] / rolled["grad_sq_norm"]).to_numpy(),
            }
        )
    return out
