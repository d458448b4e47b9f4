"""On-demand gradient noise, noise scale and curvature (goup_probe.noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from goup_probe.noise.gradient import (
    AXIS_COORDINATE,
    _batch_grads,
    _loop_grads,
    _tensor_rows,
    _vmap_grads,
    gradient_noise,
)
from goup_probe.noise.hessian import curvature
from goup_probe.noise.scale import noise_scale_from_sums
from goup_probe.noise.tails import sample_sas
from goup_probe.stats.normality import normality


def _half_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(-1) - target) ** 2).mean()


def _regression(n: int = 16384, d: int = 10, noise: float = 1.0):
    """y = w*·x + ε, x ~ N(0, I), at w = w* + δ with |δ| = 1.

    Per-sample gradient g = (δ·x − ε)x: G = δ and, by Isserlis,
    Σ = (|δ|² + s²) I + δδᵀ, so tr Σ = d(1 + s²) + 1 and |G|² = 1.
    """
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w_star = torch.randn(d, generator=gen, dtype=torch.float64)
    y = x @ w_star + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    delta = torch.randn(d, generator=gen, dtype=torch.float64)
    delta /= delta.norm()
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_((w_star + delta)[None])
    return model, x, y, d * (1 + noise**2) + 1.0, 1.0


def _batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def test_noise_scale_of_linear_regression_matches_the_known_covariance() -> None:
    # One data set of 16384 samples; truth: tr Σ = 21, |G|² = 1, B_simple = 21.
    model, x, y, trace_true, g2_true = _regression()
    per = gradient_noise(model, _half_mse, _batches(x, y, 1024), per_sample=True)
    micro = gradient_noise(model, _half_mse, _batches(x, y, 32))
    assert per.method == "vmap" and per.n_units == 16384 and per.unit_size == 1
    assert micro.method == "micro-batch" and micro.n_units == 512 and micro.unit_size == 32
    for r in (per, micro):
        s = r.noise_scale
        assert abs(s.trace_sigma / trace_true - 1) < 0.10
        assert abs(s.grad_sq_norm / g2_true - 1) < 0.10
        assert abs(s.b_simple / (trace_true / g2_true) - 1) < 0.10
        assert s.trace_sigma_low < s.trace_sigma < s.trace_sigma_high
        assert s.b_simple_low < s.b_simple < s.b_simple_high
    # the two estimators agree within their intervals (measured: 21.26 vs 21.28)
    assert abs(per.noise_scale.trace_sigma - micro.noise_scale.trace_sigma) < 0.05 * trace_true
    assert abs(per.noise_scale.b_simple - micro.noise_scale.b_simple) < 0.05 * trace_true
    frame = micro.to_frame()
    assert list(frame.param) == ["weight"] and frame.trace_sigma.iloc[0] == micro.noise_scale.trace_sigma


def test_per_sample_vmap_equals_the_loop_and_the_batch_gradient() -> None:
    model, x, y, _, _ = _regression(n=96)
    params = dict(model.named_parameters())
    batch = ((x[:32],), y[:32])
    by_vmap = _vmap_grads(model, _half_mse, params, batch)["weight"]
    by_loop = _loop_grads(model, _half_mse, params, batch)["weight"]
    by_batch = _batch_grads(model, _half_mse, params, batch)["weight"]
    torch.testing.assert_close(by_vmap, by_loop)
    torch.testing.assert_close(by_vmap.mean(dim=0), by_batch[0])
    batches = _batches(x, y, 32)
    bn = nn.Sequential(model, nn.BatchNorm1d(1, affine=False).double())
    bn[1].eval()  # eval BatchNorm is vmap-able; in train mode it is not
    assert gradient_noise(bn, _half_mse, batches, per_sample=True, layers="0.*").method == "vmap"
    bn.train()
    with pytest.warns(UserWarning, match="BatchNorm in train mode"):
        looped = gradient_noise(bn, _half_mse, batches, per_sample=True, layers="0.*")
    assert looped.method == "loop" and "BatchNorm" in looped.note and looped.n_units == 96
    assert bn.training and bn[1].num_batches_tracked.item() == 0  # buffers restored


class _Mean(nn.Module):
    """loss = ½|θ − z|² per sample: the per-sample gradient θ − z is exactly Gaussian."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(d, dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.theta.expand_as(z)


def _sum_half_sq(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - z) ** 2).sum(dim=1).mean()


def test_gaussian_noise_is_not_flagged_above_the_nominal_rate() -> None:
    # Gaussian per-sample noise (θ − z, z ~ N(0, I)), micro-batches of 8, 40 units, 20 coordinates.
    # 25 replications: 25 pooled rows and 500 coordinate rows. A row is flagged when
    # Shapiro-Wilk rejects at 5%; the rate must not exceed 5% by more than 3 binomial SEs
    # (pooled: 3·sqrt(.05·.95/25) = 0.13; coordinate: 3·sqrt(.05·.95/500) = 0.029; the
    # coordinate rows of one replication are independent, the units being shared only within a row).
    gen = torch.Generator().manual_seed(5)
    pooled, coords = [], []
    for rep in range(25):
        model = _Mean(20)
        z = torch.randn(320, 20, generator=gen, dtype=torch.float64)
        r = gradient_noise(
            model, _sum_half_sq, [(z[i : i + 8], z[i : i + 8]) for i in range(0, 320, 8)], seed=rep
        )
        pooled.append(r.stats[r.stats.axis == "pooled"].shapiro_p.iloc[0])
        coords.extend(r.stats[r.stats.axis == AXIS_COORDINATE].shapiro_p)
    assert len(coords) == 500
    for ps in (pooled, coords):
        rate = float(np.mean(np.array(ps) < 0.05))
        assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / len(ps)), rate


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def _train(steps: int, probe_at: int | None, per_sample: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = _Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(256, 6), torch.randint(0, 3, (256,))
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps):
        idx = torch.randint(0, 256, (32,))  # data order from the global RNG
        loss = loss_fn(model(x[idx]), y[idx])  # dropout masks from the global RNG
        loss.backward()
        if step == probe_at:  # in the middle of a step: .grad is populated
            batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
            with pytest.warns(UserWarning) if per_sample else _nothing():
                gradient_noise(model, loss_fn, batches, per_sample=per_sample, max_coordinates=5)
        opt.step()
        opt.zero_grad()
    return {k: v.clone() for k, v in model.state_dict().items()}


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradient_noise_does_not_change_the_training_trajectory(per_sample: bool) -> None:
    plain = _train(12, None, per_sample)
    probed = _train(12, 5, per_sample)
    assert plain.keys() == probed.keys()
    for name in plain:  # weights and BatchNorm buffers bit-identical
        assert torch.equal(plain[name], probed[name]), name


def test_invalid_arguments() -> None:
    model, x, y, _, _ = _regression(n=64)
    with pytest.raises(ValueError, match="at least 3 units"):
        gradient_noise(model, _half_mse, _batches(x, y, 32))
    with pytest.raises(ValueError, match="same number"):
        gradient_noise(model, _half_mse, [(x[:10], y[:10]), (x[:20], y[:20]), (x[:10], y[:10])])
    with pytest.raises(ValueError, match="selects no"):
        gradient_noise(model, _half_mse, _batches(x, y, 8), layers="nothing*")
    with pytest.raises(ValueError, match="max_coordinates"):
        gradient_noise(model, _half_mse, _batches(x, y, 8), max_coordinates=0)
    with pytest.raises(ValueError, match="tail_method"):
        gradient_noise(model, _half_mse, _batches(x, y, 8), tail_method="pickands")
    with pytest.raises(ValueError, match="pairs"):
        gradient_noise(model, _half_mse, [x[:8]] * 3)
    with pytest.warns(UserWarning, match="last batch"):
        r = gradient_noise(model, _half_mse, _batches(x, y, 20))
    assert r.n_units == 3 and "left out" in r.note


class _Quadratic(nn.Module):
    """L = ½ θᵀAθ over θ = (a, vec b): the Hessian is A."""

    def __init__(self, a: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("hess", torch.tensor(a))
        self.a = nn.Parameter(torch.randn(30, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(4, 5, dtype=torch.float64))

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        theta = torch.cat([self.a, self.b.reshape(-1)])
        return 0.5 * theta @ self.hess @ theta


def _rotated(spectrum: np.ndarray, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((spectrum.size,) * 2))
    return q @ np.diag(spectrum) @ q.T


def test_curvature_of_a_quadratic_with_a_known_spectrum() -> None:
    # One rotated 50-dimensional quadratic, spectrum linspace(-1, 10) (a saddle), 400 probes.
    spectrum = np.linspace(-1.0, 10.0, 50)
    hess = _rotated(spectrum, 0)
    model = _Quadratic(hess)
    model.a.grad = torch.ones(30, dtype=torch.float64)
    r = curvature(model, lambda out, _: out, (torch.zeros(1), None), top=2, probes=400)
    assert r.top_eigenvalue == pytest.approx(10.0, rel=0.01)
    assert r.model.eigenvalues[1] == pytest.approx(spectrum[-2], rel=0.01)
    assert r.model.trace == pytest.approx(np.trace(hess), rel=0.05)
    assert abs(r.model.trace - np.trace(hess)) < 4 * r.model.trace_se  # measured 1.5 SE
    for name, block in (("a", hess[:30, :30]), ("b", hess[30:, 30:])):
        assert r.blocks[name].eigenvalues[0] == pytest.approx(np.linalg.eigvalsh(block)[-1], rel=0.01)
        assert r.blocks[name].trace == pytest.approx(np.trace(block), rel=0.05)
    steps = r.model.lanczos_steps + sum(b.lanczos_steps for b in r.blocks.values())
    assert r.hvps == steps + 400 and str(r.hvps) in r.note
    frame = r.to_frame()
    assert list(frame.block) == ["<model>", "a", "b"] and "eig_2_residual" in frame
    assert torch.equal(model.a.grad, torch.ones(30, dtype=torch.float64)) and model.b.grad is None


def test_curvature_options() -> None:
    model = _Quadratic(np.diag(np.arange(1.0, 51.0)))
    r = curvature(model, lambda out, _: out, (torch.zeros(1), None), trace=False, blocks=False)
    assert r.top_eigenvalue == pytest.approx(50.0, rel=1e-6)
    assert r.probes == 0 and math.isnan(r.model.trace) and r.blocks["a"].eigenvalues == ()
    exact = curvature(model, lambda out, _: out, (torch.zeros(1), None), top=0, probes=2)
    assert exact.model.trace == pytest.approx(np.arange(1.0, 51.0).sum())  # diagonal: exact
    assert exact.hvps == 2
    with pytest.raises(ValueError, match="probes"):
        curvature(model, lambda out, _: out, (torch.zeros(1), None), probes=1)
    with pytest.raises(ValueError, match="selects no"):
        curvature(model, lambda out, _: out, (torch.zeros(1), None), layers="c")


def test_package_face_exports_the_noise_measurements() -> None:
    import goup_probe as gp
    from goup_probe import noise

    for name in ("gradient_noise", "tail_index", "curvature", "GradientNoiseResult"):
        assert getattr(gp, name) is getattr(noise, name) and name in gp.__all__
    for name in ("TailIndexResult", "CurvatureResult", "NoiseScale"):
        assert getattr(gp, name) is getattr(noise, name)


def test_noise_scale_intervals_cover_at_the_nominal_rate() -> None:
    # 300 replications of 128 batches of 32 per-sample regression gradients (d = 10, |δ| = 1):
    # each 95% jackknife interval covers the truth within 3 binomial SEs (3·sqrt(.05·.95/300)
    # = 0.038). Measured: tr Σ 0.953, |G|² 0.960, B_simple 0.950.
    rng = np.random.default_rng(0)
    d, size, n = 10, 32, 128
    delta = np.ones(d) / math.sqrt(d)
    truth = np.array([d * 2.0 + 1.0, 1.0, d * 2.0 + 1.0])
    hits = np.zeros(3)
    for _ in range(300):
        x = rng.standard_normal((n * size, d))
        g = (x @ delta - rng.standard_normal(n * size))[:, None] * x
        units = g.reshape(n, size, d).mean(axis=1)
        mean = units.mean(axis=0)
        s = noise_scale_from_sums((units**2).sum(axis=1), units @ mean, float(mean @ mean), size)
        lows = np.array([s.trace_sigma_low, s.grad_sq_norm_low, s.b_simple_low])
        highs = np.array([s.trace_sigma_high, s.grad_sq_norm_high, s.b_simple_high])
        hits += (lows <= truth) & (truth <= highs)
    assert np.all(np.abs(hits / 300 - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / 300)), hits / 300
    with pytest.raises(ValueError, match="at least 3 units"):
        noise_scale_from_sums(np.ones(2), np.ones(2), 1.0, 4)


def test_heavy_tailed_per_sample_noise_gives_its_tail_index() -> None:
    # Per-sample gradients θ − z with z ~ SαS(1.5) i.i.d. (100 coordinates × 4000 samples):
    # the pooled noise's Mohammadi α̂ is 1.5 within 0.1 (one replication; SE about 0.03),
    # and both axes flag it.
    z = torch.from_numpy(sample_sas(1.5, 400_000, np.random.default_rng(2)).reshape(4000, 100))
    batches = [(z[i : i + 500], z[i : i + 500]) for i in range(0, 4000, 500)]
    r = gradient_noise(_Mean(100), _sum_half_sq, batches, per_sample=True, max_coordinates=20)
    tail = r.tail_index["theta"]
    assert abs(tail.alpha - 1.5) < 0.1 and tail.ci_low < tail.alpha < tail.ci_high
    row = r.to_frame().iloc[0]
    assert row.pooled_verdict == "non-Gaussian" and row.coordinate_reject_rate > 0.9
    assert row.tail_alpha == tail.alpha and row.coordinates_tested == 20


def test_coordinate_rows_equal_normality_of_each_coordinate() -> None:
    # The coordinate rows are tested all at once; each equals normality() on that coordinate.
    xi = np.random.default_rng(0).standard_t(5, size=(300, 50))
    rows = _tensor_rows("w", xi, 1, 10, 3)
    assert rows[0]["axis"] == "pooled" and rows[0]["numel"] == xi.size and len(rows) == 11
    for row in rows[1:]:
        ref = normality(xi[:, row["coordinate"]], axis=AXIS_COORDINATE, seed=3).to_dict()
        assert ref.keys() <= row.keys()
        for key, value in ref.items():
            if isinstance(value, float):
                assert value == pytest.approx(row[key], rel=1e-12, nan_ok=True), key
            else:
                assert value == row[key], key
