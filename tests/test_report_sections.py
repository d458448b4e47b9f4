"""Report sections: user sections after the built-ins, skipped sections as one line, OU without importlib."""

from __future__ import annotations

import re

import pytest
import torch

import goup_probe as gp
from goup_probe import store
from goup_probe.report import data as report_data
from goup_probe.report.builder import SECTIONS
from goup_probe.report.sections import Requirement, SectionOutput, SectionSkipped
from tests.helpers import TinyNet, batches, train
from tests.report_synth import synthetic_run

BUILTIN_IDS = ["summary", "layers", "training", "tensors", "ou", "fidelity", "noise", "glossary"]


def _ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', page)


def _section(page: str, sid: str) -> str:
    match = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert match, sid
    return match.group(1)


class Steps(gp.Section):
    name = "steps"
    title = "Captured steps"
    requires = (Requirement("stats", ("step", "param")),)

    def build(self, ctx):
        steps = sorted(set(ctx.table("stats", columns=["step"])["step"]))
        fig = ctx.writer.draw(
            "user-steps", "Steps", "One dot per captured step.", (3, 2), lambda ax: ax.plot(steps, "o")
        )
        return SectionOutput.text(f"USER-TEXT-1: {len(steps)} captured steps <b>", figures=[fig])


class Raw(gp.Section):
    name = "raw"
    title = "Raw HTML"

    def build(self, ctx):
        return "<p>USER-TEXT-2</p>"


class NeedsTrajectories(gp.Section):
    name = "needs-traj"
    title = "OU analysis"
    requires = ("trajectories",)
    built = False

    def build(self, ctx):
        NeedsTrajectories.built = True
        return "<p>never shown</p>"


class NeedsColumn(gp.Section):
    name = "needs-col"
    title = "Curvature"
    requires = (Requirement("stats", ("step", "curvature", "hessian_trace")),)

    def build(self, ctx):
        raise AssertionError("not called")


class EmptyAtRuntime(gp.Section):
    name = "empty"
    title = "Empty"

    def build(self, ctx):
        raise SectionSkipped("Empty: nothing above the threshold.")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("sections") / "run", n_params=3, steps=[0, 10], numel=100)


def test_user_sections_follow_the_built_ins_in_the_order_given(run_dir, tmp_path):
    result = gp.report(run_dir, tmp_path / "rep", ou=False, sections=[Steps(), Raw()])
    page = result.index.read_text(encoding="utf-8")
    assert _ids(page) == [*BUILTIN_IDS, "steps", "raw"]
    assert list(result.sections)[-2:] == ["Captured steps", "Raw HTML"]
    assert page.index("USER-TEXT-1") < page.index("USER-TEXT-2")
    assert "USER-TEXT-1: 2 captured steps &lt;b&gt;" in _section(page, "steps")  # text is escaped
    assert "<p>USER-TEXT-2</p>" in _section(page, "raw")  # HTML is inserted as given
    user_png = result.figures[-1].relpath
    assert user_png.startswith("figures/user-steps") and (result.out_dir / user_png).is_file()
    assert f'<img src="{user_png}"' in _section(page, "steps")
    assert '<a href="#steps">Captured steps</a>' in page  # in the navigation too


def test_a_section_whose_requirement_is_missing_is_one_line_saying_why(run_dir, tmp_path):
    sections = [NeedsTrajectories(), NeedsColumn(), EmptyAtRuntime()]
    result = gp.report(run_dir, tmp_path / "rep", ou=False, sections=sections)
    page = result.index.read_text(encoding="utf-8")
    assert not NeedsTrajectories.built
    expected = {
        "needs-traj": "OU analysis: skipped — the run has no trajectories table.",
        "needs-col": "Curvature: skipped — table stats has no columns curvature, hessian_trace.",
        "empty": "Empty: nothing above the threshold.",
    }
    for sid, line in expected.items():
        assert result.notes[sid] == line
        assert _section(page, sid).strip().splitlines()[1:] == [f'<p class="note">{line}</p>']


def test_section_names_must_be_unique_and_sections_must_be_sections(run_dir, tmp_path):
    class Clash(Raw):
        name = "ou"

    with pytest.raises(ValueError, match="'ou'"):
        gp.report(run_dir, tmp_path / "rep", sections=[Clash()])
    with pytest.raises(TypeError, match="Section instances"):
        gp.report(run_dir, tmp_path / "rep", sections=["not a section"])


def test_builtin_sections_declare_what_they_require():
    assert [s.name for s in SECTIONS] == BUILTIN_IDS
    by_name = {s.name: s for s in SECTIONS}
    assert by_name["layers"].requires[0].table == "stats"
    assert "trajectories" in by_name["ou"].requires[0].table


def test_ou_analysis_loads_without_importlib(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=10, tracers=8, keep_samples=0):
        train(model, opt, batches(40))
    assert not hasattr(report_data, "importlib")
    run = gp.load_run(tmp_path / "run")  # the package face resolves its lazy names by importlib

    def no_import(*args, **kwargs):
        raise AssertionError("importlib.import_module must not be used")

    monkeypatch.setattr("importlib.import_module", no_import)
    table = report_data.load_ou(run)
    assert table.present and table.source == "goup_probe.ou.validate_ou(run)"
    assert list(table.frame["param"]) == [n for n, _ in model.named_parameters()]


def test_load_samples_reads_only_the_rows_drawn_through_the_store(run_dir, monkeypatch):
    calls = []
    real = store.read_table

    def spy(*args, **kwargs):
        calls.append(kwargs.get("filters"))
        return real(*args, **kwargs)

    monkeypatch.setattr(report_data, "read_table", spy)
    run = gp.load_run(run_dir)
    params = sorted(set(run.stats["param"]))[:1]
    got = report_data.load_samples(gp.load_run(run_dir), params, [10])
    assert calls and ("param", "in", params) in calls[0] and ("step", "in", [10]) in calls[0]
    assert set(got["param"]) == set(params) and set(got["step"]) == {10} and len(got) == 3
