"""Column names and Parquet schemas of a run directory, in one place.

Every table the toolkit writes is declared here; the store, the analyses and the
report refer to these names instead of repeating string literals. The columns of
the ``stats`` table's statistics are declared with the statistics themselves
(:mod:`goup_probe.stats.battery`) and derived here: :func:`stats_schema`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from goup_probe.stats.battery import Statistic

SCHEMA_VERSION = 1
"""Version of the on-disk layout; bumped whenever a column changes meaning."""

# Quantities recorded per captured step and parameter tensor.
THETA_MINUS_GRAD = "theta_minus_grad"
THETA = "theta"
GRAD = "grad"
UPDATE = "update"
QUANTITIES = (THETA_MINUS_GRAD, THETA, GRAD, UPDATE)
GRAD_NOISE = "grad_noise"
"""Opt-in quantity: ξ_i = g_i − mean_j g_j of each micro-batch i of a step with gradient accumulation."""

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
STATUS_OVERFLOW = "overflow"
"""Finite values whose moments could not be computed (power sums beyond float64's range): no verdict."""
TESTED_STATUSES = (STATUS_OK, STATUS_NONFINITE_EXCLUDED)

# Verdicts.
VERDICT_GAUSSIAN = "Gaussian"
"""Not rejected, and closeness shown (upper bounds of the distances within their margins)."""
VERDICT_CLOSE = "close to Gaussian"
"""Rejected, but the upper bounds of the distances are within their margins."""
VERDICT_NON_GAUSSIAN = "non-Gaussian"
VERDICT_INCONCLUSIVE = "inconclusive"
"""Not rejected, but closeness not shown (too few values or too uncertain for 'Gaussian')."""
VERDICT_NOT_TESTED = "not tested"

# Shapes of a tested row that is not Gaussian (comma-joined when several apply; "" otherwise).
SHAPE_HEAVY_TAILED = "heavy-tailed"
SHAPE_LIGHT_TAILED = "light-tailed"
SHAPE_SKEWED = "skewed"
SHAPE_DISCRETE = "discrete"
"""At most max_distinct_share x n distinct values among the tested ones (a coarse lattice)."""
SHAPE_OTHER = "other"
"""Rejected, but no tail, asymmetry or lattice is significant."""
SHAPE_NONE = "none detected"
"""Not rejected and no deviation significant (an inconclusive row)."""

Field = tuple[str, pa.DataType, str]
"""A column: name, Arrow type, one-line description (the glossary's)."""

STATS_BASE_FIELDS: tuple[Field, ...] = (
    ("step", pa.int64(), "optimizer step index (0 = first step), counted by the probe"),
    ("param", pa.string(), "qualified parameter name, e.g. 'layer1.0.conv1.weight'"),
    ("quantity", pa.string(), "theta_minus_grad | theta | grad | update, or a user quantity's name"),
    ("axis", pa.string(), "'pooled': across one tensor's coordinates at one step"),
    ("micro_batch", pa.int64(), "micro-batch index within the step (backward-phase quantities), else null"),
    ("global_step", pa.int64(), "the training framework's own step (begin_step(global_step=...)), else null"),
    ("lr", pa.float64(), "learning rate of the parameter's param group at that step"),
    ("status", pa.string(), "ok, or why the row holds no statistics"),
    ("reason", pa.string(), "human-readable detail for a non-ok status"),
    ("numel", pa.int64(), "elements in the tensor"),
    ("n_tested", pa.int64(), "size of the seeded subsample the tests ran on"),
    ("nonfinite", pa.int64(), "NaN/Inf count in the whole tensor"),
    ("mean", pa.float64(), "mean over the whole tensor (finite values)"),
    ("std", pa.float64(), "population std over the whole tensor"),
    ("skew", pa.float64(), "skewness over the whole tensor"),
    (
        "skew_se",
        pa.float64(),
        "standard error of skewness valid for the data: delta method, moments to order 6 from the subsample",
    ),
    (
        "skew_se_null",
        pa.float64(),
        "null-only standard error of skewness, sqrt(6/n): valid for normal data only",
    ),
    ("excess_kurtosis", pa.float64(), "excess kurtosis over the whole tensor"),
    (
        "kurtosis_se",
        pa.float64(),
        "standard error of excess kurtosis valid for the data: delta method, moments to order 8 "
        "from the subsample",
    ),
    (
        "kurtosis_se_null",
        pa.float64(),
        "null-only standard error of excess kurtosis, sqrt(24/n): valid for normal data only",
    ),
    ("min", pa.float64(), "minimum over the whole tensor"),
    ("max", pa.float64(), "maximum over the whole tensor"),
    ("param_norm", pa.float64(), "L2 norm of theta at this step"),
    ("grad_norm", pa.float64(), "L2 norm of the gradient at this step"),
    ("grad_to_param", pa.float64(), "grad_norm / param_norm"),
)
"""Columns of a stats row before its statistics: identity, status, moments, norms."""
STATS_VERDICT_FIELDS: tuple[Field, ...] = (
    ("verdict", pa.string(), "Gaussian | close to Gaussian | non-Gaussian | inconclusive | not tested"),
    (
        "shape",
        pa.string(),
        "of a tested row that is not Gaussian: heavy-tailed, light-tailed, skewed, discrete (comma-joined), "
        "other or none detected; empty otherwise",
    ),
)
STATS_DERIVED_FIELDS: tuple[Field, ...] = (
    (
        "q_value",
        pa.float64(),
        "Benjamini-Hochberg q-value of shapiro_p across the tensors of one step and quantity "
        "(added when the stats are read: goup_probe.stats.multiplicity.add_q_values)",
    ),
)
"""Columns computed from a whole step's rows when the stats table is read, never stored."""
STATS_SHADOW_FIELDS: tuple[Field, ...] = (
    ("noise_to_signal", pa.float64(), "GO-UP shadow: sigma*sqrt(N)/||g||"),
    ("goup_cosine", pa.float64(), "GO-UP shadow: cos(actual update, GO-UP mean update)"),
    (
        "goup_fit_p",
        pa.float64(),
        "GO-UP shadow: p of the update being a draw from GO-UP's N(-alpha g, alpha^2 sigma^2 I) "
        "(two-sided chi2 of the scaled norm and Shapiro-Wilk of the scaled coordinates, Bonferroni)",
    ),
)
REQUIRED_COLUMNS: dict[str, frozenset[str]] = {"stats": frozenset({"step", "param", "quantity", "status"})}
"""Per table whose columns grow between versions, the columns every part must hold.

Every other declared column of such a table may be missing from a part an older
version wrote (a statistic added later, ``shape``, ``goup_fit_p`` which replaced
``goup_w2_rel``): it is read as null (NaN), so a run stays readable after an
upgrade. Columns of old parts that are no longer declared are read as extra
columns. Tables not listed here need every declared column.
"""


def optional_columns(table: str, declared: pa.Schema) -> frozenset[str]:
    """Declared columns of ``table`` that an older part may lack (read as null).

    Parameters
    ----------
    table : str
        Table name (``"stats"``, ``"samples"``, ...).
    declared : pyarrow.Schema
        The table's declared schema for this run (user statistics included).

    Returns
    -------
    frozenset of str
        ``declared``'s names except :data:`REQUIRED_COLUMNS` for tables listed
        there; empty for the others.
    """
    required = REQUIRED_COLUMNS.get(table)
    return frozenset() if required is None else frozenset(declared.names) - required


def stats_fields(statistics: Sequence[Statistic] = ()) -> tuple[Field, ...]:
    """Columns of the stats table, derived from the declared statistics.

    In order: :data:`STATS_BASE_FIELDS`, the columns of the built-in statistics
    (:data:`goup_probe.stats.battery.BUILTIN_STATISTICS`), the verdict, the
    GO-UP shadow columns, then the columns of ``statistics`` (float64 each).

    Parameters
    ----------
    statistics : sequence of Statistic
        User statistics beyond the built-in battery.

    Raises
    ------
    ValueError
        If two statistics share a name or a column, or a statistic is built in.
    """
    # here, not at import: keeps `import goup_probe.schema` free of scipy
    from goup_probe.stats import battery
    from goup_probe.stats.user_statistics import check_statistics

    def declared(items: Sequence[Statistic]) -> tuple[Field, ...]:
        return tuple(
            (c, pa.string() if c in battery.TEXT_COLUMNS else pa.float64(), doc)
            for s in items
            for c, doc in s.columns.items()
        )

    fields = (
        *STATS_BASE_FIELDS,
        *declared(battery.BUILTIN_STATISTICS),
        *STATS_VERDICT_FIELDS,
        *STATS_SHADOW_FIELDS,
        *declared(check_statistics(statistics)),
    )
    names = [name for name, _, _ in fields]
    if len(set(names)) != len(names):  # Statistic already refuses built-in names: a safety net
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"stats columns declared twice: {twice}")
    return fields


def stats_schema(statistics: Sequence[Statistic] = ()) -> pa.Schema:
    """Parquet schema of the stats table with the columns of ``statistics`` (see :func:`stats_fields`)."""
    return pa.schema([pa.field(name, dtype) for name, dtype, _ in stats_fields(statistics)])


_LAZY = frozenset({"STATS_FIELDS", "STATS_SCHEMA", "STATS_COLUMNS", "TABLES"})


def __getattr__(name: str) -> object:
    """``STATS_FIELDS``, ``STATS_SCHEMA``, ``STATS_COLUMNS`` and ``TABLES``, built on first use.

    They derive from the built-in statistics of :mod:`goup_probe.stats.battery`
    (which imports scipy), so they are computed when first read and then kept
    as ordinary module attributes.
    """
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    fields = stats_fields()
    stats = pa.schema([pa.field(n, dtype) for n, dtype, _ in fields])
    globals().update(
        STATS_FIELDS=fields,
        STATS_SCHEMA=stats,
        STATS_COLUMNS=tuple(n for n, _, _ in fields),
        TABLES={"stats": stats, **_OTHER_TABLES},
    )
    return globals()[name]


STATS_FIELDS: tuple[Field, ...]
"""Columns of the stats table without user statistics: ``stats_fields()`` (built on first use)."""
STATS_SCHEMA: pa.Schema
"""``stats_schema()``: the stats table's schema without user statistics."""
STATS_COLUMNS: tuple[str, ...]
"""Names of :data:`STATS_FIELDS`, in order."""

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

NOISE = "noise"
NOISE_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("step", pa.int64(), "optimizer step index"),
    ("global_step", pa.int64(), "the training framework's own step, else null"),
    ("param", pa.string(), "qualified parameter name"),
    ("n_micro", pa.int64(), "micro-batches accumulated into the step (k >= 2)"),
    ("numel", pa.int64(), "elements in the tensor"),
    (
        "noise_var",
        pa.float64(),
        "across-micro-batch variance of g_i = k * (micro-batch i's contribution), mean over coordinates: "
        "sum_i |g_i - mean g|^2 / ((k - 1) numel)",
    ),
    (
        "trace_sigma",
        pa.float64(),
        "tr of the covariance of one micro-batch's gradient (unbiased; = per-sample tr Σ / B_micro)",
    ),
    (
        "grad_sq_norm",
        pa.float64(),
        "|G|^2, the true gradient's squared norm (unbiased, McCandlish et al. App. A)",
    ),
    (
        "b_simple",
        pa.float64(),
        "trace_sigma / grad_sq_norm: the noise scale in micro-batches (x B_micro for samples)",
    ),
    (
        "b_simple_low",
        pa.float64(),
        "jackknife interval of b_simple over the micro-batches (k >= 3), else null",
    ),
    ("b_simple_high", pa.float64(), "upper end of that interval"),
    (
        "tail_alpha",
        pa.float64(),
        "Mohammadi tail index of the pooled subsample of ξ over the k micro-batches",
    ),
    ("tail_low", pa.float64(), "lower end of its 95% interval"),
    ("tail_high", pa.float64(), "upper end of its 95% interval"),
    ("tail_n", pa.int64(), "values the tail index used"),
)
"""Per (step, param) summary of the in-run micro-batch gradient noise (quantity ``grad_noise``)."""
NOISE_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in NOISE_FIELDS])

NOISE_PROBE = "noise_probe"
MODEL_ROW = "<model>"
"""``param`` of the rows about all the selected tensors together (noise scale, whole-model curvature)."""
NOISE_PROBE_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("step", pa.int64(), "optimizer step index (the noise is measured at θ_step, before the update)"),
    ("global_step", pa.int64(), "the training framework's own step, else null"),
    ("param", pa.string(), "qualified parameter name, or '<model>' for the selected tensors together"),
    ("status", pa.string(), "ok | error (the measurement raised; the error column says why)"),
    ("error", pa.string(), "the exception of a failed measurement, else null"),
    ("per_sample", pa.bool_(), "units are single samples (torch.func) rather than mini-batches"),
    ("method", pa.string(), "vmap | loop (per-sample fallback) | micro-batch"),
    ("unit_size", pa.int64(), "samples per unit (B_small of the noise scale)"),
    ("n_units", pa.int64(), "units (batches or samples) the noise is measured over"),
    ("numel", pa.int64(), "elements in the tensor (all selected tensors on '<model>' rows)"),
    ("pooled_verdict", pa.string(), "verdict of the noise ξ = g_unit − ḡ pooled over coordinates and units"),
    ("pooled_excess_kurtosis", pa.float64(), "excess kurtosis of that pooled noise"),
    ("coordinates_tested", pa.int64(), "coordinates tested one at a time across units"),
    ("coordinate_reject_rate", pa.float64(), "share of them whose Shapiro-Wilk test rejects at 0.05"),
    ("tail_alpha", pa.float64(), "tail index of the pooled noise (Mohammadi, or Hill)"),
    ("tail_low", pa.float64(), "lower end of its 95% interval"),
    ("tail_high", pa.float64(), "upper end of its 95% interval"),
    ("tail_n", pa.int64(), "values the tail index used"),
    ("b_simple", pa.float64(), "tr Σ / |G|² in samples (McCandlish et al. App. A, B_small = unit_size)"),
    ("b_simple_low", pa.float64(), "lower end of its jackknife interval"),
    ("b_simple_high", pa.float64(), "upper end of its jackknife interval"),
    ("trace_sigma", pa.float64(), "tr Σ, the per-sample gradient covariance's trace (unbiased)"),
    ("grad_sq_norm", pa.float64(), "|G|², the squared norm of the gradient of all the data (unbiased)"),
    (
        "curv_top",
        pa.float64(),
        "largest Hessian eigenvalue of the tensor's diagonal block (whole Hessian on '<model>')",
    ),
    ("curv_top_residual", pa.float64(), "Lanczos residual bound of curv_top"),
    ("curv_trace", pa.float64(), "Hutchinson trace of that Hessian block"),
    ("curv_trace_se", pa.float64(), "standard error of curv_trace"),
    ("curv_hvps", pa.int64(), "Hessian-vector products the step's curvature used ('<model>' rows)"),
    ("weight_decay", pa.float64(), "weight_decay of the tensor's optimizer param group (0 without one)"),
    ("seconds", pa.float64(), "wall seconds of the step's whole measurement (the same on each of its rows)"),
)
"""Per (step, param, unit_size) rows of :class:`goup_probe.NoiseProbe`: gradient noise and curvature at θ."""
NOISE_PROBE_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in NOISE_PROBE_FIELDS])

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

_OTHER_TABLES = {
    "samples": SAMPLES_SCHEMA,
    "trajectories": TRAJECTORY_SCHEMA,
    "tracers": TRACER_SCHEMA,
    NOISE: NOISE_SCHEMA,
    NOISE_PROBE: NOISE_PROBE_SCHEMA,
    COMPARE_CURVES: COMPARE_CURVES_SCHEMA,
    COMPARE_LAYERS: COMPARE_LAYERS_SCHEMA,
    COMPARE_SUMMARY: COMPARE_SUMMARY_SCHEMA,
}
"""Every table but ``stats`` (whose schema derives from the declared statistics)."""

TABLES: dict[str, pa.Schema]
"""Table name (= sub-folder of the run directory) to its Parquet schema (built on first use)."""
