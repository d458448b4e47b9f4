"""The report's glossary: every statistic and threshold behind a verdict, with the run's own values."""

from __future__ import annotations

from typing import Any

from goup_probe.stats.normality import DEFAULT_THRESHOLDS, MAX_TESTED


def _thresholds(meta: dict[str, Any]) -> dict[str, float]:
    """Verdict thresholds recorded in run.json, else the library defaults."""
    values = dict(vars(DEFAULT_THRESHOLDS))
    recorded = ((meta.get("capture") or {}).get("thresholds")) or {}
    values.update({k: v for k, v in recorded.items() if k in values})
    return values


def glossary_items(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """Terms and definitions, with the thresholds this run was judged by.

    Parameters
    ----------
    meta : dict
        ``run.meta``; its ``capture.thresholds`` override the defaults of
        :class:`goup_probe.stats.normality.VerdictThresholds`.
    """
    t = _thresholds(meta)
    sample_size = (meta.get("capture") or {}).get("sample_size", MAX_TESTED)
    return [
        (
            "X = θ − g",
            "The weights θ of one parameter tensor minus their gradient g = ∂L/∂θ, at one "
            "optimizer step (before the update). The seed claims α·X is Gaussian; the scale α does not "
            "change any statistic here, all are scale-invariant.",
        ),
        (
            "axis: pooled",
            "All statistics in the normality sections pool the coordinates of one tensor at one "
            "step. Testing one coordinate over time (axis 'time', used by the OU section) can disagree "
            "completely.",
        ),
        (
            "n tested",
            f"Tests run on a seeded subsample of at most {sample_size} values of the tensor "
            "(Shapiro–Wilk's p-values are valid up to 5000); moments (mean, std, skewness, kurtosis) use the "
            "whole tensor. The histograms and QQ plots draw the smaller stored subsample.",
        ),
        (
            "skewness (± SE)",
            "Third standardised moment; 0 for a normal. Its standard error under normality is √(6/n).",
        ),
        (
            "excess kurtosis (± SE)",
            "Fourth standardised moment minus 3; 0 for a normal, −1.2 for a uniform "
            "(PyTorch's default Kaiming-uniform init), 3 for a Laplace, positive for heavy tails. Standard "
            "error under normality √(24/n).",
        ),
        (
            "KS D (Lilliefors)",
            "Largest distance between the empirical CDF and the fitted normal CDF. Its "
            "p-value uses Lilliefors' null distribution, because the mean and std are estimated (a plain "
            "Kolmogorov–Smirnov p-value would be far too conservative).",
        ),
        (
            "Shapiro–Wilk W, p",
            f"The standard omnibus normality test; its p-value decides the 'Gaussian' "
            f"verdict at level α = {t['alpha']}.",
        ),
        (
            "Anderson–Darling A², p",
            "Weighted CDF distance, sensitive to the tails (estimated parameters, Stephens' case 3).",
        ),
        ("D'Agostino–Pearson p, Jarque–Bera p", "Tests built from skewness and kurtosis."),
        (
            "qq_r and 1 − qq_r",
            "Correlation of the sorted standardised sample with normal quantiles (the "
            "straightness of the QQ plot); 1 for a perfect normal. 1 − qq_r is the effect size in the "
            "heatmap and the ranking of tensors; qq_r_crit05 is its 5% critical value for the tested n "
            "(below it, normality is rejected; the Shapiro–Francia test).",
        ),
        (
            "W1 (σ)",
            "Wasserstein-1 distance between the standardised sample and N(0, 1), in units of the "
            "standard deviation: the average amount probability mass must move. A uniform is at 0.15 σ.",
        ),
        (
            "‖g‖/‖θ‖",
            "Ratio of the L2 norms of the gradient and the weights of a tensor. When it is ≪ 1, "
            "X = θ − g is essentially θ, so a verdict about X is a verdict about the weights — early in "
            "training, about their initialisation.",
        ),
        (
            "verdict: Gaussian",
            f"Shapiro–Wilk does not reject normality at α = {t['alpha']} on at least "
            f"{t.get('min_n_gaussian', 50)} values.",
        ),
        (
            "verdict: inconclusive",
            f"Not rejected, but on fewer than {t.get('min_n_gaussian', 50)} values: the test has "
            "almost no power there (it misses a uniform distribution 87% of the time at n = 16).",
        ),
        (
            "verdict: negligible deviation",
            f"Shapiro–Wilk rejects, but every effect size is small: "
            f"W1 ≤ {t['max_w1_sigma']} σ, |skewness| ≤ {t['max_abs_skew']} and |excess kurtosis| ≤ "
            f"{t['max_abs_excess_kurtosis']} (with thousands of values, tests detect deviations too small "
            "to matter).",
        ),
        ("verdict: non-Gaussian", "Rejected, and at least one effect size beyond its threshold."),
        (
            "verdict: not tested",
            "No test ran: the quantity is constant, non-finite, has too few values, "
            "has no gradient, or was recorded with moments only; the status column says which.",
        ),
        (
            "k̂, α, k̂/α",
            "k̂ is the mean-reversion rate from regressing θ_{t+1} on θ_t over the tracer "
            "coordinates (pooled, one common k per tensor); α is the learning rate. The seed's derivation "
            "sets k = α, which for plain SGD is an identity and no evidence; near a minimum theory expects "
            "k̂ ≈ α(h + λ) with curvature h and weight decay λ (Mandt, Hoffman & Blei 2017).",
        ),
        (
            "half-life, T·k̂",
            "ln 2 / k̂ steps; with T recorded transitions, T·k̂ below about 100 means k is "
            "not identified (the least-squares bias is about 2/T).",
        ),
        (
            "innovation η, acf1",
            "The seed's innovation η = α(θ − g). An OU model needs it independent over "
            "time (lag-1 autocorrelation near 0, within ±1.96/√T), uncorrelated with θ_t and Gaussian.",
        ),
        (
            "residual diagnostics",
            "Of the fitted AR(1)/OU model, per tracer coordinate: Ljung–Box "
            "(whiteness), D'Agostino–Pearson (normality), augmented Dickey–Fuller (stationarity), "
            "Brown–Forsythe across windows (constant variance). Shown as the share of coordinates failing.",
        ),
        (
            "twin runs, arms",
            "A GO-UP comparison trains the same model from the same seeds and batches with "
            "the reference optimizer (the base arm) and with GO-UP; intervals are Student-t over seeds.",
        ),
        (
            "rel. distance, update cosine",
            "‖θ_arm − θ_base‖/‖θ_base‖, and the cosine between the two arms' "
            "cumulative updates θ − θ_0: how far GO-UP's weights drift from the reference run's.",
        ),
        (
            "noise to signal (shadow)",
            "σ√N/‖g‖ at a captured step: the size of the noise GO-UP's update "
            "adds (σ = std(θ − g), N coordinates) over the size of the gradient.",
        ),
    ]
