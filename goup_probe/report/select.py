"""Which captured steps and which parameter tensors get detailed figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.plots.tables import param_order
from goup_probe.rows import quantity_rows

MIN_RANKED_N = 100
"""Tensors tested on fewer values are ranked only when too few larger ones exist (low power)."""


def choose_steps(steps: Sequence[int], n: int = 3) -> list[int]:
    """``n`` captured steps spread evenly from the first to the last (first, middle, last for n = 3).

    Parameters
    ----------
    steps : sequence of int
        Captured steps, in any order, possibly repeated.
    n : int
        How many to pick (fewer when fewer steps exist).

    Returns
    -------
    list of int
        Sorted, distinct steps.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    unique = sorted({int(s) for s in steps})
    if len(unique) <= n:
        return unique
    if n == 1:
        return [unique[-1]]
    picks = np.round(np.linspace(0, len(unique) - 1, n)).astype(int)
    return sorted({unique[i] for i in picks})


@dataclass(frozen=True)
class LayerSelection:
    """Tensors that get per-layer detail, and why."""

    most_gaussian: tuple[str, ...]
    least_gaussian: tuple[str, ...]
    explicit: tuple[str, ...]
    all_layers: bool
    note: str

    @property
    def params(self) -> list[str]:
        """Selected tensors in display order (explicit, least Gaussian, most Gaussian)."""
        return list(dict.fromkeys(self.explicit + self.least_gaussian + self.most_gaussian))


def gaussianity_score(stats: pd.DataFrame, quantity: str = schema.THETA_MINUS_GRAD) -> pd.DataFrame:
    """Per tensor: median over captured steps of the effect size 1 − qq_r, and median n tested.

    Returns
    -------
    DataFrame
        Columns ``param``, ``score`` (median 1 − qq_r; small = close to normal),
        ``n_tested`` (median), in model order.
    """
    rows = quantity_rows(stats, quantity, ["param", "qq_r", "n_tested"], tested=True)
    if rows.empty:
        return pd.DataFrame(columns=["param", "score", "n_tested"])
    frame = pd.DataFrame(
        {
            "param": rows["param"].astype(str),
            "score": 1.0 - rows["qq_r"].astype(np.float64),
            "n_tested": rows["n_tested"].astype(np.float64),
        }
    )
    agg = frame.groupby("param", sort=False).median()
    return agg.reindex(param_order(frame)).reset_index()


def _requested_layers(layers: Sequence[str], known: Sequence[str]) -> list[str]:
    """``layers`` as distinct names, all of them tensors of the run; else an error naming the others."""
    if isinstance(layers, str) or not all(isinstance(p, str) for p in layers):
        raise TypeError(f"layers must be a sequence of parameter names (str), got {layers!r}")
    wanted = list(dict.fromkeys(layers))
    known_set = set(known)
    unknown = [p for p in wanted if p not in known_set]
    if unknown:
        shown = ", ".join(known[:5]) + (f", ... ({len(known)} in all)" if len(known) > 5 else "")
        raise ValueError(
            f"layers: {len(unknown)} name(s) not among the run's tensors: {', '.join(map(repr, unknown))}; "
            f"the run has {shown or 'no tensors'}"
        )
    return wanted


def choose_layers(
    stats: pd.DataFrame,
    *,
    per_side: int = 3,
    layers: Sequence[str] | None = None,
    quantity: str = schema.THETA_MINUS_GRAD,
) -> LayerSelection:
    """Pick the tensors that get histograms and QQ plots.

    With ``layers`` given, exactly those (that exist in the run). Otherwise, if the
    run has at most ``2 * per_side`` tensors, all of them; else the ``per_side``
    most and ``per_side`` least Gaussian by the median effect size 1 − qq_r over
    captured steps. Tensors tested on fewer than :data:`MIN_RANKED_N` values are
    ranked only when fewer than ``2 * per_side`` larger tensors exist, because on a
    handful of values "Gaussian" means little more than "too few values to tell".

    Parameters
    ----------
    stats : DataFrame
        ``run.stats``.
    per_side : int
        Tensors from each end of the ranking.
    layers : sequence of str, optional
        Explicit choice, in this order.
    quantity : str
        Quantity the ranking uses (default X = θ − g).

    Returns
    -------
    LayerSelection

    Raises
    ------
    ValueError
        If ``per_side`` is negative, or a name in ``layers`` is not a tensor of the
        run (the message names it and some that are).
    TypeError
        If ``layers`` is a single string or holds anything but strings.
    """
    if per_side < 0:
        raise ValueError(f"per_side must be >= 0, got {per_side}")
    rows = stats[stats["quantity"] == quantity]
    everything = param_order(rows)
    if layers is not None:
        wanted = _requested_layers(layers, everything)
        return LayerSelection((), (), tuple(wanted), False, f"{len(wanted)} tensor(s) chosen by the caller")
    if len(everything) <= 2 * per_side:
        return LayerSelection((), (), tuple(everything), True, f"all {len(everything)} tensors")
    scores = gaussianity_score(stats, quantity).dropna(subset=["score"])
    big = scores[scores["n_tested"] >= MIN_RANKED_N]
    pool = big if len(big) >= 2 * per_side else scores
    ranked = pool.sort_values("score", kind="stable")
    most = tuple(ranked["param"].head(per_side))
    least = tuple(p for p in ranked["param"].iloc[::-1].head(per_side) if p not in most)
    restriction = (
        f" among the {len(pool)} tensors tested on at least {MIN_RANKED_N} values" if pool is big else ""
    )
    note = (
        f"the {len(most)} most and {len(least)} least Gaussian of {len(everything)} tensors by the "
        f"median of 1 − qq_r over captured steps{restriction}"
    )
    return LayerSelection(most, least, (), False, note)
