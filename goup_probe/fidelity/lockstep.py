"""One seed of a twin comparison: every arm copied from one model, stepped in lockstep, measured.

The base arm and one GO-UP arm per mode start from the same weights, take the
very same mini-batch at every step, and see the same global-RNG state before
each step (so dropout masks agree); GO-UP draws its noise from its own
generator. Rows of ``compare_curves`` and ``compare_layers`` are appended to a
:class:`TwinRows`. :func:`goup_probe.fidelity.twin.compare` runs one
:func:`twin_run` per seed.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from goup_probe.fidelity.data import BatchStream, ImageData, LossFn, evaluate
from goup_probe.optim.goup import GOUP

BaseOptimizer = Callable[[list[nn.Parameter], float], torch.optim.Optimizer]
"""``(parameters, lr) -> optimizer`` for the base arm."""


@dataclass(frozen=True)
class TwinSettings:
    """What every seed of a comparison shares (see :func:`goup_probe.fidelity.twin.compare`)."""

    heldout: tuple[torch.Tensor, torch.Tensor]
    modes: Sequence[str]
    base: BaseOptimizer
    base_name: str
    steps: int
    lr: float
    batch_size: int
    eval_every: int
    loss_fn: LossFn
    device: torch.device


@dataclass
class TwinRows:
    """Rows of the ``compare_curves`` and ``compare_layers`` tables, appended in order."""

    curves: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Arm:
    name: str
    mode: str | None
    model: nn.Module
    optimizer: torch.optim.Optimizer
    diverged_at: int | None = None


def twin_run(
    model_fn: Callable[[], nn.Module],
    data: ImageData,
    seed: int,
    settings: TwinSettings,
    rows: TwinRows,
    bar: Any,
) -> str:
    """Train all arms of one seed in lockstep; append rows; return the model's class name."""
    s = settings
    init = model_fn().to(s.device)
    model_name = type(init).__name__
    theta0 = {name: p.detach().clone() for name, p in init.named_parameters()}
    arms = _make_arms(init, seed, s)
    del init
    batches = BatchStream(data.train_x, data.train_y, s.batch_size, seed)
    _record_eval(arms, 0, seed, s, {a.name: (math.nan, 0) for a in arms}, theta0, rows)
    for step in range(1, s.steps + 1):
        x, y = batches.next()
        x, y = x.to(s.device), y.to(s.device)
        trained = _step_all(arms, x, y, s, step)
        if step % s.eval_every == 0 or step == s.steps:
            _record_eval(arms, step, seed, s, trained, theta0, rows)
        else:
            for arm in arms:
                loss, digest = trained[arm.name]
                rows.curves.append(_curve_row(arm, seed, step, s.lr, loss, digest))
        if bar is not None:
            bar.update(1)
    return model_name


def _make_arms(init: nn.Module, seed: int, s: TwinSettings) -> list[_Arm]:
    """The base arm, then one GO-UP arm per mode, each on its own copy of ``init``."""
    base_model = copy.deepcopy(init)
    arms = [_Arm(s.base_name, None, base_model, s.base(list(base_model.parameters()), s.lr))]
    for k, mode in enumerate(s.modes):
        model = copy.deepcopy(init)
        seed_k = noise_seed(seed, k)
        arms.append(
            _Arm(goup_name(mode), mode, model, GOUP(model.parameters(), s.lr, mode=mode, seed=seed_k))
        )
    return arms


def _step_all(
    arms: list[_Arm], x: torch.Tensor, y: torch.Tensor, s: TwinSettings, step: int
) -> dict[str, tuple[float, int]]:
    """One update of every arm on the same batch, each from the same global-RNG state."""
    rng = _rng_state(s.device)
    trained = {}
    for arm in arms:
        _set_rng_state(rng, s.device)
        trained[arm.name] = _train_step(arm, x, y, s.loss_fn, step)
    return trained


def _train_step(arm: _Arm, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, step: int) -> tuple[float, int]:
    """One update of one arm; returns (mini-batch loss, CRC32 of the batch it saw)."""
    digest = _digest(x, y)
    if arm.diverged_at is not None:
        return math.nan, digest
    arm.model.train()
    arm.optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(arm.model(x), y)
    value = float(loss.detach())
    if not math.isfinite(value):
        arm.diverged_at = step
        return math.nan, digest
    loss.backward()
    try:
        arm.optimizer.step()
    except FloatingPointError:
        arm.diverged_at = step
    return value, digest


def _record_eval(
    arms: list[_Arm],
    step: int,
    seed: int,
    s: TwinSettings,
    trained: dict[str, tuple[float, int]],
    theta0: dict[str, torch.Tensor],
    rows: TwinRows,
) -> None:
    """Curve rows with held-out metrics and distances to the base arm; per-parameter layer rows."""
    base_params = dict(arms[0].model.named_parameters())
    for arm in arms:
        loss, digest = trained[arm.name]
        row = _curve_row(arm, seed, step, s.lr, loss, digest)
        if arm.diverged_at is None:
            row["heldout_loss"], row["heldout_acc"] = evaluate(arm.model, *s.heldout, s.loss_fn, s.device)
        totals = _layer_distances(arm, seed, step, base_params, theta0, rows)
        if arm.diverged_at is None:
            row.update(_distances(*totals))
        rows.curves.append(row)


def _layer_distances(
    arm: _Arm,
    seed: int,
    step: int,
    base_params: dict[str, nn.Parameter],
    theta0: dict[str, torch.Tensor],
    rows: TwinRows,
) -> list[float]:
    """Append one layer row per parameter (unless diverged); return the sums over all parameters."""
    totals = [0.0, 0.0, 0.0, 0.0, 0.0]
    for name, p in arm.model.named_parameters():
        sums = _distance_sums(p, base_params[name], theta0[name])
        totals = [a + b for a, b in zip(totals, sums, strict=True)]
        if arm.diverged_at is None:
            rows.layers.append(
                {"arm": arm.name, "mode": arm.mode, "seed": seed, "step": step, "param": name,
                 "numel": p.numel(), **_distances(*sums)}
            )  # fmt: skip
    return totals


def _curve_row(arm: _Arm, seed: int, step: int, lr: float, loss: float, digest: int) -> dict[str, Any]:
    return {
        "arm": arm.name,
        "mode": arm.mode,
        "seed": seed,
        "step": step,
        "lr": _current_lr(arm.optimizer, lr),
        "train_loss": loss,
        "heldout_loss": math.nan,
        "heldout_acc": math.nan,
        "rel_distance": math.nan,
        "update_cosine": math.nan,
        "update_ratio": math.nan,
        "diverged": arm.diverged_at is not None,
        "batch_digest": digest,
    }


# ---------------------------------------------------------------------- measurements
def _distance_sums(p: torch.Tensor, q: torch.Tensor, p0: torch.Tensor) -> tuple[float, ...]:
    """‖p − q‖², ‖q‖², ⟨p − p0, q − p0⟩, ‖p − p0‖², ‖q − p0‖² in float64."""
    a = p.detach().to(torch.float64).flatten()
    b = q.detach().to(torch.float64).flatten()
    a0 = p0.to(torch.float64).flatten()
    ua, ub = a - a0, b - a0
    return (
        float(torch.dot(a - b, a - b)),
        float(torch.dot(b, b)),
        float(torch.dot(ua, ub)),
        float(torch.dot(ua, ua)),
        float(torch.dot(ub, ub)),
    )


def _distances(diff2: float, base2: float, dot: float, arm2: float, moved2: float) -> dict[str, float]:
    nan = math.nan
    return {
        "rel_distance": math.sqrt(diff2 / base2) if base2 > 0 else nan,
        "update_cosine": dot / math.sqrt(arm2 * moved2) if arm2 > 0 and moved2 > 0 else nan,
        "update_ratio": math.sqrt(arm2 / moved2) if moved2 > 0 else nan,
    }


def _digest(x: torch.Tensor, y: torch.Tensor) -> int:
    crc = zlib.crc32(x.detach().cpu().contiguous().numpy().tobytes())
    return zlib.crc32(y.detach().cpu().contiguous().numpy().tobytes(), crc)


# ---------------------------------------------------------------------- helpers
def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def seeded(model_fn: Callable[[], nn.Module], seed: int) -> Callable[[], nn.Module]:
    """``model_fn`` built under ``torch.manual_seed(seed)``; refuses anything but an ``nn.Module``."""

    def build() -> nn.Module:
        torch.manual_seed(seed)
        model = model_fn()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}")
        return model

    return build


def noise_seed(seed: int, arm_index: int) -> int:
    """Seed of the GO-UP generator of the ``arm_index``-th GO-UP arm of ``seed``."""
    return (seed * 1_000_003 + 7919 * (arm_index + 1)) % (2**63)


def _current_lr(optimizer: torch.optim.Optimizer, default: float) -> float:
    groups = optimizer.param_groups
    return float(groups[0]["lr"]) if groups else default


def goup_name(mode: str) -> str:
    """Name of the GO-UP arm of ``mode``."""
    return f"goup-{mode}"
