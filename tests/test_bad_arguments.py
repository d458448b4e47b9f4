"""Issue 18 item 9: arguments that were taken without a word are refused (or accepted) at attach or call time.

Each refusal is a TypeError or ValueError whose message names the argument;
each accepted odd input gives the result of its clean equivalent.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import goup_probe as gp
from goup_probe.capture.config import check_run_dir
from goup_probe.capture.plan import select_names
from goup_probe.stats.normality import VerdictThresholds
from tests.helpers import TinyNet, batches, train

# ---------------------------------------------------------------- sample_size


def test_sample_size_above_5000_warns_and_shapiro_still_sees_5000(tmp_path):
    model = nn.Linear(100, 80)  # a 8000-value weight
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match=r"sample_size=6000 is above 5000: Shapiro-Wilk"):
        probe = gp.attach(model, opt, run_dir=tmp_path / "r", every=1, sample_size=6000)
    with probe:
        model(torch.randn(4, 100)).square().mean().backward()
        opt.step()
    run = gp.load_run(tmp_path / "r")
    assert run.meta["capture"]["sample_size"] == 6000
    x = run.stats[(run.stats["param"] == "weight") & (run.stats["quantity"] == "theta_minus_grad")]
    assert x["n_tested"].tolist() == [6000]


def test_sample_size_of_5000_says_nothing(tmp_path):
    # warnings are errors in this suite: a warning here would fail the test
    gp.attach(TinyNet(), run_dir=tmp_path / "r", sample_size=5000).detach()


# ---------------------------------------------------------------- run_dir


class _BytesPath:
    def __fspath__(self):
        return b"/tmp/somewhere"


_NAME_MAX = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
_PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096

BAD_RUN_DIRS = [
    (None, TypeError),
    (3, TypeError),
    (b"runs/a", TypeError),
    (_BytesPath(), TypeError),
    ("", ValueError),
    ("runs/a\0b", ValueError),
    ("runs/\ud800", ValueError),
    ("x" * (_NAME_MAX + 1), ValueError),
    ("/".join(["y" * 200] * (_PATH_MAX // 200 + 1)), ValueError),
]


@pytest.mark.parametrize(("run_dir", "error"), BAD_RUN_DIRS)
def test_check_run_dir_refuses_naming_run_dir(tmp_path, run_dir, error):
    with pytest.raises(error, match="run_dir"):
        check_run_dir(run_dir)


def test_check_run_dir_takes_the_longest_component_the_file_system_allows(tmp_path):
    name = "z" * os.pathconf(tmp_path, "PC_NAME_MAX")
    assert check_run_dir(tmp_path / name) == tmp_path / name
    (tmp_path / name).mkdir()  # the file system agrees


@pytest.mark.parametrize("run_dir", ["runs/exp1", Path("runs/exp1"), "runs/é-ü"])
def test_check_run_dir_returns_a_good_path_unchanged(run_dir):
    assert check_run_dir(run_dir) is run_dir


@pytest.mark.parametrize(("run_dir", "error"), BAD_RUN_DIRS)
def test_attach_refuses_a_bad_run_dir_naming_it(tmp_path, monkeypatch, run_dir, error):
    monkeypatch.chdir(tmp_path)
    probe = None
    try:
        with pytest.raises(error, match="run_dir"):
            probe = gp.attach(TinyNet(), run_dir=run_dir)
    finally:
        if probe is not None:  # run_dir="" attached in the current directory: detach it while still there
            probe.detach()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- layers


@pytest.mark.parametrize(
    ("layers", "where"),
    [([None], r"layers\[0\]"), (("fc1.*", 3), r"layers\[1\]"), (b"fc1.*", "layers"), (7, "layers")],
)
def test_layers_that_are_not_patterns_are_refused(tmp_path, layers, where):
    with pytest.raises(TypeError, match=where):
        gp.attach(TinyNet(), run_dir=tmp_path / "r", layers=layers)
    assert not (tmp_path / "r").exists()


def test_select_names_refuses_a_bad_selector_too():  # the noise estimators' path
    with pytest.raises(TypeError, match=r"layers\[0\]"):
        select_names(["a.weight"], [None])


def test_a_set_of_patterns_selects_what_the_list_does(tmp_path):
    model, opt = TinyNet(), None
    probe = gp.attach(model, opt, run_dir=tmp_path / "r", layers={"fc1.*", "*.bias"})
    probe.detach()
    expected = {"fc1.weight", "fc1.bias", "fc2.bias"}  # by hand, from TinyNet's names
    assert set(probe.tracked) == expected


def _surrogate_net():
    model = nn.Module()
    model.add_module("fc", nn.Linear(3, 2))
    model.add_module("\ud800", nn.Linear(2, 2))
    return model


def test_a_parameter_name_with_a_lone_surrogate_is_refused_naming_the_layer(tmp_path):
    with pytest.raises(ValueError, match=re.escape(repr("\ud800.weight"))) as caught:
        gp.attach(_surrogate_net(), run_dir=tmp_path / "r")
    assert type(caught.value) is ValueError  # not the bare UnicodeEncodeError of the encoder
    assert not (tmp_path / "r").exists()


def test_leaving_the_surrogate_layer_out_records_the_others(tmp_path):
    model = _surrogate_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1, layers="fc.*"):
        model.get_submodule("\ud800")(model.fc(torch.randn(4, 3))).sum().backward()
        opt.step()
    run = gp.load_run(tmp_path / "r")
    assert set(run.stats["param"]) == {"fc.weight", "fc.bias"}


# ---------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    ("metadata", "error", "where"),
    [
        ({"t": torch.zeros(3)}, TypeError, r"metadata\['t'\] is a Tensor"),
        ({"t": torch.tensor(1.0)}, TypeError, r"metadata\['t'\] is a Tensor"),
        ({"a": [1, np.zeros(2)]}, TypeError, r"metadata\['a'\]\[1\] is a ndarray"),
        ({("a", 1): 1}, TypeError, r"metadata has a key of type tuple"),
        ({"a": {2: "x"}}, TypeError, r"metadata\['a'\] has a key of type int"),
        ({"s": {1, 2}}, TypeError, r"metadata\['s'\] is a set"),
        ({"o": object()}, TypeError, r"metadata\['o'\] is a object"),
        ({"b": b"raw"}, TypeError, r"metadata\['b'\] is a bytes"),
    ],
)
def test_metadata_that_run_json_cannot_hold_is_refused_naming_the_key(tmp_path, metadata, error, where):
    with pytest.raises(error, match=where):
        gp.attach(TinyNet(), run_dir=tmp_path / "r", metadata=metadata)
    assert not (tmp_path / "r").exists()


def test_a_metadata_cycle_is_refused_naming_where_it_closes(tmp_path):
    meta = {"a": {"b": None}}
    meta["a"]["b"] = meta
    with pytest.raises(ValueError, match=r"metadata\['a'\]\['b'\] refers back to metadata \(a cycle\)"):
        gp.attach(TinyNet(), run_dir=tmp_path / "r", metadata=meta)
    looped = []
    looped.append(looped)
    with pytest.raises(ValueError, match=r"metadata\['l'\]\[0\] refers back to metadata\['l'\]"):
        gp.attach(TinyNet(), run_dir=tmp_path / "r", metadata={"l": looped})
    assert not (tmp_path / "r").exists()


def test_too_deep_metadata_is_refused(tmp_path):
    meta = current = {}
    for _ in range(100):
        current["k"] = current = {}
    with pytest.raises(ValueError, match="metadata is nested more than 64 deep"):
        gp.attach(TinyNet(), run_dir=tmp_path / "r", metadata=meta)


def test_numpy_scalars_paths_and_tuples_are_stored_as_json_values(tmp_path):
    shared = [1, 2]
    meta = {
        "lr": np.float32(0.1),
        "n": np.int64(3),
        "flag": np.bool_(True),
        "name": np.str_("x"),
        "data": Path("/data/set"),
        "shape": (2, 3),
        "a": shared,
        "b": shared,  # the same list twice is no cycle
    }
    with gp.attach(TinyNet(), run_dir=tmp_path / "r", metadata=meta) as probe:
        probe.capture()
    user = json.loads((tmp_path / "r" / "run.json").read_text())["user"]
    assert user == {
        "lr": float(np.float32(0.1)),
        "n": 3,
        "flag": True,
        "name": "x",
        "data": "/data/set",
        "shape": [2, 3],
        "a": [1, 2],
        "b": [1, 2],
    }
    assert type(user["flag"]) is bool and type(user["n"]) is int


def test_metadata_is_copied_at_attach(tmp_path):
    meta = {"tags": ["a"]}
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1, metadata=meta):
        meta["tags"].append("changed later")
        train(model, opt, batches(1))
    assert json.loads((tmp_path / "r" / "run.json").read_text())["user"] == {"tags": ["a"]}


def test_a_float_seed_is_refused(tmp_path):
    with pytest.raises(TypeError, match="seed"):
        gp.attach(TinyNet(), run_dir=tmp_path / "r", seed=2.5)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- normality()

_X = np.random.default_rng(7).standard_normal(400)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (None, "x must be an array of real numbers, got None"),
        ("1.5", "x must be"),
        ([1.0, [2.0, 3.0]], "x must be"),
        (_X + 1j, "x must be"),
        (torch.tensor(_X) + 0j, "x must be real"),
        (np.array(["a", "b"] * 10), "x must be"),
        (np.array(["2020-01-01"] * 10, dtype="datetime64[D]"), "x must be"),
    ],
)
def test_normality_refuses_what_is_not_real_numbers(x, match):
    with pytest.raises(TypeError, match=match):
        gp.normality(x)


@pytest.mark.parametrize(
    ("kw", "error", "name"),
    [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"max_tested": 100.0}, TypeError, "max_tested"),
        ({"max_tested": 4}, ValueError, "max_tested"),
        ({"thresholds": None}, TypeError, "thresholds"),
        ({"axis": 0}, TypeError, "axis"),
    ],
)
def test_normality_refuses_bad_options_naming_them(kw, error, name):
    with pytest.raises(error, match=name):
        gp.normality(_X, **kw)


def test_seed_minus_one_is_refused_even_when_no_subsample_is_drawn():
    with pytest.raises(ValueError, match="seed must be >= 0"):
        gp.normality(_X[:100], seed=-1)


def test_a_generator_seed_draws_the_subsample_from_it():
    r = gp.normality(_X, max_tested=100, seed=np.random.default_rng(5))
    chosen = np.sort(np.random.default_rng(5).choice(_X.size, size=100, replace=False))
    assert r.n_tested == 100
    assert r.shapiro_w == pytest.approx(stats.shapiro(_X[chosen]).statistic, rel=1e-12)


def test_seed_none_tests_a_subsample_of_fresh_entropy():
    assert gp.normality(_X, max_tested=100, seed=None).n_tested == 100


def test_a_tensor_that_requires_grad_is_detached():
    t = torch.tensor(_X, requires_grad=True)
    assert gp.normality(t) == gp.normality(_X)
    assert t.requires_grad and t.grad is None


def test_a_bfloat16_tensor_is_tested_in_float64():
    t = torch.tensor(_X).to(torch.bfloat16)
    assert gp.normality(t) == gp.normality(t.double().numpy())


def test_a_masked_array_is_tested_on_its_unmasked_values_only():
    outliers = np.full(50, 1e6)
    data = np.concatenate([_X, outliers])
    mask = np.concatenate([np.zeros(_X.size, bool), np.ones(50, bool)])
    r = gp.normality(np.ma.masked_array(data, mask=mask))
    assert r == gp.normality(_X)
    assert r.numel == _X.size and r.max == _X.max()


@pytest.mark.parametrize(
    ("kw", "error", "name"),
    [
        ({"alpha": "0.05"}, TypeError, "alpha"),
        ({"max_w1_sigma": float("nan")}, ValueError, "max_w1_sigma"),
        ({"max_abs_skew": None}, TypeError, "max_abs_skew"),
        ({"shape_z": True}, TypeError, "shape_z"),
    ],
)
def test_verdict_thresholds_refuse_non_numbers_and_nan(kw, error, name):
    with pytest.raises(error, match=name):
        VerdictThresholds(**kw)
