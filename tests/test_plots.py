"""Axes-level plots: they draw what the DataFrame holds, on the Axes given, and save nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from goup_probe import plots, schema


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
    assert any("fitted N" in t for t in labels) and any("n=4000" in t for t in labels)


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
    assert labels == ["normal value", "a", "b"]
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
    heights = sorted({round(p.get_height()) for p in ax.patches})
    assert heights == [1, 2]


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
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.5, -0.01])


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
    assert ax.get_ylabel() == "heldout acc"
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
