"""What the paper reproductions share: the output folder, the digits MLP, SGD training, the report page.

A reproduction's output directory follows the run directory's rules
(:func:`goup_probe.store.paths.prepare_run_dir`): a non-empty directory is
refused unless ``overwrite`` is set, and even then only a directory holding
what a reproduction writes (``run.json`` and a ``report/`` folder of HTML and
PNG files) is cleared. ``run.json`` records the recipe, its settings, its
numbers and its wall time; ``report/index.html`` is the page.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from goup_probe._version import __version__
from goup_probe.demo.data import load_digits_data
from goup_probe.fidelity.data import ImageData
from goup_probe.report import html
from goup_probe.report.figures import FigureWriter, agg_figure
from goup_probe.report.folder import REPORT_DIR, FigureFile, prepare_report_dir, write_index
from goup_probe.store.paths import RUN_JSON, atomic_write_text, prepare_run_dir

__all__ = [
    "Page",
    "digits",
    "full_loss",
    "mlp",
    "prepare_output",
    "random_batches",
    "train_sgd",
    "unit_gradients",
    "write_output",
]

FONT_SIZE = 10
"""Font size of every reproduction figure (points; 100 dpi)."""


def digits(seed: int = 0) -> ImageData:
    """The bundled scikit-learn digits (offline), standardised."""
    return load_digits_data(seed=seed)


def mlp(width: int, depth: int = 1, *, seed: int = 0, inputs: int = 64, classes: int = 10) -> nn.Sequential:
    """A ReLU MLP on flattened 8×8 digits: ``depth`` hidden layers of ``width`` units (seeded init)."""
    if width < 1 or depth < 1:
        raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    size = inputs
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, classes))
    return nn.Sequential(*layers)


def random_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, count: int, rng: np.random.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` mini-batches, each ``batch_size`` distinct samples drawn afresh (batches may overlap).

    This is SGD's sampling model at a fixed θ: independent mini-batches of the
    training set, so a batch size close to the data set size still gives many units.
    """
    if not 1 <= batch_size <= len(x):
        raise ValueError(f"batch_size must lie in [1, {len(x)}], got {batch_size}")
    out = []
    for _ in range(count):
        idx = torch.from_numpy(rng.choice(len(x), size=batch_size, replace=False))
        out.append((x[idx], y[idx]))
    return out


def full_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of ``model`` on all of ``(x, y)`` (no gradients)."""
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def train_sgd(
    model: nn.Module,
    data: ImageData,
    *,
    batch_size: int,
    lr: float,
    steps: int,
    seed: int,
    callback: Callable[[int, nn.Module], bool | None] | None = None,
) -> int:
    """Plain SGD on cross-entropy; ``callback(step, model)`` runs before each step and at the end.

    The callback returning True stops training early. Returns the number of steps taken.
    """
    gen = np.random.default_rng(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = len(data.train_x)
    for step in range(steps + 1):
        if callback is not None and callback(step, model):
            return step
        if step == steps:
            break
        idx = torch.from_numpy(gen.choice(n, size=min(batch_size, n), replace=False))
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx]).backward()
        opt.step()
    return steps


def unit_gradients(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], params: Sequence[nn.Parameter]
) -> np.ndarray:
    """The mean-loss gradient of each batch over ``params``, flattened: float64, shape (batches, numel).

    ``torch.autograd.grad`` never writes ``.grad``, so a training loop around the call is unchanged.
    """
    rows = []
    for x, y in batches:
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(params))
        rows.append(torch.cat([g.reshape(-1) for g in grads]).to(torch.float64).numpy())
    return np.stack(rows)


def prepare_output(out: str | Path, overwrite: bool) -> Path:
    """Create the output directory by the run directory's rules (see the module notes)."""
    return Path(prepare_run_dir(out, overwrite=overwrite))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Page:
    """What a reproduction's report page says.

    Attributes
    ----------
    title : str
        The paper and what is reproduced.
    claim : str
        The paper's claim, in one or two sentences.
    measured : str
        What this reproduction measures and how.
    verdict : str
        Our calibrated verdict (computed from the numbers).
    sentence : str
        What was reproduced and what was not (computed from the numbers).
    tables : sequence of (caption, DataFrame)
        Tables of the numbers.
    """

    title: str
    claim: str
    measured: str
    verdict: str
    sentence: str
    tables: Sequence[tuple[str, Any]] = ()


def _jsonable(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    if isinstance(value, np.integer):
        return int(value)
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame
        return _jsonable(value.to_dict(orient="records"))
    return value


def write_output(
    out_dir: Path,
    name: str,
    settings: dict[str, object],
    result: object,
    page: Page,
    draw_figures: Callable[[FigureWriter], list[FigureFile]],
    wall_seconds: float,
) -> Path:
    """Write ``run.json`` and ``report/index.html`` with its PNG figures; returns the page's path."""
    started = time.perf_counter()
    report_dir = prepare_report_dir(out_dir / REPORT_DIR)
    figures = draw_figures(FigureWriter(report_dir))
    body = [
        html.Section(
            "claim",
            "Claim and verdict",
            html.key_value_table(
                [
                    ("Paper's claim", page.claim),
                    ("Measured here", page.measured),
                    ("Our verdict", page.verdict),
                ]
            )
            + html.paragraph(page.sentence, cls="finding"),
        ),
        html.Section("figures", "Figures", "\n".join(html.figure(f) for f in figures)),
    ]
    tables = "".join(html.table(frame, caption=caption, scroll=True) for caption, frame in page.tables)
    if tables:
        body.append(html.Section("numbers", "Numbers", tables))
    body.append(
        html.Section(
            "settings",
            "Settings",
            html.key_value_table([(k, v) for k, v in settings.items()] + [("wall time (s)", wall_seconds)]),
        )
    )
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = html.page(
        title=page.title,
        subtitle=f"goup-probe reproduce {name}",
        sections=body,
        version=__version__,
        built_at=built,
        build_seconds=time.perf_counter() - started,
    )
    index = write_index(report_dir, text)
    meta = {
        "kind": "reproduction",
        "recipe": name,
        "version": __version__,
        "settings": settings,
        "verdict": page.verdict,
        "sentence": page.sentence,
        "wall_seconds": wall_seconds,
        "figures": [f.relpath for f in figures],
        "result": _jsonable(result),
    }
    atomic_write_text(out_dir / RUN_JSON, json.dumps(meta, indent=2, default=str))
    return index


def new_figure(size: tuple[float, float], ncols: int = 1):
    """A constrained-layout Figure with ``ncols`` Axes and the reproductions' font size."""
    fig = agg_figure(size)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.tick_params(labelsize=FONT_SIZE)
    return fig, list(axes)


def style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """Title and axis labels at the reproductions' font size, with a light grid."""
    ax.set_title(title, fontsize=FONT_SIZE + 1)
    ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    ax.grid(alpha=0.3)
