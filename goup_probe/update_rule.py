"""What the learning rate α means for a run's optimizer, and whether the seed's k = α reasoning applies.

The seed equates θ_{t+1} = θ_t − αg_t with an OU step; that needs an update whose
mean is −αg (plain SGD, or GO-UP itself). An adaptive optimizer (the Adam family,
Adagrad, RMSprop, …) or momentum moves elsewhere: α is then only the param
group's nominal ``lr`` and the step actually taken is ‖Δθ‖/‖g‖ per tensor.
:func:`update_rule` decides from the optimizer class recorded in ``run.json``
and, where that says nothing, from measured evidence (the median effective step
over the nominal lr, or the median cos(Δθ, −αg)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

PLAIN = "plain"
"""The update's mean is −αg (SGD without momentum, GO-UP): the seed's reasoning can be checked."""
ADAPTIVE = "adaptive"
"""The update is not −αg (adaptive step sizes or momentum): the seed's k = α does not apply."""
UNKNOWN = "unknown"
"""No optimizer recorded and nothing measured."""

ADAPTIVE_CLASSES = frozenset(
    {
        "Adam",
        "AdamW",
        "Adamax",
        "NAdam",
        "RAdam",
        "SparseAdam",
        "Adagrad",
        "Adadelta",
        "RMSprop",
        "Rprop",
        "LBFGS",
        "Adafactor",
        "Lion",
        "LAMB",
        "Lamb",
        "Adan",
        "Sophia",
        "SophiaG",
        "Shampoo",
        "Muon",
        "AdamW8bit",
        "Adam8bit",
        "ASGD",
    }
)
"""Optimizer classes whose update is not −αg (known by name)."""
PLAIN_CLASSES = frozenset({"SGD", "GOUP"})
"""Optimizer classes whose update is −αg (SGD only without momentum, see :func:`update_rule`)."""

EFFECTIVE_STEP_RTOL = 0.1
"""A measured median ‖Δθ‖/‖g‖ further than this from the nominal lr (relative) marks the update as not −αg."""
COSINE_TOL = 0.1
"""A measured median cos(Δθ, −αg) below 1 − this marks the update as not −αg (GO-UP's noise aside)."""


@dataclass(frozen=True)
class UpdateRule:
    """How a run's update relates to −αg."""

    kind: str
    """:data:`PLAIN`, :data:`ADAPTIVE` or :data:`UNKNOWN`."""
    optimizer: str
    """The optimizer class recorded in ``run.json`` ("" when none was)."""
    evidence: str
    """Why: the class name, a momentum setting, or the measurement that decided."""

    @property
    def adaptive(self) -> bool:
        """Whether the update is not −αg, so that the seed's k = α derivation does not apply."""
        return self.kind == ADAPTIVE

    def alpha_meaning(self) -> str:
        """One sentence on what α stands for in this run's analyses."""
        name = self.optimizer or "the optimizer"
        if not self.adaptive:
            return (
                "α is each step's learning rate of the tensor's param group (as the optimizer held it "
                "at that step, schedules included)."
            )
        return (
            f"α is the nominal learning rate of the tensor's param group at each step; {name}'s update is "
            f"not −αg ({self.evidence}), so the seed's k = α derivation does not apply and k̂/α compares "
            "the rate with a number the update does not follow. k̂ is also given against the effective "
            "step size ‖Δθ‖/‖g‖ of each tensor (its median over the fitted window)."
        )


def _momentum(meta_optimizer: Mapping[str, Any]) -> float:
    groups = meta_optimizer.get("param_groups") or [meta_optimizer.get("defaults") or {}]
    values = [g.get("momentum", 0.0) for g in groups if isinstance(g, Mapping)]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(numbers, default=0.0)


def update_rule(
    meta: Mapping[str, Any] | None,
    *,
    effective_over_lr: float = math.nan,
    cosine: float = math.nan,
) -> UpdateRule:
    """Decide whether a run's update is −αg, from ``run.json`` and, failing that, from measurements.

    Parameters
    ----------
    meta : mapping or None
        The run's ``run.json`` (its ``optimizer`` entry: ``class`` and ``param_groups``).
    effective_over_lr : float
        Measured median of (‖Δθ‖/‖g‖) / lr; 1 for plain SGD. NaN: not measured.
    cosine : float
        Measured median cos(Δθ, −αg); 1 for plain SGD. NaN: not measured.

    Returns
    -------
    UpdateRule
        A known adaptive class, or SGD with momentum, is :data:`ADAPTIVE`;
        SGD without momentum and GO-UP are :data:`PLAIN`. Any other class (or
        none) is decided by the measurements: :data:`ADAPTIVE` when the
        effective step is off the nominal lr by more than
        :data:`EFFECTIVE_STEP_RTOL` or the cosine is below 1 − :data:`COSINE_TOL`.
    """
    recorded = (meta or {}).get("optimizer") or {}
    name = str(recorded.get("class", "")) if isinstance(recorded, Mapping) else ""
    if name in ADAPTIVE_CLASSES:
        return UpdateRule(ADAPTIVE, name, f"{name} scales each coordinate's step by its own statistics")
    if name == "SGD" and _momentum(recorded) > 0:
        return UpdateRule(ADAPTIVE, name, f"SGD with momentum {_momentum(recorded):g}")
    if name in PLAIN_CLASSES:
        return UpdateRule(PLAIN, name, f"{name} steps by −αg")
    if math.isfinite(effective_over_lr) and abs(effective_over_lr - 1.0) > EFFECTIVE_STEP_RTOL:
        return UpdateRule(
            ADAPTIVE, name, f"measured median ‖Δθ‖/‖g‖ is {effective_over_lr:.3g} × the nominal lr"
        )
    if math.isfinite(cosine) and cosine < 1.0 - COSINE_TOL:
        return UpdateRule(ADAPTIVE, name, f"measured median cos(Δθ, −αg) is {cosine:.3g}")
    if math.isfinite(effective_over_lr) or math.isfinite(cosine):
        return UpdateRule(PLAIN, name, "the measured update is −αg")
    return UpdateRule(UNKNOWN, name, "no optimizer recorded")


def _median(frame: Any, column: str) -> float:
    if column not in getattr(frame, "columns", ()):
        return math.nan
    values = np.asarray(frame[column], dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def ou_rule(meta: Mapping[str, Any] | None, ou: Any) -> UpdateRule:
    """:func:`update_rule` of a run, measured from its OU table (median ``eff_step_over_lr``) where needed."""
    return update_rule(meta, effective_over_lr=_median(ou, "eff_step_over_lr"))


def rate_sentence(rule: UpdateRule, ou: Any) -> str:
    """The OU rate k̂ against the learning rate, in words fit for the run's optimizer.

    Parameters
    ----------
    rule : UpdateRule
        From :func:`ou_rule`.
    ou : DataFrame
        The OU validation table (:func:`goup_probe.validate_ou`): ``k_pooled``,
        ``k_over_lr``, and where present ``lr_min``, ``lr_max``, ``eff_step``,
        ``eff_step_over_lr`` and ``k_over_eff_step``.

    Returns
    -------
    str
        For plain SGD (or GO-UP), the median k̂/α with α each step's lr, beside
        the seed's k = α. For an adaptive optimizer, what α means, that the seed's
        derivation does not apply, and k̂ against both the nominal lr and the
        effective step size. Empty when the table has no finite k̂/α.
    """
    ratio = _median(ou, "k_over_lr")
    if not math.isfinite(ratio):
        return ""
    lo, hi = _median(ou, "lr_min"), _median(ou, "lr_max")
    schedule = (
        f" (the lr ran from {lo:.3g} to {hi:.3g} over the fitted steps)"
        if math.isfinite(lo) and hi > lo
        else ""
    )
    if not rule.adaptive:
        return (
            f"median k̂/α = {ratio:.3g}, with α each step's learning rate weighed as the pooled fit "
            f"weighs the steps{schedule} (the seed's derivation assumes 1; near a minimum theory "
            "expects h + λ)"
        )
    text = f"{rule.alpha_meaning()} Median k̂/α = {ratio:.3g} against the nominal lr{schedule}"
    eff, eff_ratio, k_eff = (_median(ou, c) for c in ("eff_step", "eff_step_over_lr", "k_over_eff_step"))
    if math.isfinite(eff):
        text += (
            f"; the effective step size ‖Δθ‖/‖g‖ has median {eff:.3g} ({eff_ratio:.3g} × the nominal lr), "
            f"and k̂ / effective step = {k_eff:.3g}"
        )
    return text
