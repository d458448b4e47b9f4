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


HEAVY = ("torch", "matplotlib", "scipy")


def _heavy_modules_after(code: str) -> list[str]:
    import subprocess
    import sys

    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


def test_building_the_parser_imports_no_torch_scipy_or_matplotlib():
    assert _heavy_modules_after("from goup_probe.cli import build_parser; build_parser()") == []


@pytest.mark.parametrize("argv", [["--help"], ["summary", "--help"]])
def test_help_imports_no_torch_scipy_or_matplotlib(argv):
    code = f"from goup_probe.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _heavy_modules_after(code) == []


def test_package_face_is_lazy_and_keeps_every_public_name():
    assert _heavy_modules_after("import goup_probe") == []
    for name in gp.__all__:
        assert getattr(gp, name) is not None, name
    assert callable(gp.report) and gp.report.__module__ == "goup_probe.report"
    assert gp.attach.__module__ == "goup_probe.capture.probe" and gp.Statistic.__name__ == "Statistic"
    with pytest.raises(AttributeError):
        gp.no_such_name  # noqa: B018


def test_summary_into_a_closed_pipe_exits_quietly(tmp_path):
    import subprocess
    import sys

    from tests.report_synth import synthetic_run

    run_dir = synthetic_run(tmp_path / "run", n_params=40, steps=[0, 10], numel=100, keep=10)
    child = subprocess.Popen(
        [sys.executable, "-m", "goup_probe", "summary", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.stdout.close()  # the reader goes away before the first line, as `| head -0` would
    with child.stderr:
        err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141
    assert err == "", err


def test_broken_pipe_in_process_is_not_reported_as_an_error(tmp_path, capsys, monkeypatch):
    from tests.report_synth import synthetic_run

    run_dir = synthetic_run(tmp_path / "run", n_params=2, steps=[0, 10], numel=100, keep=10)

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["summary", str(run_dir)]) == 141
    assert "error" not in capsys.readouterr().err
