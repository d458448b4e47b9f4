"""Plug-in statistics: declared once, computed beside the battery, written with a derived schema."""

import math

import numpy as np
import pytest

import goup_probe as gp
from goup_probe import schema
from goup_probe.stats import battery
from goup_probe.stats.normality import assess_sample, assess_samples, moments
from goup_probe.store import RunWriter, prepare_run_dir

TODAY_STATS_COLUMNS = (
    "step",
    "param",
    "quantity",
    "axis",
    "micro_batch",  # added by the backward capture point (tests/test_capture_points.py)
    "global_step",  # the framework step (begin_step(global_step=...))
    "lr",
    "status",
    "reason",
    "numel",
    "n_tested",
    "nonfinite",
    "mean",
    "std",
    "skew",
    "skew_se",
    "skew_se_null",  # null-only sqrt(6/n); skew_se is the delta-method SE (tests/test_uncertainty.py)
    "excess_kurtosis",
    "kurtosis_se",
    "kurtosis_se_null",
    "min",
    "max",
    "param_norm",
    "grad_norm",
    "grad_to_param",
    "ks_d",
    "lilliefors_p",
    "lilliefors_p_floor",  # 1/(draws + 1); below it lilliefors_p is Dallal-Wilkinson's tail approximation
    "shapiro_w",
    "shapiro_p",
    "anderson_a2",
    "anderson_p",
    "dagostino_p",
    "jarque_bera_p",
    "qq_r",
    "qq_r_crit05",
    "shapiro_francia_p",
    "w1_sigma",
    "w1_se",  # issue 14: the verdict's equivalence bounds and the shape (tests/test_equivalence.py)
    "l_skew",
    "l_skew_se",
    "l_kurt",
    "l_kurt_se",
    "distinct_share",
    "exceed3_ratio",
    "exceed3_lo",
    "exceed3_hi",
    "exceed4_ratio",
    "exceed4_lo",
    "exceed4_hi",
    "hill_alpha",
    "hill_lo",
    "hill_hi",
    "t_nu",
    "gennorm_beta",
    "best_fit",
    "aic_gain",
    "verdict",
    "shape",
    "noise_to_signal",
    "goup_cosine",
    "goup_fit_p",
)
"""The stats columns before statistics were declared (the independent reference)."""

TAIL_COLUMNS = {"tail_share": "share of tested values more than 3 std from their mean"}


def _tail_rows(x):
    centred = np.abs(x - x.mean(axis=1, keepdims=True))
    return {"tail_share": np.mean(centred > 3 * x.std(axis=1, keepdims=True), axis=1)}


def _tail_one(x):
    return {"tail_share": float(np.mean(np.abs(x - x.mean()) > 3 * x.std()))}


TAILS = gp.Statistic("tail_share", TAIL_COLUMNS, _tail_rows)
TAILS_ROWWISE = gp.Statistic("tail_share", TAIL_COLUMNS, _tail_one, vectorised=False)


def _expected_tail_share(sample):
    """Independent reference: a plain loop, no broadcasting."""
    values = [float(v) for v in sample]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return sum(abs(v - mean) > 3 * std for v in values) / len(values)


def _samples(m=5, n=400, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.standard_t(3, size=(m - 1, n)) * 1e-3, rng.normal(size=(1, n))])


@pytest.mark.parametrize("statistic", [TAILS, TAILS_ROWWISE], ids=["vectorised", "rowwise"])
def test_user_statistic_through_assess_sample_and_assess_samples(statistic):
    samples = _samples()
    fulls = [moments(s) for s in samples]
    batch = assess_samples(fulls, samples, statistics=[statistic])
    expected_all = [_expected_tail_share(sample) for sample in samples]
    assert sum(e > 0 for e in expected_all) >= 3  # heavy tails: the statistic is not trivially 0
    for sample, full, result, expected in zip(samples, fulls, batch, expected_all, strict=True):
        assert result.extra["tail_share"] == pytest.approx(expected, abs=1e-15)
        assert result.to_dict()["tail_share"] == result.extra["tail_share"]
        alone = assess_sample(full, sample, statistics=[statistic])
        assert alone.extra["tail_share"] == pytest.approx(expected, abs=1e-15)
        assert not alone.statistic_errors


def test_vectorised_and_rowwise_forms_agree_and_leave_the_battery_unchanged():
    samples = _samples(m=4, n=300, seed=3)
    fulls = [moments(s) for s in samples]
    plain = assess_samples(fulls, samples)
    vectorised = assess_samples(fulls, samples, statistics=[TAILS])
    rowwise = assess_samples(fulls, samples, statistics=[TAILS_ROWWISE])
    for p, v, r in zip(plain, vectorised, rowwise, strict=True):
        assert v.extra["tail_share"] == pytest.approx(r.extra["tail_share"], abs=1e-15)
        assert p == v == r  # the built-in fields and the verdict do not move
        assert list(v.to_dict()) == [*p.to_dict(), "tail_share"]


def test_normality_passes_statistics_and_untested_rows_are_nan():
    x = np.random.default_rng(0).laplace(size=3000)
    r = gp.normality(x, statistics=[TAILS])
    assert r.extra["tail_share"] == pytest.approx(_expected_tail_share(x), abs=1e-15)  # n < 5000: all
    constant = assess_sample(moments(np.ones(50)), np.ones(50), statistics=[TAILS])
    assert constant.status == schema.STATUS_CONSTANT and math.isnan(constant.extra["tail_share"])
    moments_only = assess_sample(moments(x), x[:100], tested=False, statistics=[TAILS])
    assert math.isnan(moments_only.to_dict()["tail_share"])


def test_a_failing_statistic_gives_nan_and_its_message_but_keeps_the_battery():
    def broken(x):
        raise RuntimeError("boom")

    def wrong_shape(x):
        return {"bad_shape": np.zeros(3)}

    failing = gp.Statistic("broken", {"broken_value": "always fails"}, broken)
    shaped = gp.Statistic("shaped", {"bad_shape": "wrong shape"}, wrong_shape)
    samples = _samples(m=2)
    fulls = [moments(s) for s in samples]
    results = assess_samples(fulls, samples, statistics=[failing, shaped, TAILS])
    for result, plain in zip(results, assess_samples(fulls, samples), strict=True):
        assert math.isnan(result.extra["broken_value"]) and math.isnan(result.extra["bad_shape"])
        assert "boom" in result.statistic_errors["broken"] and "shape" in result.statistic_errors["shaped"]
        assert math.isfinite(result.extra["tail_share"]) and result == plain

    def picky(x):
        if x[0] > 0:
            raise ValueError("positive first value")
        return {"picky_value": 1.0}

    rowwise = gp.Statistic("picky", {"picky_value": "fails on some rows"}, picky, vectorised=False)
    samples[0, 0], samples[1, 0] = 1.0, -1.0
    first, second = assess_samples(fulls, samples, statistics=[rowwise])
    assert math.isnan(first.extra["picky_value"]) and "positive" in first.statistic_errors["picky"]
    assert second.extra["picky_value"] == 1.0 and not second.statistic_errors


@pytest.mark.parametrize("column", ["ks_d", "w1_sigma", "mean", "verdict", "goup_cosine", "step"])
def test_a_column_clashing_with_a_builtin_one_raises_naming_it(column):
    with pytest.raises(ValueError, match=repr(column)):
        gp.Statistic("mine", {column: "clashes"}, _tail_rows)


def test_invalid_declarations_raise():
    with pytest.raises(ValueError, match="identifier"):
        gp.Statistic("not an identifier", TAIL_COLUMNS, _tail_rows)
    with pytest.raises(ValueError, match="'shapiro_wilk'"):
        gp.Statistic("shapiro_wilk", TAIL_COLUMNS, _tail_rows)
    with pytest.raises(ValueError, match="at least one column"):
        gp.Statistic("empty", {}, _tail_rows)
    with pytest.raises(ValueError, match="'bad column'"):
        gp.Statistic("mine", {"bad column": "x"}, _tail_rows)
    with pytest.raises(ValueError, match="description"):
        gp.Statistic("mine", {"fine": ""}, _tail_rows)
    with pytest.raises(TypeError, match="callable"):
        gp.Statistic("mine", TAIL_COLUMNS, "not a function")
    with pytest.raises(ValueError, match="'tail_share'"):
        schema.stats_schema([TAILS, gp.Statistic("other", TAIL_COLUMNS, _tail_rows)])
    with pytest.raises(ValueError, match="built in"):
        assess_sample(moments(np.arange(20.0)), np.arange(20.0), statistics=[battery.BUILTIN_STATISTICS[0]])


def test_builtin_statistics_declare_every_battery_column_and_their_fn_matches():
    assert TODAY_STATS_COLUMNS[25:57] == battery.BUILTIN_COLUMNS
    samples = _samples(m=3, n=250, seed=7)
    together = battery.run_battery(battery.standardise(samples))
    for statistic in battery.BUILTIN_STATISTICS:
        alone = statistic.fn(samples)
        assert list(alone) == list(statistic.columns)
        for column, values in alone.items():
            np.testing.assert_array_equal(values, together[column])


def test_stats_schema_without_user_statistics_is_todays():
    assert schema.STATS_COLUMNS == TODAY_STATS_COLUMNS
    assert tuple(schema.stats_schema().names) == TODAY_STATS_COLUMNS
    assert schema.stats_schema().equals(schema.STATS_SCHEMA)
    assert schema.TABLES["stats"].equals(schema.STATS_SCHEMA)
    assert [name for name, _, _ in schema.stats_fields()] == list(TODAY_STATS_COLUMNS)
    extended = schema.stats_schema([TAILS])
    assert tuple(extended.names) == (*TODAY_STATS_COLUMNS, "tail_share")
    assert str(extended.field("tail_share").type) == "double"
    assert schema.stats_fields([TAILS])[-1][2] == TAIL_COLUMNS["tail_share"]


def test_writer_with_a_declared_column_writes_it_and_load_run_reads_it(tmp_path):
    path = prepare_run_dir(tmp_path / "run")
    writer = RunWriter(path, schemas={"stats": schema.stats_schema([TAILS])})
    x = np.random.default_rng(1).laplace(size=2000)
    result = gp.normality(x, statistics=[TAILS])
    rows = [{**result.to_dict(), "step": step, "param": "w", "quantity": schema.THETA} for step in (0, 1)]
    writer.append("stats", rows[:1])
    writer.flush()
    writer.append("stats", rows[1:])
    writer.flush()
    writer.write_meta({"schema_version": schema.SCHEMA_VERSION, "status": "completed"})
    stats = gp.load_run(path).stats
    assert list(stats.columns) == [*TODAY_STATS_COLUMNS, "tail_share"]
    assert stats["tail_share"].tolist() == [result.extra["tail_share"]] * 2
    assert stats["ks_d"].tolist() == [result.ks_d] * 2


def test_a_row_with_an_undeclared_column_raises_naming_table_and_column(tmp_path):
    writer = RunWriter(prepare_run_dir(tmp_path / "run"))
    row = {**gp.normality(np.arange(30.0), statistics=[TAILS]).to_dict(), "step": 0, "param": "w"}
    writer.append("stats", [row])
    with pytest.raises(ValueError, match=r"'stats'.*'tail_share'"):
        writer.flush()
    other = RunWriter(prepare_run_dir(tmp_path / "other"))
    other.append("samples", [{"step": 0, "param": "w", "quantity": "theta", "values": [1.0], "typo": 1}])
    with pytest.raises(ValueError, match=r"'samples'.*'typo'"):
        other.flush()
