"""Gradient noise (and curvature) measured inside a probed run, on its own schedule: :class:`NoiseProbe`.

``gp.attach(model, optimizer, run_dir=..., noise=gp.NoiseProbe(loss_fn, batches, every=K))``
runs :func:`~goup_probe.noise.gradient.gradient_noise` (and, with
``curvature=``, :func:`~goup_probe.noise.hessian.curvature`) at every
scheduled step's capture point: when the step's gradient is final and θ is
still θ_t (the optimizer's step pre hook, after a closure's first evaluation,
or :meth:`~goup_probe.Probe.begin_step`). One row per tensor, unit size and
step goes to the run's ``noise_probe`` table, plus a ``'<model>'`` row for the
selected tensors together.

The measurement leaves training as it found it: the model's mode and buffers,
every ``.grad``, and the torch (CPU and CUDA), numpy and Python global random
generators are restored (:func:`~goup_probe.noise._state.preserved`), and the
gradients are taken with ``torch.autograd.grad`` / ``torch.func``, which write
no ``.grad`` and fire no post-accumulate-grad hook. The data is drawn inside
that protection too, so a shuffling ``DataLoader`` does not move the training
loader's random stream.

A measurement that raises (a bad ``loss_fn``, too little data) is recorded as
one ``'<model>'`` row with ``status='error'`` and in ``run.json``'s errors, with
one warning per kind, like any failing capture; with ``strict=True`` it raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from goup_probe import schedule as schedules
from goup_probe import schema
from goup_probe.noise._state import Batch, LossFn, preserved, split_batch
from goup_probe.noise.gradient import AXIS_COORDINATE, GradientNoiseResult, gradient_noise
from goup_probe.noise.hessian import CurvatureResult, curvature

__all__ = ["CURVATURE_OPTIONS", "NoiseProbe", "NoiseProbeRun", "weight_decays"]

CURVATURE_OPTIONS = ("top", "trace", "iters", "probes", "blocks", "tol", "seed")
"""Keys a ``curvature=`` mapping may hold (keywords of :func:`~goup_probe.curvature`)."""
_DEFAULT_CURVATURE = {"top": 1, "trace": True, "iters": 30, "probes": 30, "blocks": True}
"""Curvature when ``curvature=True``: cheaper than :func:`~goup_probe.curvature`'s defaults (per step)."""


def _sizes(batch_sizes: Any, per_sample: bool) -> tuple[int, ...] | None:
    if batch_sizes is None:
        return None
    if per_sample:
        raise ValueError("NoiseProbe: batch_sizes and per_sample=True exclude each other (units are samples)")
    sizes = (batch_sizes,) if isinstance(batch_sizes, int) else tuple(batch_sizes)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"NoiseProbe: batch_sizes must be integers >= 1, got {batch_sizes!r}")
    if not sizes or len(set(sizes)) != len(sizes):
        raise ValueError(f"NoiseProbe: batch_sizes must be distinct and not empty, got {batch_sizes!r}")
    return sizes


def _curvature_options(value: Any) -> dict[str, Any] | None:
    if value is False or value is None:
        return None
    if value is True:
        return dict(_DEFAULT_CURVATURE)
    if not isinstance(value, Mapping):
        raise TypeError(f"NoiseProbe: curvature must be False, True or a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - set(CURVATURE_OPTIONS))
    if unknown:
        raise ValueError(
            f"NoiseProbe: curvature has unknown keys {unknown}; allowed: {list(CURVATURE_OPTIONS)}"
        )
    return {**_DEFAULT_CURVATURE, **value}


def _concatenated(batches: Sequence[Batch]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """All the batches as one: each input and the targets concatenated along the batch axis."""
    pairs = [split_batch(b) for b in batches]
    if not pairs:
        raise ValueError("NoiseProbe: batches yielded no batch")
    inputs = tuple(torch.cat(column) for column in zip(*(p[0] for p in pairs), strict=True))
    return inputs, torch.cat([torch.as_tensor(p[1]) for p in pairs])


def rechunked(batches: Sequence[Batch], size: int) -> list[Batch]:
    """The samples of ``batches`` in consecutive units of ``size`` (a remainder is left out)."""
    inputs, targets = _concatenated(batches)
    return [
        (tuple(x[i : i + size] for x in inputs), targets[i : i + size])
        for i in range(0, len(targets) - size + 1, size)
    ]


def weight_decays(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, float]:
    """Each parameter's ``weight_decay`` from its optimizer param group (0 when it has none)."""
    from goup_probe.capture.plan import unwrap

    names = {id(p): n for n, p in unwrap(model).named_parameters()}
    decays: dict[str, float] = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) in names:
                    decays[names[id(p)]] = float(group.get("weight_decay", 0.0) or 0.0)
    return decays


class NoiseProbe:
    """Gradient noise at θ_t, measured inside a probed run on its own schedule.

    Pass it as ``gp.attach(..., noise=gp.NoiseProbe(...))`` (or among a trainer
    callback's probe options); see the module notes for what is restored.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(model(*inputs), targets)``, the *mean* loss over the batch.
    batches : sequence of (inputs, targets), re-iterable, or callable
        The data the noise is measured on, the same at every measurement (a
        list, a ``DataLoader``), or ``step -> iterable of batches``. A one-shot
        iterator is refused (the second measurement would see no data).
    every : int, optional
        Measure at every ``every``-th optimizer step (default 10). Exclusive with ``schedule``.
    schedule : callable, optional
        ``step -> bool`` (:mod:`goup_probe.schedule`).
    batch_sizes : int or sequence of int, optional
        Unit sizes: the samples of ``batches`` are re-cut into consecutive units
        of each size (a remainder left out) and the noise is measured once per
        size (Panigrahi et al. 2019 compare batch sizes). None: the batches as given.
    per_sample : bool
        Units are single samples (``torch.func``; exclusive with ``batch_sizes``).
    layers : str, sequence of str or callable, optional
        Which tensors (glob patterns or a predicate; None: all trainable ones).
    curvature : bool or mapping
        Also the top Hessian eigenvalue and Hutchinson trace, whole model and per
        tensor block, on all the data together; a mapping sets
        :func:`~goup_probe.curvature`'s ``top``, ``trace``, ``iters``, ``probes``,
        ``blocks``, ``tol``, ``seed`` (``True``: top 1, 30 Lanczos steps, 30 probes).
    max_coordinates : int
        Coordinates per tensor tested one at a time across units.
    tail_method : {"mohammadi", "hill"}
        Tail-index estimator of the pooled noise.
    train : bool, optional
        Mode to measure in (None: the model's mode at the step).
    seed : int
        Seed of the subsamples and the tail-index estimator.

    Raises
    ------
    TypeError, ValueError
        Naming the offending argument.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        batches: Iterable[Batch] | Callable[[int], Iterable[Batch]],
        *,
        every: int | None = None,
        schedule: Callable[[int], bool] | None = None,
        batch_sizes: int | Sequence[int] | None = None,
        per_sample: bool = False,
        layers: str | Sequence[str] | Callable[[str], bool] | None = None,
        curvature: bool | Mapping[str, Any] = False,
        max_coordinates: int = 100,
        tail_method: str = "mohammadi",
        train: bool | None = None,
        seed: int = 0,
    ) -> None:
        from goup_probe.capture.config import check_layers

        if not callable(loss_fn):
            raise TypeError(f"NoiseProbe: loss_fn must be callable, got {type(loss_fn).__name__}")
        if not callable(batches):
            if not isinstance(batches, Iterable):
                raise TypeError(
                    f"NoiseProbe: batches must be iterable or callable, got {type(batches).__name__}"
                )
            if iter(batches) is batches:
                raise TypeError(
                    "NoiseProbe: batches is a one-shot iterator; pass a list, a DataLoader or "
                    "a callable step -> batches"
                )
        for option, value in (("per_sample", per_sample),):
            if not isinstance(value, bool):
                raise TypeError(f"NoiseProbe: {option} must be True or False, got {value!r}")
        if tail_method not in ("mohammadi", "hill"):
            raise ValueError(f"NoiseProbe: tail_method must be 'mohammadi' or 'hill', got {tail_method!r}")
        if isinstance(max_coordinates, bool) or not isinstance(max_coordinates, int) or max_coordinates < 1:
            raise ValueError(f"NoiseProbe: max_coordinates must be an integer >= 1, got {max_coordinates!r}")
        self.loss_fn = loss_fn
        self.batches = batches
        self.schedule = schedules.resolve(every, schedule)
        self.batch_sizes = _sizes(batch_sizes, per_sample)
        self.per_sample = per_sample
        self.layers = check_layers(layers)
        self.curvature = _curvature_options(curvature)
        self.max_coordinates = max_coordinates
        self.tail_method = tail_method
        self.train = train
        self.seed = seed

    def due(self, step: int) -> bool:
        """Whether the noise is measured at ``step`` (the schedule must answer True or False)."""
        from goup_probe.capture.config import as_bool

        return as_bool(self.schedule(step), "the NoiseProbe's schedule")

    def describe(self) -> dict[str, Any]:
        """The ``capture.noise_probe`` entry of ``run.json``."""
        return {
            "schedule": schedules.describe(self.schedule),
            "batch_sizes": list(self.batch_sizes) if self.batch_sizes else None,
            "per_sample": self.per_sample,
            "layers": repr(self.layers) if self.layers is not None else None,
            "curvature": self.curvature,
            "max_coordinates": self.max_coordinates,
            "tail_method": self.tail_method,
            "seed": self.seed,
        }

    def measure(
        self, model: nn.Module, step: int, weight_decay: Mapping[str, float] | None = None
    ) -> list[dict[str, Any]]:
        """The rows of one measurement at the model's current θ (``step`` goes to a callable ``batches``).

        The model, its ``.grad`` and every global random generator are as before
        afterwards, also when the measurement raises.
        """
        with preserved(model), torch.enable_grad():
            data = list(self.batches(step) if callable(self.batches) else self.batches)
            units = (
                [(None, data)]
                if self.batch_sizes is None
                else [(b, rechunked(data, b)) for b in self.batch_sizes]
            )
            rows: list[dict[str, Any]] = []
            for _, batches in units:
                result = gradient_noise(
                    model,
                    self.loss_fn,
                    batches,
                    per_sample=self.per_sample,
                    layers=self.layers,
                    max_coordinates=self.max_coordinates,
                    seed=self.seed,
                    tail_method=self.tail_method,
                    train=self.train,
                )
                rows.extend(_noise_rows(result))
            if self.curvature is not None:
                measured = curvature(
                    model,
                    self.loss_fn,
                    _concatenated(data),
                    layers=self.layers,
                    train=self.train,
                    **self.curvature,
                )
                _add_curvature(rows, measured)
        decays = weight_decay or {}
        for row in rows:
            row["weight_decay"] = decays.get(row["param"], 0.0) if row["param"] != schema.MODEL_ROW else None
        return rows

    def bind(
        self,
        model: nn.Module,
        optimizers: Sequence[torch.optim.Optimizer],
        writer: Any,
        guard: Any,
    ) -> NoiseProbeRun:
        """The probe bound to a run: call the result with ``(step, global_step)`` at each capture point."""
        return NoiseProbeRun(self, model, weight_decays(model, optimizers), writer, guard)


def _noise_rows(result: GradientNoiseResult) -> list[dict[str, Any]]:
    """One row per tensor and one for all of them, from a :func:`gradient_noise` result."""
    base = {
        "status": schema.STATUS_OK,
        "per_sample": result.per_sample,
        "method": result.method,
        "unit_size": result.unit_size,
        "n_units": result.n_units,
    }
    rows = []
    stats = result.stats
    for name, scale in result.noise_scale_per_tensor.items():
        mine = stats[stats["param"] == name]
        pooled = mine[mine["axis"] != AXIS_COORDINATE]
        tested = mine.loc[mine["axis"] == AXIS_COORDINATE, "shapiro_p"].dropna()
        tail = result.tail_index.get(name)
        rows.append(
            {
                **base,
                "param": name,
                "numel": result.numel.get(name),
                "pooled_verdict": pooled["verdict"].iloc[0] if len(pooled) else None,
                "pooled_excess_kurtosis": float(pooled["excess_kurtosis"].iloc[0]) if len(pooled) else None,
                "coordinates_tested": len(tested),
                "coordinate_reject_rate": float((tested < 0.05).mean()) if len(tested) else None,
                "tail_alpha": tail.alpha if tail else None,
                "tail_low": tail.ci_low if tail else None,
                "tail_high": tail.ci_high if tail else None,
                "tail_n": tail.n if tail else None,
                **_scale_columns(scale),
            }
        )
    rows.append(
        {
            **base,
            "param": schema.MODEL_ROW,
            "numel": sum(result.numel.values()),
            **_scale_columns(result.noise_scale),
        }
    )
    return rows


def _scale_columns(scale: Any) -> dict[str, float]:
    return {
        "b_simple": scale.b_simple,
        "b_simple_low": scale.b_simple_low,
        "b_simple_high": scale.b_simple_high,
        "trace_sigma": scale.trace_sigma,
        "grad_sq_norm": scale.grad_sq_norm,
    }


def _add_curvature(rows: list[dict[str, Any]], measured: CurvatureResult) -> None:
    """The curvature columns of each row's tensor block (the whole Hessian on ``'<model>'`` rows)."""
    blocks = {**measured.blocks, schema.MODEL_ROW: measured.model}
    for row in rows:
        block = blocks.get(row["param"])
        if block is None:
            continue
        row["curv_top"] = block.eigenvalues[0] if block.eigenvalues else None
        row["curv_top_residual"] = block.residuals[0] if block.residuals else None
        row["curv_trace"] = block.trace
        row["curv_trace_se"] = block.trace_se
        if row["param"] == schema.MODEL_ROW:
            row["curv_hvps"] = measured.hvps


class NoiseProbeRun:
    """A :class:`NoiseProbe` bound to a probe's model, writer and error guard (see :meth:`NoiseProbe.bind`).

    Attributes
    ----------
    seconds : float
        Wall seconds spent measuring so far.
    measured_steps : int
        Steps measured (failed ones included).
    """

    def __init__(
        self, noise: NoiseProbe, model: nn.Module, weight_decay: Mapping[str, float], writer: Any, guard: Any
    ) -> None:
        self.noise = noise
        self.model = model
        self.weight_decay = dict(weight_decay)
        self.writer = writer
        self.guard = guard
        self.seconds = 0.0
        self.measured_steps = 0

    def __call__(self, step: int, global_step: int | None = None) -> None:
        """Measure at ``step`` if the schedule says so and write the rows (a failure: one error row)."""
        if self.guard.capture_disabled or not self.guard.run(
            step, None, "NoiseProbe schedule", self.noise.due, step
        ):
            return
        started = time.perf_counter()
        failure: list[Exception] = []

        def attempt() -> list[dict[str, Any]]:
            try:
                return self.noise.measure(self.model, step, self.weight_decay)
            except Exception as exc:
                failure.append(exc)
                raise

        rows = self.guard.run(step, None, "NoiseProbe", attempt)
        elapsed = time.perf_counter() - started
        if rows is None:
            error = f"{type(failure[0]).__name__}: {failure[0]}" if failure else "unknown error"
            rows = [{"param": schema.MODEL_ROW, "status": schema.STATUS_ERROR, "error": error}]
        for row in rows:
            row.update(step=step, global_step=global_step, seconds=elapsed)
        self.seconds += elapsed
        self.measured_steps += 1
        self.guard.run(step, None, "writing", self.writer.append, schema.NOISE_PROBE, rows)
