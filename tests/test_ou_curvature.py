"""The OU section's curvature part: k̂ against α(h + λ) on a quadratic whose Hessian is known (H = h·I)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.noise.ou_rate import ou_rate_vs_curvature
from goup_probe.report.sections.ou_curvature import curvature_parts

D, N, H, LR, WD = 16, 512, 1.0, 0.1, 0.05
STEPS, BATCH = 400, 32


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """X with XᵀX/N = H·I exactly (orthonormal columns scaled), noisy targets."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(N, D, generator=g))
    x = q * (N * H) ** 0.5
    y = x @ torch.randn(D, 1, generator=g) + torch.randn(N, 1, generator=g)
    return x, y


def _half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).mean()


def _run(tmp_path, curvature: bool):
    x, y = _data()
    torch.manual_seed(0)
    model = nn.Linear(D, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WD)
    chunks = [(x[i : i + 128], y[i : i + 128]) for i in range(0, N, 128)]
    noise = (
        gp.NoiseProbe(_half_mse, chunks, every=100, curvature={"iters": 20, "probes": 8})
        if curvature
        else None
    )
    g = torch.Generator().manual_seed(1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=100, tracers=D, noise=noise):
        for _ in range(STEPS):
            idx = torch.randint(0, N, (BATCH,), generator=g)
            opt.zero_grad()
            _half_mse(model(x[idx]), y[idx]).backward()
            opt.step()
    return gp.load_run(tmp_path / "r")


def _ctx(run):
    return SimpleNamespace(tables=frozenset(run.tables), table=run.table)


def test_k_hat_matches_alpha_h_plus_lambda_on_an_isotropic_quadratic(tmp_path):
    run = _run(tmp_path, curvature=True)
    ou = gp.validate_ou(run, min_step=50)
    table = ou_rate_vs_curvature(ou, run.table(schema.NOISE_PROBE))
    row = table.set_index("param").loc["weight"]
    # Hutchinson is exact for H = h·I (vᵀHv = h·N for every Rademacher v); Lanczos finds h.
    assert row["h_mean"] == pytest.approx(H, rel=1e-5)
    assert row["h_top"] == pytest.approx(H, rel=1e-5)
    assert row["weight_decay"] == WD
    assert row["k_predicted"] == pytest.approx(LR * (H + WD), rel=1e-5)
    # one seeded run of 350 transitions over 16 coordinates: k̂'s own interval decides
    assert row["k_pooled_ci_low"] <= row["k_predicted"] <= row["k_pooled_ci_high"]
    parts = curvature_parts(_ctx(run), ou)
    assert "OU rate and curvature" in parts[0] and "1 of 1 tensor(s)" in parts[1]


def test_nothing_is_said_where_curvature_was_not_measured(tmp_path):
    run = _run(tmp_path, curvature=False)
    assert curvature_parts(_ctx(run), gp.validate_ou(run)) == []
