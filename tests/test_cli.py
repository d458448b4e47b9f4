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
    assert conv["verdict"] in ("Gaussian", "close to Gaussian")


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


def _probe_run(path):
    import torch

    from tests.helpers import TinyNet, batches, train

    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=path, every=1, tracers=4):
        train(model, opt, batches(2))


def test_compare_refuses_to_replace_a_run_without_overwrite(tmp_path, capsys):
    run = tmp_path / "mine"
    _probe_run(run)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    args = [
        "compare",
        "--steps",
        "2",
        "--seeds",
        "1",
        "--eval-every",
        "1",
        "--heldout",
        "20",
        "--out",
        str(run),
    ]
    assert main([*args, "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err  # the flag that would replace it, by its CLI name
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing lost
    assert gp.load_run(run).stats["step"].max() == 1
    assert main([*args, "--no-progress", "--overwrite"]) == 0
    assert gp.load_run(run).meta.get("kind") != "probe" or "compare_summary" in gp.load_run(run).tables


def test_demo_replaces_only_its_own_previous_output(tmp_path, capsys):
    out = tmp_path / "demo"
    demo = ["demo", "--steps", "3", "--every", "2", "--no-progress", "--no-compare", "--out", str(out)]
    assert main(demo) == 0
    assert main(demo) == 0  # its own previous output: replaced
    other = tmp_path / "other"
    _probe_run(other)
    assert main([*demo[:-1], str(other)]) != 0  # someone else's run: refused
    assert "not empty" in capsys.readouterr().err
    assert "demo" not in gp.load_run(other).meta["user"]


def test_overwrite_never_deletes_files_the_toolkit_did_not_write(tmp_path):
    run = tmp_path / "r"
    _probe_run(run)
    (run / "notes.md").write_text("my notes")
    (run / "scripts").mkdir()
    (run / "scripts" / "train.py").write_text("print('hi')")
    (run / "empty").mkdir()
    with pytest.raises(gp.RunDirectoryError, match=r"did not write \(empty, notes.md, scripts\)"):
        _probe_run_overwrite(run)
    assert (run / "notes.md").read_text() == "my notes" and (run / "scripts" / "train.py").exists()
    assert gp.load_run(run).stats["step"].max() == 1  # the run itself untouched too
    (run / "notes.md").unlink()
    for folder in ("scripts", "empty"):
        for child in (run / folder).iterdir():
            child.unlink()
        (run / folder).rmdir()
    _probe_run_overwrite(run)  # only the toolkit's files: replaced
    assert gp.load_run(run).status == "completed"


def _probe_run_overwrite(path):
    import torch

    from tests.helpers import TinyNet, batches, train

    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=path, every=1, overwrite=True):
        train(model, opt, batches(1))


def _cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m goup_probe ARGS`` in a child process: exit code, stdout, stderr."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "goup_probe", *args], capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout, done.stderr


def _table_rows(text: str, first_column: str) -> list[list[str]]:
    """The rows of a format_table block whose header starts with ``first_column``, split on 2+ spaces."""
    import re

    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column + " "))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return [re.split(r"\s{2,}", lines[start].strip()), *rows]


def test_summary_of_an_untested_quantity_shows_moments_not_the_status_as_verdict(tmp_path):
    run = tmp_path / "r"
    _probe_run(run)  # default tested=: X only
    code, out, err = _cli("summary", str(run), "--quantity", "update")
    assert code == 0, err
    header, *rows = _table_rows(out, "param")
    assert "verdict_first" not in header and "w1_last" not in header and "gaussian_share" not in header
    assert {"kurt_first", "kurt_last", "skew_last"} <= set(header)
    assert all("ok" not in row and "nan" not in row[:5] for row in rows), rows
    assert "update was not tested" in out
    summary = gp.layer_summary(gp.load_run(run), "update").set_index("param")
    assert summary.loc["fc1.weight", "verdict_last"] == "not tested"
    assert summary.loc["fc2.bias", "verdict_last"] == "too_few"  # 3 values: the status says why
    code, out, _ = _cli("summary", str(run))
    header, *rows = _table_rows(out, "param")
    assert "verdict_first" in header and "not tested" not in out


def test_format_table_writes_learning_rates_to_four_significant_digits():
    import pandas as pd

    from goup_probe.formatting import format_lr
    from goup_probe.summary import format_table

    text = format_table(pd.DataFrame({"lr": [0.000123456, 0.00011999999999999988], "k": [0.000123456, 1.0]}))
    assert [line.split() for line in text.split("\n")[2:]] == [["0.0001235", "0.000123"], ["0.00012", "1"]]
    assert format_lr(0.05) == "0.05" and format_lr(0.1 * 3) == "0.3"


def _ou_run(path, steps=120):
    import torch

    from tests.helpers import TinyNet, batches, train

    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=path, every=60, tracers=4):  # tracers record every step
        train(model, opt, batches(steps))


def test_ou_reports_the_steps_after_from_step_with_the_dataframes_column_names(tmp_path):
    run = tmp_path / "r"
    _ou_run(run)
    code, out, err = _cli("ou", str(run), "--from-step", "20")
    assert code == 0, err
    header_line = out.splitlines()[0]
    assert "100 steps (20..119)" in header_line and "120 steps" not in header_line
    assert "Ornstein-Uhlenbeck" in header_line
    expected = gp.validate_ou(gp.load_run(run), min_step=20)
    header, *rows = _table_rows(out, "param")
    assert set(header) <= set(expected.columns)
    assert {"k_pooled", "steps_x_k", "innovation_acf1", "n_coords"} <= set(header)
    assert not {"k_hat", "T*k", "eta_acf1"} & set(header)
    printed = dict(zip(header, rows[0], strict=True))
    first = expected.iloc[0]
    assert printed["param"] == first["param"] and printed["verdict"] == first["verdict"]
    assert printed["k_pooled"] == f"{first['k_pooled']:.3g}"


def test_ou_from_step_past_the_end_is_an_error_naming_the_last_step(tmp_path):
    run = tmp_path / "r"
    _ou_run(run, steps=30)
    code, out, err = _cli("ou", str(run), "--from-step", "500")
    assert code != 0
    assert "--from-step 500" in err and "last recorded step 29" in err
    assert "tracers=0" not in out + err


def test_format_table_shows_p_values_at_their_floor_as_bounds():
    import pandas as pd

    from goup_probe.stats.normal_tests import LILLIEFORS_NULL_DRAWS
    from goup_probe.summary import format_table

    frame = pd.DataFrame(
        {
            "lilliefors_p": [1.0 / (LILLIEFORS_NULL_DRAWS + 1), 0.0123],
            "anderson_p": [0.0, 0.5],
            "jarque_bera_p": [0.0, 1e-12],
            "kurt": [0.0, 0.5],
        }
    )
    assert [line.split() for line in format_table(frame).split("\n")[2:]] == [
        ["<0.0005", "<5e-31", "<1e-300", "0"],  # a plain 0 that is no p-value stays 0
        ["0.0123", "0.5", "1e-12", "0.5"],
    ]


def test_report_cli_takes_the_apis_layers_steps_and_per_side(tmp_path):
    import re

    from tests.report_synth import synthetic_run

    run_dir = synthetic_run(tmp_path / "run", n_params=8, steps=[0, 10, 20], numel=100, keep=20)
    out = tmp_path / "rep"
    code, _, err = _cli(
        "report", str(run_dir), "--out", str(out), "--layers", "layer3.weight", "--steps", "10"
    )
    assert code == 0, err
    page = (out / "index.html").read_text(encoding="utf-8")
    layers = re.search(r'<section id="layers">(.*?)</section>', page, re.S).group(1)
    assert re.findall(r"<h4>([^<]*)</h4>", layers) == ["layer3.weight"]
    assert "at steps 10." in layers
    code, _, err = _cli("report", str(run_dir), "--out", str(tmp_path / "two"), "--per-side", "1")
    assert code == 0, err
    layers = re.search(
        r'<section id="layers">(.*?)</section>', (tmp_path / "two" / "index.html").read_text(), re.S
    )
    assert len(re.findall(r"<h4>", layers.group(1))) == 2  # one most, one least Gaussian
    code, _, err = _cli("report", str(run_dir), "--out", str(tmp_path / "bad"), "--layers", "nope")
    assert code == 2 and "'nope'" in err and "layer0.weight" in err
    assert not (tmp_path / "bad").exists()


class _Deep:
    """A model whose equal-sized tensors the probe reduces in groups, so stats rows are not in model order."""

    @staticmethod
    def build():
        import torch
        from torch import nn

        class Deep(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 16)
                self.fc3, self.fc4 = nn.Linear(16, 16), nn.Linear(16, 3)

            def forward(self, x):
                h = torch.tanh(self.fc2(torch.tanh(self.fc1(x))))
                return self.fc4(torch.tanh(self.fc3(h)))

        return Deep()


def _grouped_run(path, steps=3):
    import torch

    from tests.helpers import batches, train

    model = _Deep.build()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=path, every=1, tracers=4):
        train(model, opt, batches(steps))
    return [name for name, _ in model.named_parameters()]


def test_summary_and_ou_list_tensors_in_model_order(tmp_path):
    run = tmp_path / "r"
    names = _grouped_run(run, steps=60)
    stats = gp.load_run(run).stats
    assert list(dict.fromkeys(stats["param"])) != names  # the probe writes its groups together
    code, out, err = _cli("summary", str(run))
    assert code == 0, err
    assert [row[0] for row in _table_rows(out, "param")[1:]] == names
    code, out, err = _cli("ou", str(run))
    assert code == 0, err
    assert [row[0] for row in _table_rows(out, "param")[1:]] == names
    assert list(gp.layer_summary(stats, meta=gp.load_run(run).meta)["param"]) == names


def test_summary_of_a_running_run_counts_the_steps_on_disk(tmp_path):
    import torch

    from goup_probe.report import report
    from tests.helpers import TinyNet, batches, train

    run = tmp_path / "r"
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=run, every=2, tracers=4, flush_rows=1):
        train(model, opt, batches(7))  # steps 0..6, captured 0, 2, 4, 6
        assert gp.load_run(run).status == "running"
        code, out, err = _cli("summary", str(run))
        assert code == 0, err
        assert (
            out.splitlines()[0]
            == f"{run}: status running, 7 steps on disk so far (4 captured, last captured step 6)"
        )
        page = report(run, tmp_path / "rep", ou=False).index.read_text(encoding="utf-8")
        assert (
            "7 optimizer steps on disk so far" in page
            and "(status &#x27;running&#x27;, 7 steps so far)" in page
        )
        assert "captured up to step 6" in page and " 0 steps" not in page
    code, out, _ = _cli("summary", str(run))
    assert out.splitlines()[0] == f"{run}: status completed, 7 steps, 4 captured"
