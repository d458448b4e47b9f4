"""Named float64 fields all-gathered in one collective, and failures raised on every rank.

Each rank packs its fields, declared by name and width (the same declaration on
every rank), behind an ``ok`` flag into one fixed-size float64 buffer; one
``all_gather`` brings every rank's buffer to every rank, which unpacks them by
name. A rank whose local work failed still joins, with ``ok`` cleared, so no
collective is left waiting; :func:`raise_if_failed` then raises on every rank.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import torch
import torch.distributed as dist

Fields = dict[str, np.ndarray]
"""One rank's fields by name (each at most its declared width; shorter ones are NaN-padded)."""


class ShardCaptureError(RuntimeError):
    """The reduction of a sharded tensor failed on at least one rank (raised on every rank)."""


def all_gather(buffer: np.ndarray, device: torch.device) -> tuple[list[np.ndarray], int]:
    """All-gather equal-length float64 buffers; returns each rank's and the bytes received."""
    world = dist.get_world_size()
    t = torch.from_numpy(np.ascontiguousarray(buffer, dtype=np.float64)).to(device)
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t)
    return [o.cpu().numpy() for o in out], t.numel() * 8 * (world - 1)


def _pad(values: np.ndarray | None, width: int) -> np.ndarray:
    out = np.full(width, np.nan)
    if values is not None and width:
        out[: values.size] = values
    return out


def exchange(
    fields: Mapping[str, np.ndarray] | None, widths: Mapping[str, int], device: torch.device
) -> tuple[list[Fields], list[bool], int]:
    """All-gather this rank's named ``fields``; every rank's fields by name, ok flags, bytes received.

    Parameters
    ----------
    fields : mapping or None
        This rank's values per field name; None when its local work failed
        (NaNs are sent with ``ok`` cleared).
    widths : mapping
        The declared fields, name -> width, in wire order; identical on every rank.
    device : torch.device
        Where the collective runs.
    """
    total = 1 + sum(widths.values())
    if fields is None:
        buf = np.full(total, np.nan)
        buf[0] = 0.0
    else:
        buf = np.concatenate([[1.0]] + [_pad(fields.get(name), w) for name, w in widths.items()])
    gathered, nbytes = all_gather(buf, device)
    cuts = np.cumsum([1, *widths.values()])
    per_rank, oks = [], []
    for g in gathered:
        oks.append(g[0] == 1.0)
        per_rank.append({name: g[a:b] for name, (a, b) in zip(widths, itertools.pairwise(cuts), strict=True)})
    return per_rank, oks, nbytes


def raise_if_failed(oks: list[bool], error: BaseException | None, what: str) -> None:
    """Raise :class:`ShardCaptureError` (on every rank) when any rank's ``ok`` flag is cleared."""
    failed = [r for r, ok in enumerate(oks) if not ok]
    if not failed:
        return
    message = f"{what}: the local reduction failed on rank(s) {failed}"
    if error is not None:
        raise ShardCaptureError(f"{message}; here: {type(error).__name__}: {error}") from error
    raise ShardCaptureError(message)


__all__ = ["Fields", "ShardCaptureError", "all_gather", "exchange", "raise_if_failed"]
