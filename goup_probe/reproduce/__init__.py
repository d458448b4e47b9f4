"""Paper reproductions on the bundled digits, runnable offline on two CPU cores.

Each recipe (one module per paper) has ``QUICK`` and ``FULL`` settings, a
``run(settings) -> Result`` returning a dataclass, a ``page(result)`` with the
paper's claim, our verdict and one sentence on what was and was not
reproduced (all computed from the numbers), and ``figures(result, writer)``.
:func:`reproduce` runs one and writes its output directory
(``run.json`` + ``report/index.html`` with PNG figures).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from goup_probe.reproduce.registry import RECIPES, recipe

__all__ = ["RECIPES", "ReproductionResult", "recipe", "reproduce"]


@dataclass(frozen=True)
class ReproductionResult:
    """One reproduction's outcome.

    Attributes
    ----------
    name : str
        The recipe.
    out_dir : Path
        Output directory (``run.json``, ``report/index.html``).
    index : Path
        The report page.
    result : object
        The recipe's own result dataclass (its numbers).
    verdict, sentence : str
        Our verdict and what was reproduced, as on the page.
    wall_seconds : float
        Time to compute the numbers (the report's time excluded).
    quick : bool
        Whether the quick settings were used.
    """

    name: str
    out_dir: Path
    index: Path
    result: object
    verdict: str
    sentence: str
    wall_seconds: float
    quick: bool


def _single_threaded(fn: Any, *args: Any) -> Any:
    """Call ``fn`` with torch's intra-op threads set to 1, and set them back afterwards.

    The recipes' models are tiny: one thread is as fast as two on an idle machine
    and many times faster on a loaded one (a busy thread pool spins and waits).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def reproduce(
    name: str,
    *,
    quick: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
    settings: Any = None,
) -> ReproductionResult:
    """Run a paper reproduction and write its output directory and report page.

    Parameters
    ----------
    name : str
        One of :data:`RECIPES`.
    quick : bool
        Small settings (under 2 minutes on two CPU cores) instead of the full ones.
    out : path, optional
        Output directory (default ``runs/reproduce/NAME``). A non-empty directory is
        refused unless ``overwrite``; even then only one holding what a run or a
        reproduction writes is cleared (the run directory's rules).
    overwrite : bool
        Replace an earlier output there.
    settings : the recipe's ``Settings``, optional
        Explicit sizes (overrides ``quick``; tests use tiny ones).

    Returns
    -------
    ReproductionResult

    Raises
    ------
    ValueError
        If ``name`` is unknown.
    RunDirectoryError
        If ``out`` is not empty and ``overwrite`` is false, or holds foreign files.
    """
    from goup_probe.reproduce.common import prepare_output, write_output  # torch, matplotlib: on use

    module = recipe(name)
    chosen = settings if settings is not None else (module.QUICK if quick else module.FULL)
    out_dir = prepare_output(Path(out) if out is not None else Path("runs") / "reproduce" / name, overwrite)
    start = time.perf_counter()
    result = _single_threaded(module.run, chosen)
    wall = time.perf_counter() - start
    page = module.page(result)
    record = {"quick": quick, **asdict(chosen)}
    index = write_output(
        out_dir, name, record, result, page, lambda writer: module.figures(result, writer), wall
    )
    return ReproductionResult(name, out_dir, index, result, page.verdict, page.sentence, wall, quick)
