"""Clips made once per process: a test that asks for a clip another test already made gets the same
file, so identical clips are encoded once per session."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_made: dict[str, tuple[Path, Any]] = {}
_root: Path | None = None


def _directory() -> Path:
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="avmon-test-media-"))
        atexit.register(shutil.rmtree, _root, ignore_errors=True)
    return _root


def cached(filename: str, make: Callable[..., T], /, *args: Any, **kwargs: Any) -> tuple[Path, T]:
    """``make(path, *args, **kwargs)`` for ``path`` named ``filename`` (its suffix chooses the
    container), once per process for each distinct call; the path and what ``make`` returned.

    The file is shared between tests: read it, copy it, never change it in place."""
    key = repr((filename, make.__module__, make.__qualname__, args, sorted(kwargs.items())))
    if key not in _made:
        path = _directory() / hashlib.sha256(key.encode()).hexdigest()[:16] / filename
        path.parent.mkdir(exist_ok=True)
        _made[key] = (path, make(path, *args, **kwargs))
    path, value = _made[key]
    result: T = value
    return path, result


def cached_path(filename: str, make: Callable[..., object], /, *args: Any, **kwargs: Any) -> Path:
    """:func:`cached` for makers that return nothing worth keeping: the clip's path."""
    return cached(filename, make, *args, **kwargs)[0]
