"""What ``torch.amp.GradScaler`` hands an optimizer that unscales by itself (fused, capturable).

For such optimizers the scaler does not unscale ``param.grad``; it sets
``optimizer.grad_scale`` (the factor the gradients still carry) and
``optimizer.found_inf`` (non-zero when they hold Inf/NaN, and the optimizer then
skips the step) and calls ``optimizer.step()``. The probe reads both in its pre
hook: the gradient it records is divided by the scale, and a step the optimizer
skips is neither captured nor counted, as with plain optimizers (whose step the
scaler does not call at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScalerHandoff:
    """The scale the gradients carry, and whether the optimizer will skip this step."""

    grad_scale: float = 1.0
    skipped: bool = False


def scaler_handoff(optimizer: torch.optim.Optimizer) -> ScalerHandoff:
    """Read ``grad_scale`` / ``found_inf`` off ``optimizer`` (1.0 and False when no scaler set them)."""
    scale = getattr(optimizer, "grad_scale", None)
    found_inf = getattr(optimizer, "found_inf", None)
    value = (
        1.0 if scale is None else float(scale.detach().cpu() if isinstance(scale, torch.Tensor) else scale)
    )
    skipped = (
        found_inf is not None
        and float(found_inf.detach().cpu().sum() if isinstance(found_inf, torch.Tensor) else found_inf) > 0
    )
    return ScalerHandoff(value, skipped)


def unscale_before_step(scaler: torch.amp.GradScaler | None, optimizer: torch.optim.Optimizer) -> bool:
    """Unscale ``optimizer``'s gradients now, as ``scaler.step`` would; return whether it will skip the step.

    For trainers that call ``scaler.step(optimizer)`` themselves after a
    callback point (accelerate's ``AcceleratedOptimizer.step``): the gradients
    are still multiplied by the loss scale there unless clipping unscaled
    them. ``GradScaler.unscale_`` is what ``scaler.step`` runs first when it
    has not run yet (the documented "unscale, then step" pattern), so calling
    it here changes neither the gradients the optimizer gets nor the skip
    decision; ``found_inf`` is then known before the step.
    """
    if scaler is None or not scaler.is_enabled():
        return False
    from torch.amp.grad_scaler import OptState

    state = scaler._per_optimizer_states[id(optimizer)]
    if state["stage"] is OptState.READY:
        scaler.unscale_(optimizer)
    return bool(sum(float(v.item()) for v in state["found_inf_per_device"].values()))
