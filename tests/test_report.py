"""The report: what it shows, what it refuses to do with hostile names, partial and large runs."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from goup_probe import attach, cli, schema
from goup_probe.report import report
from goup_probe.report.builder import run_description
from goup_probe.report.data import UNDRAWN_STATS_COLUMNS, load_stats
from goup_probe.report.findings import compute_findings
from goup_probe.report.naming import safe_stem
from goup_probe.report.select import choose_layers, choose_steps
from goup_probe.store import RunWriter, load_run, prepare_run_dir
from tests.helpers import TinyNet, batches
from tests.report_synth import synthetic_run

SECTION_IDS = ["summary", "layers", "training", "tensors", "ou", "fidelity", "noise", "glossary"]


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.DOTALL)
    assert match, f"section {section_id} missing"
    return match.group(1)


# ----------------------------------------------------------------------------- pure helpers


def test_choose_steps_picks_first_middle_last():
    assert choose_steps([0, 10, 20, 30, 40]) == [0, 20, 40]
    assert choose_steps([40, 0, 10, 10]) == [0, 10, 40]
    assert choose_steps([5]) == [5]
    assert choose_steps(range(0, 100, 10), 2) == [0, 90]


def _stats_frame(scores: dict[str, float], n_tested: dict[str, int] | None = None) -> pd.DataFrame:
    rows = []
    for p, score in scores.items():
        for step in (0, 10):
            rows.append(
                {
                    "step": step,
                    "param": p,
                    "quantity": schema.THETA_MINUS_GRAD,
                    "axis": schema.AXIS_POOLED,
                    "status": schema.STATUS_OK,
                    "verdict": schema.VERDICT_NON_GAUSSIAN,
                    "qq_r": 1.0 - score,
                    "n_tested": (n_tested or {}).get(p, 1000),
                }
            )
    return pd.DataFrame(rows)


def test_choose_layers_takes_the_most_and_least_gaussian_ignoring_low_power_tensors():
    scores = {f"t{i}": 10.0 ** -(i % 7 + 1) for i in range(10)}
    scores["tiny.bias"] = 0.5  # largest deviation, but tested on 10 values only
    sel = choose_layers(_stats_frame(scores, {"tiny.bias": 10}), per_side=2)
    assert set(sel.most_gaussian) == {"t6"} | {"t5"}
    assert set(sel.least_gaussian) == {"t0", "t7"}
    assert "tiny.bias" not in sel.params
    assert not sel.all_layers
    few = choose_layers(_stats_frame({"a": 0.1, "b": 0.2}), per_side=3)
    assert few.all_layers and few.params == ["a", "b"]
    chosen = choose_layers(_stats_frame(scores), layers=["t3", "t1"])
    assert chosen.params == ["t3", "t1"] and chosen.note == "2 tensor(s) chosen by the caller"


def test_safe_stem_never_leaves_the_folder_and_keeps_names_apart():
    for name in [
        "../../x",
        "/etc/passwd",
        "<script>alert(1)</script>",
        "..",
        ".hidden",
        "a/../../b",
        "",
        "é∂",
    ]:
        stem = safe_stem(name)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem), stem
        assert ".." not in stem and "/" not in stem
    assert safe_stem("a b") != safe_stem("a_b")  # sanitise alike, still different files
    assert safe_stem("layer1.0.conv1.weight").startswith("layer1.0.conv1.weight-")


def _finding_stats(first_verdicts, last_verdicts, theta_last, ratio, kurt_first=-1.2, kurt_last=-1.1):
    rows = []
    for i, (v0, v1, t1) in enumerate(zip(first_verdicts, last_verdicts, theta_last, strict=True)):
        for step, v, k in ((0, v0, kurt_first), (50, v0, kurt_first), (100, v1, kurt_last)):
            base = {
                "step": step,
                "param": f"p{i}",
                "axis": schema.AXIS_POOLED,
                "status": schema.STATUS_OK,
                "n_tested": 1000,
                "qq_r": 0.99,
                "excess_kurtosis": k,
                "grad_to_param": ratio,
            }
            rows.append({**base, "quantity": schema.THETA_MINUS_GRAD, "verdict": v})
            rows.append({**base, "quantity": schema.THETA, "verdict": t1 if step == 100 else v})
    return pd.DataFrame(rows)


def test_findings_count_verdicts_and_call_inheritance_only_when_the_numbers_say_so():
    g, ng = schema.VERDICT_GAUSSIAN, schema.VERDICT_NON_GAUSSIAN
    stats = _finding_stats([ng, ng, ng, g], [ng, ng, ng, g], [ng, ng, ng, g], ratio=0.01)
    f = compute_findings(stats, {"status": "completed"})
    assert [s.step for s in f.steps] == [0, 50, 100]
    assert (f.steps[0].gaussian, f.steps[0].non_gaussian) == (1, 3)
    assert f.same_verdict_first_last == 4 and f.same_verdict_x_theta == 4
    assert f.grad_to_param_median == pytest.approx(0.01)
    text = " ".join(f.sentences)
    assert "largely inherited from the initialisation" in text
    assert "0.01" in text and "≪ 1" in text
    # Verdicts that change over training are not "inherited".
    changed = _finding_stats([ng, ng, ng, ng], [g, g, g, ng], [g, g, g, ng], ratio=0.01)
    text = " ".join(compute_findings(changed, {"status": "completed"}).sentences)
    assert "largely inherited" not in text
    assert "changed between the first and last captured step for 3 of 4" in text
    assert "X still follows θ (same verdict in 4 of 4)" in text
    # A large gradient share: stable verdicts alone do not show inheritance.
    big = _finding_stats([ng] * 4, [ng] * 4, [ng] * 4, ratio=2.0)
    text = " ".join(compute_findings(big, {"status": "completed"}).sentences)
    assert "largely inherited" not in text and "at least 1" in text


def test_findings_of_an_empty_run_say_there_is_nothing():
    empty = schema.STATS_SCHEMA.empty_table().to_pandas()
    f = compute_findings(empty, {"status": "interrupted", "steps": 0})
    assert f.steps == () and "did not complete" in f.sentences[0]


# ----------------------------------------------------------------------------- whole reports


def test_report_writes_offline_html_and_a_png_for_every_figure(tmp_path):
    run_dir = synthetic_run(tmp_path / "run", n_params=8, steps=[0, 10, 20, 30], numel=300, keep=120)
    result = report(run_dir, per_side=2)
    assert result.index == run_dir / "report" / "index.html"
    page = result.index.read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)"', page) == SECTION_IDS
    assert list(result.sections) == [
        "Summary",
        "Per-layer detail",
        "Over training",
        "All tensors",
        "Ornstein–Uhlenbeck model",
        "GO-UP fidelity",
        "Gradient noise",
        "Glossary",
    ]
    sources = _img_sources(page)
    assert sources == [f.relpath for f in result.figures] and len(sources) == 1 + 4 + 4
    for src in sources:
        png = result.out_dir / src
        assert png.parent == result.out_dir / "figures"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Offline: nothing to fetch, no script at all, a CSP that forbids any.
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<script" not in page and "<link" not in page
    assert "default-src 'none'" in page
    # Sections without data say so in one line.
    assert "recorded no tracer trajectories" in result.notes["ou"]
    assert result.notes["ou"] in _section(page, "ou").replace("&#x27;", "'")
    assert "no GO-UP comparison" in result.notes["fidelity"]
    # Summary: what was run and the findings with numbers.
    summary = _section(page, "summary")
    assert "Synthetic: 8 parameter tensors" in summary and "SGD: lr=0.1" in summary
    assert "At the first captured step (0)" in summary and "‖g‖/‖θ‖" in summary
    # Glossary shows the thresholds the run was judged by.
    glossary = _section(page, "glossary")
    assert "W1 ≤ 0.05 σ" in glossary and "|excess kurtosis| ≤ 1.0" in glossary


def test_rebuilding_replaces_old_figures_but_keeps_foreign_files(tmp_path):
    run_dir = synthetic_run(tmp_path / "run", n_params=2, steps=[0, 10], numel=100, keep=50)
    out = tmp_path / "rep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    report(run_dir, out, ou=False)
    stale = out / "figures" / "stale-0000.png"
    stale.write_bytes(b"x")
    again = report(run_dir, out, ou=False)
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        Path(f.relpath).name for f in again.figures
    )


def test_hostile_layer_names_are_escaped_and_cannot_escape_the_folder(tmp_path):
    hostile = ["<script>alert(1)</script>", "../../x", "a/../../../y", '"><img src=x onerror=alert(1)>']
    run_dir = synthetic_run(tmp_path / "run", params=hostile, steps=[0, 10], numel=200, keep=80)
    out = tmp_path / "deep" / "report"
    before = {p for p in tmp_path.rglob("*")}
    result = report(run_dir, out, per_side=2)
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(out in p.parents or p == out or p == out.parent for p in created)
    page = result.index.read_text(encoding="utf-8")
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "../../x" in page  # shown as text
    assert len(result.detail_layers) == 4
    for fig in result.figures:
        assert (result.out_dir / fig.relpath).resolve().parent == (out / "figures").resolve()


def test_partial_run_reports_what_was_captured(tmp_path):
    run_dir = synthetic_run(
        tmp_path / "run", n_params=3, steps=[0, 10, 20], numel=200, keep=80, status="interrupted"
    )
    result = report(run_dir, ou=False, per_side=1)
    page = result.index.read_text(encoding="utf-8")
    assert "Partial run: status &#x27;interrupted&#x27;" in page
    assert "did not complete: status &#x27;interrupted&#x27; (KeyboardInterrupt)" in page
    assert "shows the 3 step(s) captured" in page
    assert result.findings.captured_steps == (0, 10, 20)


def test_run_without_statistics_still_gives_a_report_with_notes(tmp_path):
    path = prepare_run_dir(tmp_path / "run")
    RunWriter(path).write_meta({"schema_version": schema.SCHEMA_VERSION, "status": "failed", "steps": 0})
    result = report(path)
    assert result.figures == ()
    assert {"layers", "training", "tensors", "ou", "fidelity"} <= set(result.notes)
    assert "nothing to report yet" in result.index.read_text(encoding="utf-8")


def test_large_model_gets_detail_for_six_tensors_and_overviews_for_all(tmp_path):
    n = 200
    run_dir = synthetic_run(
        tmp_path / "run", n_params=n, steps=list(range(0, 200, 10)), numel=200, keep=40, full_tests=False
    )
    result = report(run_dir, ou=False, steps=[0])
    assert len(result.detail_layers) == 6
    assert len(result.figures) == 1 + 6 + 4  # verdicts, 6 layers, heatmap + 3 line plots: not one per tensor
    page = result.index.read_text(encoding="utf-8")
    assert _section(page, "tensors").count("<tr>") == n + 1
    heatmap = next(f for f in result.figures if f.relpath.startswith("figures/heatmap"))
    assert heatmap.height > 2000  # one readable row per tensor


def test_real_probe_run_with_comparison_tables_fills_ou_and_fidelity(tmp_path):
    from goup_probe.fidelity import summarise

    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run_dir = tmp_path / "run"
    with attach(model, opt, run_dir=run_dir, every=20, tracers=16, keep_samples=64):
        for x, y in batches(60):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    curves, layers = [], []
    for arm, mode, slope in (("sgd", None, 1.0), ("goup-seed", "seed", 0.8)):
        for seed in (0, 1):
            for step in (0, 20, 40):
                curves.append(
                    {
                        "arm": arm,
                        "mode": mode,
                        "seed": seed,
                        "step": step,
                        "train_loss": 1 - step / 100,
                        "heldout_loss": 1 - slope * step / 90,
                        "heldout_acc": 0.3 + slope * step / 100 + 0.01 * seed,
                        "rel_distance": 0.0 if arm == "sgd" else step / 400,
                        "update_cosine": 1.0,
                        "diverged": False,
                    }
                )
                for p in ("fc1.weight", "fc2.weight"):
                    layers.append(
                        {
                            "arm": arm,
                            "mode": mode,
                            "seed": seed,
                            "step": step,
                            "param": p,
                            "numel": 10,
                            "rel_distance": 0.0 if arm == "sgd" else step / 300,
                            "update_cosine": 1.0,
                            "update_ratio": 1.0,
                        }
                    )
    writer = RunWriter(run_dir)
    curves, layers = pd.DataFrame(curves), pd.DataFrame(layers)
    summary = summarise(curves, "sgd")
    for frame in (curves, layers, summary):  # pandas turns None into NaN; the schema wants a null string
        frame["mode"] = frame["mode"].astype(object).where(frame["mode"].notna(), None)
    writer.write_table(schema.COMPARE_CURVES, curves)
    writer.write_table(schema.COMPARE_LAYERS, layers)
    writer.write_table(schema.COMPARE_SUMMARY, summary)
    result = report(run_dir, per_side=1, steps=[0, 40])
    assert "ou" not in result.notes and "fidelity" not in result.notes
    names = [Path(f.relpath).name for f in result.figures]
    for prefix in (
        "ou-rates",
        "ou-acf",
        "ou-diagnostics",
        "fidelity-heldout_acc",
        "fidelity-distance-goup-seed",
        "shadow-noise_to_signal",
    ):
        assert any(n.startswith(prefix) for n in names), prefix
    assert not any(n.startswith("fidelity-distance-sgd") for n in names)  # the base arm: distance 0
    page = result.index.read_text(encoding="utf-8")
    ou = _section(page, "ou")
    assert "fc1.weight" in ou and "k_over_lr" in ou
    summary = _section(page, "summary")
    assert "OU model of the tracer trajectories" in summary and "median k̂/α" in summary
    # acc at step 40: sgd 0.3 + 0.4 + 0.005 (mean over seeds), goup 0.3 + 0.32 + 0.005; paired gap -0.08.
    assert "final held-out accuracy sgd 0.705; goup-seed 0.625 (gap -0.080" in summary
    assert run_description(load_run(run_dir).meta)[0] == ("status", "completed")


def test_cli_report_writes_the_folder_and_prints_its_path(tmp_path, capsys):
    run_dir = synthetic_run(tmp_path / "run", n_params=2, steps=[0, 10], numel=100, keep=50)
    out = tmp_path / "cli-report"
    assert cli.main(["report", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "index.html") in printed and (out / "index.html").is_file()
    with pytest.raises(SystemExit):
        cli.main(["report", str(tmp_path / "nope")])


def test_run_json_is_unchanged_by_the_report(tmp_path):
    run_dir = synthetic_run(tmp_path / "run", n_params=2, steps=[0, 10], numel=100, keep=50)
    before = json.loads((run_dir / "run.json").read_text())
    report(run_dir, ou=False)
    assert json.loads((run_dir / "run.json").read_text()) == before
    assert load_run(run_dir).tables == ["samples", "stats"]


def test_learning_rates_are_printed_to_four_significant_digits(tmp_path):
    from goup_probe.report import html as h

    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.00011999999999999988, eps=1e-8)
    with attach(model, opt, run_dir=tmp_path / "run", every=1):
        for x, y in batches(1):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    rows = dict(run_description(load_run(tmp_path / "run").meta))
    assert rows["optimizer"] == "Adam: lr=0.00012, weight_decay=0, betas=(0.9, 0.999), eps=1e-08"
    frame = pd.DataFrame({"param": ["a"], "lr": [0.000123456], "k_pooled": [0.000123456]})
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", h.table(frame))
    assert cells == ["a", "0.0001235", "0.000123"]  # lr to 4 digits, other floats to 3


def test_p_values_at_a_floor_are_shown_as_bounds_in_the_report(tmp_path):
    from goup_probe.stats.normal_tests import LILLIEFORS_NULL_DRAWS

    run_dir = synthetic_run(tmp_path / "run", params=["uniform.weight"], steps=[0], numel=2000, keep=50)
    stats = load_run(run_dir).stats
    x = stats[stats["quantity"] == schema.THETA_MINUS_GRAD]
    floor = 1.0 / (LILLIEFORS_NULL_DRAWS + 1)
    # uniform: no null draw is as extreme, so p is Dallal-Wilkinson's tail value, at most the floor
    assert x["lilliefors_p"].iloc[0] <= floor and x["lilliefors_p_floor"].iloc[0] == pytest.approx(floor)
    page = report(run_dir, ou=False).index.read_text(encoding="utf-8")
    layers = _section(page, "layers")
    header = re.findall(r"<th[^>]*>([^<]*)</th>", layers)
    rows = re.findall(r"<tr>(<td.*?)</tr>", layers)
    column = header.index("lilliefors_p")
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row)[column] for row in rows]
    assert cells == ["&lt;0.0005"]


def test_report_refuses_unknown_layers_and_uncaptured_steps_writing_nothing(tmp_path, monkeypatch):
    run_dir = synthetic_run(tmp_path / "run", n_params=7, steps=[0, 10], numel=100, keep=20)
    analysed = []  # the OU analysis runs first of all (memory), but only once the requests are checked
    builder = importlib.import_module("goup_probe.report.builder")
    real_load_ou = builder.load_ou
    monkeypatch.setattr(builder, "load_ou", lambda run: analysed.append(run) or real_load_ou(run))
    with pytest.raises(
        ValueError, match=r"'nope', 'layer9\.weight'.*the run has layer0\.weight, layer1"
    ) as info:
        report(run_dir, layers=["nope", "layer1.weight", "layer9.weight"])
    assert "(7 in all)" in str(info.value)
    with pytest.raises(ValueError, match=r"steps: \[5\] not captured.*from 0 to 10"):
        report(run_dir, steps=[0, 5])
    with pytest.raises(TypeError, match="layers"):
        report(run_dir, layers="layer1.weight")  # a bare string is not a list of names
    assert not (run_dir / "report").exists()
    assert not analysed
    result = report(run_dir, layers=["layer2.weight", "layer1.weight"], steps=[10], ou=False)
    assert result.detail_layers == ("layer2.weight", "layer1.weight")
    assert not analysed  # ou=False
    report(run_dir, layers=["layer1.weight"], steps=[10])
    assert len(analysed) == 1


def test_report_result_repr_is_one_short_line(tmp_path):
    run_dir = synthetic_run(
        tmp_path / "run", n_params=40, steps=[0, 10], numel=100, keep=20, full_tests=False
    )
    result = report(run_dir, ou=False)
    text = repr(result)
    assert "\n" not in text and len(text) < 300, text
    assert str(result.index) in text
    assert f"{len(result.sections)} sections, {len(result.figures)} figures" in text
    assert "6 detailed tensors" in text and "ou" in text  # the OU section was noted as turned off


def test_report_tables_and_heatmap_rows_follow_model_order(tmp_path):
    from goup_probe.order import in_model_order
    from goup_probe.plots.tables import effect_matrix
    from tests.test_cli import _grouped_run

    run_dir = tmp_path / "run"
    names = _grouped_run(run_dir, steps=3)
    run = load_run(run_dir)
    assert list(dict.fromkeys(run.stats["param"])) != names  # grouped as the probe reduced them
    page = report(run_dir, per_side=4).index.read_text(encoding="utf-8")
    tensors = _section(page, "tensors")
    assert re.findall(r'<tr><td class="text">([^<]*)</td>', tensors) == names
    assert re.findall(r"<h4>([^<]*)</h4>", _section(page, "layers")) == names  # all 8: every tensor
    ou = _section(page, "ou")
    assert re.findall(r'<tr><td class="text">([^<]*)</td>', ou) == names
    assert list(effect_matrix(in_model_order(run.stats, run.meta)).index) == names  # the heatmap's rows
    # the report's own read (reordered in Arrow) holds the same rows as reordering the whole table
    read = load_stats(load_run(run_dir))
    assert not set(read.columns) & set(UNDRAWN_STATS_COLUMNS)
    expected = in_model_order(run.table("stats", columns=list(read.columns)), run.meta)
    pd.testing.assert_frame_equal(read.reset_index(drop=True), expected.reset_index(drop=True))
    assert list(dict.fromkeys(read["param"])) == names


def test_fidelity_section_states_the_comparisons_own_settings_beside_the_probed_runs(tmp_path):
    from goup_probe.demo.compare import digits_setup
    from goup_probe.fidelity import compare, write_comparison

    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run_dir = tmp_path / "run"
    with attach(model, opt, run_dir=run_dir, every=2):
        for x, y in batches(5):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    model_fn, data = digits_setup()
    result = compare(
        model_fn,
        data,
        modes=["seed"],
        steps=3,
        lr=0.05,
        batch_size=16,
        seeds=2,
        eval_every=1,
        max_heldout=20,
        num_threads=1,
    )
    write_comparison(result, run_dir)
    page = report(run_dir, ou=False).index.read_text(encoding="utf-8")
    fidelity = _section(page, "fidelity")
    assert "3 steps at lr 0.05, batch size 16, 2 seed(s) (0, 1)" in fidelity
    assert f"{len(data.train_x)} training, 20 held-out examples" in fidelity
    assert "not the probed run (5 steps at lr 0.1)" in fidelity


def test_detail_steps_are_steps_whose_samples_were_kept(tmp_path):
    """With samples thinned by the retention rule, the per-layer detail draws steps that have them."""
    from goup_probe.store import load_run
    from tests.helpers import TinyNet, batches, train

    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with attach(model, opt, run_dir=tmp_path / "r", every=1, keep_sample_steps=2, tracers=0):
        train(model, opt, batches(60))
    run = load_run(tmp_path / "r")
    kept = set(run.samples["step"].unique())
    assert 30 not in kept and len(kept) < 20  # the middle captured step lost its samples
    result = report(run, out=tmp_path / "report")
    html = result.index.read_text(encoding="utf-8")
    shown = [int(s) for s in re.search(r"at steps ([\d, ]+)\.", html).group(1).split(", ")]
    assert len(shown) == 3 and set(shown) <= kept and shown[0] == 0 and shown[-1] == 59
    assert "no stored values" not in html
