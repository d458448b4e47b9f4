import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.cli import main
from goup_probe.demo.data import BatchStream, ImageData, load_digits_data
from goup_probe.fidelity import CompareResult, shadow_summary, summarise, summary_table, t_interval
from goup_probe.fidelity.twin import _noise_seed

STEPS, EVAL = 12, 4


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_digits_data()


@pytest.fixture(scope="module")
def result(digits, tmp_path_factory) -> CompareResult:
    out = tmp_path_factory.mktemp("cmp") / "run"
    rng_before, threads = torch.get_rng_state(), torch.get_num_threads()
    res = gp.compare(
        _tiny_model, digits, steps=STEPS, seeds=2, eval_every=EVAL, lr=0.05, out=out, num_threads=1
    )
    assert torch.equal(rng_before, torch.get_rng_state()), "compare() changed the caller's global RNG"
    assert torch.get_num_threads() == threads
    return res


def test_curves_have_one_row_per_arm_seed_and_step(result):
    c = result.curves
    assert list(dict.fromkeys(c["arm"])) == ["sgd", "goup-seed", "goup-scalar"]
    assert set(c.columns) >= {"arm", "seed", "step", "train_loss", "heldout_loss", "heldout_acc"}
    assert set(c.columns) >= {"rel_distance", "update_cosine"}
    counts = c.groupby(["arm", "seed"])["step"].agg(["min", "max", "count"])
    assert (counts["min"] == 0).all() and (counts["max"] == STEPS).all()
    assert (counts["count"] == STEPS + 1).all()
    evaluated = sorted(c.loc[c["heldout_acc"].notna(), "step"].unique())
    assert evaluated == [0, 4, 8, 12]


def test_arms_see_the_same_batches_init_and_dropout_masks(result):
    c = result.curves[result.curves["step"] >= 1]
    per_step = c.groupby(["seed", "step"])["batch_digest"].nunique()
    assert (per_step == 1).all()
    # Different seeds do shuffle differently (the digest can tell batches apart).
    by_seed = c[c["arm"] == "sgd"].pivot(index="step", columns="seed", values="batch_digest")
    assert (by_seed[0] != by_seed[1]).all()
    # Step 1's loss is computed from the initial weights on the same batch with the
    # model's Dropout: equal in every arm only if init and dropout masks agree.
    first = c[c["step"] == 1].groupby("seed")["train_loss"].nunique()
    assert (first == 1).all()
    start = result.curves[result.curves["step"] == 0]
    assert (start["rel_distance"] == 0).all()
    assert start.groupby("seed")["heldout_loss"].nunique().eq(1).all()


def test_distances_are_measured_against_the_base_arm(result):
    c = result.curves[result.curves["heldout_acc"].notna() & (result.curves["step"] > 0)]
    base = c[c["arm"] == "sgd"]
    assert (base["rel_distance"] == 0).all()
    assert np.allclose(base["update_cosine"], 1.0) and np.allclose(base["update_ratio"], 1.0)
    seed_arm = c[c["arm"] == "goup-seed"]
    assert (seed_arm["rel_distance"] > 0).all() and (seed_arm["update_cosine"] < 1).all()
    layers = result.layers
    assert set(layers["param"]) == {"1.weight", "1.bias", "4.weight", "4.bias"}
    assert set(layers["step"]) == {0, 4, 8, 12}


def test_layer_distance_matches_a_direct_computation(digits):
    # Reproduce one arm pair by hand: SGD vs GO-UP seed mode from the same init.
    res = gp.compare(
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, steps=3, seeds=[7], eval_every=3,
        modes=["seed"], lr=0.1,
    )  # fmt: skip
    torch.manual_seed(7)
    init = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    base, other = (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)) for _ in range(2))
    base.load_state_dict(init.state_dict())
    other.load_state_dict(init.state_dict())
    sgd = torch.optim.SGD(base.parameters(), lr=0.1)
    goup = gp.GOUP(other.parameters(), lr=0.1, seed=_noise_seed(7, 0))
    batches = BatchStream(digits.train_x, digits.train_y, 64, 7)
    for _ in range(3):
        x, y = batches.next()
        for model, opt in ((base, sgd), (other, goup)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    w0, wb, wg = (m[1].weight.detach().double() for m in (init, base, other))
    expected_rel = ((wg - wb).norm() / wb.norm()).item()
    ua, ub = (wg - w0).flatten(), (wb - w0).flatten()
    expected_cos = (ua @ ub / (ua.norm() * ub.norm())).item()
    row = res.layers[(res.layers["arm"] == "goup-seed") & (res.layers["step"] == 3)]
    row = row[row["param"] == "1.weight"].iloc[0]
    assert row["rel_distance"] == pytest.approx(expected_rel, rel=1e-9)
    assert row["update_cosine"] == pytest.approx(expected_cos, rel=1e-9)


def test_summary_has_one_row_per_arm_with_intervals(result):
    s = result.summary
    assert list(s["arm"]) == ["sgd", "goup-seed", "goup-scalar"]
    assert (s["n_seeds"] == 2).all() and (s["steps"] == STEPS).all()
    assert (s["heldout_acc_lo"] <= s["heldout_acc"]).all() and (s["heldout_acc"] <= s["heldout_acc_hi"]).all()
    assert s.loc[0, "acc_gap"] == 0 and s.loc[0, "loss_gap"] == 0
    final = result.curves[result.curves["step"] == STEPS]
    for arm, sub in final.groupby("arm"):
        row = s[s["arm"] == arm].iloc[0]
        assert row["heldout_acc"] == pytest.approx(sub["heldout_acc"].mean())
    table = summary_table(s)
    assert len(table) == 3 and "held-out acc (95% CI)" in table.columns


def test_results_are_written_and_read_back(result):
    run = gp.load_run(result.run_dir)
    assert run.status == "completed" and run.meta["compare"]["steps"] == STEPS
    assert {schema.COMPARE_CURVES, schema.COMPARE_LAYERS, schema.COMPARE_SUMMARY} <= set(run.tables)
    pd.testing.assert_frame_equal(run.table(schema.COMPARE_SUMMARY), result.summary, check_dtype=False)
    back = CompareResult.from_run(result.run_dir)
    pd.testing.assert_frame_equal(back.curves, result.curves, check_dtype=False)
    assert len(back.layers) == len(result.layers)


def test_compare_refuses_a_non_empty_directory_and_bad_settings(digits, tmp_path):
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(gp.RunDirectoryError):
        gp.compare(_tiny_model, digits, steps=1, seeds=1, out=tmp_path)
    for kwargs in ({"modes": ["gauss"]}, {"modes": []}, {"seeds": 0}, {"seeds": [1, 1]}, {"lr": -1.0}):
        with pytest.raises(ValueError):
            gp.compare(_tiny_model, digits, steps=1, **kwargs)


def test_a_diverging_arm_is_marked_and_counted(digits):
    res = gp.compare(_tiny_model, digits, steps=6, seeds=2, eval_every=3, modes=["seed"], lr=1e10)
    final = res.curves[res.curves["step"] == 6]
    assert final["diverged"].any()
    assert final.loc[final["diverged"], "heldout_acc"].isna().all()
    s = res.summary.set_index("arm")
    assert (s["n_seeds"] + s["n_diverged"] == 2).all()


def test_t_interval_matches_scipy():
    values = [0.91, 0.93, 0.88, 0.95]
    iv = t_interval(values)
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (iv.low, iv.high, iv.n) == (pytest.approx(lo), pytest.approx(hi), 4)
    one = t_interval([0.5, float("nan")])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.low)


def test_gap_interval_is_paired_over_seeds():
    rows = []
    for seed, acc in enumerate([0.5, 0.7, 0.9]):
        for arm, mode, shift in (("sgd", None, 0.0), ("goup-seed", "seed", -0.1)):
            rows.append(
                {"arm": arm, "mode": mode, "seed": seed, "step": 10, "heldout_acc": acc + shift,
                 "heldout_loss": 1.0 - acc, "rel_distance": 0.0, "update_cosine": 1.0, "diverged": False}
            )  # fmt: skip
    s = summarise(pd.DataFrame(rows), "sgd").set_index("arm")
    # Unpaired, the spread of the accuracies (0.2) would give a wide interval; paired it is exact.
    assert s.loc["goup-seed", "acc_gap"] == pytest.approx(-0.1)
    assert s.loc["goup-seed", "acc_gap_hi"] - s.loc["goup-seed", "acc_gap_lo"] == pytest.approx(0, abs=1e-12)
    assert s.loc["goup-seed", "heldout_acc_hi"] - s.loc["goup-seed", "heldout_acc_lo"] > 0.5


# --------------------------------------------------------------------- shadow fidelity (probe columns)
def _probe_run(tmp_path, make_opt, steps=4):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 64, generator=g), torch.randint(0, 10, (128,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    opt = make_opt(model.parameters())
    records = []
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=1, tracers=0, keep_samples=0):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            before = {n: (p.detach().clone(), p.grad.detach().clone()) for n, p in model.named_parameters()}
            opt.step()
            records.append(
                {n: (*v, dict(model.named_parameters())[n].detach().clone()) for n, v in before.items()}
            )
    return gp.load_run(tmp_path / "run"), records


def test_shadow_columns_match_a_direct_computation(tmp_path):
    lr = 0.1
    run, records = _probe_run(tmp_path, lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=0.01))
    upd = run.stats[run.stats["quantity"] == schema.UPDATE].set_index(["step", "param"])
    checked = 0
    for step, rec in enumerate(records):
        for name, (theta, grad, theta_next) in rec.items():
            t, g, t1 = (v.double().flatten() for v in (theta, grad, theta_next))
            n = t.numel()
            delta = t1 - t
            sigma = (t - g).std().item()  # unbiased, as GO-UP uses
            nts = sigma * math.sqrt(n) / g.norm().item()
            cos = (-(delta @ g) / (delta.norm() * g.norm())).item()
            q = ((delta + lr * g).norm() ** 2).item() / (lr * sigma) ** 2  # χ²_N under GO-UP
            row = upd.loc[(step, name)]
            assert row["noise_to_signal"] == pytest.approx(nts, rel=1e-6)
            assert row["goup_cosine"] == pytest.approx(cos, rel=1e-6, abs=1e-9)
            chi2_p = min(1.0, 2 * min(stats.chi2.sf(q, n), stats.chi2.cdf(q, n)))
            assert row["goup_fit_p"] <= 2 * chi2_p + 1e-12  # Bonferroni: at most twice the χ² part's p
            if n >= 640:  # the weights: momentum and weight decay are not a GO-UP draw
                assert row["goup_fit_p"] < 1e-6
            checked += 1
    assert checked == 4 * len(records[0])


def test_shadow_columns_on_plain_sgd_and_on_goup_itself(tmp_path):
    lr = 0.05
    run, _ = _probe_run(tmp_path / "sgd", lambda p: torch.optim.SGD(p, lr=lr))
    upd = run.stats[run.stats["quantity"] == schema.UPDATE]
    # Plain SGD: the update is GO-UP's mean, so cos = 1, and it lacks GO-UP's noise: the fit test rejects.
    assert np.allclose(upd["goup_cosine"], 1.0, atol=1e-6)
    assert (upd["goup_fit_p"] < 1e-6).all()
    run, _ = _probe_run(
        tmp_path / "goup", lambda p: gp.GOUP(p, lr=lr, generator=torch.Generator().manual_seed(1))
    )
    upd = run.stats[(run.stats["quantity"] == schema.UPDATE) & (run.stats["param"] == "0.weight")]
    # A GO-UP step Δ = −αg + ασz has cos(Δ, −αg) ≈ 1/sqrt(1 + (σ√N/||g||)²) up to O(1/√N) (N = 4096).
    expected = 1.0 / np.sqrt(1.0 + upd["noise_to_signal"].to_numpy() ** 2)
    assert np.allclose(upd["goup_cosine"].to_numpy(), expected, atol=0.05)
    summary = shadow_summary(run)
    assert set(summary["param"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert (summary["steps"] == 4).all()


# --------------------------------------------------------------------- writing into a probe run, CLI
def test_write_comparison_keeps_the_probe_tables(result, tmp_path):
    run, _ = _probe_run(tmp_path, lambda p: torch.optim.SGD(p, lr=0.05), steps=2)
    gp.write_comparison(result, run.path)
    gp.write_comparison(result, run.path)  # replaces, does not append
    again = gp.load_run(run.path)
    assert len(again.stats) == len(run.stats)
    assert len(again.table(schema.COMPARE_SUMMARY)) == 3
    assert again.meta["compare"]["seeds"] == [0, 1]


def test_cli_compare_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--steps", "3", "--seeds", "2", "--eval-every", "3", "--modes", "seed",
                 "--out", str(out), "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "held-out acc (95% CI)" in printed and "goup-seed" in printed and "sgd" in printed
    assert len(gp.load_run(out).table(schema.COMPARE_SUMMARY)) == 2


def test_accuracy_interval_is_clipped_to_its_range():
    from goup_probe.fidelity.intervals import t_interval

    raw = t_interval([0.99, 0.93, 1.0])
    assert raw.high > 1.0
    clipped = raw.clipped(0.0, 1.0)
    assert clipped.high == 1.0 and clipped.low == raw.low and clipped.mean == raw.mean
    assert math.isnan(t_interval([0.5]).clipped(0.0, 1.0).low)
