"""The shape of a non-Gaussian row where users read verdicts: summary, CLI, report, compare-runs.

Known answers come from seeded samples of named distributions (uniform → light-tailed,
t(3) → heavy-tailed, exponential → heavy-tailed and skewed, a normal rounded to a third
of σ → discrete, a normal → Gaussian, no shape), and every count the display states
is recounted here from the stats rows themselves.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import goup_probe as gp
from goup_probe import schema
from goup_probe.cli import main
from goup_probe.report import report
from goup_probe.report.compare_runs import compare_runs
from goup_probe.report.findings import compute_findings
from goup_probe.stats.normality import normality
from tests.report_synth import synthetic_run

N = 2000
DRAWS = {
    "uniform": lambda rng: rng.uniform(-1.0, 1.0, N),
    "t3": lambda rng: rng.standard_t(3, N),
    "exponential": lambda rng: rng.exponential(size=N),
    "rounded": lambda rng: np.round(rng.normal(size=N) * 3.0) / 3.0,
    "normal": lambda rng: rng.normal(size=N),
}
EXPECTED_SHAPE = {
    "uniform": {schema.SHAPE_LIGHT_TAILED},
    "t3": {schema.SHAPE_HEAVY_TAILED},
    "exponential": {schema.SHAPE_HEAVY_TAILED, schema.SHAPE_SKEWED},
    "rounded": {schema.SHAPE_DISCRETE},
}
"""Shapes the rule names for each distribution at n = 2000 (normal: Gaussian, no shape)."""


def _stats(kinds: list[str], steps: list[int]) -> pd.DataFrame:
    """Stats rows of X from the real battery: one tensor per kind, the same kind at every step."""
    rows = []
    for step in steps:
        for i, kind in enumerate(kinds):
            values = DRAWS[kind](np.random.default_rng([step, i]))
            row = asdict(normality(values, seed=0))
            row.update(
                step=step,
                param=f"{kind}{i}.weight",
                quantity=schema.THETA_MINUS_GRAD,
                axis=schema.AXIS_POOLED,
                grad_to_param=0.05,
            )
            rows.append(row)
    return pd.DataFrame(rows)


def _shapes(cell: object) -> set[str]:
    return {part.strip() for part in str(cell).split(",") if part.strip()} if isinstance(cell, str) else set()


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    kinds = ["uniform", "uniform", "uniform", "t3", "t3", "exponential", "rounded", "normal", "normal"]
    return _stats(kinds, [0, 10])


def test_the_rule_names_the_known_shapes(mixed):
    last = mixed[mixed["step"] == 10]
    for kind, shapes in EXPECTED_SHAPE.items():
        mine = last[last["param"].str.startswith(kind)]
        assert (mine["verdict"] == schema.VERDICT_NON_GAUSSIAN).all(), kind
        assert all(_shapes(s) == shapes for s in mine["shape"]), (kind, mine["shape"].tolist())
    normal = last[last["param"].str.startswith("normal")]
    assert (normal["verdict"] == schema.VERDICT_GAUSSIAN).all() and (normal["shape"] == "").all()


def test_layer_summary_shows_the_shape_of_the_last_step(mixed):
    table = gp.layer_summary(mixed)
    assert list(table.columns).index("shape_last") == list(table.columns).index("verdict_last") + 1
    last = mixed[mixed["step"] == 10].set_index("param")
    for _, row in table.iterrows():
        assert row["shape_last"] == last.loc[row["param"], "shape"]
        assert row["verdict_last"] == last.loc[row["param"], "verdict"]
    gaussian = table["verdict_last"] == schema.VERDICT_GAUSSIAN
    assert gaussian.sum() == 2 and (table.loc[gaussian, "shape_last"] == "").all()
    assert (table.loc[~gaussian, "shape_last"] != "").all()


def test_layer_summary_of_a_table_without_the_shape_column_leaves_it_empty(mixed):
    table = gp.layer_summary(mixed.drop(columns=["shape"]))
    assert (table["shape_last"] == "").all() and len(table) == 9


def test_findings_count_the_shapes_of_the_last_step(mixed):
    found = compute_findings(mixed, {"status": "completed"})
    last = mixed[(mixed["step"] == 10) & (mixed["verdict"] == schema.VERDICT_NON_GAUSSIAN)]
    named = [_shapes(s) for s in last["shape"]]
    # by hand: 3 uniform light, 2 t3 + 1 exponential heavy, 1 exponential skewed, 1 rounded discrete
    assert len(last) == 7
    expected = {
        schema.SHAPE_HEAVY_TAILED: 3,
        schema.SHAPE_LIGHT_TAILED: 3,
        schema.SHAPE_SKEWED: 1,
        schema.SHAPE_DISCRETE: 1,
    }
    assert {s: sum(s in n for n in named) for s in expected} == expected
    ((verdict, total, counts),) = found.shapes_last
    assert verdict == schema.VERDICT_NON_GAUSSIAN and total == 7 and dict(counts) == expected
    sentence = next(s for s in found.sentences if s.startswith("Of the 7 non-Gaussian tensors"))
    assert sentence == (
        "Of the 7 non-Gaussian tensors at step 10: 3 heavy-tailed, 3 light-tailed, 1 skewed, 1 discrete "
        "(a tensor can show more than one shape)."
    )


def test_findings_say_nothing_of_shapes_a_table_does_not_hold(mixed):
    found = compute_findings(mixed.drop(columns=["shape"]), {"status": "completed"})
    assert found.shapes_last == () and not any("non-Gaussian tensors at step" in s for s in found.sentences)
    gaussian_only = _stats(["normal", "normal"], [0, 10])
    found = compute_findings(gaussian_only, {"status": "completed"})
    assert found.shapes_last == () and not any(s.startswith("Of the ") for s in found.sentences)


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("shape") / "run", n_params=6, steps=[0, 10], numel=1500)


def _last_shapes(run_dir: Path) -> pd.DataFrame:
    stats = gp.load_run(run_dir).stats
    x = stats[(stats["quantity"] == schema.THETA_MINUS_GRAD) & (stats["step"] == stats["step"].max())]
    return x.set_index("param")[["verdict", "shape"]]


def test_cli_summary_prints_the_shape_beside_the_verdict(synth_run, capsys):
    assert main(["summary", str(synth_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("param"))
    assert re.search(r"verdict_last\s+shape_last\s+kurt_last", lines[header])
    last = _last_shapes(synth_run)
    assert (last["shape"] != "").any()
    for param, row in last.iterrows():
        line = next(line for line in lines[header + 2 :] if line.startswith(param + " "))
        after = r"\s+-?\d" if not row["shape"] else rf"\s+{re.escape(row['shape'])}\s+-?\d"
        assert re.search(rf"\s{re.escape(row['verdict'])}{after}", line), line


def test_report_shows_shapes_in_the_tables_and_the_findings(synth_run):
    result = report(synth_run, per_side=1)
    page = result.index.read_text(encoding="utf-8")
    last = _last_shapes(synth_run)
    tensors = page[page.index('<section id="tensors"') :]
    tensors = tensors[: tensors.index("</section>")]
    header = re.findall(r"<th[^>]*>(.*?)</th>", tensors)
    assert header[header.index("verdict_last") + 1] == "shape_last"
    for param, row in last.iterrows():
        cells = re.search(rf"<td[^>]*>{re.escape(param)}</td>(.*?)</tr>", tensors, re.S).group(1)
        values = re.findall(r"<td[^>]*>(.*?)</td>", cells)
        at = header.index("verdict_last") - 1  # the param cell is not in ``cells``
        assert values[at : at + 2] == [row["verdict"], row["shape"]]
    layers = page[page.index('<section id="layers"') :]
    assert re.search(r"<th[^>]*>shape of X</th>", layers[: layers.index("</section>")])
    bad = last[last["verdict"] == schema.VERDICT_NON_GAUSSIAN]
    named = [_shapes(s) for s in bad["shape"]]
    labels = {
        schema.SHAPE_HEAVY_TAILED: schema.SHAPE_HEAVY_TAILED,
        schema.SHAPE_LIGHT_TAILED: schema.SHAPE_LIGHT_TAILED,
        schema.SHAPE_SKEWED: schema.SHAPE_SKEWED,
        schema.SHAPE_DISCRETE: schema.SHAPE_DISCRETE,
        schema.SHAPE_OTHER: "other (no significant tail, asymmetry or lattice)",
    }
    parts = [
        f"{sum(s in n for n in named)} {label}" for s, label in labels.items() if any(s in n for n in named)
    ]
    assert bad.size and f"Of the {len(bad)} non-Gaussian tensors at step 10: {', '.join(parts)}" in page


def test_compare_runs_lists_the_shapes_of_each_runs_non_gaussian_tensors(synth_run, tmp_path):
    other = synthetic_run(tmp_path / "other", n_params=4, steps=[0, 5], numel=1500, seed=3)
    result = compare_runs([synth_run, other], tmp_path / "page")
    page = result.index.read_text(encoding="utf-8")
    assert re.search(r"<th[^>]*>non_gaussian_shapes_last</th>", page)
    for run_dir in (synth_run, other):
        last = _last_shapes(run_dir)
        bad = last[last["verdict"] == schema.VERDICT_NON_GAUSSIAN]
        named = [_shapes(s) for s in bad["shape"]]
        heavy = sum(schema.SHAPE_HEAVY_TAILED in n for n in named)
        assert heavy and re.search(rf"<td[^>]*>{len(bad)}: {heavy} heavy-tailed", page)
