"""Lightning integration: the :class:`GoupProbe` callback.

Usage::

    from goup_probe.integrations.lightning import GoupProbe

    trainer = Trainer(callbacks=[GoupProbe("runs/exp1", every=10)], accumulate_grad_batches=2,
                      gradient_clip_val=1.0)
    trainer.fit(model, loader)

Where the gradient is final. Under automatic optimization Lightning runs the
forward, backward, ``on_before_optimizer_step`` and then gradient clipping
*inside* the closure it passes to ``optimizer.step(closure=...)``
(``Precision._wrap_closure`` calls ``closure()`` then ``_after_closure``, which
calls the ``on_before_optimizer_step`` hooks and then ``_clip_gradients``). No
callback hook sits after clipping and before the update, so the callback adds
its own step pre hook to the torch optimizer: it wraps that closure and begins
the probe's step right after the closure's first evaluation — accumulated,
unscaled (``16-mixed`` unscales before ``_after_closure``) and clipped — and a
step post hook ends it. Without a closure (``16-mixed``: ``scaler.step`` calls
``optimizer.step()`` after the closure ran; manual optimization) the step
begins in the pre hook. A step the ``GradScaler`` skips never reaches the
hooks, so it is not captured.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

import goup_probe as gp
from goup_probe.capture.points import wrap_step_closure
from goup_probe.integrations._common import check_options, resolve_schedule, unwrap_optimizer

_STATE_VERSION = 2


class GoupProbe(Callback):
    """Attach a goup_probe :class:`~goup_probe.Probe` to a Lightning fit.

    Attaches when training starts (after a checkpoint was restored) to the
    LightningModule and the torch optimizer inside ``trainer.optimizers[0]``,
    captures every optimizer step the schedule selects with the gradient the
    optimizer uses, records ``trainer.global_step`` with each step, and
    detaches at the end of the fit or on an exception.

    Under DDP every rank attaches (the probe agrees on the run directory over
    the process group) and only rank 0 writes.

    Parameters
    ----------
    run_dir : path
        Where the run is written (see :func:`goup_probe.attach`).
    every, schedule :
        Which optimizer steps to capture, counted from the first step of the
        first fit (a resumed fit keeps counting).
    **probe_options :
        Any other option of :class:`goup_probe.Probe` (``layers=``, ``tracers=``, ...).

    Notes
    -----
    A resumed fit (``trainer.fit(..., ckpt_path=...)``) restores this
    callback's state and continues the same run (``gp.attach(..., resume=N)``,
    N: the probe steps the checkpoint had seen): its steps keep their numbers,
    the schedule goes on where the checkpoint left it, and rows the first fit
    wrote after that checkpoint (it went on, then crashed) are replaced, so
    each step is recorded once. ``run.json``'s ``resumes`` lists each resume.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        every: int | None = None,
        schedule: Any = None,
        **probe_options: Any,
    ) -> None:
        check_options(probe_options, "GoupProbe")
        resolve_schedule(every, schedule)  # validate now, not at fit start
        self.run_dir = Path(run_dir)
        self.every = every
        self.schedule = schedule
        self.probe_options = probe_options
        self.probe: gp.Probe | None = None
        self._restored: dict[str, Any] | None = None
        self._trainer: Trainer | None = None
        self._handles: list[Any] = []
        self._open = False

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint (one per run directory)."""
        return self._generate_state_key(run_dir=str(self.run_dir))

    @property
    def steps(self) -> int:
        """Optimizer steps seen over every fit of this callback (the next step's index)."""
        return self.probe.step if self.probe is not None else 0

    # ------------------------------------------------------------------ lifecycle
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Attach (after a checkpoint's callback and training state were restored)."""
        if self.probe is not None:
            return
        if not trainer.optimizers:
            warnings.warn("GoupProbe: the fit has no optimizer; nothing is captured", stacklevel=2)
            return
        if len(trainer.optimizers) > 1:
            warnings.warn(
                "GoupProbe: the fit has several optimizers; only the first one's parameters are captured",
                stacklevel=2,
            )
        optimizer, wrappers = unwrap_optimizer(trainer.optimizers[0])
        restored, self._restored = self._restored, None
        resume: int | bool = int(restored["steps"]) if restored else False
        info = {
            "integration": "lightning",
            "optimizer_wrappers": wrappers,
            "global_step_at_attach": int(trainer.global_step),
        }
        options = dict(self.probe_options)
        options["metadata"] = {**dict(options.get("metadata") or {}), "goup_probe_lightning": info}
        self.probe = gp.attach(
            pl_module,
            optimizer,
            run_dir=self.run_dir,
            schedule=resolve_schedule(self.every, self.schedule),
            hooks=False,
            resume=resume,
            **options,
        )
        self._trainer = trainer
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_hook),
            optimizer.register_step_post_hook(self._post_hook),
        ]

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Detach, recording the run as completed."""
        self._detach("completed")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Detach, recording the run as interrupted (``KeyboardInterrupt``) or failed."""
        if isinstance(exception, KeyboardInterrupt):
            self._detach("interrupted", "KeyboardInterrupt")
        else:
            self._detach("failed", f"{type(exception).__name__}: {exception}")

    def _detach(self, status: str, reason: str = "") -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._open = False
        if self.probe is not None:
            self.probe.detach(status, reason)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed fit needs: the probe steps seen so far (the run's own step counter)."""
        return {"version": _STATE_VERSION, "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s state; the next fit continues the schedule from there."""
        if state_dict.get("version") not in (1, _STATE_VERSION):
            raise ValueError(f"GoupProbe: unknown state version {state_dict.get('version')!r}")
        self._restored = {"steps": int(state_dict["steps"])}

    # ------------------------------------------------------------------ capture points
    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> Any:
        """Begin now, or, when ``step`` got a closure, right after the closure's first evaluation."""
        if self._open:  # the previous step raised between its begin and its end
            self._end()
        wrapped = wrap_step_closure(args, kwargs, self._begin)
        if wrapped is None:  # no closure (16-mixed's scaler.step, manual optimization): begin now
            self._begin()
        return wrapped

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._end()

    def _begin(self) -> None:
        if self.probe is None:
            return
        with torch.no_grad():
            self.probe.begin_step(global_step=int(self._trainer.global_step))
        self._open = True

    def _end(self) -> None:
        if self._open and self.probe is not None:
            self._open = False
            with torch.no_grad():
                self.probe.end_step()


__all__ = ["GoupProbe"]
