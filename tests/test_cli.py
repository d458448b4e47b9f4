"""The CLI: the demo at a few steps, and summary."""

import pytest

import goup_probe as gp
from goup_probe.cli import main


def test_demo_at_a_few_steps_then_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "12", "--every", "5", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "layers.0.conv1.weight" in text and "verdict_first" in text and str(out) in text
    run = gp.load_run(out)
    assert sorted(run.stats["step"].unique()) == [0, 5, 10]
    conv = run.stats[
        (run.stats["param"] == "layers.1.conv2.weight") & (run.stats["quantity"] == "theta_minus_grad")
    ]
    first = conv.sort_values("step").iloc[0]
    assert first["verdict"] == "non-Gaussian" and first["excess_kurtosis"] == pytest.approx(-1.2, abs=0.1)
    assert main(["summary", str(out)]) == 0
    assert "status completed" in capsys.readouterr().out


def test_demo_normal_init_is_gaussian_at_step_zero(tmp_path):
    assert (
        main(
            [
                "demo",
                "--steps",
                "1",
                "--every",
                "1",
                "--init",
                "normal",
                "--out",
                str(tmp_path / "n"),
                "--no-progress",
            ]
        )
        == 0
    )
    s = gp.load_run(tmp_path / "n").stats
    conv = s[(s["param"] == "layers.1.conv2.weight") & (s["quantity"] == "theta")].iloc[0]
    assert conv["verdict"] in ("Gaussian", "negligible deviation")


def test_bad_arguments_exit_nonzero(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--steps", "0"])
    assert info.value.code == 2
    assert main(["summary", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


def test_format_table_shows_infinite_values_as_inf():
    import numpy as np
    import pandas as pd

    from goup_probe.summary import format_table

    text = format_table(pd.DataFrame({"half_life": [12.5, np.inf, np.nan]}))
    assert text.split("\n")[2:] == ["12.5", "inf", "nan"]
