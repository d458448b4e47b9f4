"""Column names and Parquet schemas of a run directory, in one place.

Every table the toolkit writes is declared here; the store, the analyses and the
report refer to these names instead of repeating string literals.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
"""Version of the on-disk layout; bumped whenever a column changes meaning."""

# Quantities recorded per captured step and parameter tensor.
THETA_MINUS_GRAD = "theta_minus_grad"
THETA = "theta"
GRAD = "grad"
UPDATE = "update"
QUANTITIES = (THETA_MINUS_GRAD, THETA, GRAD, UPDATE)

# Axes along which a distribution is tested.
AXIS_POOLED = "pooled"
"""Across the coordinates of one tensor at one step."""
AXIS_TIME = "time"
"""One coordinate over time."""

# Row statuses.
STATUS_OK = "ok"
STATUS_NONFINITE_EXCLUDED = "nonfinite_excluded"
STATUS_ALL_NONFINITE = "all_nonfinite"
STATUS_CONSTANT = "constant"
STATUS_TOO_FEW = "too_few"
STATUS_NO_GRAD = "no_grad"
STATUS_FROZEN = "frozen"
STATUS_UNSUPPORTED = "unsupported"
STATUS_ERROR = "error"
TESTED_STATUSES = (STATUS_OK, STATUS_NONFINITE_EXCLUDED)

# Verdicts.
VERDICT_GAUSSIAN = "Gaussian"
VERDICT_NEGLIGIBLE = "negligible deviation"
VERDICT_NON_GAUSSIAN = "non-Gaussian"
VERDICT_INCONCLUSIVE = "inconclusive"
"""Not rejected, but on too few values for 'Gaussian' to mean anything."""
VERDICT_NOT_TESTED = "not tested"

STATS_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("step", pa.int64(), "optimizer step index (0 = first step), counted by the probe"),
    ("param", pa.string(), "qualified parameter name, e.g. 'layer1.0.conv1.weight'"),
    ("quantity", pa.string(), "theta_minus_grad | theta | grad | update"),
    ("axis", pa.string(), "'pooled': across one tensor's coordinates at one step"),
    ("lr", pa.float64(), "learning rate of the parameter's param group at that step"),
    ("status", pa.string(), "ok, or why the row holds no statistics"),
    ("reason", pa.string(), "human-readable detail for a non-ok status"),
    ("numel", pa.int64(), "elements in the tensor"),
    ("n_tested", pa.int64(), "size of the seeded subsample the tests ran on"),
    ("nonfinite", pa.int64(), "NaN/Inf count in the whole tensor"),
    ("mean", pa.float64(), "mean over the whole tensor (finite values)"),
    ("std", pa.float64(), "population std over the whole tensor"),
    ("skew", pa.float64(), "skewness over the whole tensor"),
    ("skew_se", pa.float64(), "standard error of skewness under normality, sqrt(6/n)"),
    ("excess_kurtosis", pa.float64(), "excess kurtosis over the whole tensor"),
    ("kurtosis_se", pa.float64(), "standard error of excess kurtosis, sqrt(24/n)"),
    ("min", pa.float64(), "minimum over the whole tensor"),
    ("max", pa.float64(), "maximum over the whole tensor"),
    ("param_norm", pa.float64(), "L2 norm of theta at this step"),
    ("grad_norm", pa.float64(), "L2 norm of the gradient at this step"),
    ("grad_to_param", pa.float64(), "grad_norm / param_norm"),
    ("ks_d", pa.float64(), "Lilliefors KS statistic D (estimated mean and std)"),
    ("lilliefors_p", pa.float64(), "Lilliefors p-value (Monte Carlo null, 2000 draws per n)"),
    ("shapiro_w", pa.float64(), "Shapiro-Wilk W on at most 5000 values"),
    ("shapiro_p", pa.float64(), "Shapiro-Wilk p-value"),
    ("anderson_a2", pa.float64(), "Anderson-Darling A^2 (estimated parameters)"),
    ("anderson_p", pa.float64(), "Anderson-Darling p-value (Stephens' case 3)"),
    ("dagostino_p", pa.float64(), "D'Agostino-Pearson K^2 p-value (n >= 20)"),
    ("jarque_bera_p", pa.float64(), "Jarque-Bera p-value (asymptotic)"),
    ("qq_r", pa.float64(), "normal probability-plot correlation (Blom positions)"),
    ("qq_r_crit05", pa.float64(), "5% null critical value of qq_r for n_tested"),
    ("shapiro_francia_p", pa.float64(), "p-value of qq_r^2 (Royston 1993)"),
    ("w1_sigma", pa.float64(), "Wasserstein-1 distance to the fitted normal, in std units"),
    ("verdict", pa.string(), "Gaussian | negligible deviation | non-Gaussian | inconclusive | not tested"),
    ("noise_to_signal", pa.float64(), "GO-UP shadow: sigma*sqrt(N)/||g||"),
    ("goup_cosine", pa.float64(), "GO-UP shadow: cos(actual update, GO-UP mean update)"),
    ("goup_w2_rel", pa.float64(), "GO-UP shadow: W2(actual, GO-UP) / ||GO-UP mean update||"),
)
STATS_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in STATS_FIELDS])
STATS_COLUMNS = tuple(name for name, _, _ in STATS_FIELDS)

SAMPLES_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("step", pa.int64(), "optimizer step index"),
    ("param", pa.string(), "qualified parameter name"),
    ("quantity", pa.string(), "theta_minus_grad | theta | grad | update"),
    ("values", pa.list_(pa.float32()), "seeded subsample of the quantity (raw units)"),
)
SAMPLES_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in SAMPLES_FIELDS])

TRAJECTORY_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("step", pa.int64(), "optimizer step index t"),
    ("param", pa.string(), "qualified parameter name"),
    ("lr", pa.float64(), "learning rate at step t"),
    ("theta", pa.list_(pa.float64()), "theta_t at the tracer coordinates"),
    ("grad", pa.list_(pa.float64()), "g_t at the tracer coordinates"),
    ("theta_next", pa.list_(pa.float64()), "theta_{t+1} at the tracer coordinates"),
)
TRAJECTORY_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in TRAJECTORY_FIELDS])

TRACER_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("param", pa.string(), "qualified parameter name"),
    ("coord", pa.list_(pa.int64()), "flat indices of the tracer coordinates, in row order"),
)
TRACER_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in TRACER_FIELDS])

# Twin-run comparison (goup_probe.fidelity): base optimizer vs GO-UP arms.
COMPARE_CURVES = "compare_curves"
COMPARE_LAYERS = "compare_layers"
COMPARE_SUMMARY = "compare_summary"

COMPARE_CURVES_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("arm", pa.string(), "arm name: the base optimizer (e.g. 'sgd') or 'goup-<mode>'"),
    ("mode", pa.string(), "GO-UP mode ('seed' | 'scalar'); null for the base arm"),
    ("seed", pa.int64(), "seed of init, mini-batch order and GO-UP noise (shared by the arms)"),
    ("step", pa.int64(), "optimizer updates taken; 0 = initial weights"),
    ("lr", pa.float64(), "learning rate of the update that led to this row"),
    ("train_loss", pa.float64(), "mini-batch loss of this step's update (before it); NaN at step 0"),
    ("heldout_loss", pa.float64(), "held-out loss after the update (eval steps only, else NaN)"),
    ("heldout_acc", pa.float64(), "held-out accuracy after the update (eval steps only, else NaN)"),
    ("rel_distance", pa.float64(), "||theta_arm - theta_base|| / ||theta_base||, all parameters"),
    ("update_cosine", pa.float64(), "cos(theta_arm - theta_0, theta_base - theta_0), all parameters"),
    ("update_ratio", pa.float64(), "||theta_arm - theta_0|| / ||theta_base - theta_0||"),
    ("diverged", pa.bool_(), "the arm stopped: non-finite loss or GO-UP refused non-finite theta - g"),
    ("batch_digest", pa.int64(), "CRC32 of the arm's mini-batch (same in every arm; 0 at step 0)"),
)
COMPARE_CURVES_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COMPARE_CURVES_FIELDS])

COMPARE_LAYERS_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("arm", pa.string(), "arm name"),
    ("mode", pa.string(), "GO-UP mode; null for the base arm"),
    ("seed", pa.int64(), "seed"),
    ("step", pa.int64(), "optimizer updates taken (eval steps only)"),
    ("param", pa.string(), "qualified parameter name"),
    ("numel", pa.int64(), "elements in the tensor"),
    ("rel_distance", pa.float64(), "||theta_arm - theta_base|| / ||theta_base|| for this tensor"),
    ("update_cosine", pa.float64(), "cos of the two arms' cumulative updates of this tensor"),
    ("update_ratio", pa.float64(), "||theta_arm - theta_0|| / ||theta_base - theta_0|| for this tensor"),
)
COMPARE_LAYERS_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COMPARE_LAYERS_FIELDS])

COMPARE_SUMMARY_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("arm", pa.string(), "arm name"),
    ("mode", pa.string(), "GO-UP mode; null for the base arm"),
    ("steps", pa.int64(), "optimizer updates per run"),
    ("n_seeds", pa.int64(), "seeds with finite final metrics (the intervals' n)"),
    ("n_diverged", pa.int64(), "seeds where the arm diverged"),
    ("heldout_acc", pa.float64(), "final held-out accuracy, mean over seeds"),
    ("heldout_acc_lo", pa.float64(), "lower bound of its Student-t interval"),
    ("heldout_acc_hi", pa.float64(), "upper bound"),
    ("heldout_loss", pa.float64(), "final held-out loss, mean over seeds"),
    ("heldout_loss_lo", pa.float64(), "lower bound"),
    ("heldout_loss_hi", pa.float64(), "upper bound"),
    ("acc_gap", pa.float64(), "mean over seeds of (arm - base) final held-out accuracy (paired)"),
    ("acc_gap_lo", pa.float64(), "lower bound of the paired t-interval"),
    ("acc_gap_hi", pa.float64(), "upper bound"),
    ("loss_gap", pa.float64(), "mean over seeds of (arm - base) final held-out loss (paired)"),
    ("loss_gap_lo", pa.float64(), "lower bound"),
    ("loss_gap_hi", pa.float64(), "upper bound"),
    ("rel_distance", pa.float64(), "final relative parameter distance to the base arm, mean over seeds"),
    ("update_cosine", pa.float64(), "final cumulative-update cosine with the base arm, mean over seeds"),
    ("level", pa.float64(), "confidence level of the intervals"),
)
COMPARE_SUMMARY_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COMPARE_SUMMARY_FIELDS])

TABLES = {
    "stats": STATS_SCHEMA,
    "samples": SAMPLES_SCHEMA,
    "trajectories": TRAJECTORY_SCHEMA,
    "tracers": TRACER_SCHEMA,
    COMPARE_CURVES: COMPARE_CURVES_SCHEMA,
    COMPARE_LAYERS: COMPARE_LAYERS_SCHEMA,
    COMPARE_SUMMARY: COMPARE_SUMMARY_SCHEMA,
}
"""Table name (= sub-folder of the run directory) to its Parquet schema."""
