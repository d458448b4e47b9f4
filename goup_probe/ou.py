"""Does an Ornstein-Uhlenbeck model of the parameter dynamics hold? One row per tensor.

The seed writes gradient descent as a discrete OU process,
θ_{t+1} = (1 − k)θ_t + η_t with k = α and η_t = α(θ_t − g_t). For plain SGD that
relation is an identity, so "k = α" is no evidence (DESIGN.md §2). What can be
tested is

1. whether the seed's η_t behaves like an innovation: no autocorrelation over
   time, no correlation with the state θ_t, Gaussian (axis ``"time"``: one tracer
   coordinate over time; axis ``"pooled"``: across coordinates at one step);
2. what OU process the trajectories actually follow: k̂ from regressing θ_{t+1}
   on θ_t, pooled over the tracer coordinates of a tensor (axis ``"panel"``:
   all coordinates over time, one common k, one mean per coordinate) and per
   coordinate (axis ``"time"``), with the residual diagnostics of the fit —
   whiteness, normality, stationarity, constant variance. Near a quadratic
   minimum k̂ ≈ α(h + λ) (curvature h, weight decay λ; Mandt, Hoffman & Blei
   2017), not α.

:func:`validate_ou` reads the ``trajectories`` table the probe writes at every
optimizer step and returns one row per parameter tensor; :data:`OU_FIELDS`
documents each column and its axis (also in ``DataFrame.attrs["axes"]``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from goup_probe import schema, store
from goup_probe.ou_tensor import StepStatistics, coordinate_statistics, step_statistics
from goup_probe.stats import ou as sou
from goup_probe.store import Run, load_run
from goup_probe.threads import map_in_order, usable_cpus
from goup_probe.tracks import Tracks, frame_tracks, read_tracks

AXIS_PANEL = "panel"
"""All tracer coordinates of a tensor over time: one common k, one mean per coordinate."""

OU_TABLE = "ou"
"""Name of the table :func:`validate_ou` writes into the run directory when asked."""

VERDICT_OU_HOLDS = "OU holds"
VERDICT_OU_NOT_SEED = "OU fits; seed's η no innovation"
VERDICT_OU_REJECTED = "OU rejected"
VERDICT_NO_MEAN_REVERSION = sou.VERDICT_NO_MEAN_REVERSION
"""Prefix of ``"no mean reversion detected (k < bound)"``: the pooled interval of k includes 0."""
VERDICT_INSUFFICIENT = "insufficient data"
"""Too few steps (or no moving coordinate) to fit anything."""

OU_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("param", "", "qualified parameter name"),
    ("n_coords", "", "tracer coordinates analysed (constant or non-finite ones dropped)"),
    ("steps", "", "transitions θ_t -> θ_{t+1} recorded (T)"),
    (
        "lr",
        "",
        "learning rate α as the pooled fit weighs each step's own lr: Σ_t α_t Σ_i x_ti² / Σ_t Σ_i x_ti² "
        "(x: θ within-demeaned); α itself when constant",
    ),
    ("lr_min", "", "smallest per-step learning rate over the fitted steps"),
    ("lr_max", "", "largest per-step learning rate over the fitted steps"),
    (
        "eff_step",
        schema.AXIS_POOLED,
        "effective step size: median over the fitted steps of ‖Δθ‖/‖g‖ on the tracer coordinates "
        "(equals lr for plain SGD)",
    ),
    (
        "eff_step_over_lr",
        schema.AXIS_POOLED,
        "median over the fitted steps of (‖Δθ‖/‖g‖) / α_t (1: plain SGD)",
    ),
    ("k_over_eff_step", AXIS_PANEL, "k_pooled / eff_step: the rate against the step the optimizer took"),
    (
        "k_pooled",
        AXIS_PANEL,
        "mean-reversion rate 1 − φ̂ of the pooled within-coordinate AR(1), Nickell-corrected",
    ),
    ("k_pooled_se", AXIS_PANEL, "standard error of k_pooled, clustered by step"),
    ("k_pooled_ci_low", AXIS_PANEL, "lower end of the interval of k_pooled (conf_level, 95%)"),
    ("k_pooled_ci_high", AXIS_PANEL, "upper end of the interval of k_pooled (conf_level, 95%)"),
    ("k_pooled_upper", AXIS_PANEL, "one-sided upper confidence bound of k_pooled (conf_level, 95%)"),
    ("k_pooled_raw", AXIS_PANEL, "uncorrected within estimate of k (biased upwards by Nickell's bias)"),
    ("k_pooled_bias", AXIS_PANEL, "Nickell bias removed: k_pooled_raw − k_pooled (≈ 2/T for large T·k)"),
    ("k_over_lr", AXIS_PANEL, "k_pooled / α (1 would be the seed's k = α; ≈ h + λ near a minimum)"),
    ("half_life_steps", AXIS_PANEL, "ln 2 / k_pooled in steps (compare with steps)"),
    (
        "steps_x_k",
        AXIS_PANEL,
        "T · k_pooled, relaxation times spanned; below min_steps_x_k (100) per-coordinate ADF lacks power",
    ),
    ("sgd_identity_err", schema.AXIS_POOLED, "median over steps of ‖Δθ + αg‖ / ‖Δθ‖ (0: plain SGD)"),
    ("innovation_acf1", schema.AXIS_TIME, "median lag-1 autocorrelation of the seed's η = α(θ − g)"),
    ("innovation_lb_reject", schema.AXIS_TIME, "fraction of coordinates whose η fails Ljung-Box"),
    ("innovation_state_corr", schema.AXIS_TIME, "median corr(η_t, θ_t) over time"),
    ("innovation_normality_reject_time", schema.AXIS_TIME, "fraction of coordinates whose η is non-normal"),
    ("innovation_kurtosis_time", schema.AXIS_TIME, "median excess kurtosis of η over time"),
    ("innovation_normality_reject_pooled", schema.AXIS_POOLED, "fraction of steps whose η is non-normal"),
    ("innovation_kurtosis_pooled", schema.AXIS_POOLED, "median excess kurtosis of η across coordinates"),
    ("k_coord_median", schema.AXIS_TIME, "median per-coordinate AR(1) k̂"),
    ("k_coord_q25", schema.AXIS_TIME, "25th percentile of the per-coordinate k̂"),
    ("k_coord_q75", schema.AXIS_TIME, "75th percentile of the per-coordinate k̂"),
    ("resid_acf1", schema.AXIS_TIME, "median lag-1 autocorrelation of the AR(1) residuals"),
    ("resid_lb_reject", schema.AXIS_TIME, "fraction of coordinates whose residuals fail Ljung-Box"),
    ("resid_normality_reject", schema.AXIS_TIME, "fraction of coordinates with non-normal residuals"),
    ("resid_kurtosis", schema.AXIS_TIME, "median excess kurtosis of the residuals"),
    ("adf_stationary", schema.AXIS_TIME, "fraction of coordinates where ADF rejects a unit root"),
    ("adf_p_median", schema.AXIS_TIME, "median ADF p-value of θ"),
    ("var_unstable", schema.AXIS_TIME, "fraction of coordinates whose residual variance changes"),
    ("var_ratio_median", schema.AXIS_TIME, "median max/min residual variance across windows"),
    (
        "verdict",
        "",
        "OU holds | OU fits; seed's η no innovation | OU rejected | no mean reversion detected (k < bound)"
        " | insufficient data",
    ),
    ("reason", "", "the evidence behind the verdict"),
)
OU_COLUMNS = tuple(name for name, _, _ in OU_FIELDS)
OU_AXES = {name: axis for name, axis, _ in OU_FIELDS if axis}


@dataclass(frozen=True)
class OUThresholds:
    """What turns the diagnostics of one tensor into a verdict.

    Every test runs at level ``alpha`` per coordinate (or per step); a
    diagnostic *fails* when the fraction of rejections exceeds
    ``max_reject_frac`` (under the null it is ``alpha``), and, for normality,
    when the median excess kurtosis also exceeds ``max_abs_excess_kurtosis``
    (with a thousand steps a test detects deviations too small to matter).

    Attributes
    ----------
    alpha : float
        Level of each test.
    max_reject_frac : float
        Largest tolerated fraction of rejecting coordinates or steps.
    max_abs_acf1 : float
        Largest tolerated median |lag-1 autocorrelation| of an innovation.
    max_abs_state_corr : float
        Largest tolerated median |corr(η_t, θ_t)|.
    max_abs_excess_kurtosis : float
        Largest tolerated median |excess kurtosis| of rejected normality.
    min_stationary_frac : float
        Smallest fraction of coordinates in which ADF must reject the unit root.
    min_steps : int
        Fewer transitions than this: "insufficient data", nothing is estimated.
    min_steps_x_k : float
        ``T · k̂`` below this: the run spans too few relaxation times for the
        per-coordinate ADF test to reject a unit root, so its failure to do so
        is reported but does not reject the OU model.
    windows : int
        Windows of the variance-stability test.
    conf_level : float
        Coverage of the interval of ``k_pooled``.
    """

    alpha: float = 0.05
    max_reject_frac: float = 0.25
    max_abs_acf1: float = 0.2
    max_abs_state_corr: float = 0.3
    max_abs_excess_kurtosis: float = 1.0
    min_stationary_frac: float = 0.5
    min_steps: int = 50
    min_steps_x_k: float = 100.0
    windows: int = sou.DEFAULT_WINDOWS
    conf_level: float = 0.95

    def __post_init__(self) -> None:
        for name in ("alpha", "conf_level"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        for name in ("max_reject_frac", "min_stationary_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.min_steps < sou.MIN_TRANSITIONS:
            raise ValueError(f"min_steps must be >= {sou.MIN_TRANSITIONS}, got {self.min_steps}")
        if self.windows < 2:
            raise ValueError(f"windows must be >= 2, got {self.windows}")


DEFAULT_OU_THRESHOLDS = OUThresholds()


def validate_ou(
    run: Run | str | os.PathLike[str] | pd.DataFrame,
    *,
    params: Iterable[str] | None = None,
    thresholds: OUThresholds = DEFAULT_OU_THRESHOLDS,
    min_step: int = 0,
    write: bool = False,
    workers: int | None = None,
) -> pd.DataFrame:
    """Test the OU model of the parameter dynamics, one row per parameter tensor.

    Parameters
    ----------
    run : Run, path or DataFrame
        A loaded run, a run directory, or a ``trajectories`` table (columns
        ``step``, ``param``, ``lr``, ``theta``, ``grad``, ``theta_next``).
    params : iterable of str, optional
        Restrict to these parameter tensors (default: all with trajectories).
    thresholds : OUThresholds
        Levels and effect sizes behind the verdicts.
    min_step : int
        Ignore transitions before this optimizer step (a burn-in: the early
        transient from the initialisation is not stationary).
    write : bool
        Also store the result as the table ``"ou"`` of the run directory
        (replacing an earlier one); needs ``run`` to be a Run or a path.
    workers : int, optional
        Tensors analysed at once, in threads (numpy releases the GIL in the
        fits); default :func:`default_workers`. At most ``workers`` tensors'
        trajectories are held in float64 at a time beyond the batch being read.

    Returns
    -------
    DataFrame
        Columns :data:`OU_COLUMNS`, described in :data:`OU_FIELDS`;
        ``attrs["axes"]`` maps each statistic to its axis (``"panel"``,
        ``"time"`` or ``"pooled"``). ``verdict`` is "insufficient data", with
        the k columns NaN, when fewer than ``thresholds.min_steps`` steps were
        recorded (or no coordinate moves). When the Nickell-corrected pooled
        interval of k includes 0 it is "no mean reversion detected (k < bound)",
        with ``bound`` = ``k_pooled_upper``, unless the residual diagnostics,
        which do not need mean reversion, already reject the OU model (a unit
        root is then the expected finding, not evidence against OU). When
        ``T · k̂ < thresholds.min_steps_x_k`` a failed ADF test is reported but
        not held against OU. Empty when the run has no trajectories (probe
        attached with ``tracers=0``).

    Examples
    --------
    >>> import goup_probe as gp
    >>> table = gp.validate_ou("reports/demo")  # doctest: +SKIP
    >>> table[["param", "k_pooled", "k_over_lr", "verdict"]]  # doctest: +SKIP
    """
    loaded: Run | None = None
    wanted = None if params is None else list(params)
    if isinstance(run, pd.DataFrame):
        groups, largest = frame_tracks(run, wanted, min_step)
    else:
        loaded = run if isinstance(run, Run) else load_run(run)
        if loaded.is_read("trajectories"):  # already in memory: use it
            groups, largest = frame_tracks(loaded.trajectories, wanted, min_step)
        else:
            groups, largest = read_tracks(loaded, wanted, min_step)
    n_workers = default_workers(largest) if workers is None else int(workers)
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rows = list(map_in_order(lambda item: _validate_param(*item, thresholds), groups, n_workers))
    table = pd.DataFrame(rows, columns=list(OU_COLUMNS))
    table.attrs["axes"] = dict(OU_AXES)
    if write:
        if loaded is None:
            raise ValueError("write=True needs a run directory, not a DataFrame")
        store.replace_table(loaded.path, OU_TABLE, table)
    return table


MAX_DEFAULT_WORKERS = 4
"""The most threads :func:`default_workers` proposes."""

FIT_BYTES_PER_VALUE = 64
"""Peak memory one more fitting thread costs per tracer value (a step of one coordinate) of the largest
tensor: its θ, g and θ_{t+1} in float64 (24 B) and the next tensor's, which the reader prepares while
it fits (measured on 20 000 steps × 256 tracers: +275 MB, 54 B a value, from one thread to two). The
fit's own temporaries are blocks of coordinates or of steps (:mod:`goup_probe.ou_tensor`,
:func:`goup_probe.stats.ou.pooled_ar1`)."""

PARALLEL_FIT_BUDGET = 512 * 2**20
"""Bytes the concurrent fits of :func:`validate_ou` may hold together: it runs as many threads as
fits of its largest tensor fit in this, and at least one (5000 steps × 256 tracers: 82 MB each;
20 000 steps: 328 MB, one thread), so threads buy time without multiplying the peak memory of long
runs (two threads on 20 000 steps: 47 -> 42 s, 574 -> 849 MB)."""


def default_workers(largest_values: int = 0) -> int:
    """Threads :func:`validate_ou` uses by default.

    Parameters
    ----------
    largest_values : int
        Tracer values (steps × tracers) of the largest tensor to fit.

    Returns
    -------
    int
        The CPUs this process may use, at most :data:`MAX_DEFAULT_WORKERS` and
        at most as many fits of ``largest_values`` as :data:`PARALLEL_FIT_BUDGET`
        holds (at least 1).
    """
    cpus = usable_cpus()
    fits = PARALLEL_FIT_BUDGET // max(1, int(largest_values) * FIT_BYTES_PER_VALUE)
    return max(1, min(MAX_DEFAULT_WORKERS, cpus, fits))


def verdict_kind(verdict: str) -> str:
    """A verdict without its tensor-specific bound, for counting: ``"no mean reversion detected (k < …)"``."""
    if isinstance(verdict, str) and verdict.startswith(VERDICT_NO_MEAN_REVERSION):
        return f"{VERDICT_NO_MEAN_REVERSION} (k < bound)"
    return verdict


SUMMARY_COLUMNS: dict[str, str] = {
    "param": "param",
    "n_coords": "coords",
    "k_pooled": "k_hat",
    "k_pooled_ci_low": "ci_low",
    "k_pooled_ci_high": "ci_high",
    "k_over_lr": "k/lr",
    "k_over_eff_step": "k/eff_step",
    "half_life_steps": "half_life",
    "steps_x_k": "T*k",
    "innovation_acf1": "eta_acf1",
    "innovation_lb_reject": "eta_lb_rej",
    "innovation_state_corr": "corr_eta_th",
    "resid_lb_reject": "res_lb_rej",
    "resid_normality_reject": "res_nrm_rej",
    "resid_kurtosis": "res_kurt",
    "adf_stationary": "adf_rej",
    "var_unstable": "var_rej",
    "verdict": "verdict",
}
"""Columns of :func:`ou_summary` (the CLI table): source column -> short header."""


def ou_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The columns of a :func:`validate_ou` table that fit a terminal, with short headers.

    ``k_hat``/``ci_low``/``ci_high``/``k/lr``/``half_life``/``T*k`` are on the
    panel axis; ``eta_*``, ``corr_eta_th``, ``res_*``, ``adf_stat`` (share of
    coordinates where ADF rejects a unit root) and ``var_rej`` on the time axis,
    as fractions of coordinates or medians over them.
    """
    return table[list(SUMMARY_COLUMNS)].rename(columns=SUMMARY_COLUMNS)


# ----------------------------------------------------------------------------- one tensor


def _nanmedian(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def _validate_param(param: str, tracks: Tracks, th: OUThresholds) -> dict[str, object]:
    steps, lr_steps = tracks.steps, tracks.lr
    theta, grad, theta_next = tracks.theta, tracks.grad, tracks.theta_next
    out: dict[str, object] = dict.fromkeys(OU_COLUMNS, float("nan"))
    out["param"] = param
    out["steps"] = len(steps)
    finite_lr = lr_steps[np.isfinite(lr_steps)]
    out["lr"] = float(np.median(finite_lr)) if finite_lr.size else float("nan")  # until the fit weighs them
    n_steps = len(steps)
    lr_col = np.where(np.isfinite(lr_steps), lr_steps, 1.0)[:, None]
    coords = coordinate_statistics(
        theta, grad, theta_next, lr_col, windows=th.windows, analyse=n_steps >= th.min_steps
    )
    moving = coords.moving
    out["n_coords"] = int(moving.sum())
    if n_steps < th.min_steps or not moving.any():
        why = (
            f"only {n_steps} steps recorded; need >= {th.min_steps}"
            if n_steps < th.min_steps
            else "no tracer coordinate is finite and moving"
        )
        out.update(verdict=VERDICT_INSUFFICIENT, reason=why)
        return out
    pooled = sou.pooled_ar1(theta, theta_next, conf_level=th.conf_level, series=moving)
    per_step = step_statistics(theta, grad, theta_next, lr_col, moving)
    out.update(_fitted_summary(pooled, coords.values, th))
    out.update(_innovation_summary(coords.values, per_step, th))
    out["sgd_identity_err"] = _sgd_identity_err(per_step)
    out.update(step_sizes(per_step, lr_steps))
    k = out["k_pooled"]
    out["k_over_lr"] = k / out["lr"] if math.isfinite(out["lr"]) and out["lr"] > 0 else float("nan")
    eff = out["eff_step"]
    out["k_over_eff_step"] = k / eff if math.isfinite(eff) and eff > 0 else float("nan")
    out["half_life_steps"] = math.log(2) / k if k > 0 else math.inf
    out["steps_x_k"] = n_steps * k
    contiguous = bool(np.all(np.diff(steps) == 1))
    out["verdict"], out["reason"] = _verdict(out, th, contiguous, pooled.verdict)
    return out


def _fitted_summary(pooled: sou.PooledAR1, c: dict[str, np.ndarray], th: OUThresholds) -> dict[str, float]:
    """The pooled AR(1) fit, and the per-coordinate fits and residual diagnostics summarised."""
    k_coord = c["k"][np.isfinite(c["k"])]
    q25, q50, q75 = np.percentile(k_coord, [25, 50, 75]) if k_coord.size else (np.nan,) * 3
    return {
        "k_pooled": pooled.k,
        "k_pooled_se": pooled.k_se,
        "k_pooled_ci_low": pooled.k_ci[0],
        "k_pooled_ci_high": pooled.k_ci[1],
        "k_pooled_upper": pooled.k_upper,
        "k_pooled_raw": pooled.k_raw,
        "k_pooled_bias": pooled.bias,
        "k_coord_median": float(q50),
        "k_coord_q25": float(q25),
        "k_coord_q75": float(q75),
        "resid_acf1": _nanmedian(c["resid_acf1"]),
        "resid_lb_reject": sou.rejection_fraction(c["resid_lb_p"], th.alpha),
        "resid_normality_reject": sou.rejection_fraction(c["resid_norm_p"], th.alpha),
        "resid_kurtosis": _nanmedian(c["resid_kurt"]),
        "adf_stationary": sou.rejection_fraction(c["adf_p"], th.alpha),
        "adf_p_median": _nanmedian(c["adf_p"]),
        "var_unstable": sou.rejection_fraction(c["bf_p"], th.alpha),
        "var_ratio_median": _nanmedian(c["var_ratio"]),
    }


def _innovation_summary(
    c: dict[str, np.ndarray], per_step: StepStatistics, th: OUThresholds
) -> dict[str, float]:
    """The seed's η = α(θ − g) as an innovation: over time per coordinate, and across coordinates per step."""
    return {
        "innovation_acf1": _nanmedian(c["eta_acf1"]),
        "innovation_lb_reject": sou.rejection_fraction(c["eta_lb_p"], th.alpha),
        "innovation_state_corr": _nanmedian(c["eta_state_corr"]),
        "innovation_normality_reject_time": sou.rejection_fraction(c["eta_norm_p"], th.alpha),
        "innovation_kurtosis_time": _nanmedian(c["eta_kurt"]),
        "innovation_normality_reject_pooled": sou.rejection_fraction(per_step.eta_norm_p, th.alpha),
        "innovation_kurtosis_pooled": _nanmedian(per_step.eta_kurt),
    }


def step_sizes(per_step: StepStatistics, lr_steps: np.ndarray) -> dict[str, float]:
    """Each step's own learning rate as the pooled fit weighs it, and the effective step size.

    Parameters
    ----------
    per_step : StepStatistics
        The tensor's per-step statistics on the fitted coordinates
        (:func:`goup_probe.ou_tensor.step_statistics`).
    lr_steps : ndarray, shape (T,)
        The tensor's learning rate at each step (its param group's, schedules included).

    Returns
    -------
    dict
        ``lr`` = Σ_t α_t w_t / Σ_t w_t with w_t = Σ_i (θ_ti − θ̄_i)², the weight
        step t has in the pooled within-coordinate AR(1) (so that, when
        k_t = α_t h, k̂/lr estimates h; α itself when constant); ``lr_min`` and
        ``lr_max``; ``eff_step``, the median over steps of ‖Δθ_t‖/‖g_t‖, and
        ``eff_step_over_lr``, the median of (‖Δθ_t‖/‖g_t‖)/α_t. NaN where undefined.
    """
    nan = float("nan")
    out = dict.fromkeys(("lr", "lr_min", "lr_max", "eff_step", "eff_step_over_lr"), nan)
    lr_steps = np.asarray(lr_steps, dtype=np.float64)
    ok = np.isfinite(lr_steps)
    if ok.any():
        out["lr_min"], out["lr_max"] = float(lr_steps[ok].min()), float(lr_steps[ok].max())
        weights = per_step.spread
        use = ok & np.isfinite(weights)
        total = weights[use].sum()
        if out["lr_min"] == out["lr_max"] or not total > 0:  # a constant lr is itself, not a rounded mean
            out["lr"] = out["lr_min"] if out["lr_min"] == out["lr_max"] else _nanmedian(lr_steps)
        else:
            out["lr"] = float((lr_steps[use] * weights[use]).sum() / total)
    g_norm, moved = per_step.grad_norm, per_step.moved
    has_grad = g_norm > 0
    if has_grad.any():
        ratio = moved[has_grad] / g_norm[has_grad]
        out["eff_step"] = _nanmedian(ratio)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["eff_step_over_lr"] = _nanmedian(ratio / lr_steps[has_grad])
    return out


def _sgd_identity_err(per_step: StepStatistics) -> float:
    """Median over steps of ‖Δθ + αg‖ / ‖Δθ‖ on the tracers: 0 when the step is plain SGD."""
    size = per_step.moved
    moved = size > 0
    return _nanmedian(per_step.sgd_gap[moved] / size[moved]) if moved.any() else float("nan")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _verdict(row: dict, th: OUThresholds, contiguous: bool, pooled_verdict: str) -> tuple[str, str]:
    """OU rejected / no mean reversion detected / OU fits, seed's η no innovation / OU holds; and why."""
    fitted = _fitted_failures(row, th)
    seed = _seed_failures(row, th)
    notes = [] if contiguous else ["steps not contiguous: time-series diagnostics span the gaps"]
    stationarity = []
    if not row["adf_stationary"] >= th.min_stationary_frac:
        stationarity.append(
            f"non-stationary (ADF rejects a unit root in only {_pct(row['adf_stationary'])} of coordinates)"
        )
    if not pooled_verdict:  # the pooled fit failed (no varying coordinate left)
        return VERDICT_INSUFFICIENT, "; ".join(["the pooled AR(1) could not be fitted", *notes])
    if pooled_verdict != sou.VERDICT_MEAN_REVERSION:
        # Without mean reversion inside the run, a unit root is the expected finding, not
        # evidence against OU; the other residual diagnostics stay valid and can still reject.
        head = (
            f"pooled k̂ = {row['k_pooled']:.3g} (Nickell bias {row['k_pooled_bias']:.2g} removed), "
            f"interval [{row['k_pooled_ci_low']:.3g}, {row['k_pooled_ci_high']:.3g}] includes 0 "
            f"within {row['steps']} steps"
        )
        verdict = VERDICT_OU_REJECTED if fitted else pooled_verdict
        return verdict, "; ".join([head, *fitted, *stationarity, *seed, *notes])
    if row["steps_x_k"] < th.min_steps_x_k and stationarity:
        # Mean reversion is detected in the pool, but each coordinate spans too few
        # relaxation times for its own ADF test to have power: no evidence against OU.
        stationarity = [
            f"{stationarity[0]}, not held against OU: T·k̂ = {row['steps_x_k']:.3g} < "
            f"{th.min_steps_x_k:g} relaxation times (half-life {row['half_life_steps']:.3g} steps)"
        ]
        notes = stationarity + notes
        stationarity = []
    fitted += stationarity
    if fitted:
        return VERDICT_OU_REJECTED, "; ".join([*fitted, *seed, *notes])
    if seed:
        return VERDICT_OU_NOT_SEED, "; ".join(["fitted OU passes its diagnostics", *seed, *notes])
    return VERDICT_OU_HOLDS, "; ".join(["fitted OU passes; η is white, state-independent, Gaussian", *notes])


def _fitted_failures(row: dict, th: OUThresholds) -> list[str]:
    """Residual diagnostics of the fitted AR(1) that fail (stationarity is judged separately)."""
    out = []
    if row["resid_lb_reject"] > th.max_reject_frac:
        out.append(
            f"residuals autocorrelated (Ljung-Box rejects in {_pct(row['resid_lb_reject'])}, "
            f"median acf1 {row['resid_acf1']:.2g})"
        )
    if (
        row["resid_normality_reject"] > th.max_reject_frac
        and abs(row["resid_kurtosis"]) > th.max_abs_excess_kurtosis
    ):
        out.append(
            f"residuals non-Gaussian ({_pct(row['resid_normality_reject'])} reject, "
            f"median excess kurtosis {row['resid_kurtosis']:.2g})"
        )
    if row["var_unstable"] > th.max_reject_frac:
        out.append(
            f"innovation variance drifts (Brown-Forsythe rejects in {_pct(row['var_unstable'])}, "
            f"median max/min {row['var_ratio_median']:.3g})"
        )
    return out


def _seed_failures(row: dict, th: OUThresholds) -> list[str]:
    """Ways in which the seed's η = α(θ − g) is not an innovation."""
    out = []
    acf1, corr = row["innovation_acf1"], row["innovation_state_corr"]
    if abs(acf1) > th.max_abs_acf1 or row["innovation_lb_reject"] > th.max_reject_frac:
        out.append(
            f"seed's η autocorrelated (acf1 {acf1:.2g}, "
            f"Ljung-Box rejects {_pct(row['innovation_lb_reject'])})"
        )
    if abs(corr) > th.max_abs_state_corr:
        out.append(f"η tracks θ (corr {corr:.2g})")
    if (
        row["innovation_normality_reject_pooled"] > th.max_reject_frac
        and abs(row["innovation_kurtosis_pooled"]) > th.max_abs_excess_kurtosis
    ):
        out.append(
            f"η non-Gaussian across coordinates ({_pct(row['innovation_normality_reject_pooled'])} of steps)"
        )
    if not out and row["innovation_normality_reject_time"] > th.max_reject_frac:
        # Only meaningful when η is not autocorrelated (the test assumes i.i.d. values).
        out.append(
            f"η non-Gaussian over time ({_pct(row['innovation_normality_reject_time'])} of coordinates)"
        )
    return out
