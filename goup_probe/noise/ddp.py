"""Micro-batch noise across DDP ranks: each rank's gradient before the all-reduce, from a communication hook.

Under ``DistributedDataParallel`` each rank's gradient before the all-reduce is
the gradient of its own share of the batch: with k ranks, k micro-batch
gradients g_r whose mean is the step's gradient. When ``grad_noise`` is
requested on a DDP model, the probe registers :class:`RankGradients` as the
model's communication hook (``DDP.register_comm_hook``): at steps where
``grad_noise`` is due it gathers every bucket's flat buffer (the rank's
gradients, before any division) on rank 0, then hands the bucket to
:func:`~torch.distributed.algorithms.ddp_comm_hooks.default_hooks.allreduce_hook`,
so the all-reduced gradient is the one DDP would compute. At other steps it
only all-reduces. Rank 0 records the rows as for gradient accumulation
(:mod:`goup_probe.noise.micro`), with ``micro_batch`` the rank.

Cost at a due step: one gather of the gradients (rank 0 holds k copies of the
probed gradients until the step ends). A model with a communication hook of its
own keeps it: DDP takes one hook, so the probe then falls back to the local
contributions and says so in ``run.json``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["RankGradients", "cumulative_snapshots", "install_rank_noise"]

RANK_HOOK_REFUSED = (
    "grad_noise: the DDP model has a communication hook of its own (DDP takes one), so the "
    "per-rank gradients are not seen; the noise is that of the local micro-batches only"
)


def cumulative_snapshots(per_rank: list[torch.Tensor]) -> list[torch.Tensor]:
    """What ``param.grad`` holds after each pass r when accumulating per_rank[r] / k (micro_noise's input)."""
    k = len(per_rank)
    total = torch.zeros_like(per_rank[0])
    out = []
    for g in per_rank:
        total = total + g / k
        out.append(total)
    return out


class RankGradients:
    """DDP communication hook keeping each rank's bucket gradients (on rank 0) at the steps ``due`` names.

    Parameters
    ----------
    names : mapping of int to str
        ``id(param)`` to the name of each probed parameter.
    due : callable
        ``() -> int | None``: the step being accumulated when ``grad_noise`` is
        due at it, else None (asked at every bucket, on every rank alike).
    group : ProcessGroup, optional
        The DDP model's process group (None: the default group).
    """

    def __init__(self, names: Mapping[int, str], due: Callable[[], int | None], group: Any = None) -> None:
        self.names = dict(names)
        self.due = due
        self.group = group
        self.step: int | None = None
        self.grads: dict[str, list[torch.Tensor]] = {}

    def __call__(self, bucket: Any) -> torch.futures.Future:
        """Gather the bucket's buffer on rank 0 when due, then all-reduce it as DDP's default hook does."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        step = self.due()
        if step is not None:
            self._gather(step, bucket)
        return allreduce_hook(self.group, bucket)

    def _gather(self, step: int, bucket: Any) -> None:
        buffer = bucket.buffer()
        world = dist.get_world_size(self.group)
        rank = dist.get_rank(self.group)
        gathered = [torch.empty_like(buffer) for _ in range(world)] if rank == 0 else None
        dst = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        dist.gather(buffer, gathered, dst=dst, group=self.group)
        if gathered is None:
            return
        if self.step != step:
            self.step, self.grads = step, {}
        offset = 0
        for param in bucket.parameters():
            size = param.numel()
            name = self.names.get(id(param))
            if name is not None:
                self.grads[name] = [g[offset : offset + size].clone() for g in gathered]
            offset += size

    def take(self, step: int) -> dict[str, list[torch.Tensor]]:
        """The per-rank flat gradients gathered for ``step`` (then forgotten); empty if none."""
        grads = self.grads if self.step == step else {}
        self.step, self.grads = None, {}
        return grads


def _comm_hook(state, bucket):  # unannotated: DDP refuses annotations other than its own types
    """DDP's hook signature: ``state`` is the :class:`RankGradients`."""
    return state(bucket)


def install_rank_noise(model: Any, dispatcher: Any, config: Any) -> None:
    """Register :class:`RankGradients` on a DDP ``model`` probed for ``grad_noise`` (else a ``noise_note``).

    The hook holds the dispatcher weakly: after the probe detaches (DDP keeps a
    communication hook for good) it only all-reduces.
    """
    from torch.nn.parallel import DistributedDataParallel

    from goup_probe import schema

    micro = dispatcher.micro
    if (
        not isinstance(model, DistributedDataParallel)
        or micro is None
        or schema.GRAD_NOISE not in config.names
    ):
        return
    ref = weakref.ref(dispatcher)

    def due() -> int | None:
        steps = ref()
        if steps is None or steps.micro is None:
            return None
        try:
            return steps.step if schema.GRAD_NOISE in config.due(steps.step) else None
        except Exception:  # a schedule that raises: recorded by the capture, nothing gathered here
            return None

    hook = RankGradients({id(t.param): t.name for t in micro.tracked}, due, model.process_group)
    try:
        model.register_comm_hook(hook, _comm_hook)
    except RuntimeError:
        micro.noise_note = RANK_HOOK_REFUSED
        return
    micro.ranks = hook
