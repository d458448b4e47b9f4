r"""GO-UP: the seed post's update rule as a ``torch.optim.Optimizer``.

The seed equates gradient descent with a discrete Ornstein–Uhlenbeck process and
replaces θ − g by a Gaussian draw. Written out, its code is SGD plus isotropic
Gaussian noise with one σ per tensor; see :class:`GOUP` for the exact rule.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer

from goup_probe.dist.layout import is_dtensor
from goup_probe.optim.sharded import global_moments, local_normal

Mode = Literal["seed", "scalar"]
NonFinite = Literal["raise", "skip"]

MODES: tuple[str, ...] = ("seed", "scalar")
"""Update rules :class:`GOUP` implements."""

NONFINITE_POLICIES: tuple[str, ...] = ("raise", "skip")
"""What :class:`GOUP` does when θ − g is not finite."""


def _check_lr(lr: Any) -> float:
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"lr must be a scalar, got a tensor of shape {tuple(lr.shape)}")
        value = float(lr.detach().cpu().item())
    else:
        try:
            value = float(lr)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"lr must be a number, got {lr!r}") from exc
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"Invalid learning rate: {lr!r} (must be finite and >= 0)")
    return value


def _check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"Invalid mode: {mode!r} (must be one of {MODES})")
    return str(mode)


def _device_key(device: torch.device) -> str:
    if device.type == "cpu":
        return "cpu"
    return f"{device.type}:{0 if device.index is None else device.index}"


def _moments(param: Tensor, grad: Tensor, mode: str) -> tuple[Tensor, Tensor | None]:
    """σ = std(θ − g) (unbiased, as ``torch.std``) and, in scalar mode, μ = mean(θ − g).

    A one-element tensor has no standard deviation: σ is 0 there. For a DTensor
    (FSDP2) both are taken over the global tensor, combined across shards.
    """
    if is_dtensor(param):
        return global_moments(param, grad, mode)
    x = param - grad
    sigma = torch.std(x) if x.numel() > 1 else torch.zeros((), dtype=x.dtype, device=x.device)
    mean = x.mean() if mode == "scalar" else None
    return sigma, mean


def _finite(param: Tensor, grad: Tensor, sigma: Tensor, mean: Tensor | None) -> Tensor:
    """Whether every coordinate of θ − g is finite (and σ, μ with it), as a 0-dim bool tensor.

    For more than one element a single NaN or ±Inf in θ − g makes ``torch.std``
    NaN, so checking σ (and μ) is enough; a one-element tensor is checked directly.
    """
    ok = torch.isfinite(sigma)
    if param.numel() <= 1:
        ok = ok & torch.isfinite(param - grad).all()
    if mean is not None:
        ok = ok & torch.isfinite(mean)
    return ok


def _apply(
    param: Tensor,
    grad: Tensor,
    lr: float | Tensor,
    mode: str,
    sigma: Tensor,
    mean: Tensor | None,
    generator: torch.Generator,
) -> None:
    """Write the GO-UP update into ``param`` (in place). No draw for one-element tensors."""
    if is_dtensor(param):  # FSDP2: update the local shard with its block of the global draw
        z = local_normal(param, generator) if param.numel() > 1 else None
        param, grad = param.to_local(), grad.to_local()
        z = torch.zeros_like(param) if z is None else z
    elif param.numel() > 1:
        z = torch.randn(param.shape, generator=generator, dtype=param.dtype, device=param.device)
    else:
        z = torch.zeros_like(param)
    if mode == "seed":
        # Character for character the seed's expression, with torch.randn_like(p)
        # replaced by z and torch.std(p - p.grad) by sigma (computed the same way).
        new = (1 - lr) * param + (z * sigma + param - grad) * lr
    else:
        new = (1 - lr) * param + (mean + sigma * z) * lr
    param.copy_(new)


def goup_(
    param: Tensor,
    grad: Tensor,
    lr: float | Tensor,
    *,
    generator: torch.Generator,
    mode: Mode = "seed",
) -> Tensor:
    """Functional GO-UP: update one tensor in place, return the σ that was used.

    Parameters
    ----------
    param, grad : Tensor
        The parameter (modified in place, under ``torch.no_grad``) and its gradient.
    lr : float or Tensor
        The learning rate α (finite, >= 0).
    generator : torch.Generator
        Source of the noise, on the parameter's device. Required: the global
        RNG is never used.
    mode : {"seed", "scalar"}
        The update rule; see :class:`GOUP`.

    Returns
    -------
    Tensor
        σ = std(θ − g) (0-dim, 0 for a one-element tensor).

    Raises
    ------
    FloatingPointError
        When θ − g has a NaN or infinite coordinate; ``param`` is left unchanged.
    """
    _check_lr(lr)
    mode = _check_mode(mode)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    (sigma,), _, bad = _goup_tensors([param], [grad], [lr], [mode], lambda _device: generator)
    if bad:
        raise FloatingPointError("GO-UP: θ − g has non-finite values; parameter left unchanged")
    return sigma


def _goup_tensors(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    lrs: Sequence[float | Tensor],
    modes: Sequence[str],
    generator_for: Callable[[torch.device], torch.Generator],
) -> tuple[list[Tensor], list[Tensor | None], list[int]]:
    """The GO-UP kernel over a list of tensors (:func:`goup_` and :meth:`GOUP.step` call it).

    σ (and μ) of every tensor first; then, only when θ − g is finite in all of
    them (one sync per device), the updates in list order, the noise of each
    drawn from ``generator_for(param.device)``. Inputs are not validated.

    Returns
    -------
    sigmas, means, nonfinite : list, list, list of int
        σ and μ (None outside scalar mode) per tensor, and the positions of the
        tensors whose θ − g is not finite: when there are any, nothing was
        written and no noise was drawn.
    """
    with torch.no_grad():
        moments = [_moments(p, g, mode) for p, g, mode in zip(params, grads, modes, strict=True)]
        sigmas = [sigma for sigma, _ in moments]
        means = [mean for _, mean in moments]
        bad = _nonfinite(params, grads, sigmas, means)
        if not bad:
            for p, g, lr, mode, sigma, mean in zip(params, grads, lrs, modes, sigmas, means, strict=True):
                _apply(p, g, lr, mode, sigma, mean, generator_for(p.device))
    return sigmas, means, bad


def _nonfinite(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    sigmas: Sequence[Tensor],
    means: Sequence[Tensor | None],
) -> list[int]:
    """Positions of the tensors whose θ − g is not finite (one sync per device when all are)."""
    rows = list(zip(params, grads, sigmas, means, strict=True))
    flags: dict[torch.device, list[Tensor]] = {}
    for p, g, sigma, mean in rows:
        flags.setdefault(p.device, []).append(_finite(p, g, sigma, mean))
    if all(bool(torch.stack(f).all()) for f in flags.values()):
        return []
    return [i for i, (p, g, sigma, mean) in enumerate(rows) if not bool(_finite(p, g, sigma, mean))]


class GOUP(Optimizer):
    r"""GO-UP (Gradient-based Optimisation with an Ornstein–Uhlenbeck Process).

    For every parameter tensor θ with gradient g, with α the group's learning rate:

    ``mode="seed"`` — exactly the seed post's code::

        p.data = (1 - lr) * p + (torch.randn_like(p) * torch.std(p - p.grad) + p - p.grad) * lr

    that is θ ← (1 − α)θ + α(θ − g + σz) = θ − αg + ασz, with σ = std(θ − g) over the
    tensor's coordinates and z ~ N(0, I). It is SGD plus isotropic Gaussian noise
    with one σ per tensor: E[Δθ] = −αg and Var[Δθ_i] = α²σ².

    ``mode="scalar"`` — the literal reading of the seed's Gaussian fit
    η ~ N(μ, σ²) with a *scalar* mean::

        θ ← (1 − α)θ + α(μ + σz),   μ = mean(θ − g),  σ = std(θ − g)

    It discards the per-coordinate gradient: only μ and σ depend on g.

    Details, all deliberate:

    * σ is ``torch.std``, the *unbiased* (N − 1) standard deviation, as in the seed.
    * z is drawn as ``torch.randn(p.shape, generator=...)`` in logical (row-major)
      order, from the optimizer's own generator, never the global RNG; adding
      GO-UP to a run leaves its data order and dropout masks unchanged. Tensors
      are visited group by group, in parameter order; each draws ``p.numel()``
      values.
    * One-element tensors have no standard deviation: σ = 0 there and no noise is
      drawn, so both modes reduce to the SGD step θ − αg for them.
    * Parameters whose ``grad`` is ``None`` are left alone (as in ``torch.optim.SGD``).
    * Non-finite θ − g (NaN/Inf gradient or parameter): the whole step is checked
      before any tensor is written. ``nonfinite="raise"`` (default) raises
      ``FloatingPointError``; ``nonfinite="skip"`` skips the whole step, draws no
      noise, and warns with a ``RuntimeWarning``. Non-finite noise is never written.
    * Sparse gradients and complex parameters are refused.

    Parameters
    ----------
    params : iterable
        Parameters or param-group dicts (each group may set its own ``lr`` and ``mode``).
    lr : float or Tensor
        Learning rate α, finite and >= 0. LR schedulers work as with any optimizer.
    mode : {"seed", "scalar"}
        Update rule (default ``"seed"``).
    generator : torch.Generator, optional
        Noise source, on the parameters' device. Default: a new generator per
        device, seeded with ``seed``.
    seed : int
        Seed of the default generator(s) (ignored when ``generator`` is given).
    nonfinite : {"raise", "skip"}
        Policy for non-finite θ − g, see above.

    Notes
    -----
    ``state_dict()`` includes the generators' states under ``"generator_states"``
    (device -> ByteTensor), and ``load_state_dict`` restores them (into the
    user's generator when one was given), so a resumed run draws the same noise.
    ``state[p]["sigma"]`` (and ``["mean"]`` in scalar mode) hold the last σ (μ) used.

    Examples
    --------
    >>> opt = GOUP(model.parameters(), lr=0.05, generator=torch.Generator().manual_seed(0))
    >>> loss = criterion(model(x), y); loss.backward(); opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor,
        *,
        mode: Mode = "seed",
        generator: torch.Generator | None = None,
        seed: int = 0,
        nonfinite: NonFinite = "raise",
    ) -> None:
        _check_lr(lr)
        _check_mode(mode)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"Invalid nonfinite policy: {nonfinite!r} (one of {NONFINITE_POLICIES})")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.nonfinite = nonfinite
        self.seed = int(seed)
        self.skipped_steps = 0
        self._user_generator = generator
        self._generators: dict[str, torch.Generator] = {}
        if generator is not None:
            self._generators[_device_key(generator.device)] = generator
        super().__init__(params, {"lr": lr, "mode": mode})

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; its ``lr`` and ``mode`` are validated first."""
        _check_lr(param_group.get("lr", self.defaults["lr"]))
        _check_mode(param_group.get("mode", self.defaults["mode"]))
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if p.is_complex():
                self.param_groups.pop()
                raise ValueError(f"GOUP does not support complex parameters (got {p.dtype})")

    # ------------------------------------------------------------------ noise
    def _generator_for(self, device: torch.device) -> torch.Generator:
        key = _device_key(device)
        gen = self._generators.get(key)
        if gen is None:
            if self._user_generator is not None:
                raise RuntimeError(
                    f"GOUP's generator is on {self._user_generator.device} but a parameter is on "
                    f"{device}; pass a generator on the parameters' device"
                )
            gen = torch.Generator(device=device).manual_seed(self.seed)
            self._generators[key] = gen
        return gen

    def _generator_states(self) -> dict[str, Tensor]:
        return {key: gen.get_state() for key, gen in self._generators.items()}

    def _restore_generators(self, states: dict[str, Tensor]) -> None:
        for key, state in states.items():
            gen = self._generators.get(key)
            if gen is None:
                if self._user_generator is not None:
                    raise ValueError(
                        f"the state dict holds a generator state for {key}, but this GOUP's "
                        f"generator is on {self._user_generator.device}"
                    )
                gen = torch.Generator(device=torch.device(key))
                self._generators[key] = gen
            gen.set_state(state.detach().to("cpu", torch.uint8))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The usual optimizer state plus ``"generator_states"`` (device -> ByteTensor)."""
        out = super().state_dict()
        out["generator_states"] = self._generator_states()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load optimizer state and, when present, the generators' states."""
        states = state_dict.get("generator_states")
        super().load_state_dict(state_dict)
        if states:
            self._restore_generators(states)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(
            nonfinite=self.nonfinite,
            seed=self.seed,
            skipped_steps=self.skipped_steps,
            generator_states=self._generator_states(),
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        generator_states = state.pop("generator_states", None)
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("mode", "seed")
        if generator_states is not None:  # unpickling: rebuild the generators
            self._user_generator = None
            self._generators = {}
            self._restore_generators(generator_states)

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one GO-UP step.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (called with grad enabled).

        Returns
        -------
        The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads, lrs, modes, where = [], [], [], [], []
        for gi, group in enumerate(self.param_groups):
            lr, mode = group["lr"], _check_mode(group["mode"])
            _check_lr(lr)
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("GOUP does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                lrs.append(lr)
                modes.append(mode)
                where.append((gi, pi))
        if not params:
            return loss
        sigmas, means, bad = _goup_tensors(params, grads, lrs, modes, self._generator_for)
        if bad:
            (gi, pi), shape = where[bad[0]], tuple(params[bad[0]].shape)
            message = (
                f"GOUP: θ − g is not finite in {len(bad)} of {len(params)} parameter tensors "
                f"(first: group {gi}, index {pi}, shape {shape}); "
            )
            if self.nonfinite == "raise":
                raise FloatingPointError(
                    message + "no parameter was changed. Pass nonfinite='skip' to skip such steps."
                )
            self.skipped_steps += 1
            warnings.warn(message + "step skipped, no parameter changed", RuntimeWarning, stacklevel=2)
            return loss
        for p, sigma, mean in zip(params, sigmas, means, strict=True):
            state = self.state[p]
            state["sigma"] = sigma.detach().clone()
            if mean is not None:
                state["mean"] = mean.detach().clone()
        return loss
