"""The glossary comes from the declared columns; findings say nothing about data not computed."""

import numpy as np
import torch

import goup_probe as gp
from goup_probe import schema
from goup_probe.report.findings import compute_findings
from goup_probe.report.glossary import glossary_items
from tests.helpers import TinyNet, batches, train


def _terms(items):
    return [term for term, _ in items]


def _beyond_3sd():
    def fn(x):
        d = np.abs(x - x.mean(1, keepdims=True))
        return {"beyond_3sd": (d > 3 * x.std(1, keepdims=True)).mean(1)}

    return gp.Statistic("beyond_3sd", {"beyond_3sd": "share beyond 3 std"}, fn)


def test_every_stats_column_has_a_glossary_entry():
    items = glossary_items({})
    terms = _terms(items)
    missing = [name for name in schema.stats_schema().names if name not in terms]
    assert missing == []
    assert len(set(terms)) == len(terms), "a term listed twice"
    for term in ("gaussian_share", "goup_fit_p", "goup_cosine", "– and nan"):
        assert term in terms, term
    text = dict(items)
    assert "χ²" in text["goup_fit_p"] and "cos(Δ, −αg)" in text["goup_cosine"]
    assert "nan" in text["– and nan"] and "not computed" in text["– and nan"]
    # The declared one-line description comes first, the longer prose after it.
    assert text["qq_r"].startswith("normal probability-plot correlation") and "heatmap" in text["qq_r"]


def test_thresholds_of_the_run_are_in_the_glossary():
    text = dict(glossary_items({"capture": {"thresholds": {"alpha": 0.01, "max_w1_sigma": 0.07}}}))
    assert "α = 0.01" in text["shapiro_p"] and "0.07 σ" in text["verdict: close to Gaussian"]


def test_a_user_statistic_of_the_run_gets_an_entry(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(d_in=6, hidden=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=2, statistics=[_beyond_3sd()]):
        train(model, opt, batches(4))
    run = gp.load_run(tmp_path / "run")
    assert "beyond_3sd" in run.stats.columns
    for items in (glossary_items(run.meta), glossary_items(run.meta, list(run.stats.columns))):
        text = dict(items)
        assert "beyond_3sd" in text and "own statistics" in text["beyond_3sd"]
        assert set(schema.stats_schema().names) <= set(text)
    # Columns of the table tell apart a statistic whose columns differ from its name.
    meta = {"capture": {"statistics": ["tails"]}}
    terms = _terms(glossary_items(meta, [*schema.stats_schema().names, "tail_left", "tail_right"]))
    assert "tail_left" in terms and "tail_right" in terms and "tails" not in terms


def test_default_settings_findings_have_no_sentence_about_untested_theta(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(d_in=6, hidden=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=3):  # default: only X is tested
        train(model, opt, batches(7))
    run = gp.load_run(tmp_path / "run")
    findings = compute_findings(run.stats, run.meta)
    text = " ".join(findings.sentences)
    assert findings.compared_x_theta == 0 and findings.compared_first_last > 0
    assert "for 0 of 0" not in text and "same verdict as θ" not in text
    assert "equals the verdict at step 0" in text
