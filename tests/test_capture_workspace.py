"""The chunk sums written into reused buffers equal the plain eager formulas bit for bit (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from goup_probe.capture import batch, sums
from goup_probe.capture.reduce import reduce_components, reduce_update


def _plain_chunk_sums(raw: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
    """The same six reductions with a fresh temporary for each intermediate."""
    d = raw
    if shift != 0.0:
        d = d - shift
    if scale != 1.0:
        d = d * scale
    d2 = d * d
    lo, hi = torch.aminmax(raw)
    return torch.stack([d.sum(), d2.sum(), torch.dot(d2, d), (d2 * d2).sum(), lo, hi])


def _plain_sums(x: torch.Tensor, shift: float, scale: float, chunk: int) -> np.ndarray:
    parts = [_plain_chunk_sums(x[a : a + chunk], shift, scale) for a in range(0, x.numel(), chunk)]
    return torch.stack(parts).to(torch.float64).numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (0.25, 1.0), (0.0, 2.0**-8), (0.5, 2.0**10)])
def test_workspace_chunk_sums_equal_plain_ones(dtype: torch.dtype, shift: float, scale: float) -> None:
    gen = torch.Generator().manual_seed(3)
    work = sums.Workspace()
    for n in (1000, 4096, 5000):  # the last chunk of 5000 in chunks of 2048 is shorter than the buffers
        x = (torch.randn(n, generator=gen, dtype=torch.float64) ** 3 + 0.3).to(dtype)
        got = torch.stack([sums._chunk_sums(x[a : a + 2048], shift, scale, work) for a in range(0, n, 2048)])
        assert torch.equal(got.to(torch.float64), torch.from_numpy(_plain_sums(x, shift, scale, 2048)))


def test_reductions_equal_plain_formulas_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(5)
    n = (1 << 18) + 12345  # two chunks, the second partial
    theta = torch.randn(n, generator=gen) * 0.05 + 0.02
    grad = torch.distributions.StudentT(3.0).sample((n,)) * 1e-3
    theta_new = theta - 0.1 * grad
    index = torch.arange(0, n, n // 5000)[:5000]
    parts = reduce_components(theta, grad, index)
    for red, values in ((parts.theta, theta), (parts.grad, grad), (parts.x, theta - grad)):
        shift, scale = sums.shift_and_scale(red.sample, torch.float32)
        expected = sums.sums_from_table(
            _plain_sums(values, shift, scale, sums.CHUNK_ELEMENTS), n, shift, scale, float32=True
        )
        assert red.sums == expected
    update, dot = reduce_update(theta_new, theta, grad, index)
    delta = theta_new - theta
    shift, scale = sums.shift_and_scale(update.sample, torch.float32)
    expected = sums.sums_from_table(
        _plain_sums(delta, shift, scale, sums.CHUNK_ELEMENTS), n, shift, scale, float32=True
    )
    assert update.sums == expected
    chunks = range(0, n, sums.CHUNK_ELEMENTS)
    c = sums.CHUNK_ELEMENTS
    assert dot == float(sum(float((delta[a : a + c] * grad[a : a + c]).sum()) for a in chunks))


def test_group_row_sums_equal_plain_formulas() -> None:
    gen = torch.Generator().manual_seed(7)
    values = torch.randn(3, 4, 6000, generator=gen)
    shifts = np.full((3, 4), 0.125)
    scales = np.full((3, 4), 2.0)
    d = (values - 0.125) * 2.0
    d2 = d * d
    lo, hi = torch.aminmax(values, dim=-1)
    expected = torch.stack([d.sum(-1), d2.sum(-1), (d2 * d).sum(-1), (d2 * d2).sum(-1), lo, hi], dim=-1)
    assert np.array_equal(batch._row_sums(values, shifts, scales), expected.to(torch.float64).numpy())
