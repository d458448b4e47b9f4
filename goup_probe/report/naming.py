"""Safe file names for figures derived from parameter names taken from the model."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 60


def safe_stem(name: str, *, prefix: str = "") -> str:
    """A file-name stem for ``name`` that is safe on every file system and unique per name.

    Everything except ASCII letters, digits, ``.``, ``_`` and ``-`` becomes ``_``,
    leading dots and dashes are removed (no hidden files, no ``..``, no option-like
    names), the result is truncated, and an 8-hex-digit hash of the original name
    is appended, so two names that sanitise alike still get different files.

    Parameters
    ----------
    name : str
        Any string, e.g. a parameter name such as ``"layer1.0.conv1.weight"``.
    prefix : str
        Prepended (after sanitising) to the stem, e.g. ``"layer-"``.

    Returns
    -------
    str
        A stem matching ``[A-Za-z0-9_][A-Za-z0-9._-]*`` without any path separator.

    Examples
    --------
    >>> safe_stem("../../x")
    'x-9bdbf20b'
    """
    cleaned = _UNSAFE.sub("_", f"{prefix}{name}")
    cleaned = cleaned.replace("..", "_").lstrip(".-_")[:MAX_STEM].rstrip(".") or "unnamed"
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}"
