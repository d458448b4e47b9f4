"""Plots of a run's tables: :mod:`.tables` shapes the data (no matplotlib), :mod:`.axes` draws it.

Every ``plot_*`` function takes a DataFrame, draws on one matplotlib Axes
(``ax=None``: the current one) and returns it; none saves a file. The drawing
names are loaded from :mod:`.axes` and :mod:`.analyses` on first use, so importing
``goup_probe.plots.tables`` (or this package for its tables) never imports
matplotlib or seaborn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from goup_probe.plots.tables import (
    SE_COLUMNS,
    VERDICT_ORDER,
    WHITE_NOISE_Z,
    beyond_white_noise,
    blom_positions,
    effect_matrix,
    median_n_tested,
    metric_values,
    normal_density,
    ou_interval,
    ou_ratio,
    param_order,
    quantity_rows,
    sample_values,
    small_n_params,
    verdict_counts,
)

if TYPE_CHECKING:
    from goup_probe.plots.analyses import (
        BEYOND_BAND_COLOR,
        FEW_POINTS,
        NOT_COMPUTED,
        OU_DIAGNOSTICS,
        OU_STEP_DIAGNOSTICS,
        WITHIN_BAND_COLOR,
        plot_fidelity_curves,
        plot_ou_diagnostics,
        plot_ou_innovation_acf,
        plot_ou_rates,
        plot_param_distance,
    )
    from goup_probe.plots.axes import (
        METRIC_LABELS,
        QUANTITY_LABELS,
        SMALL_FONT,
        SMALL_N_COLOR,
        TITLE_FONT,
        VERDICT_COLORS,
        mpl_text,
        plot_effect_heatmap,
        plot_histogram,
        plot_layer_lines,
        plot_qq,
        plot_verdict_counts,
    )

_DRAWING = {
    **dict.fromkeys(
        (
            "METRIC_LABELS",
            "QUANTITY_LABELS",
            "SMALL_FONT",
            "SMALL_N_COLOR",
            "TITLE_FONT",
            "VERDICT_COLORS",
            "mpl_text",
            "plot_effect_heatmap",
            "plot_histogram",
            "plot_layer_lines",
            "plot_qq",
            "plot_verdict_counts",
        ),
        "axes",
    ),
    **dict.fromkeys(
        (
            "BEYOND_BAND_COLOR",
            "FEW_POINTS",
            "NOT_COMPUTED",
            "OU_DIAGNOSTICS",
            "OU_STEP_DIAGNOSTICS",
            "WITHIN_BAND_COLOR",
            "plot_fidelity_curves",
            "plot_ou_diagnostics",
            "plot_ou_innovation_acf",
            "plot_ou_rates",
            "plot_param_distance",
        ),
        "analyses",
    ),
}
"""Drawing name -> submodule that defines it (imported, with matplotlib, on first use)."""

__all__ = [
    "BEYOND_BAND_COLOR",
    "FEW_POINTS",
    "METRIC_LABELS",
    "NOT_COMPUTED",
    "OU_DIAGNOSTICS",
    "OU_STEP_DIAGNOSTICS",
    "QUANTITY_LABELS",
    "SE_COLUMNS",
    "SMALL_FONT",
    "SMALL_N_COLOR",
    "TITLE_FONT",
    "VERDICT_COLORS",
    "VERDICT_ORDER",
    "WHITE_NOISE_Z",
    "WITHIN_BAND_COLOR",
    "beyond_white_noise",
    "blom_positions",
    "effect_matrix",
    "median_n_tested",
    "metric_values",
    "mpl_text",
    "normal_density",
    "ou_interval",
    "ou_ratio",
    "param_order",
    "plot_effect_heatmap",
    "plot_fidelity_curves",
    "plot_histogram",
    "plot_layer_lines",
    "plot_ou_diagnostics",
    "plot_ou_innovation_acf",
    "plot_ou_rates",
    "plot_param_distance",
    "plot_qq",
    "plot_verdict_counts",
    "quantity_rows",
    "sample_values",
    "small_n_params",
    "verdict_counts",
]


def __getattr__(name: str) -> Any:
    """The drawing names, imported from :mod:`.axes` or :mod:`.analyses` (and matplotlib) on first use."""
    module = _DRAWING.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from goup_probe.plots import analyses, axes

    value = getattr(axes if module == "axes" else analyses, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_DRAWING))
