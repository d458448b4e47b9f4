"""TracerRecorder reads each tensor's tracer coordinates as they are now, whatever happened to its storage."""

from __future__ import annotations

import numpy as np
import torch

from goup_probe.capture.tracers import TracerRecorder, TracerSet


def _expected(param: torch.Tensor, index: torch.Tensor) -> np.ndarray:
    return param.detach().reshape(-1)[index].double().numpy()


def test_values_follow_in_place_updates_storage_swaps_resizes_and_layouts() -> None:
    torch.manual_seed(0)
    dense = torch.nn.Parameter(torch.randn(6, 5))
    transposed = torch.nn.Parameter(torch.randn(4, 3).t())  # not contiguous: no cached view
    params = [dense, transposed]
    indices = [torch.tensor([0, 7, 29]), torch.tensor([1, 5, 11])]
    recorder = TracerRecorder(
        [TracerSet(f"p{i}", p, ix) for i, (p, ix) in enumerate(zip(params, indices, strict=True))],
        dtype=torch.float64,
    )

    def step(number: int, change) -> tuple[np.ndarray, np.ndarray]:
        for p in params:
            p.grad = torch.randn_like(p)
        before = np.concatenate([_expected(p, ix) for p, ix in zip(params, indices, strict=True)])
        recorder.before(number)
        change()
        after = np.concatenate([_expected(p, ix) for p, ix in zip(params, indices, strict=True)])
        recorder.after({})
        return before, after

    def in_place() -> None:
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-0.1)

    def swap_storage() -> None:
        with torch.no_grad():
            dense.data = dense - 0.5  # new storage; the Parameter object stays
            transposed.data = transposed * 2.0

    def resize() -> None:
        with torch.no_grad():
            dense.data = torch.randn(8, 5)  # a larger tensor: the same index still fits

    def restride() -> None:  # the same storage, address and size, read in another order
        with torch.no_grad():
            dense.data = dense.data.t()
            transposed.data = transposed.data.t()

    def as_strided() -> None:
        with torch.no_grad():
            dense.as_strided_((5, 8), (1, 5))

    def reinterpret() -> None:  # the same bytes as another dtype (float64 as pairs of float32)
        with torch.no_grad():
            dense.data = dense.data.contiguous().reshape(-1).view(torch.float32)[:40].reshape(8, 5).double()

    changes = [
        in_place,
        swap_storage,
        in_place,
        resize,
        in_place,
        restride,
        in_place,
        as_strided,
        reinterpret,
    ]
    wanted = [step(number, change) for number, change in enumerate(changes)]
    table = recorder.drain().to_pandas()
    for number, (before, after) in enumerate(wanted):
        rows = table[table["step"] == number].sort_values("param")
        np.testing.assert_array_equal(np.concatenate(rows["theta"].to_list()), before)
        np.testing.assert_array_equal(np.concatenate(rows["theta_next"].to_list()), after)
