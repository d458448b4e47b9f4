"""Twin training runs: the same start and the same data, only the update rule differs.

For each seed one model is built, copied into every arm (the base optimizer and
one GO-UP arm per mode), and all arms are stepped in lockstep on the very same
mini-batch. Before each arm's step the global RNG is reset to a common state,
so dropout masks agree as well; GO-UP draws its noise from its own generator.

The model factory and the data are arguments: any model and any train/held-out
split (:class:`~goup_probe.fidelity.data.ImageData`) fit. The demo supplies the
defaults (the bundled digits and its small ResNet: :mod:`goup_probe.demo.compare`).
One seed's lockstep training is :func:`goup_probe.fidelity.lockstep.twin_run`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from goup_probe import schema, store
from goup_probe.capture.meta import run_meta
from goup_probe.fidelity.data import ImageData, LossFn
from goup_probe.fidelity.intervals import summarise
from goup_probe.fidelity.lockstep import BaseOptimizer, TwinRows, TwinSettings, goup_name, seeded, twin_run
from goup_probe.fidelity.lockstep import noise_seed as _noise_seed  # noqa: F401  (tests pin GO-UP's seeds)
from goup_probe.optim.goup import MODES
from goup_probe.store import RunDirectoryError, RunWriter, load_run, prepare_run_dir, read_meta, utc_now

DEFAULT_STEPS = 300
DEFAULT_LR = 0.05
DEFAULT_BATCH_SIZE = 64
DEFAULT_SEEDS = 3
DEFAULT_EVAL_EVERY = 25
DEFAULT_MODES: tuple[str, ...] = ("seed", "scalar")


def sgd(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The default base arm: plain SGD (no momentum, no weight decay), GO-UP's noiseless mean."""
    return torch.optim.SGD(params, lr=lr)


@dataclass
class CompareResult:
    """What :func:`compare` produced.

    Attributes
    ----------
    curves : DataFrame
        One row per (arm, seed, step), ``step`` = updates taken (0 = init); see
        :data:`goup_probe.schema.COMPARE_CURVES_FIELDS`.
    layers : DataFrame
        Per-parameter distances to the base arm at the evaluation steps.
    summary : DataFrame
        One row per arm: final held-out accuracy and loss with t-intervals over
        seeds, and the paired gap to the base arm.
    config : dict
        The settings of the comparison (JSON-serialisable).
    run_dir : Path or None
        Where the tables were written, if anywhere.
    wall_seconds : float
        Wall time of the training and evaluation.
    """

    curves: pd.DataFrame
    layers: pd.DataFrame
    summary: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    wall_seconds: float = math.nan

    @classmethod
    def from_run(cls, run_dir: str | Path) -> CompareResult:
        """Read a comparison back from a run directory (see :func:`write_comparison`)."""
        run = load_run(run_dir)
        config = dict(run.meta.get("compare") or {})
        if schema.COMPARE_SUMMARY not in run.tables:
            raise RunDirectoryError(f"{run_dir} holds no comparison (no {schema.COMPARE_SUMMARY} table)")
        return cls(
            curves=run.table(schema.COMPARE_CURVES),
            layers=run.table(schema.COMPARE_LAYERS),
            summary=run.table(schema.COMPARE_SUMMARY),
            config=config,
            run_dir=Path(run_dir),
            wall_seconds=float(config.get("wall_seconds", math.nan)),
        )


def compare(
    model_fn: Callable[[], nn.Module] | None = None,
    data: ImageData | None = None,
    *,
    modes: Sequence[str] = DEFAULT_MODES,
    base: BaseOptimizer = sgd,
    base_name: str = "sgd",
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    eval_every: int = DEFAULT_EVAL_EVERY,
    max_heldout: int | None = None,
    loss_fn: LossFn | None = None,
    device: str | torch.device = "cpu",
    num_threads: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> CompareResult:
    """Train twin runs that differ only in the update rule, and compare them.

    Per seed, every arm starts from the same weights (``model_fn()`` built under
    ``torch.manual_seed(seed)``, then deep-copied), sees the same sequence of
    mini-batches (one seeded :class:`~goup_probe.demo.data.BatchStream` feeds all
    arms in lockstep) and the same global-RNG state at every step, and takes the
    same number of steps with the same lr. GO-UP's noise comes from its own
    generator (seeded per seed and mode). The caller's global RNG state is
    restored afterwards.

    Parameters
    ----------
    model_fn : callable, optional
        Builds the model (no arguments). Default (supplied by the demo,
        :func:`goup_probe.demo.compare.digits_setup`): the demo's ``SmallResNet``
        for ``data``.
    data : ImageData, optional
        Train and held-out inputs and labels
        (:class:`~goup_probe.fidelity.data.ImageData`). Default (supplied by
        the demo): the bundled digits.
    modes : sequence of {"seed", "scalar"}
        One GO-UP arm per mode (arm names ``goup-<mode>``).
    base : callable
        ``(parameters, lr) -> optimizer`` of the base arm; default plain SGD.
    base_name : str
        Name of the base arm.
    steps, lr, batch_size : int, float, int
        Updates per run, learning rate (all arms), mini-batch size.
    seeds : int or sequence of int
        Number of seeds (``0..n-1``) or the seeds themselves. Default 3.
    eval_every : int
        Held-out evaluation and parameter distances every ``eval_every`` updates
        (and at step 0 and the last step).
    max_heldout : int, optional
        Evaluate on the first ``max_heldout`` held-out examples only.
    loss_fn : callable, optional
        ``(logits, targets) -> mean loss``; default cross-entropy. Accuracy is
        the argmax of the logits.
    device : str or torch.device
        Where the models train.
    num_threads : int, optional
        Intra-op CPU threads during the comparison (``torch.set_num_threads``;
        the previous value is restored afterwards). ``None`` leaves torch's
        setting. For small models 1 is often fastest: on a 2-core machine shared
        with other work, the demo's SmallResNet step took 8 ms with 1 thread and
        320 ms with 2.
    out : path, optional
        Run directory to write the tables to (created; refused if not empty
        unless ``overwrite``). ``None`` keeps the result in memory only.
    overwrite : bool
        Replace an earlier run in ``out``.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    CompareResult
        ``curves``, ``layers``, ``summary`` (one row per arm) and ``config``.

    Notes
    -----
    An arm whose training loss becomes non-finite, or whose GO-UP step meets a
    non-finite θ − g (``FloatingPointError``), is marked ``diverged`` and stops;
    its later metrics are NaN and the summary counts it in ``n_diverged``.
    """
    seed_list = _seed_list(seeds)
    modes = _check_modes(modes)
    _check_settings(steps, batch_size, eval_every, max_heldout, num_threads, lr, base_name)
    if model_fn is None or data is None:  # the demo's digits: the library itself knows no data set
        from goup_probe.demo.compare import digits_setup

        model_fn, data = digits_setup(model_fn, data)
    settings = TwinSettings(
        heldout=(data.test_x[:max_heldout], data.test_y[:max_heldout]),
        modes=modes,
        base=base,
        base_name=base_name,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        eval_every=eval_every,
        loss_fn=nn.functional.cross_entropy if loss_fn is None else loss_fn,
        device=torch.device(device),
    )
    config = _config(data, settings, seed_list, max_heldout, num_threads)
    run_dir = None if out is None else _start_run(out, overwrite, config)
    start = time.perf_counter()
    rows = _train_seeds(model_fn, data, seed_list, settings, config, run_dir, num_threads, progress)
    result = _assemble(rows, base_name, config, start)
    if run_dir is not None:
        write_comparison(result, run_dir)
        meta = read_meta(run_dir)
        meta.update(status="completed", ended_at=utc_now())
        RunWriter(run_dir).write_meta(meta)
    return result


def _check_settings(
    steps: int,
    batch_size: int,
    eval_every: int,
    max_heldout: int | None,
    num_threads: int | None,
    lr: float,
    base_name: str,
) -> None:
    """Refuse settings :func:`compare` cannot run with (ValueError naming the setting)."""
    _check_positive(steps=steps, batch_size=batch_size, eval_every=eval_every)
    if max_heldout is not None:
        _check_positive(max_heldout=max_heldout)
    if num_threads is not None:
        _check_positive(num_threads=num_threads)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    if base_name in {goup_name(m) for m in MODES}:
        raise ValueError(f"base_name {base_name!r} clashes with a GO-UP arm name")


def _config(
    data: ImageData,
    s: TwinSettings,
    seed_list: list[int],
    max_heldout: int | None,
    num_threads: int | None,
) -> dict[str, Any]:
    """The settings of a comparison, JSON-serialisable (``CompareResult.config``, ``run.json``)."""
    return {
        "data": data.name,
        "n_train": len(data.train_x),
        "n_heldout": len(data.test_x) if max_heldout is None else min(max_heldout, len(data.test_x)),
        "base": s.base_name,
        "modes": list(s.modes),
        "steps": s.steps,
        "lr": s.lr,
        "batch_size": s.batch_size,
        "seeds": seed_list,
        "eval_every": s.eval_every,
        "device": str(s.device),
        "num_threads": num_threads if num_threads is not None else torch.get_num_threads(),
    }


def _start_run(out: str | Path, overwrite: bool, config: dict[str, Any]) -> Path:
    """Prepare the run directory and mark the comparison running in ``run.json``."""
    run_dir = prepare_run_dir(out, overwrite=overwrite)
    RunWriter(run_dir).write_meta(_compare_meta(config, "running"))
    return run_dir


def _train_seeds(
    model_fn: Callable[[], nn.Module],
    data: ImageData,
    seed_list: list[int],
    settings: TwinSettings,
    config: dict[str, Any],
    run_dir: Path | None,
    num_threads: int | None,
    progress: bool,
) -> TwinRows:
    """One :func:`twin_run` per seed, with a forked RNG and ``num_threads``; failures go to run.json."""
    rows = TwinRows()
    bar = _progress_bar(progress, settings.steps * len(seed_list))
    previous_threads = torch.get_num_threads()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        fork_devices = [settings.device] if settings.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            for seed in seed_list:
                config["model"] = twin_run(seeded(model_fn, seed), data, seed, settings, rows, bar)
    except BaseException as exc:
        if run_dir is not None:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            meta = _compare_meta(config, status)
            meta["status_reason"] = f"{type(exc).__name__}: {exc}"
            RunWriter(run_dir).write_meta(meta)
        raise
    finally:
        torch.set_num_threads(previous_threads)
        if bar is not None:
            bar.close()
    return rows


def _assemble(rows: TwinRows, base_name: str, config: dict[str, Any], start: float) -> CompareResult:
    """The tables as DataFrames, the per-arm summary, and the wall time since ``start``."""
    curves = pd.DataFrame(rows.curves, columns=[n for n, _, _ in schema.COMPARE_CURVES_FIELDS])
    layers = pd.DataFrame(rows.layers, columns=[n for n, _, _ in schema.COMPARE_LAYERS_FIELDS])
    summary = summarise(curves, base_name)
    config["wall_seconds"] = time.perf_counter() - start
    return CompareResult(curves, layers, summary, config, None, config["wall_seconds"])


def write_comparison(result: CompareResult, run_dir: str | Path) -> Path:
    """Write a comparison's tables into an existing run directory (one with ``run.json``).

    Earlier comparison tables there are replaced; ``run.json`` gets the settings
    under ``"compare"``; everything else (e.g. a probe run's tables) is kept.
    Read it back with ``load_run(run_dir).table("compare_summary")`` or
    :meth:`CompareResult.from_run`.
    """
    path = Path(run_dir)
    read_meta(path)  # a run directory, before anything is written
    for table, frame in (
        (schema.COMPARE_CURVES, result.curves),
        (schema.COMPARE_LAYERS, result.layers),
        (schema.COMPARE_SUMMARY, result.summary),
    ):
        store.replace_table(path, table, _nulls_for_missing_strings(frame))
    store.update_meta(path, {"compare": dict(result.config)})
    result.run_dir = path
    return path


def _nulls_for_missing_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy where missing values of text columns are ``None`` (pandas may hold NaN there)."""
    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column])):
            values = out[column].astype(object)
            out[column] = values.where(values.notna(), None)
    return out


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds must be a non-empty sequence of distinct integers, got {seeds!r}")
    return out


def _check_modes(modes: Iterable[str]) -> tuple[str, ...]:
    modes = tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if not modes or bad or len(set(modes)) != len(modes):
        raise ValueError(f"modes must be distinct values from {MODES}, got {modes!r}")
    return modes


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _compare_meta(config: dict[str, Any], status: str) -> dict[str, Any]:
    return run_meta(status, kind="compare", compare=config)


def _progress_bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="compare", unit="step", leave=False)
