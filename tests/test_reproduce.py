"""Paper reproductions: each recipe's smoke form, the output rules, sentences that follow the numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import image

from goup_probe.cli import main
from goup_probe.reproduce import (
    RECIPES,
    mandt2017,
    mccandlish2018,
    panigrahi2019,
    reproduce,
    simsekli2019,
    xie2023,
)
from goup_probe.store import RunDirectoryError

SMOKE = {
    "simsekli2019": simsekli2019.Settings(
        widths=(8, 32), steps=20, checkpoints=2, batch_size=16, n_batches=10
    ),
    "panigrahi2019": panigrahi2019.Settings(
        batch_sizes=(16, 256), checkpoints=(0, 20), n_batches=12, max_coordinates=8, width=16
    ),
    "xie2023": xie2023.Settings(
        width=16,
        steps=30,
        batch_size=32,
        n_batches=30,
        max_coordinates=20,
        spectrum_samples=200,
        fit_ranks=30,
    ),
    "mccandlish2018": mccandlish2018.Settings(
        batch_sizes=(8, 64),
        lrs=(0.3, 1.0),
        target=0.6,
        max_steps=400,
        check_every=5,
        scale_checkpoints=3,
        n_units=10,
        width=16,
    ),
    "mandt2017": mandt2017.Settings(
        rates=(0.01, 0.5), chains=60, burn_in=3.0, samples=5, thin=1.0, bootstrap=20
    ),
}
"""Test-only sizes: all five together run in well under a minute."""


def test_every_recipe_has_a_smoke_size() -> None:
    assert set(SMOKE) == set(RECIPES)


@pytest.mark.parametrize("name", list(RECIPES))
def test_smoke_run_writes_page_and_a_non_trivial_figure(name: str, tmp_path) -> None:
    threads = torch.get_num_threads()
    result = reproduce(name, out=tmp_path / name, settings=SMOKE[name])
    assert torch.get_num_threads() == threads  # set to 1 while the recipe runs, then restored
    assert result.index.is_file()
    page = result.index.read_text("utf-8")
    meta = json.loads((tmp_path / name / "run.json").read_text("utf-8"))
    assert meta["recipe"] == name and meta["sentence"] == result.sentence
    assert meta["figures"], "no figure written"
    for rel in meta["figures"]:
        png = result.index.parent / rel
        assert png.is_file() and png.stat().st_size > 20_000
        pixels = image.imread(png)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 800
        colours = np.unique(pixels[..., :3].reshape(-1, 3).round(2), axis=0)
        assert len(colours) > 20, f"{rel} looks blank"
        assert rel in page
    assert "Paper&#x27;s claim" in page and "Our verdict" in page


def _reproduce_mandt(out, **kw):
    return reproduce("mandt2017", out=out, settings=SMOKE["mandt2017"], **kw)


def test_refuses_non_empty_directory_and_keeps_foreign_files(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="not empty"):
        _reproduce_mandt(out)
    with pytest.raises(RunDirectoryError):
        _reproduce_mandt(out, overwrite=True)  # not a goup_probe output: nothing is deleted
    assert (out / "notes.txt").read_text() == "mine"


def test_refuses_earlier_output_unless_overwrite(tmp_path) -> None:
    out = tmp_path / "out"
    _reproduce_mandt(out)
    with pytest.raises(RunDirectoryError, match="not empty"):
        _reproduce_mandt(out)
    again = _reproduce_mandt(out, overwrite=True)
    assert again.index.is_file()


def test_cli_quick_and_refusal(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["reproduce", "mandt2017", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Our verdict" in printed and str(out) in printed
    assert main(["reproduce", "mandt2017", "--quick", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown reproduction 'nope'"):
        reproduce("nope")


# --- the sentence follows the numbers (synthetic results) ---


def _alpha_table(alphas: list[float], half_width: float) -> simsekli2019.Result:
    rows = [
        {
            "width": w,
            "step": s,
            "alpha": a,
            "ci_low": a - half_width,
            "ci_high": a + half_width,
            "n_values": 100,
        }
        for w, a in zip((16, 64, 256), alphas, strict=True)
        for s in (0, 10)
    ]
    return simsekli2019.Result(pd.DataFrame(rows))


def test_simsekli_sentence() -> None:
    down = simsekli2019.sentence(_alpha_table([1.8, 1.6, 1.4], 0.05))
    assert "Heavy tails reproduced" in down and "decreased with width in 2 of 2" in down
    assert "intervals overlap in 0 of 2" in down
    up = simsekli2019.sentence(_alpha_table([1.4, 1.6, 1.7], 0.2))
    assert "decreased with width in 0 of 2" in up and "intervals overlap in 2 of 2" in up
    gauss = simsekli2019.sentence(_alpha_table([1.95, 1.9, 1.85], 0.1))
    assert "only partly reproduced" in gauss and "below 2 in 2 of 6" in gauss


def _pan(big_early: bool) -> panigrahi2019.Result:
    rows = []
    for step in (0, 100):
        for b in (32, 256):
            for k in range(4):
                ok = bool(b == 256 and step == 0 and big_early) or (k == 0 and b == 256)
                rows.append(
                    {
                        "step": step,
                        "batch_size": b,
                        "param": f"p{k}",
                        "coordinates": 10,
                        "coord_not_rejected": 0.9 if ok else 0.3,
                        "tensor_not_rejected": ok,
                    }
                )
    return panigrahi2019.Result(pd.DataFrame(rows))


def test_panigrahi_sentence() -> None:
    yes = panigrahi2019.sentence(_pan(True))
    assert yes.startswith("Reproduced") and "100% of tensors" in yes and "25% with batch >= 256 later" in yes
    no = panigrahi2019.sentence(_pan(False))
    assert no.startswith("Not reproduced") and "only 25% of tensors" in no


def _xie(r2: float, coord_share: float) -> xie2023.Result:
    layers = pd.DataFrame(
        {
            "param": ["a", "b"],
            "pooled_verdict": ["non-Gaussian", "non-Gaussian"],
            "pooled_excess_kurtosis": [5.0, 3.0],
            "coord_not_nongaussian": [coord_share, 0.9],
        }
    )
    return xie2023.Result(layers, np.geomspace(1, 1e-3, 50), -1.8, r2, 40, "w")


def test_xie_sentence() -> None:
    both = xie2023.sentence(_xie(0.99, 0.8))
    assert "disagree in 2 of 2" in both and "close to a power law" in both
    one = xie2023.sentence(_xie(0.5, 0.1))
    assert "disagree in 1 of 2" in one and "not shown (R^2 0.500" in one


def _mc(b_crit: float) -> mccandlish2018.Result:
    scale = pd.DataFrame(
        {
            "step": [0, 10],
            "train_loss": [2.0, 0.5],
            "b_simple": [20.0, 40.0],
            "b_simple_low": [10.0, 20.0],
            "b_simple_high": [30.0, 60.0],
        }
    )
    sweep = pd.DataFrame({"batch_size": [8, 64], "lr": [0.1, 0.1], "steps": [100.0, 30.0]})
    return mccandlish2018.Result(scale, sweep, 20.0, b_crit, 30.0, 0.1)


def test_mccandlish_sentence() -> None:
    assert mccandlish2018.sentence(_mc(36.0)).startswith("Reproduced: B_crit / B_simple = 1.20")
    far = mccandlish2018.sentence(_mc(300.0))
    assert far.startswith("Not reproduced within a factor of 2: B_crit / B_simple = 10.00 (B_crit above")
    assert "B_simple grew over training" in far
    assert "could not be fitted" in mccandlish2018.sentence(_mc(-5.0))


def _mandt_result(errors: list[float]) -> mandt2017.Result:
    table = pd.DataFrame(
        {
            "lr_lambda_max": [0.01, 0.1, 0.5],
            "lr": [0.01, 0.1, 0.5],
            "rel_error_ou": errors,
            "rel_error_ou_se": [0.01] * 3,
            "rel_error_discrete": [0.02] * 3,
            "trace_ratio_ou": [1.0] * 3,
        }
    )
    return mandt2017.Result(table, np.ones(2), {})


def test_mandt_sentence() -> None:
    good = mandt2017.sentence(_mandt_result([0.03, 0.08, 0.6]))
    assert "agrees within 15% for lr*lambda_max <= 0.1 (2 of 3 rates)" in good and "grows to 60%" in good
    bad = mandt2017.sentence(_mandt_result([0.3, 0.4, 0.6]))
    assert bad.startswith("Not reproduced")


# --- the formulas, against hand computations ---


def test_lyapunov_predictions_in_one_dimension() -> None:
    a, s2, lr, b = np.array([[0.7]]), np.array([[2.0]]), 0.05, 4
    assert mandt2017.ou_covariance(a, s2, lr, b)[0, 0] == pytest.approx(lr * 2.0 / (2 * b * 0.7))
    discrete = lr * lr * 2.0 / b / (1 - (1 - lr * 0.7) ** 2)
    assert mandt2017.discrete_covariance(a, s2, lr, b)[0, 0] == pytest.approx(discrete)


def test_fit_steps_recovers_known_trade_off() -> None:
    b = np.array([4, 16, 64, 256, 1024])
    s_min, b_crit = mccandlish2018.fit_steps(b, 50 * (1 + 40 / b))
    assert s_min == pytest.approx(50) and b_crit == pytest.approx(40)
    s_min, b_crit = mccandlish2018.fit_steps(np.append(b, 2), np.append(50 * (1 + 40 / b), math.inf))
    assert b_crit == pytest.approx(40)


def test_power_law_fit_recovers_slope() -> None:
    slope, r2 = xie2023.power_law_fit(np.arange(1, 101) ** -1.5, 100)
    assert slope == pytest.approx(-1.5) and r2 == pytest.approx(1.0)
