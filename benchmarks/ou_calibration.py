"""Calibration of the OU statistics in goup_probe.stats.ou (issue 14, defects 5 and 6).

Regenerates, by seeded simulation of stationary discrete OU paths
x_{t+1} = (1 − k) x_t + e_t, e_t ~ N(0, 1):

1. coverage of the 95% interval of the pooled within k (N tracers, T steps), raw
   and Nickell-corrected;
2. coverage of the single-series normal interval and of the one-sided upper
   bound, by T·k (why ``MIN_STEPS_X_K`` is what it is);
3. size of Ljung-Box on AR(1) residuals with ``model_df = 1`` and with
   ``ar1_lb_model_df`` (near a unit root and away from it), and of the
   McLeod-Li and state-variance tests;
4. verdicts of ``fit_ou`` on random walks, and its run time for long series.

Every rate is printed with its replication count and binomial standard error
√(p(1 − p)/R). Usage::

    python benchmarks/ou_calibration.py            # the full grid of the issue
    python benchmarks/ou_calibration.py --quick    # T <= 2000, fewer replications
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.signal import lfilter

from goup_probe.stats import ou

LEVEL = 0.95


def simulate(k: float, steps: int, series: int, rng: np.random.Generator) -> np.ndarray:
    """(steps + 1, series) stationary OU paths with unit innovation variance."""
    phi = 1.0 - k
    x0 = rng.standard_normal(series) / math.sqrt(max(1.0 - phi * phi, 1e-300)) if k > 0 else 0.0
    e = rng.standard_normal((steps, series))
    path = lfilter([1.0], [1.0, -phi], e, axis=0, zi=phi * np.broadcast_to(x0, (1, series)))[0]
    return np.vstack([np.broadcast_to(x0, (1, series)), path])


def binom_se(p: float, reps: int) -> float:
    return math.sqrt(max(p * (1.0 - p), 0.0) / reps)


def pooled_coverage(cells, series: int, reps: int, seed: int = 0) -> list[dict]:
    rows = []
    for k, steps in cells:
        rng = np.random.default_rng([seed, int(k * 1e6), steps])
        hit_raw = hit = 0
        bias = []
        for _ in range(reps):
            x = simulate(k, steps, series, rng)
            fit = ou.pooled_ar1(x[:-1], x[1:], conf_level=LEVEL)
            # the uncorrected interval: k_raw with the same half-width (the correction's slope is ~1)
            hit_raw += abs(fit.k_raw - k) <= (fit.k_ci[1] - fit.k_ci[0]) / 2
            hit += fit.k_ci[0] <= k <= fit.k_ci[1]
            bias.append(fit.k - k)
        rows.append(
            {
                "k": k,
                "T": steps,
                "N": series,
                "T*k": steps * k,
                "reps": reps,
                "cover_raw": hit_raw / reps,
                "cover": hit / reps,
                "se": binom_se(hit / reps, reps),
                "mean_err": float(np.mean(bias)),
            }
        )
        print(_fmt(rows[-1]), flush=True)
    return rows


def single_coverage(steps: int, tks, reps: int, seed: int = 1) -> list[dict]:
    """Two-sided interval and one-sided upper bound of one series' k, by T·k (ar1_batch = fit_ou's fit)."""
    q, q_one = 1.959963984540054, 1.6448536269514722
    rows = []
    for tk in tks:
        k = tk / steps
        x = simulate(k, steps, reps, np.random.default_rng([seed, int(tk * 100)]))
        fit = ou.ar1_batch(x[:-1], x[1:])
        cover = float(np.mean(np.abs(fit.k - k) <= q * fit.k_se))
        below = float(np.mean(k < fit.k - q * fit.k_se))
        upper = float(np.mean(k <= fit.k + q_one * fit.k_se))
        rows.append(
            {
                "T": steps,
                "T*k": tk,
                "reps": reps,
                "cover": cover,
                "se": binom_se(cover, reps),
                "k_below_ci": below,
                "upper_cover": upper,
                "upper_se": binom_se(upper, reps),
            }
        )
        print(_fmt(rows[-1]), flush=True)
    return rows


def lb_size(cases, reps: int, seed: int = 2) -> list[dict]:
    rows = []
    for k, steps in cases:
        x = simulate(k, steps, reps, np.random.default_rng([seed, int(k * 1e6), steps]))
        fit = ou.ar1_batch(x[:-1], x[1:])
        lags = ou.default_lb_lags(steps)
        _, p_one = ou.ljung_box_batch(fit.resid, lags, model_df=1)
        _, p_new = ou.ljung_box_batch(fit.resid, lags, model_df=ou.ar1_lb_model_df(fit.phi, lags))
        _, p_ml = ou.ljung_box_batch(fit.resid**2, lags)
        _, p_sv, _ = ou.state_variance_batch(fit.resid, x[:-1])
        row = {"k": k, "T": steps, "lags": lags, "reps": reps}
        for name, p in (("lb_df1", p_one), ("lb_ar1df", p_new), ("mcleod_li", p_ml), ("state_var", p_sv)):
            rate = ou.rejection_fraction(p, 0.05)
            row[name] = rate
            row[name + "_se"] = binom_se(rate, reps)
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


def random_walk_verdicts(steps: int, reps: int, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    verdicts = [ou.fit_ou(np.cumsum(rng.standard_normal(steps + 1))).verdict for _ in range(reps)]
    none = sum(v.startswith(ou.VERDICT_NO_MEAN_REVERSION) for v in verdicts)
    row = {"T": steps, "reps": reps, "no_mean_reversion": none / reps, "example": verdicts[0]}
    print(_fmt(row), flush=True)
    return row


def timing(lengths) -> list[dict]:
    rows = []
    for n in lengths:
        x = simulate(0.05, n - 1, 1, np.random.default_rng(4))[:, 0]
        start = time.perf_counter()
        fit = ou.fit_ou(x)
        rows.append({"n": n, "seconds": time.perf_counter() - start, "k": fit.k, "verdict": fit.verdict})
        print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(row: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T <= 2000 and fewer replications")
    parser.add_argument("--reps", type=int, default=None, help="replications of the pooled grid")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument(
        "--diagonal",
        action="store_true",
        help="only the issue's cells (0.2, 1000), (0.05, 5000), (0.01, 20000)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    reps = args.reps or (200 if quick else 400)
    steps_grid = (1000, 2000) if quick else (1000, 5000, 20000)
    print(f"# pooled within k, N = 256, 95% interval, {reps} replications per cell")
    cells = [(k, steps) for k in (0.2, 0.05, 0.01) for steps in steps_grid]
    if args.diagonal:
        cells = [(0.2, 1000), (0.05, 5000), (0.01, 20000)]
    pooled_coverage(cells, 256, reps)
    single_reps = 2000 if quick else 10000
    print(f"# one series, T = 1000, normal 95% interval and 95% upper bound, {single_reps} replications")
    single_coverage(1000, (2, 5, 10, 20, 50, 100, 200), single_reps)
    lb_reps = 2000 if quick else 10000
    print(f"# size at 5% of residual tests, {lb_reps} replications")
    lb_size(((0.001, 5000), (0.01, 5000), (0.05, 2000), (0.2, 500), (0.5, 200)), lb_reps)
    print("# fit_ou verdict on random walks")
    random_walk_verdicts(2000, 60)
    if not args.no_timing:
        print("# fit_ou run time")
        timing((10**5, 10**6) if not quick else (10**5,))


if __name__ == "__main__":
    main()
