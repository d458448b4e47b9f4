"""The compiled (numba) power sums of CPU tensors against numpy and scipy in float64."""

import json

import numpy as np
import pytest
import torch

import goup_probe as gp
from goup_probe.capture import fused
from goup_probe.capture import reduce as red

pytest.importorskip("numba")  # .ci/run installs the `fast` extra and fails when numba does not import

SIZES = (1, 7, fused.CHUNK_ELEMENTS, fused.CHUNK_ELEMENTS + 1, 3 * fused.CHUNK_ELEMENTS + 12_345)


def _expected(values: np.ndarray) -> dict[str, float]:
    """Moments of the finite values by two passes in numpy's long double (80-bit on x86).

    Not scipy.stats.skew in float64: on 10⁴ ± 10⁻² data its two-pass float64 skewness is
    off by 9e-8 relative, where the long-double value and the compiled sums agree to 1e-11.
    """
    v = values[np.isfinite(values)].astype(np.longdouble)
    mean = v.mean()
    d = v - mean
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    out = {"mean": mean, "std": np.sqrt(m2), "min": v.min(), "max": v.max()}
    if v.size > 1 and m2 > 0:
        out["skew"] = m3 / m2**1.5
        out["excess_kurtosis"] = m4 / m2**2 - 3
    return {name: float(value) for name, value in out.items()}


def _assert_matches(reduction: red.Reduction, values: np.ndarray, rel: float = 1e-9) -> None:
    got = reduction.moments
    assert got.numel == values.size and got.nonfinite == int((~np.isfinite(values)).sum())
    for name, value in _expected(values).items():
        assert getattr(got, name) == pytest.approx(value, rel=rel, abs=1e-12 * max(1.0, abs(value))), name


def _draw(kind: str, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    values = {
        "normal": lambda: rng.standard_normal(n),
        "t3": lambda: rng.standard_t(3, n),
        "lognormal": lambda: rng.lognormal(0.0, 1.0, n),
        "offset": lambda: 1e4 + 1e-2 * rng.standard_normal(n),
        "tiny": lambda: 1e-11 * rng.standard_normal(n),
        "huge": lambda: 1e7 * rng.standard_t(5, n),
    }[kind]()
    return torch.from_numpy(values).to(dtype)


def _index(n: int, k: int = 500) -> torch.Tensor:
    return torch.from_numpy(np.sort(np.random.default_rng(0).choice(n, size=min(n, k), replace=False)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["normal", "t3", "lognormal", "offset", "tiny", "huge"])
def test_components_match_float64_numpy(kind, dtype):
    n = SIZES[-1]
    theta = _draw(kind, n, dtype, 1)
    grad = 0.1 * _draw(kind, n, dtype, 2)
    parts = red.reduce_components(theta, grad, _index(n), kernel="numba")
    t, g = theta.double().numpy(), grad.double().numpy()
    _assert_matches(parts.theta, t)
    _assert_matches(parts.grad, g)
    _assert_matches(parts.x, t - g)  # X is formed in float64
    np.testing.assert_array_equal(parts.x.sample, (t - g)[_index(n).numpy()])
    assert parts.grad.norm == pytest.approx(np.linalg.norm(g), rel=1e-12)


@pytest.mark.parametrize("n", SIZES)
def test_chunk_boundaries_and_extremes_are_exact(n):
    theta = _draw("t3", n, torch.float32, 3)
    grad = _draw("normal", n, torch.float32, 4)
    if n > 2:  # extremes placed in the last chunk, on its last element
        theta[-1], grad[-1] = 1e6, -1e6
    parts = red.reduce_components(theta, grad, _index(n), kernel="numba")
    t, g = theta.double().numpy(), grad.double().numpy()
    for reduction, values in ((parts.theta, t), (parts.grad, g), (parts.x, t - g)):
        assert reduction.moments.min == values.min() and reduction.moments.max == values.max()
        assert reduction.sums.count == n
        _assert_matches(reduction, values)


@pytest.mark.parametrize("with_grad", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_update_and_its_dot_product_match_float64(dtype, with_grad):
    n = SIZES[-2]
    old = _draw("normal", n, dtype, 5)
    new = old - 1e-3 * _draw("t3", n, dtype, 6)
    grad = _draw("normal", n, dtype, 7) if with_grad else None
    reduction, dot = red.reduce_update(new, old, grad, _index(n), kernel="numba")
    delta = new.double().numpy() - old.double().numpy()
    _assert_matches(reduction, delta)
    if with_grad:
        assert dot == pytest.approx(float(delta @ grad.double().numpy()), rel=1e-10)
    else:
        assert np.isnan(dot)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flat_values_match_float64(dtype):
    x = _draw("lognormal", SIZES[-1], dtype, 8)
    _assert_matches(red.reduce_flat(x, _index(x.numel()), kernel="numba"), x.double().numpy())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_values_take_the_masked_path(bad):
    n = fused.CHUNK_ELEMENTS + 100
    theta = _draw("normal", n, torch.float32, 9)
    grad = _draw("normal", n, torch.float32, 10)
    grad[[5, n - 3]] = bad  # in both chunks
    parts = red.reduce_components(theta, grad, _index(n), kernel="numba")
    t, g = theta.double().numpy(), grad.double().numpy()
    _assert_matches(parts.theta, t)
    _assert_matches(parts.grad, g)
    _assert_matches(parts.x, t - g)
    assert parts.grad.moments.nonfinite == 2 and np.isnan(parts.grad.norm)
    new = theta.clone()
    new[7] = bad
    update, _ = red.reduce_update(new, theta, None, _index(n), kernel="numba")
    _assert_matches(update, new.double().numpy() - t)


def test_numba_and_eager_float64_agree_on_every_field():
    theta = _draw("t3", 200_000, torch.float32, 11)
    grad = _draw("lognormal", 200_000, torch.float32, 12)
    index = _index(200_000)
    compiled = red.reduce_components(theta, grad, index, kernel="numba")
    eager = red.reduce_components(theta, grad, index, precision="float64", kernel="eager")
    for a, b in zip(
        (compiled.theta, compiled.grad, compiled.x), (eager.theta, eager.grad, eager.x), strict=True
    ):
        for field in ("mean", "std", "skew", "excess_kurtosis", "min", "max"):
            assert getattr(a.moments, field) == pytest.approx(getattr(b.moments, field), rel=1e-10)


def test_which_tensors_the_loops_take():
    x32, x64 = torch.zeros(10), torch.zeros(10, dtype=torch.float64)
    assert fused.takes(x32, x32) and fused.takes(x64)
    assert not fused.takes(x32, x64)  # one dtype only
    assert not fused.takes(x32.half()) and not fused.takes(x32.bfloat16())
    assert not fused.takes(torch.zeros(0)) and not fused.takes(x32, None)
    assert not fused.takes(torch.zeros(10, device="meta"))
    assert not fused.takes(x32, torch.zeros(11))
    half = _draw("normal", 5000, torch.float16, 13)  # reduced by the eager path instead
    assert (
        red.reduce_flat(half, _index(5000), kernel="numba").sums == red.reduce_flat(half, _index(5000)).sums
    )


def test_kernel_option_is_resolved_and_recorded(tmp_path, monkeypatch):
    assert fused.resolve_kernel("auto") == "numba" and fused.resolve_kernel("eager") == "eager"
    with pytest.raises(ValueError, match="kernel must be one of"):
        fused.resolve_kernel("cuda")
    model = torch.nn.Linear(20, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="kernel must be one of"):
        gp.attach(model, opt, run_dir=tmp_path / "bad", kernel="fast")
    monkeypatch.setattr(fused, "numba_kernels", lambda: None)  # as if numba were not installed
    assert fused.resolve_kernel("auto") == "eager"
    with pytest.raises(ImportError, match=r"goup_probe\[fast\]"):
        fused.resolve_kernel("numba")
    probe = gp.attach(model, opt, run_dir=tmp_path / "run")
    probe.detach()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["capture"]["kernel"] == "eager"


def _run_rows(tmp_path, name, **options):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    probe = gp.attach(model, opt, run_dir=tmp_path / name, every=1, **options)
    for _ in range(3):
        x, y = torch.randn(32, 64, generator=gen), torch.randint(0, 4, (32,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    probe.detach()
    return gp.load_run(tmp_path / name).stats.sort_values(["step", "param", "quantity"])


def test_probe_rows_agree_between_kernels(tmp_path):
    compiled = _run_rows(tmp_path, "numba", kernel="numba")
    eager = _run_rows(tmp_path, "eager", kernel="eager", precision="float64")
    assert len(compiled) == len(eager) == 3 * 4 * 4
    for column in ("mean", "std", "skew", "excess_kurtosis", "min", "max", "grad_norm", "shapiro_p"):
        np.testing.assert_allclose(compiled[column], eager[column], rtol=1e-9, atol=1e-15, err_msg=column)
    assert (compiled["verdict"].to_numpy() == eager["verdict"].to_numpy()).all()
    meta = json.loads((tmp_path / "numba" / "run.json").read_text())
    assert meta["capture"]["kernel"] == "numba"


def test_strided_views_reduce_too():
    base = _draw("normal", 3000, torch.float32, 14)
    strided = base[::3]  # not contiguous
    _assert_matches(red.reduce_flat(strided, _index(1000), kernel="numba"), strided.double().numpy())
