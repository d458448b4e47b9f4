"""Hugging Face integration: the :class:`GoupProbeCallback` ``TrainerCallback``.

Usage::

    from goup_probe.integrations.transformers import GoupProbeCallback

    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[GoupProbeCallback("runs/exp1", every=10)])
    trainer.train()

Where the gradient is final. In ``Trainer``'s inner loop, on a step that syncs
the accumulated gradient, the order is: ``_clip_grad_norm`` (``max_grad_norm``,
which unscales first under ``fp16``), ``on_pre_optimizer_step``,
``self.optimizer.step()``, ``on_optimizer_step``, the scheduler, then
``model.zero_grad()`` and ``state.global_step += 1``. So the step begins in
``on_pre_optimizer_step`` (accumulated, clipped, before the update) and ends in
``on_optimizer_step`` (updated, not yet zeroed), with ``state.global_step``
still the index of this step.

Under ``fp16`` accelerate's ``GradScaler`` unscales inside ``optimizer.step()``
unless clipping did it first; the callback unscales in ``on_pre_optimizer_step``
(what ``scaler.step`` would do first, so training is unchanged), records the
unscaled gradient, and a step the scaler skips (Inf/NaN) is not captured and
not counted (``run.json``: ``scaler_skipped_steps``). A run that dies of an
uncaught exception ends ``failed`` (Trainer has no exception callback; the
probe's exit handler reads the uncaught exception).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import goup_probe as gp
from goup_probe.capture.amp import unscale_before_step
from goup_probe.integrations._common import (
    check_options,
    resolve_schedule,
    resume_step_from_global_step,
    unwrap_optimizer,
)


class GoupProbeCallback(TrainerCallback):
    """Attach a goup_probe :class:`~goup_probe.Probe` to a Hugging Face ``Trainer``.

    Attaches in ``on_train_begin`` to the model and to the torch optimizer
    inside accelerate's ``AcceleratedOptimizer`` (its ``.optimizer``), captures
    each optimizer step the schedule selects between ``on_pre_optimizer_step``
    and ``on_optimizer_step``, records ``state.global_step``, and detaches in
    ``on_train_end``. Under DDP every process attaches and only rank 0 writes.

    Parameters
    ----------
    run_dir : path
        Where the run is written (see :func:`goup_probe.attach`).
    every, schedule :
        Which optimizer steps to capture, counted from the first optimizer step.
        ``train(resume_from_checkpoint=...)`` continues the run already in
        ``run_dir`` where the checkpoint left it (rows written after that
        checkpoint are replaced; see :func:`goup_probe.attach`'s ``resume``).
    **probe_options :
        Any other option of :class:`goup_probe.Probe` (``layers=``, ``tracers=``, ...).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        every: int | None = None,
        schedule: Any = None,
        **probe_options: Any,
    ) -> None:
        check_options(probe_options, "GoupProbeCallback")
        resolve_schedule(every, schedule)  # validate now
        self.run_dir = run_dir
        self.every = every
        self.schedule = schedule
        self.probe_options = probe_options
        self.probe: gp.Probe | None = None
        self._open = False

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Attach to ``kwargs["model"]`` and the optimizer inside ``kwargs["optimizer"]``."""
        if self.probe is not None:
            return
        model, wrapped = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or wrapped is None:
            raise RuntimeError("GoupProbeCallback: on_train_begin got no model or optimizer")
        optimizer, wrappers = unwrap_optimizer(wrapped)
        resume = resume_step_from_global_step(self.run_dir, int(state.global_step))
        options = dict(self.probe_options)
        info = {
            "integration": "transformers",
            "optimizer_wrappers": wrappers,
            "global_step_at_attach": int(state.global_step),
            "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
            "max_grad_norm": float(args.max_grad_norm or 0.0),
        }
        options["metadata"] = {**dict(options.get("metadata") or {}), "goup_probe_transformers": info}
        self.probe = gp.attach(
            model,
            optimizer,
            run_dir=self.run_dir,
            schedule=resolve_schedule(self.every, self.schedule),
            hooks=False,
            resume=resume,
            **options,
        )

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Begin the step: the gradient is accumulated and clipped, the parameters not yet updated."""
        if self.probe is None:
            return
        if self._open:  # the previous optimizer.step() raised
            self._end()
        scaler = getattr(kwargs.get("optimizer"), "scaler", None)  # fp16: accelerate's GradScaler
        if unscale_before_step(scaler, self.probe.optimizer):
            self.probe.skip_step()  # the scaler found Inf/NaN: the optimizer skips this step
            return
        with torch.no_grad():
            self.probe.begin_step(global_step=int(state.global_step))
        self._open = True

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """End the step: the parameters were updated, the gradient is not yet zeroed."""
        self._end()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Detach, recording the run as completed."""
        self._end()
        if self.probe is not None:
            self.probe.detach("completed")

    def _end(self) -> None:
        if self._open and self.probe is not None:
            self._open = False
            with torch.no_grad():
                self.probe.end_step()


__all__ = ["GoupProbeCallback"]
