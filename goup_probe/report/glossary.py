"""The report's glossary: every column of the stats table, every verdict and threshold, with the run's values.

The column entries are generated from the declared columns
(:func:`goup_probe.schema.stats_fields`: the base, verdict and GO-UP shadow
fields and each :class:`~goup_probe.stats.battery.Statistic`'s ``columns``),
so a new statistic gets its entry without touching this module; longer prose
is kept here as extra text keyed by column (:func:`column_notes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from goup_probe import schema
from goup_probe.stats.normality import DEFAULT_THRESHOLDS, MAX_TESTED

Item = tuple[str, str]
"""A glossary entry: term, definition (plain text)."""


def _thresholds(meta: dict[str, Any]) -> dict[str, float]:
    """Verdict thresholds recorded in run.json, else the library defaults."""
    values = dict(vars(DEFAULT_THRESHOLDS))
    recorded = ((meta.get("capture") or {}).get("thresholds")) or {}
    values.update({k: v for k, v in recorded.items() if k in values})
    return values


def column_notes(meta: dict[str, Any]) -> dict[str, str]:
    """Longer prose for some stats columns, appended to their declared one-line description."""
    t = _thresholds(meta)
    sample_size = (meta.get("capture") or {}).get("sample_size", MAX_TESTED)
    return {
        "axis": "All statistics in the normality sections pool the coordinates of one tensor at one "
        "step. Testing one coordinate over time (axis 'time', used by the OU section) can disagree "
        "completely.",
        "n_tested": f"Tests run on a seeded subsample of at most {sample_size} values of the tensor "
        "(Shapiro–Wilk's p-values are valid up to 5000); moments (mean, std, skewness, kurtosis) use the "
        "whole tensor. The histograms and QQ plots draw the smaller stored subsample.",
        "skew": "Third standardised moment; 0 for a normal. Its standard error skew_se is valid for the "
        "data (delta method with the sample's moments up to order 6); skew_se_null, √(6/n), holds only "
        "for normal data.",
        "excess_kurtosis": "Fourth standardised moment minus 3; 0 for a normal, −1.2 for a uniform "
        "(PyTorch's default Kaiming-uniform init), 3 for a Laplace, positive for heavy tails. Standard "
        "error kurtosis_se is valid for the data (moments up to order 8; it still understates the spread "
        "when the 8th moment is infinite, e.g. Student-t with ν ≤ 8); kurtosis_se_null, √(24/n), holds "
        "only for normal data.",
        "grad_to_param": "‖g‖/‖θ‖: ratio of the L2 norms of the gradient and the weights of a tensor. When "
        "it is ≪ 1, X = θ − g is essentially θ, so a verdict about X is a verdict about the weights — "
        "early in training, about their initialisation.",
        "ks_d": "Largest distance between the empirical CDF and the fitted normal CDF. Its p-value "
        "(lilliefors_p) uses Lilliefors' null distribution, because the mean and std are estimated (a plain "
        "Kolmogorov–Smirnov p-value would be far too conservative).",
        "shapiro_p": f"The standard omnibus normality test; below α = {t['alpha']} it rejects normality for "
        "the verdict (not rejecting is not enough for 'Gaussian': see the verdict entries).",
        "anderson_a2": "A weighted CDF distance, sensitive to the tails.",
        "dagostino_p": "A test built from skewness and kurtosis.",
        "jarque_bera_p": "A test built from skewness and kurtosis.",
        "qq_r": "Correlation of the sorted standardised sample with normal quantiles (the straightness of "
        "the QQ plot); 1 for a perfect normal. 1 − qq_r is the effect size of the ranking of tensors (and "
        "of the heatmap when the run has no W1).",
        "qq_r_crit05": "Below it, normality is rejected (the Shapiro–Francia test, shapiro_francia_p).",
        "w1_sigma": "W1 (σ): Wasserstein-1 distance between the standardised sample and N(0, 1), in units "
        "of the standard deviation: the average amount probability mass must move. A uniform is at 0.15 σ. "
        "The heatmap's effect size; it grows as n shrinks even for normal data (about 0.83/√n), a floor the "
        f"verdict's upper bound removes before comparing it with the margin {t['max_w1_sigma']} σ.",
        "w1_se": "Its SE combines the influence function of W1 on the data with the spread of normal "
        "samples (0.19/√n), so it is valid for the data and never below the null spread.",
        "l_skew": "τ₃, the L-moment skewness (Hosking 1990): linear in the order statistics, so it exists "
        "and its SE is finite whenever the variance is, unlike the moment skewness for heavy tails. "
        f"'skewed' needs |τ₃| > {t['shape_z']} SE; 'close' needs |τ₃| + z·SE ≤ {t['max_abs_l_skew']}.",
        "l_kurt": "τ₄, the L-moment kurtosis: 0.1226 for every normal, 0 for a uniform, 1/6 for a logistic, "
        "0.236 for a Laplace, 0.149 for Student t₁₂. 'heavy-tailed' / 'light-tailed' need "
        f"|τ₄ − 0.1226| > {t['shape_z']} SE; 'close' needs |τ₄ − 0.1226| + z·SE ≤ {t['max_l_kurt_dev']}.",
        "distinct_share": "Continuous float32 data gives 1. 'discrete' is named when it is at most "
        f"{t['max_distinct_share']}: the values lie on a lattice coarse for n (rounding to 0.1σ gives 0.014 "
        "at n = 5000), which the tests, built for continuous laws, reject. A bf16 tensor has about 0.29 at "
        "n = 5000 (fp16 0.77): a grid, but too fine for the tests to see, so not 'discrete'.",
        "exceed3_ratio": "Observed share of |z| > 3 over the normal's 0.27%: a heavy tail shows as a ratio "
        "well above 1 (t₃ ≈ 5, Laplace ≈ 5 at 3σ; at 4σ ≈ 100 and 55), a light tail as 0. The interval "
        "treats the count as binomial (approximate: the mean and std are estimated from the same values).",
        "hill_alpha": "Hill's estimator uses the k = ⌊√n⌋ largest |z| (70 of 5000): a cheap fixed k, so "
        "the interval covers its sampling error, not the bias of a tail that is not a power law (t₅ gives "
        "≈ 4.2; a normal, with no power tail, ≈ 8). Small values mean heavy tails; the full estimator "
        "with a double-bootstrap k is gp.tail_index(x, method='hill').",
        "t_nu": "Fitted jointly with the t's location and scale by maximum likelihood (ECME "
        "iterations, checked against scipy.stats.t.fit). Its SD at n = 5000 is about 4.5% for ν = 3 and "
        "7.5% for ν = 5 (simulated); inf means the normal fits at least as well.",
        "best_fit": "AIC = 2·parameters − 2·log-likelihood (2 parameters for normal and Laplace, 3 for t "
        "and gennorm); the least wins. For normal data the normal wins in about 82% of rows: an extra "
        "shape parameter wins by chance whenever its likelihood ratio exceeds 2. Empty for untested rows and "
        "for samples of fewer than 100 values (no shape fits there: t_nu, gennorm_beta, aic_gain are NaN).",
        "shape": "Named from the data with uncertainty: a tail or an asymmetry only when significant (see "
        "l_kurt, l_skew; the whole tensor's kurtosis and skewness too, which see extreme values the "
        "subsample misses), discreteness from distinct_share. Empty for Gaussian and untested rows.",
        "verdict": "See the verdict entries below.",
        "noise_to_signal": "σ√N/‖g‖ at a captured step: the size of the noise GO-UP's update adds "
        "(σ = std(θ − g), N coordinates) over the size of the gradient.",
        "goup_cosine": "cos(Δ, −αg) on update rows: the cosine between the update Δ the optimizer "
        "actually made and GO-UP's mean update −αg at the same step. 1 for plain SGD; below 1 when "
        "momentum, weight decay or an adaptive optimizer moves elsewhere than −αg.",
        "goup_fit_p": "p-value, on update rows, of the update Δ being a draw from GO-UP's update "
        "distribution N(−αg, α²σ²I) (α: the step's lr, σ = std(θ − g) as GO-UP computes it): a two-sided χ² "
        "test of ‖Δ + αg‖²/(α²σ²) against χ²_N, and a Shapiro–Wilk test of the scaled coordinates "
        "(Δ_i + αg_i)/(ασ) on the subsample, combined by Bonferroni (twice the smaller p). Uniform when the "
        "optimizer is GO-UP (about 5% of rows below 0.05); near 0 for SGD or Adam. Runs written before it "
        "existed hold goup_w2_rel instead (a distance from one update to a distribution, not a test) and "
        "read goup_fit_p as NaN.",
    }


def _conceptual_items(meta: dict[str, Any]) -> list[Item]:
    return [
        (
            "X = θ − g",
            "The weights θ of one parameter tensor minus their gradient g = ∂L/∂θ, at one "
            "optimizer step (before the update). The seed claims α·X is Gaussian; the scale α does not "
            "change any statistic here, all are scale-invariant.",
        ),
        (
            "– and nan",
            "In the report's tables '–' marks an empty cell: the value was not computed for that row (a "
            "quantity recorded with moments only, a status other than ok, a test that needs more values, "
            "e.g. D'Agostino below n = 20, a failed user statistic) or does not apply. The terminal tables "
            "of goup-probe print the same empty value as nan, and pandas holds it as NaN. inf is printed "
            "as inf: a value that was computed and is infinite (e.g. a half-life when k̂ ≤ 0).",
        ),
    ]


def _user_columns(meta: dict[str, Any], columns: Iterable[str] | None) -> list[Item]:
    """Entries for the run's own statistics (their descriptions are not stored in run.json)."""
    names = [str(s) for s in ((meta.get("capture") or {}).get("statistics") or [])]
    declared = {name for name, _, _ in schema.stats_fields()}
    extra = [c for c in (columns or ()) if c not in declared]
    from_run = ", ".join(names) if names else "declared when the probe was attached"
    text = (
        f"A column of this run's own statistics ({from_run}): a gp.Statistic passed as statistics=, "
        "tested on the same subsample as the built-ins; NaN on rows it did not run on. Its one-line "
        "description is the one declared in the Statistic's columns (not stored in run.json)."
    )
    listed = extra or [n for n in names if n not in declared]
    return [(column, text) for column in listed]


def column_items(meta: dict[str, Any], columns: Iterable[str] | None = None) -> list[Item]:
    """One entry per column of the stats table, from the declared columns, user statistics included.

    Parameters
    ----------
    meta : dict
        ``run.meta``; ``capture.statistics`` names the run's own statistics.
    columns : iterable of str, optional
        Columns of the run's stats table: those not declared by the toolkit are
        the user statistics' columns. Without it, each user statistic is listed
        under its name.
    """
    notes = column_notes(meta)
    items = []
    for name, _, doc in (*schema.stats_fields(), *schema.STATS_DERIVED_FIELDS):
        text = doc if doc.endswith(".") else doc + "."
        items.append((name, f"{text} {notes[name]}" if name in notes else text))
    return items + _user_columns(meta, columns)


def _verdict_items(meta: dict[str, Any]) -> list[Item]:
    t = _thresholds(meta)
    rejected = (
        f"Rejected means Shapiro–Wilk's p < α = {t['alpha']} or a significant tail or asymmetry (shape); "
        f"close means every one-sided {1 - t['alpha']:.0%} upper bound is within its margin: W1 ≤ "
        f"{t['max_w1_sigma']} σ (sampling floor removed), |τ₃| ≤ {t['max_abs_l_skew']}, |τ₄ − 0.1226| ≤ "
        f"{t['max_l_kurt_dev']}, and over the whole tensor |skewness| ≤ {t['max_abs_skew']} and |excess "
        f"kurtosis| ≤ {t['max_abs_excess_kurtosis']}."
    )
    return [
        (
            "verdict: Gaussian",
            "Not rejected and close: equivalence shown, not just a test that did not reject. "
            f"{rejected} Normal samples show it in none of 1000 at n = 200, 26% at n = 500, 79% at 1000, "
            "95% at 5000 (W1's bound needs about 500 values).",
        ),
        (
            "verdict: inconclusive",
            "Not rejected, but closeness not shown: too few values, or bounds too wide for the margins. "
            "Not evidence of normality (at n = 50 Shapiro–Wilk misses a t₅ most of the time).",
        ),
        (
            "verdict: close to Gaussian",
            f"Rejected, but close: with thousands of values tests detect deviations too small to matter. "
            f"{rejected} The shape column says what was detected.",
        ),
        ("verdict: non-Gaussian", "Rejected, and at least one upper bound beyond its margin."),
        (
            "verdict: not tested",
            "No test ran: the quantity is constant, non-finite, has too few values, "
            "has no gradient, or was recorded with moments only; the status column says which.",
        ),
        (
            "shape: heavy-tailed, light-tailed, skewed, discrete, other, none detected",
            "Of every tested row that is not Gaussian (several may apply, comma-joined): heavy- or "
            f"light-tailed when τ₄ − 0.1226 is more than {t['shape_z']} SE from 0 (else the whole tensor's "
            f"excess kurtosis, bias-corrected), skewed when τ₃ or the skewness is, discrete when "
            f"distinct_share ≤ {t['max_distinct_share']}; other: rejected with none of these; none "
            "detected: not rejected and none (an inconclusive row). Discreteness alone is no rejection. "
            "shape_last in the per-layer summary is the shape at the last captured step.",
        ),
        (
            "gaussian_share",
            "In the per-layer summary (goup-probe summary, gp.layer_summary): the fraction of a tensor's "
            "tested steps whose verdict is Gaussian or close to Gaussian (inconclusive counts as not "
            "Gaussian); nan when the tensor was never tested.",
        ),
    ]


def _ou_and_fidelity_items() -> list[Item]:
    return [
        (
            "k̂, α, k̂/α",
            "k̂ is the mean-reversion rate from regressing θ_{t+1} on θ_t over the tracer "
            "coordinates (pooled, one common k per tensor); α is each step's learning rate of the "
            "tensor's param group (schedules included), weighed as the pooled fit weighs the steps. The "
            "seed's derivation sets k = α, which for plain SGD is an identity and no evidence; near a "
            "minimum theory expects k̂ ≈ α(h + λ) with curvature h and weight decay λ (Mandt, Hoffman & "
            "Blei 2017). For an optimizer whose update is not −αg (Adam family, Adagrad, RMSprop, "
            "momentum) α is only the nominal lr and the seed's derivation does not apply: k̂ is also "
            "given against the effective step size ‖Δθ‖/‖g‖ (eff_step, k_over_eff_step).",
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
    ]


def _noise_probe_items() -> list[Item]:
    """The OU-rate-against-curvature comparison and the ``noise_probe`` table's columns (from the schema)."""
    columns = "; ".join(f"{name}: {doc}" for name, _, doc in schema.NOISE_PROBE_FIELDS)
    return [
        (
            "h = tr H / N, h_top, α(h + λ)",
            "Curvature measured by gp.NoiseProbe(curvature=...): h is the Hutchinson trace of the tensor's "
            "diagonal Hessian block over its size (its mean diagonal curvature), h_top the block's top "
            "eigenvalue, both medians over the measured steps; λ is the tensor's weight decay. Near a "
            "minimum SGD reverts at k ≈ α(h + λ); k̂ / α(h + λ) near 1 agrees, and k̂ above α(h_top + λ) "
            "is faster than any direction of the block allows.",
        ),
        ("noise_probe table", f"One row per step, tensor and unit size of gp.NoiseProbe. {columns}."),
    ]


def glossary_items(meta: dict[str, Any], columns: Sequence[str] | None = None) -> list[Item]:
    """Terms and definitions: concepts, every stats column, the verdicts (this run's thresholds), OU, GO-UP.

    Parameters
    ----------
    meta : dict
        ``run.meta``; its ``capture.thresholds`` override the defaults of
        :class:`goup_probe.stats.normality.VerdictThresholds`, and its
        ``capture.statistics`` names the run's own statistics.
    columns : sequence of str, optional
        Columns of the run's stats table (``run.stats.columns``), so that each
        user statistic's columns get an entry (see :func:`column_items`).
    """
    return [
        *_conceptual_items(meta),
        *column_items(meta, columns),
        *_verdict_items(meta),
        *_ou_and_fidelity_items(),
        *_noise_probe_items(),
    ]
