"""Shadow fidelity: the update the optimizer took against the one GO-UP would have taken."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Snapshot:
    """State kept between the pre and post hook of a captured step."""

    theta: torch.Tensor
    lr: float
    grad_norm: float
    param_norm: float
    x_std: float
    numel: int
    theta_sample: np.ndarray | None = None
    """θ at the subsample indices, when already on the host (the update's sample reuses it)."""


def shadow_from_dot(dot: float, snap: Snapshot, update_norm: float) -> dict[str, float]:
    """Compare the update taken with the one GO-UP would have taken at this step.

    GO-UP's update is Δ_GO-UP ~ N(−αg, α²σ²I) with σ = std(θ − g). With the
    actual update Δ, from ``dot`` = Σ Δ·g and ``update_norm`` = ‖Δ‖:

    * ``noise_to_signal`` = σ√N / ‖g‖ (GO-UP's noise norm over its mean's norm),
      with σ the unbiased std of θ − g over the tensor, as ``torch.std`` in GO-UP;
    * ``goup_cosine`` = cos(Δ, −αg);
    * ``goup_w2_rel`` = W2(δ_Δ, N(−αg, α²σ²I)) / ‖αg‖, where
      W2² = ‖Δ + αg‖² + Nα²σ² (for plain SGD it equals ``noise_to_signal``).
    """
    alpha = snap.lr
    g_norm = snap.grad_norm
    n = snap.numel
    sigma = snap.x_std * math.sqrt(n / (n - 1)) if n > 1 else 0.0  # GO-UP's unbiased torch.std
    out = {"noise_to_signal": math.nan, "goup_cosine": math.nan, "goup_w2_rel": math.nan}
    if g_norm > 0 and math.isfinite(g_norm):
        out["noise_to_signal"] = sigma * math.sqrt(n) / g_norm
        if update_norm > 0:
            out["goup_cosine"] = -dot / (update_norm * g_norm)
        if alpha > 0 and math.isfinite(alpha):
            mean_gap2 = update_norm**2 + 2 * alpha * dot + (alpha * g_norm) ** 2
            w2 = math.sqrt(max(mean_gap2, 0.0) + n * (alpha * sigma) ** 2)
            out["goup_w2_rel"] = w2 / (alpha * g_norm)
    return out
