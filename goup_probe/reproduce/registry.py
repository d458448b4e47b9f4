"""The names of the reproductions (no heavy imports: the CLI's ``--help`` reads them)."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["RECIPES", "recipe"]

RECIPES: dict[str, str] = {
    "simsekli2019": "Simsekli et al. 2019: alpha-hat of pooled noise vs step, width sweep",
    "panigrahi2019": "Panigrahi et al. 2019: share of tensors not rejected as Gaussian, by batch and step",
    "xie2023": "Xie et al. 2023: pooled vs per-coordinate verdicts; covariance spectrum rank plot",
    "mccandlish2018": "McCandlish et al. 2018: B_simple over training vs critical batch size",
    "mandt2017": "Mandt et al. 2017: stationary SGD covariance vs the OU (Lyapunov) prediction",
}
"""Recipe name -> one line on what it reproduces (each name is a module of this package)."""


def recipe(name: str) -> ModuleType:
    """The module of recipe ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not a recipe.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown reproduction {name!r}; choose one of {', '.join(RECIPES)}")
    return importlib.import_module(f"goup_probe.reproduce.{name}")
