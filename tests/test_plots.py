"""Axes-level plots: they draw what the DataFrame holds, on the Axes given, and save nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import LogNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from goup_probe import plots, schema
from goup_probe.report import figures
from goup_probe.report.sections.fidelity import shadow_metrics
from goup_probe.report.select import MIN_RANKED_N


def _samples(values_by_key):
    return pd.DataFrame(
        [
            {"step": s, "param": p, "quantity": q, "values": np.asarray(v, dtype=np.float32)}
            for (s, p, q), v in values_by_key.items()
        ]
    )


def _stats(params, steps, metric_fn):
    rows = []
    for i, p in enumerate(params):
        for s in steps:
            for q in (schema.THETA_MINUS_GRAD, schema.THETA):
                rows.append(
                    {
                        "step": s,
                        "param": p,
                        "quantity": q,
                        "axis": schema.AXIS_POOLED,
                        "status": schema.STATUS_OK,
                        "n_tested": 500,
                        "qq_r": 1.0 - metric_fn(i, s),
                        "ks_d": metric_fn(i, s),
                        "skew": 0.1 * i,
                        "excess_kurtosis": -1.2 + 0.01 * s,
                        "grad_to_param": 0.01 * (i + 1),
                        "verdict": schema.VERDICT_GAUSSIAN if i % 2 else schema.VERDICT_NON_GAUSSIAN,
                    }
                )
    return pd.DataFrame(rows)


def _ax():
    return Figure().add_subplot()


def test_histogram_is_a_density_with_the_fitted_normal_of_the_drawn_values():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 4000)
    ax = plots.plot_histogram(_samples({(0, "w", schema.THETA_MINUS_GRAD): x}), param="w", step=0, ax=_ax())
    (patch,) = ax.patches  # one filled step polygon
    verts = patch.get_path().vertices
    # Density scale: the area under the histogram is 1.
    xs, ys = verts[:, 0], verts[:, 1]
    area = np.sum(np.diff(xs) * ys[:-1])
    assert area == pytest.approx(1.0, abs=0.02)
    (line,) = ax.get_lines()
    gx, gy = line.get_data()
    x32 = x.astype(np.float32).astype(np.float64)
    expected = plots.normal_density(gx, x32.mean(), x32.std())
    np.testing.assert_allclose(gy, expected, rtol=1e-12)
    assert ax.get_ylabel() == "density"
    assert "θ" in ax.get_xlabel() or "theta" in ax.get_xlabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("fitted normal" in t for t in labels) and any("n=4000" in t for t in labels)


def test_histogram_and_qq_of_a_missing_sample_say_so_instead_of_failing():
    empty = _samples({(0, "w", schema.THETA): [1.0, 2.0]})
    ax = plots.plot_histogram(empty, param="w", step=5, ax=_ax())
    assert "no stored values" in ax.texts[0].get_text()
    ax = plots.plot_qq(empty, param="w", step=5, ax=_ax())
    assert "no stored values" in ax.texts[0].get_text()


def test_qq_plot_points_are_standardised_order_statistics_against_blom_positions():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 2000)
    ax = plots.plot_qq(_samples({(0, "w", schema.THETA_MINUS_GRAD): x}), param="w", step=0, ax=_ax())
    points, reference = ax.get_lines()
    m, z = points.get_data()
    np.testing.assert_allclose(m, plots.blom_positions(2000))
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(z, np.sort((x32 - x32.mean()) / x32.std()))
    rx, ry = reference.get_data()
    np.testing.assert_allclose(rx, ry)  # the line y = x
    # A uniform bends away from the line: qq_r ≈ 0.977 (DESIGN.md), printed in the legend.
    label = ax.get_legend().get_texts()[0].get_text()
    r = float(label.split("=")[-1])
    assert r == pytest.approx(0.977, abs=0.005)


def test_effect_heatmap_has_one_row_per_tensor_in_model_order_and_a_log_scale():
    params = ["b.weight", "a.weight", "c.bias"]
    steps = [0, 10, 20]
    stats = _stats(params, steps, lambda i, s: 10.0 ** -(i + 1) * (1 + s / 100))
    matrix = plots.effect_matrix(stats)
    assert list(matrix.index) == params and list(matrix.columns) == steps
    assert matrix.loc["a.weight", 10] == pytest.approx(1e-2 * 1.1)
    ax = plots.plot_effect_heatmap(stats, ax=_ax())
    mesh = ax.collections[0]
    assert isinstance(mesh.norm, LogNorm)
    assert mesh.get_array().shape == (3, 3)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{p} (n=500)" for p in params]
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "parameter tensor"


def test_effect_heatmap_rejects_an_unknown_metric():
    stats = _stats(["w"], [0], lambda i, s: 0.1)
    with pytest.raises(ValueError, match="unknown metric"):
        plots.plot_effect_heatmap(stats, metric="nope", ax=_ax())


def test_layer_lines_name_each_tensor_when_few_and_summarise_when_many():
    few = _stats(["a", "b"], [0, 10, 20], lambda i, s: 0.01)
    ax = plots.plot_layer_lines(few, metric="skew", ax=_ax())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["normal (0)", "a", "b"]
    many_names = [f"t{i}" for i in range(30)]
    many = _stats(many_names, [0, 10, 20], lambda i, s: 0.01)
    ax = plots.plot_layer_lines(many, metric="grad_to_param", highlight=["t3"], ax=_ax())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["median of 30 tensors", "t3"]
    assert ax.get_yscale() == "log"
    assert len(ax.collections[0].get_segments()) == 30
    median = ax.get_lines()[0].get_ydata()
    np.testing.assert_allclose(median, np.median(0.01 * (np.arange(30) + 1)))


def test_names_with_dollar_signs_are_drawn_literally():
    stats = _stats(["cost$a$"], [0, 1], lambda i, s: 0.01)
    ax = plots.plot_layer_lines(stats, metric="skew", ax=_ax())
    assert r"cost\$a\$" in [t.get_text() for t in ax.get_legend().get_texts()]
    ax.figure.canvas.draw()  # would raise on unbalanced mathtext


def test_verdict_counts_per_step():
    stats = _stats(["a", "b", "c"], [0, 5], lambda i, s: 0.01)
    counts = plots.verdict_counts(stats)
    assert counts.loc[0, schema.VERDICT_NON_GAUSSIAN] == 2 and counts.loc[0, schema.VERDICT_GAUSSIAN] == 1
    ax = plots.plot_verdict_counts(stats, ax=_ax())
    drawn = {patch.get_label(): patch.get_data() for patch in ax.patches}  # one staircase per verdict
    assert set(drawn) == {schema.VERDICT_NON_GAUSSIAN, schema.VERDICT_GAUSSIAN}
    for verdict, data in drawn.items():
        np.testing.assert_array_equal(data.values - data.baseline, counts[verdict].to_numpy())
    tops = [data.values for data in drawn.values()]
    np.testing.assert_array_equal(np.max(tops, axis=0), [3, 3])  # stacked: the top is all tensors


def test_ou_rates_use_the_interval_columns_relative_to_the_learning_rate():
    ou = pd.DataFrame(
        {
            "param": ["a", "b"],
            "lr": [0.1, 0.1],
            "k_pooled": [0.02, 0.05],
            "k_pooled_ci_low": [0.01, 0.04],
            "k_pooled_ci_high": [0.03, 0.06],
            "k_over_lr": [0.2, 0.5],
            "innovation_acf1": [0.5, -0.01],
            "steps": [400, 400],
        }
    )
    ax = plots.plot_ou_rates(ou, ax=_ax())
    segments = ax.collections[0].get_segments()
    np.testing.assert_allclose([s[:, 0] for s in segments], [[0.1, 0.3], [0.4, 0.6]])
    assert any(line.get_xdata()[0] == 1.0 for line in ax.get_lines())  # the k = α line
    ax = plots.plot_ou_innovation_acf(ou, ax=_ax())
    assert [p.get_width() for p in ax.containers[-1]] == pytest.approx([0.5, -0.01])


def test_fidelity_curves_average_over_seeds_with_a_min_max_band():
    curves = pd.DataFrame(
        {
            "arm": ["sgd"] * 4 + ["goup-seed"] * 4,
            "seed": [0, 0, 1, 1] * 2,
            "step": [0, 10] * 4,
            "heldout_acc": [0.1, 0.5, 0.1, 0.7, 0.1, 0.3, 0.1, 0.4],
        }
    )
    ax = plots.plot_fidelity_curves(curves, y="heldout_acc", ax=_ax())
    sgd_mean = ax.get_lines()[0].get_ydata()
    np.testing.assert_allclose(sgd_mean, [0.1, 0.6])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.1) and band.max() == pytest.approx(0.7)  # lowest..highest seed
    assert ax.get_ylabel() == "held-out accuracy"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd", "goup-seed"]


def test_plots_never_write_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(2)
    samples = _samples({(0, "w", q): rng.normal(size=100) for q in (schema.THETA_MINUS_GRAD, schema.THETA)})
    stats = _stats(["w"], [0, 1], lambda i, s: 0.01)
    for fn, kw in (
        (plots.plot_histogram, {"param": "w", "step": 0}),
        (plots.plot_qq, {"param": "w", "step": 0}),
    ):
        fn(samples, ax=_ax(), **kw)
    plots.plot_effect_heatmap(stats, ax=_ax())
    plots.plot_layer_lines(stats, metric="excess_kurtosis", ax=_ax())
    assert list(tmp_path.iterdir()) == []


# --- Figures that explain themselves (issue 16) ---------------------------------------------------


def _stats_n(n_by_param, steps=(0, 10, 20)):
    """Stats rows of X with a per-tensor n_tested, W1 and skewness (with its SE) that differ per cell."""
    rows = []
    for i, (p, n) in enumerate(n_by_param.items()):
        for j, s in enumerate(steps):
            rows.append(
                {
                    "step": s,
                    "param": p,
                    "quantity": schema.THETA_MINUS_GRAD,
                    "axis": schema.AXIS_POOLED,
                    "status": schema.STATUS_OK,
                    "n_tested": n,
                    "qq_r": 0.99 - 0.001 * i,
                    "w1_sigma": 0.01 * (i + 1) + 0.001 * j,
                    "skew": 0.1 * i + 0.01 * j,
                    "skew_se": (6.0 / n) ** 0.5,
                    "excess_kurtosis": -1.0 + 0.1 * i,
                    "kurtosis_se": (24.0 / n) ** 0.5,
                    "grad_to_param": 0.01 * (i + 1) * (1 + 0.01 * j),
                    "verdict": schema.VERDICT_NON_GAUSSIAN,
                }
            )
    return pd.DataFrame(rows)


def test_heatmap_colours_w1_from_the_stats_and_hatches_tensors_tested_on_too_few_values():
    stats = _stats_n({"conv.weight": 2304, "bn.weight": 16, "fc.weight": 320})
    stats.loc[stats["param"] == "bn.weight", "w1_sigma"] = 0.9  # small n: the largest W1 by far
    ax = plots.plot_effect_heatmap(stats, metric="w1_sigma", min_n=100, ax=_ax())
    mesh = ax.collections[0]
    drawn = np.ma.filled(mesh.get_array().reshape(3, 3).astype(np.float64), np.nan)
    for row, param in ((0, "conv.weight"), (2, "fc.weight")):
        expected = stats[stats["param"] == param].sort_values("step")["w1_sigma"].to_numpy()
        np.testing.assert_allclose(drawn[row], expected)
    assert np.isnan(drawn[1]).all()  # bn.weight is not coloured ...
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert [(p.get_y(), p.get_width()) for p in hatched] == [(1, 3)]  # ... but hatched across all steps
    assert mesh.norm.vmax == pytest.approx(stats[stats["param"] == "fc.weight"]["w1_sigma"].max())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["conv.weight (n=2304)", "bn.weight (n=16 < 100)", "fc.weight (n=320)"]
    assert "too few values" in ax.get_legend().get_texts()[0].get_text()


def test_heatmap_colours_every_row_when_no_tensor_reaches_min_n():
    stats = _stats_n({"a": 16, "b": 32})
    ax = plots.plot_effect_heatmap(stats, metric="w1_sigma", min_n=100, ax=_ax())
    drawn = np.ma.filled(ax.collections[0].get_array().astype(np.float64), np.nan)
    assert np.isfinite(drawn).all()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (n=16 < 100)", "b (n=32 < 100)"]


def test_report_heatmap_draws_w1_and_uses_the_rankings_small_n_rule(tmp_path):
    stats = _stats_n({"below": MIN_RANKED_N - 1, "at": MIN_RANKED_N, "big": 5000})
    writer = _RecordingWriter(tmp_path)
    figures.heatmap_figure(writer, stats)
    (fig,) = writer.figures
    ax = fig.axes[0]
    drawn = np.ma.filled(ax.collections[0].get_array().reshape(3, 3).astype(np.float64), np.nan)
    assert np.isnan(drawn[0]).all() and np.isfinite(drawn[1:]).all()
    assert "W_1" in ax.get_title("left")


def test_layer_lines_draw_small_tensors_apart_and_band_the_coloured_lines_by_their_se():
    n = {f"big{i}": 500 + 100 * i for i in range(8)} | {f"small{i}": 16 for i in range(4)}
    stats = _stats_n(n)
    ax = plots.plot_layer_lines(stats, metric="skew", highlight=["big2"], min_n=100, ax=_ax())
    grey, small = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(grey.get_segments()) == 8 and len(small.get_segments()) == 4
    assert small.get_label() == "4 tensors with n < 100 (dotted)"
    big = stats[stats["param"].str.startswith("big")]
    median_line = next(line for line in ax.get_lines() if line.get_label().startswith("median"))
    np.testing.assert_allclose(median_line.get_ydata(), big.groupby("step")["skew"].median().to_numpy())
    assert median_line.get_label() == "median of 8 tensors with n ≥ 100"
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    rows = stats[stats["param"] == "big2"].sort_values("step")
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx((rows["skew"] + 1.96 * rows["skew_se"]).max())
    assert ys.min() == pytest.approx((rows["skew"] - 1.96 * rows["skew_se"]).min())


def test_kurtosis_lines_show_the_normal_and_the_uniform_reference():
    ax = plots.plot_layer_lines(_stats_n({"a": 500}), metric="excess_kurtosis", ax=_ax())
    refs = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines()}
    assert refs["normal (0)"] == 0.0 and refs["uniform (−1.2)"] == pytest.approx(-1.2)


def test_ou_acf_bar_is_the_beyond_band_colour_exactly_outside_the_white_noise_band():
    acf = np.array([0.09, 0.099, 0.19, -0.07, -0.05, 0.3])
    steps = np.array([400, 400, 100, 1000, 1000, 10])
    ou = pd.DataFrame({"param": [f"t{i}" for i in range(6)], "innovation_acf1": acf, "steps": steps})
    ax = plots.plot_ou_innovation_acf(ou, ax=_ax())
    outside = np.abs(acf) > 1.96 / np.sqrt(steps)
    assert outside.tolist() == [False, True, False, True, False, False]  # the cases straddle the band
    colours = [p.get_facecolor() for p in ax.containers[-1]]
    beyond, within = to_rgba(plots.BEYOND_BAND_COLOR), to_rgba(plots.WITHIN_BAND_COLOR)
    assert colours == [beyond if o else within for o in outside]
    band = ax.containers[0]  # drawn behind the bars
    np.testing.assert_allclose([p.get_width() for p in band], 2 * 1.96 / np.sqrt(steps))
    assert all(p.zorder < bar.zorder for p, bar in zip(band, ax.containers[-1], strict=True))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["outside the band: autocorrelated", "inside the band"]


def test_ou_diagnostics_write_na_in_cells_whose_test_could_not_run():
    ou = pd.DataFrame(
        {
            "param": ["a", "b"],
            "resid_lb_reject": [0.5, 1.0],
            "innovation_normality_reject_pooled": [0.2, np.nan],
        }
    )
    ax = plots.plot_ou_diagnostics(ou, columns=plots.OU_STEP_DIAGNOSTICS, ax=_ax())
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["20%", plots.NOT_COMPUTED]
    with pytest.raises(ValueError, match="columns"):
        plots.plot_ou_diagnostics(ou, columns=["nope"], ax=_ax())


def _update_rows(noise, fit_p, cosine):
    return pd.DataFrame({"noise_to_signal": noise, "goup_fit_p": fit_p, "goup_cosine": cosine})


def test_shadow_figures_draw_noise_to_signal_and_the_cosine_and_skip_empty_columns():
    adamw = _update_rows([1.0, 10.0, 100.0], [0.0, 1e-9, 0.2], [0.5, 0.55, 0.6])
    assert [m for m, _ in shadow_metrics(adamw)] == ["noise_to_signal", "goup_cosine"]
    no_cosine = _update_rows([1.0, 10.0, 100.0], [0.3, 0.5, 0.9], [np.nan] * 3)
    assert [m for m, _ in shadow_metrics(no_cosine)] == ["noise_to_signal"]


class _RecordingWriter(figures.FigureWriter):
    """A FigureWriter that keeps every Figure it saves, so a test can look at its artists."""

    def __init__(self, out_dir):
        super().__init__(out_dir)
        object.__setattr__(self, "figures", [])

    def save(self, fig, stem, title, caption, *, tight=True):
        self.figures.append(fig)
        return super().save(fig, stem, title, caption, tight=tight)


def _all_report_figures(tmp_path):
    rng = np.random.default_rng(3)
    n = {f"layer{i}.weight": 2304 for i in range(8)} | {f"layer{i}.bn.weight": 16 for i in range(6)}
    stats = _stats_n(n, steps=tuple(range(0, 600, 25)))
    samples = _samples(
        {
            (0, "layer0.weight", q): rng.normal(size=500)
            for q in (schema.THETA_MINUS_GRAD, schema.THETA, schema.GRAD)
        }
    )
    update = stats.assign(
        quantity=schema.UPDATE, noise_to_signal=3.0, goup_fit_p=0.0, goup_cosine=0.55, n_tested=np.nan
    )
    ou = pd.DataFrame(
        {
            "param": list(n),
            "steps": 400,
            "lr": 0.1,
            "k_pooled": 0.01,
            "k_pooled_ci_low": 0.005,
            "k_pooled_ci_high": 0.02,
            "innovation_acf1": np.linspace(-0.2, 0.9, len(n)),
            **{c: np.linspace(0, 1, len(n)) for c in plots.OU_DIAGNOSTICS},
        }
    )
    curves = pd.DataFrame(
        [
            {
                "arm": a,
                "seed": s,
                "step": t,
                "train_loss": 1 / (t + 1),
                "rel_distance": 0.01 * t,
                "heldout_acc": 0.5 if t % 25 == 0 else np.nan,
            }
            for a in ("sgd", "goup-seed")
            for s in (0, 1)
            for t in range(151)
        ]
    )
    layers = pd.DataFrame(
        [
            {
                "arm": "goup-seed",
                "seed": 0,
                "step": t,
                "param": p,
                "rel_distance": np.nan if (p == "bias" and t == 0) else 0.01 * t,
            }
            for t in (0, 25, 50)
            for p in ("weight", "bias")
        ]
    )
    writer = _RecordingWriter(tmp_path)
    files = [
        figures.heatmap_figure(writer, stats),
        *(
            figures.lines_figure(writer, stats, metric=m, highlight=["layer1.weight"])
            for m in ("skew", "excess_kurtosis", "grad_to_param")
        ),
        figures.lines_figure(
            writer, pd.concat([stats, update]), metric="goup_cosine", quantity=schema.UPDATE
        ),
        figures.verdict_figure(writer, stats),
        figures.layer_figure(writer, stats, samples, "layer0.weight", [0, 25]),
        *figures.ou_figures(writer, ou),
        *figures.fidelity_figures(writer, curves, layers),
    ]
    return writer.figures, files


def _title(fig):
    texts = [fig._suptitle.get_text() if fig._suptitle is not None else ""]
    texts += [ax.get_title(loc) for ax in fig.axes for loc in ("left", "center", "right")]
    return " ".join(t for t in texts if t).strip()


def test_every_report_figure_has_a_title_text_of_at_least_9_pt_and_fits_the_page(tmp_path):
    figs, files = _all_report_figures(tmp_path)
    assert len(figs) == len(files) == 14
    for fig, file in zip(figs, files, strict=True):
        assert _title(fig), f"{file.relpath} has no title"
        sizes = {
            (t.get_text(), t.get_fontsize())
            for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip()
        }
        small = sorted((size, text) for text, size in sizes if size < plots.SMALL_FONT)
        assert not small, f"{file.relpath}: text below {plots.SMALL_FONT} pt: {small[:5]}"
        assert file.width <= 1200, f"{file.relpath} is {file.width} px wide: the page would shrink its text"


def test_fidelity_captions_explain_sparse_points_late_lines_and_the_whole_model_distance(tmp_path):
    _, files = _all_report_figures(tmp_path)
    captions = {f.relpath.split("/")[-1].rsplit("-", 1)[0]: f.caption for f in files}
    assert "7 steps only" in captions["fidelity-heldout_acc"]
    assert "BatchNorm" in captions["fidelity-rel_distance"]
    assert "start late (bias)" in captions["fidelity-distance-goup-seed"]
    assert "zero" in captions["fidelity-distance-goup-seed"]
