"""Many runs as one table: :func:`load_runs` (sweeps over init, batch size, optimizer, seed).

Each run's table is read with the store's :func:`~goup_probe.store.read_table`
(columns and row filters pushed into the Parquet reader), tagged with a ``run``
column and with run-level columns taken from ``run.json`` (:func:`run_info`),
and the runs are concatenated in the order given.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from goup_probe.store import Filters, RunDirectoryError, load_run, read_table
from goup_probe.store.paths import RUN_JSON
from goup_probe.summary import run_progress

__all__ = ["RUN_COLUMN", "load_runs", "resolve_runs", "run_info", "run_names"]

RUN_COLUMN = "run"
"""Column naming the run a row comes from (its directory name, made unique)."""
RUN_PREFIX = "run_"
"""Prefix of every run-level column."""
META_PREFIX = "run_meta_"
"""Prefix of the columns flattened from the metadata passed to ``gp.attach(metadata=...)``."""
_GLOB_CHARS = frozenset("*?[")

PathLike = str | os.PathLike[str]


def resolve_runs(
    runs: PathLike | Sequence[PathLike],
    *,
    on_error: Literal["raise", "skip"] = "raise",
) -> list[Path]:
    """The run directories ``runs`` names, in order, each once.

    Parameters
    ----------
    runs : path, glob pattern or sequence of them
        A string with ``*``, ``?`` or ``[`` is a glob pattern (``"sweep/*"``;
        ``**`` descends into folders); its matches are sorted by name. Anything
        else is one path.
    on_error : {"raise", "skip"}
        What to do with a path that is not a run directory (no ``run.json``):
        raise, or skip it with a :class:`RuntimeWarning`.

    Returns
    -------
    list of Path
        Run directories; a directory named twice (by two patterns) is kept once.

    Raises
    ------
    TypeError
        If ``runs`` (or an item) is not a string or path.
    ValueError
        If ``runs`` is empty, or a glob pattern matches nothing (naming it).
    RunDirectoryError
        With ``on_error="raise"``, naming the first path that is not a run
        directory; with ``"skip"``, when no run is left.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    items = [runs] if isinstance(runs, str | os.PathLike) else runs
    if not isinstance(items, Sequence) or isinstance(items, bytes):
        raise TypeError(
            f"runs must be a path, a glob pattern or a sequence of them, got {type(runs).__name__}"
        )
    if len(items) == 0:
        raise ValueError("runs is empty: pass run directories or a glob pattern such as 'sweep/*'")
    found: list[Path] = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise TypeError(f"runs must hold paths or glob patterns, got {item!r} ({type(item).__name__})")
        text = os.fspath(item)
        if isinstance(item, str) and _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ValueError(f"glob pattern {text!r} matches nothing")
            found.extend(Path(m) for m in matches)
        else:
            found.append(Path(text))
    kept: list[Path] = []
    seen: set[str] = set()
    for path in found:
        key = os.path.realpath(path)
        if key in seen:
            continue
        seen.add(key)
        problem = _not_a_run(path)
        if problem is None:
            kept.append(path)
        elif on_error == "raise":
            raise RunDirectoryError(f"{problem} (pass on_error='skip' to leave such paths out)")
        else:
            warnings.warn(f"{problem}; skipped", RuntimeWarning, stacklevel=3)
    if not kept:
        raise RunDirectoryError(f"none of {[os.fspath(i) for i in items]} is a run directory")
    return kept


def _not_a_run(path: Path) -> str | None:
    """Why ``path`` is not a run directory, or None when it holds a ``run.json``."""
    if not path.exists():
        return f"{str(path)!r} does not exist"
    if not path.is_dir():
        return f"{str(path)!r} is not a run directory (it is a file)"
    if not (path / RUN_JSON).is_file():
        return f"{str(path)!r} is not a run directory (it holds no {RUN_JSON})"
    return None


def run_names(paths: Sequence[Path]) -> list[str]:
    """One unique, short name per run: the directory name, with parent folders where two share it.

    Examples
    --------
    >>> run_names([Path("a/seed0"), Path("b/seed0"), Path("b/seed1")])
    ['a/seed0', 'b/seed0', 'seed1']
    """
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    depth = [1] * len(paths)
    names = [p.name or str(p) for p in paths]
    for _ in range(max((len(p) for p in parts), default=1)):
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        clash = [i for i, name in enumerate(names) if counts[name] > 1]
        if not clash:
            return names
        for i in clash:
            depth[i] = min(depth[i] + 1, len(parts[i]))
            names[i] = "/".join(parts[i][-depth[i] :]).lstrip("/") or names[i]
    out: list[str] = []
    for name in names:  # still equal (the same folder reached through links): number them
        n = sum(1 for o in out if o == name or o.startswith(f"{name}#"))
        out.append(name if n == 0 else f"{name}#{n + 1}")
    return out


def run_info(
    runs: PathLike | Sequence[PathLike],
    *,
    on_error: Literal["raise", "skip"] = "raise",
) -> pd.DataFrame:
    """One row per run: its name and the run-level columns :func:`load_runs` adds to every row.

    Parameters
    ----------
    runs : path, glob pattern or sequence of them
        As in :func:`resolve_runs`.
    on_error : {"raise", "skip"}
        As in :func:`resolve_runs`.

    Returns
    -------
    DataFrame
        Columns ``run``, ``run_path``, ``run_model`` (model class), ``run_optimizer``
        (optimizer class), ``run_lr`` (learning rate of its first param group at
        attach), ``run_seed`` (the training seed when the metadata names one, key
        ``seed``), ``run_init`` and ``run_batch_size`` (metadata keys ``init`` and
        ``batch_size``, top-level or nested, when present), ``run_probe_seed`` (the
        probe's subsample seed), ``run_status``, ``run_steps`` and
        ``run_captured_steps`` (counted from the tables while a run is written,
        as ``goup-probe summary`` counts them), ``run_started_at``, then
        ``run_meta_<key>`` for each scalar of the metadata passed to
        ``gp.attach(metadata=...)``, nested keys joined with ``.``
        (``run_meta_demo.init``); lists are left out. A run lacking a value has NaN.
    """
    return _info_frame(resolve_runs(runs, on_error=on_error))


def _info_frame(paths: Sequence[Path]) -> pd.DataFrame:
    return pd.DataFrame([_info_row(path, name) for path, name in zip(paths, run_names(paths), strict=True)])


def _info_row(path: Path, name: str) -> dict[str, Any]:
    run = load_run(path)
    meta = run.meta
    # run_progress reads only the step column of stats: hand it just that, not the whole table
    run.__dict__["stats"] = read_table(path, "stats", columns=["step"])
    progress = run_progress(run)
    optimizer = meta.get("optimizer") if isinstance(meta.get("optimizer"), Mapping) else {}
    groups = optimizer.get("param_groups") or []
    first_group = groups[0] if groups and isinstance(groups[0], Mapping) else {}
    user = meta.get("user") if isinstance(meta.get("user"), Mapping) else {}
    flat = dict(_flatten(user))
    row: dict[str, Any] = {
        RUN_COLUMN: name,
        "run_path": str(path),
        "run_model": (meta.get("model") or {}).get("class"),
        "run_optimizer": optimizer.get("class"),
        "run_lr": _number(first_group.get("lr")),
        "run_seed": _find_key(user, "seed"),
        "run_init": _find_key(user, "init"),
        "run_batch_size": _find_key(user, "batch_size"),
        "run_probe_seed": (meta.get("capture") or {}).get("seed"),
        "run_status": run.status,
        "run_steps": progress.steps,
        "run_captured_steps": progress.captured,
        "run_started_at": meta.get("started_at"),
    }
    row.update({f"{META_PREFIX}{key}": value for key, value in flat.items()})
    return row


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of nested metadata as ``(dotted key, value)``; lists are left out."""
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(_flatten(value, f"{name}."))
        elif _is_scalar(value):
            out.append((name, value))
    return out


def _find_key(mapping: Mapping[str, Any], key: str) -> Any:
    """The scalar value of ``key`` at the top of ``mapping``, else the first one nested (breadth first)."""
    level: list[Mapping[str, Any]] = [mapping]
    while level:
        for item in level:
            value = item.get(key)
            if value is not None and _is_scalar(value):
                return value
        level = [v for item in level for v in item.values() if isinstance(v, Mapping)]
    return None


def _check_filters(filters: Filters | None) -> None:
    """Refuse tuple filters on the run-level columns: they are not in the Parquet parts."""
    if not isinstance(filters, list):
        return
    terms = [t for f in filters for t in (f if isinstance(f, list) else [f])]
    named = sorted({str(t[0]) for t in terms if isinstance(t, tuple) and t})
    run_level = [n for n in named if n == RUN_COLUMN or n.startswith(RUN_PREFIX)]
    if run_level:
        raise ValueError(
            f"filters: {run_level} are run-level columns, not columns of the table; choose runs by "
            "path or glob, or filter the returned DataFrame (df[df.run_optimizer == 'SGD'])"
        )


def load_runs(
    runs: PathLike | Sequence[PathLike],
    *,
    table: str = "stats",
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> pd.DataFrame:
    """Read one table of many runs as one DataFrame, with run-level columns from each ``run.json``.

    For sweeps: runs over init, batch size, optimizer or seed, compared with
    ordinary pandas (``df.groupby(["run_optimizer", "param"])``).

    Parameters
    ----------
    runs : path, glob pattern or sequence of them
        Run directories. A string with ``*``, ``?`` or ``[`` is a glob pattern
        (``"sweep/*"``), its matches sorted by name; a directory named twice is read once.
    table : str
        Which table (default ``"stats"``; also ``"samples"``, ``"trajectories"``,
        ``"ou"`` ...).
    columns : sequence of str, optional
        Read only these columns of the table (projection pushed into the Parquet
        reader); the run-level columns are added anyway.
    filters : list of tuples or pyarrow.compute.Expression, optional
        Row filter pushed into the Parquet reader, as in
        :func:`goup_probe.store.read_table`, e.g. ``[("quantity", "==", "theta_minus_grad")]``.
        Filters on run-level columns are refused (they are not in the files):
        select runs by path, or filter the result.
    on_error : {"raise", "skip"}
        A path that is not a run directory, or a damaged Parquet part: raise
        :class:`~goup_probe.RunDirectoryError` naming it, or skip it with a warning.

    Returns
    -------
    DataFrame
        The rows of every run in the order given, rows of one run in their stored
        order (index 0..n-1). First column ``run``: the run's directory name (with
        parent folders where two runs share a name); then the table's columns;
        then the run-level columns of :func:`run_info` (``run_optimizer``,
        ``run_lr``, ``run_seed``, ``run_status``, ``run_steps``, ``run_meta_<key>`` ...).
        A run whose table is absent or has no row passing the filter
        contributes no rows (it is still in ``df.attrs["runs"]``, the
        :func:`run_info` table, one row per run).

    Raises
    ------
    ValueError
        If a glob pattern matches nothing (naming it), ``runs`` is empty, or a
        filter names a run-level column.
    RunDirectoryError
        If a path is not a run directory (naming it) and ``on_error="raise"``.

    Examples
    --------
    >>> import goup_probe as gp
    >>> df = gp.load_runs("sweep/*", columns=["step", "param", "w1_sigma"],
    ...                   filters=[("quantity", "==", "theta_minus_grad")])  # doctest: +SKIP
    >>> df.groupby(["run_optimizer", "param"])["w1_sigma"].median()  # doctest: +SKIP
    """
    if not isinstance(table, str):
        raise TypeError(f"table must be a table name, got {table!r}")
    if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
        raise TypeError(f"columns must be a sequence of column names, got {columns!r}")
    _check_filters(filters)
    paths = resolve_runs(runs, on_error=on_error)
    info = _info_frame(paths)
    wanted = None if columns is None else [c for c in columns if c != RUN_COLUMN]
    pieces = []
    for path, name in zip(paths, info[RUN_COLUMN], strict=True):
        frame = read_table(path, table, columns=wanted, filters=filters, on_error=on_error)
        frame.insert(0, RUN_COLUMN, name)
        pieces.append(frame)
    non_empty = [p for p in pieces if len(p)] or pieces[:1]
    with warnings.catch_warnings():  # all-NA columns of one run: the concatenation's dtype is wanted
        warnings.simplefilter("ignore", FutureWarning)
        rows = pd.concat(non_empty, ignore_index=True, sort=False)
    level = info.drop(columns=[c for c in info.columns if c in rows.columns and c != RUN_COLUMN])
    out = rows.merge(level, on=RUN_COLUMN, how="left", sort=False, validate="many_to_one")
    out.attrs["runs"] = info
    return out
