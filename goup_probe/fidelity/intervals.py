"""Mean and Student-t confidence interval over seeds, and the per-arm summary of a comparison."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with a two-sided Student-t confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    level: float

    def clipped(self, lower: float, upper: float) -> Interval:
        """The interval intersected with the range the quantity can take.

        Clipping never lowers coverage (the true value lies in the range), and it
        keeps an accuracy interval from reaching past 1 with few seeds.
        """
        low = self.low if math.isnan(self.low) else min(max(self.low, lower), upper)
        high = self.high if math.isnan(self.high) else min(max(self.high, lower), upper)
        return Interval(self.mean, low, high, self.n, self.level)


def t_interval(values: np.ndarray | pd.Series | list[float], level: float = 0.95) -> Interval:
    """Mean ± t_{(1+level)/2, n−1} · s/√n over the finite values.

    Parameters
    ----------
    values : array-like
        One value per seed; NaNs are dropped (``n`` counts the rest).
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    Interval
        NaN bounds when fewer than two finite values remain (NaN mean when none).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level)
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def summarise(curves: pd.DataFrame, base_arm: str, level: float = 0.95) -> pd.DataFrame:
    """One row per arm: final held-out accuracy and loss over seeds, and the paired gap to the base arm.

    Intervals are clipped to the range of their metric (accuracy to [0, 1], loss
    to [0, ∞), the accuracy gap to [−1, 1]).

    The arms of one seed share initial weights and mini-batches, so the gap is
    taken per seed (arm − base) and its interval is a paired t-interval. Seeds
    where the arm diverged have NaN metrics and are left out (``n_seeds`` counts
    the rest, ``n_diverged`` the others).

    Parameters
    ----------
    curves : DataFrame
        The ``curves`` table of :func:`goup_probe.compare`.
    base_arm : str
        Name of the reference arm.
    level : float
        Confidence level of the intervals.

    Returns
    -------
    DataFrame
        Columns as in :data:`goup_probe.schema.COMPARE_SUMMARY_FIELDS`.
    """
    last_step = curves.groupby(["arm", "seed"])["step"].transform("max")
    final = curves[curves["step"] == last_step].set_index(["arm", "seed"])
    if base_arm not in final.index.get_level_values("arm"):
        raise ValueError(f"base arm {base_arm!r} is not in the curves")
    base = final.loc[base_arm]
    rows = []
    for arm in dict.fromkeys(curves["arm"]):
        sub = final.loc[arm]
        acc = t_interval(sub["heldout_acc"], level).clipped(0.0, 1.0)
        loss = t_interval(sub["heldout_loss"], level).clipped(0.0, math.inf)
        metrics = ["heldout_acc", "heldout_loss"]
        paired = sub[metrics].merge(
            base[metrics], left_index=True, right_index=True, how="inner", suffixes=("", "_base")
        )
        acc_gap = t_interval(paired["heldout_acc"] - paired["heldout_acc_base"], level).clipped(-1.0, 1.0)
        loss_gap = t_interval(paired["heldout_loss"] - paired["heldout_loss_base"], level)
        mode = sub["mode"].iloc[0]
        rows.append(
            {
                "arm": arm,
                "mode": None if pd.isna(mode) else str(mode),
                "steps": int(sub["step"].max()),
                "n_seeds": acc.n,
                "n_diverged": int(sub["diverged"].sum()),
                "heldout_acc": acc.mean,
                "heldout_acc_lo": acc.low,
                "heldout_acc_hi": acc.high,
                "heldout_loss": loss.mean,
                "heldout_loss_lo": loss.low,
                "heldout_loss_hi": loss.high,
                "acc_gap": acc_gap.mean,
                "acc_gap_lo": acc_gap.low,
                "acc_gap_hi": acc_gap.high,
                "loss_gap": loss_gap.mean,
                "loss_gap_lo": loss_gap.low,
                "loss_gap_hi": loss_gap.high,
                "rel_distance": float(np.nanmean(sub["rel_distance"]))
                if sub["rel_distance"].notna().any()
                else math.nan,
                "update_cosine": float(np.nanmean(sub["update_cosine"]))
                if sub["update_cosine"].notna().any()
                else math.nan,
                "level": level,
            }
        )
    return pd.DataFrame(rows)


def summary_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The summary as short display strings: one row per arm, ``mean [low, high]`` cells."""

    def cell(mean: float, low: float, high: float) -> str:
        if not math.isfinite(mean):
            return "nan"
        if not (math.isfinite(low) and math.isfinite(high)):
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    level = round(100 * float(summary["level"].iloc[0])) if len(summary) else 95
    out = pd.DataFrame(
        {
            "arm": summary["arm"],
            "seeds": [
                f"{n}" + (f" ({d} diverged)" if d else "")
                for n, d in zip(summary["n_seeds"], summary["n_diverged"], strict=True)
            ],
            f"held-out acc ({level}% CI)": [
                cell(*r) for r in summary[["heldout_acc", "heldout_acc_lo", "heldout_acc_hi"]].to_numpy()
            ],
            "acc gap vs base": [
                cell(*r) for r in summary[["acc_gap", "acc_gap_lo", "acc_gap_hi"]].to_numpy()
            ],
            "held-out loss": [
                cell(*r) for r in summary[["heldout_loss", "heldout_loss_lo", "heldout_loss_hi"]].to_numpy()
            ],
            "rel. distance": summary["rel_distance"].map(lambda v: f"{v:.3g}"),
            "update cos": summary["update_cosine"].map(lambda v: f"{v:.3f}"),
        }
    )
    return out
