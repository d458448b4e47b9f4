"""Calibration of the battery's uncertainty: skew/kurtosis SEs, Lilliefors size, BH FDR, step dependence,
and the share of each verdict and shape per distribution and n.

Prints tables with replication counts and binomial (or Monte Carlo) standard errors.
Run: ``python benchmarks/calibration.py [--quick] [--verdicts | --tests]`` (``--verdicts``: only the
verdict and shape tables; ``--tests``: only each test's size and power). Seeded: the same numbers every run.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats

from goup_probe import schema
from goup_probe.stats import normal_tests
from goup_probe.stats.moments import moment_standard_errors
from goup_probe.stats.multiplicity import bh_q_values
from goup_probe.stats.normality import assess_samples, moments


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


DISTRIBUTIONS = {
    "normal": lambda rng, s: rng.standard_normal(s),
    "laplace": lambda rng, s: rng.laplace(size=s),
    "t10": lambda rng, s: rng.standard_t(10, size=s),
    "t5": lambda rng, s: rng.standard_t(5, size=s),
    "t3": lambda rng, s: rng.standard_t(3, size=s),
}


def standard_errors(reps: int, n: int) -> None:
    """Monte Carlo SD of skewness/kurtosis against the RMS data-valid SE and the null SE."""
    rows = []
    for name, draw in DISTRIBUTIONS.items():
        rng = np.random.default_rng(1)
        sk, ku, se_s, se_k = [], [], [], []
        for start in range(0, reps, 200):
            x = draw(rng, (min(200, reps - start), n))
            z = normal_tests.standardise(x)
            s, k = normal_tests.skew_kurtosis(z)
            a, b = moment_standard_errors(z, float(n))
            sk.append(s), ku.append(k), se_s.append(a), se_k.append(b)
        sk, ku, se_s, se_k = (np.concatenate(v) for v in (sk, ku, se_s, se_k))
        sd_k = ku.std(ddof=1)
        # SE of the SD estimate: sqrt((kurtosis of the estimates + 2) / (4 reps)) relative, via its sample
        rel = math.sqrt(max(stats.kurtosis(ku) + 2, 0) / (4 * reps))
        rows.append(
            [
                name,
                str(reps),
                f"{sk.std(ddof=1):.3f}",
                f"{math.sqrt(np.mean(se_s**2)):.3f}",
                f"{math.sqrt(6 / n):.3f}",
                f"{sd_k:.3f} ± {sd_k * rel:.3f}",
                f"{math.sqrt(np.mean(se_k**2)):.3f}",
                f"{np.median(se_k):.3f}",
                f"{math.sqrt(24 / n):.3f}",
            ]
        )
    _table(
        f"Skewness / excess kurtosis SEs at n = {n} (delta method on the sample; RMS over replications)",
        [
            "dist",
            "reps",
            "SD skew",
            "SE skew",
            "null",
            "SD kurt ± SE",
            "SE kurt (RMS)",
            "SE kurt (median)",
            "null",
        ],
        rows,
    )


def _old_null(n: int, draws: int = 2000) -> np.ndarray:
    """The previous Lilliefors null: 2000 seeded draws per n."""
    rng = np.random.default_rng(20_170_101 + n)
    return np.sort(normal_tests.lilliefors_statistic(np.sort(rng.standard_normal((draws, n)), axis=1)))


def lilliefors_size(reps: int) -> None:
    """Size at 5% of the Monte Carlo Lilliefors test, before (2000 draws) and after (20000)."""
    rows = []
    for n in (20, 50, 200, 1000):
        x = np.random.default_rng(99 + n).standard_normal((reps, n))
        d = normal_tests.lilliefors_statistic(np.sort(x, axis=1))
        old = _old_null(n)
        p_old = (1 + old.size - np.searchsorted(old, d, side="left")) / (old.size + 1)
        p_new = normal_tests.lilliefors_p(d, n)
        draws = normal_tests.lilliefors_null_draws(n)
        for label, p, k in (("before", p_old, 2000), ("after", p_new, draws)):
            size = float((p <= 0.05).mean())
            se = math.sqrt(size * (1 - size) / reps)
            rows.append(
                [
                    str(n),
                    label,
                    str(k),
                    str(reps),
                    f"{100 * size:.2f}%",
                    f"{100 * se:.2f}",
                    f"{100 * math.sqrt(0.0475 / k):.2f}",
                ]
            )
    _table(
        "Lilliefors size at alpha = 5% (normal samples)",
        ["n", "null", "draws", "reps", "size", "binomial SE (pts)", "null quantile SD (pts)"],
        rows,
    )


def lilliefors_tail() -> None:
    """p beyond the simulated range: the Monte Carlo floor and Dallal-Wilkinson's value."""
    rows = []
    for name in ("laplace", "t5", "t3"):
        for n in (200, 5000):
            x = DISTRIBUTIONS[name](np.random.default_rng(3), (1, n))
            d = normal_tests.lilliefors_statistic(np.sort(x, axis=1))
            p, floor = normal_tests.lilliefors_p_and_floor(d, n)
            beyond = "yes (Dallal-Wilkinson)" if p[0] <= floor else "no (Monte Carlo)"
            rows.append([name, str(n), f"{d[0]:.4f}", f"{floor:.2g}", f"{p[0]:.3g}", beyond])
    _table(
        "Lilliefors p of heavy-tailed samples (beyond the simulated range: p <= floor)",
        ["dist", "n", "D", "floor 1/(draws+1)", "p", "beyond every null draw"],
        rows,
    )


def fdr(reps: int, tensors: int = 200, n: int = 64, alt_share: float = 0.0) -> list[str]:
    """Per-step FDR of BH on Shapiro-Wilk p over ``tensors`` tensors; share ``alt_share`` are Laplace."""
    rng = np.random.default_rng(7)
    n_alt = round(alt_share * tensors)
    fdp, any_raw, power = [], 0, []
    for _ in range(reps):
        x = rng.standard_normal((tensors, n))
        if n_alt:
            x[:n_alt] = rng.laplace(size=(n_alt, n))
        z = normal_tests.standardise(x)
        p = normal_tests.shapiro_wilk(z, np.sort(z, axis=1))[1]
        reject = bh_q_values(p) < 0.05
        false = int(reject[n_alt:].sum())
        fdp.append(false / max(int(reject.sum()), 1))
        any_raw += bool((p[n_alt:] < 0.05).any())
        if n_alt:
            power.append(reject[:n_alt].mean())
    value = float(np.mean(fdp))
    se = float(np.std(fdp, ddof=1) / math.sqrt(reps))
    return [
        f"{alt_share:.0%}",
        str(reps),
        f"{value:.4f} ± {se:.4f}",
        f"{any_raw / reps:.3f}",
        f"{np.mean(power):.3f}" if power else "-",
    ]


def step_dependence(steps: int = 20, n_tensor: int = 100_000, sample: int = 5000) -> None:
    """Correlation over tensors of log p at steps 0 and 19 for a slowly drifting tensor: fixed vs step."""
    rng = np.random.default_rng(11)
    tensors = 200
    base = rng.standard_t(30, size=(tensors, n_tensor))  # mildly non-normal weights
    drift = 0.01 * rng.standard_normal((tensors, n_tensor))
    rows = []
    for mode in ("fixed", "step"):
        logp = []
        for step in (0, steps - 1):
            values = base + step * drift
            idx_rng = np.random.default_rng(0 if mode == "fixed" else [0, step])
            idx = np.sort(idx_rng.choice(n_tensor, size=sample, replace=False))
            z = normal_tests.standardise(values[:, idx])
            logp.append(np.log(normal_tests.shapiro_wilk(z, np.sort(z, axis=1))[1]))
        rows.append([mode, str(tensors), f"{np.corrcoef(logp[0], logp[1])[0, 1]:.4f}"])
    _table(
        f"Dependence of log Shapiro p between steps 0 and {steps - 1} (t30 weights drifting 1%/step)",
        ["resample", "tensors", "corr(log p0, log p19)"],
        rows,
    )


def _rounded(rng: np.random.Generator, s: tuple[int, ...]) -> np.ndarray:
    return np.round(rng.standard_normal(s) * 10.0) / 10.0


def _truncated(rng: np.random.Generator, s: tuple[int, ...]) -> np.ndarray:
    return stats.truncnorm.rvs(-2.5, 2.5, size=s, random_state=rng)


def _contaminated(rng: np.random.Generator, s: tuple[int, ...]) -> np.ndarray:
    wide = rng.uniform(size=s) < 0.05
    return rng.standard_normal(s) * np.where(wide, 2.0, 1.0)


VERDICT_DISTRIBUTIONS = {
    "normal": lambda rng, s: rng.standard_normal(s),
    "t5": lambda rng, s: rng.standard_t(5, size=s),
    "t10": lambda rng, s: rng.standard_t(10, size=s),
    "t12": lambda rng, s: rng.standard_t(12, size=s),
    "t20": lambda rng, s: rng.standard_t(20, size=s),
    "laplace": lambda rng, s: rng.laplace(size=s),
    "logistic": lambda rng, s: rng.logistic(size=s),
    "uniform": lambda rng, s: rng.uniform(size=s),
    "triangular": lambda rng, s: rng.triangular(0.0, 0.5, 1.0, size=s),
    "contam 5% 2σ": _contaminated,
    "trunc ±2.5σ": _truncated,
    "rounded 0.1σ": _rounded,
}
"""The distributions of the verdict table (each standardised by the battery)."""

VERDICTS = (
    schema.VERDICT_GAUSSIAN,
    schema.VERDICT_CLOSE,
    schema.VERDICT_NON_GAUSSIAN,
    schema.VERDICT_INCONCLUSIVE,
)
SHAPES = (schema.SHAPE_HEAVY_TAILED, schema.SHAPE_LIGHT_TAILED, schema.SHAPE_SKEWED, schema.SHAPE_DISCRETE)


def verdict_shares(name: str, n: int, reps: int) -> dict[str, float]:
    """Share of each verdict and of each named shape over ``reps`` seeded samples of size ``n``."""
    rng = np.random.default_rng([17, n, list(VERDICT_DISTRIBUTIONS).index(name)])
    x = VERDICT_DISTRIBUTIONS[name](rng, (reps, n))
    results = assess_samples([moments(row) for row in x], x)
    verdicts = [r.verdict for r in results]
    shares = {v: verdicts.count(v) / reps for v in VERDICTS}
    for shape in SHAPES:
        shares[shape] = sum(shape in r.shape.split(", ") for r in results) / reps
    return shares


def verdict_table(reps: int, sizes: tuple[int, ...] = (50, 200, 500, 1000, 5000)) -> None:
    """Share of each verdict and shape per distribution and n, with the largest binomial SE of the row."""
    rows = []
    for name in VERDICT_DISTRIBUTIONS:
        for n in sizes:
            shares = verdict_shares(name, n, reps)
            worst = max(math.sqrt(p * (1 - p) / reps) for p in shares.values())
            rows.append([name, str(n), *(f"{shares[k]:.3f}" for k in (*VERDICTS, *SHAPES)), f"{worst:.3f}"])
    _table(
        f"Verdict and shape shares (default VerdictThresholds; {reps} replications per row; "
        "SE = largest binomial SE in the row)",
        [
            "dist",
            "n",
            "Gaussian",
            "close",
            "non-Gauss",
            "inconcl.",
            "heavy",
            "light",
            "skewed",
            "discrete",
            "SE",
        ],
        rows,
    )


TEST_P_COLUMNS = (
    "shapiro_p",
    "shapiro_francia_p",
    "lilliefors_p",
    "anderson_p",
    "dagostino_p",
    "jarque_bera_p",
)
"""The battery's p-values; the verdict reads shapiro_p (the others are reported beside it)."""
POWER_DISTRIBUTIONS = ("normal", "t10", "t5", "laplace", "logistic", "uniform", "trunc ±2.5σ")


def rejection_rates(reps: int, sizes: tuple[int, ...] = (50, 200, 1000, 5000)) -> None:
    """Rejection rate at 5% of each test: size on normal samples, power on the others (binomial SE)."""
    rows = []
    for name in POWER_DISTRIBUTIONS:
        for n in sizes:
            rng = np.random.default_rng([23, n, POWER_DISTRIBUTIONS.index(name)])
            x = VERDICT_DISTRIBUTIONS[name](rng, (reps, n))
            results = [r.to_dict() for r in assess_samples([moments(row) for row in x], x)]
            rates = [float(np.mean([r[c] < 0.05 for r in results])) for c in TEST_P_COLUMNS]
            worst = max(math.sqrt(p * (1 - p) / reps) for p in rates)
            rows.append([name, str(n), str(reps), *(f"{p:.3f}" for p in rates), f"{worst:.3f}"])
    _table(
        f"Rejection rate at alpha = 5% per test ({reps} replications per row; normal: size, else power; "
        "SE = largest binomial SE in the row)",
        [
            "dist",
            "n",
            "reps",
            "Shapiro-W",
            "Shapiro-F",
            "Lilliefors",
            "Anderson",
            "D'Agostino",
            "Jarque-B",
            "SE",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer replications")
    parser.add_argument("--verdicts", action="store_true", help="only the verdict and shape tables")
    parser.add_argument("--tests", action="store_true", help="only the size and power of each test")
    args = parser.parse_args()
    if args.tests:
        rejection_rates(reps=200 if args.quick else 1000)
        return
    quick = args.quick
    verdict_table(reps=200 if quick else 1000)
    if args.verdicts:
        return
    rejection_rates(reps=200 if quick else 1000)
    standard_errors(reps=400 if quick else 2000, n=2000)
    standard_errors(reps=200 if quick else 1000, n=5000)
    lilliefors_size(reps=20_000 if quick else 100_000)
    lilliefors_tail()
    reps = 200 if quick else 1000
    _table(
        "Benjamini-Hochberg per step on Shapiro-Wilk p (200 tensors, n = 64; alternatives Laplace)",
        ["non-null share", "reps", "FDR ± SE", "P(any raw p<.05 among nulls)", "power"],
        [fdr(reps, alt_share=a) for a in (0.0, 0.1, 0.5)],
    )
    step_dependence()


if __name__ == "__main__":
    main()
