"""``scipy.signal.lfilter`` without importing ``scipy.signal``.

``import scipy.signal`` costs about 0.7 s of CPU (its ``__init__`` pulls in ``scipy.stats``,
``scipy.interpolate``, ``scipy.optimize``, ``scipy.special`` and more), more than every other
import of ``avmon analyze`` together; the loudness detector needs one function of it, whose work
is done by the compiled ``scipy.signal._sigtools._linear_filter``. That extension module needs
nothing of its package, so it is loaded here on its own (0.2 ms) and called with exactly the
arguments ``lfilter`` passes it for a filter with more than one denominator coefficient: the
results are the same, bit for bit (``tests/test_detector_loudness.py`` checks it). Should a
scipy release move or change it, :func:`lfilter` falls back to ``scipy.signal.lfilter`` itself.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
KERNEL = "scipy.signal._sigtools"  # the module ``scipy.signal.lfilter`` calls


@cache
def _kernel() -> Callable[..., Any] | None:
    """``_linear_filter(b, a, x, axis, zi)`` from scipy's compiled module, or None if not found."""
    module = sys.modules.get(KERNEL)
    if module is None:
        spec = importlib.util.find_spec("scipy")  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / "signal"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_sigtools{suffix}"
            if path.is_file():
                break
        else:
            return None
        try:
            loader = importlib.machinery.ExtensionFileLoader(KERNEL, str(path))
            found = importlib.util.spec_from_file_location(KERNEL, path, loader=loader)
            if found is None:
                return None
            module = importlib.util.module_from_spec(found)
            loader.exec_module(module)
        except ImportError:
            return None
    kernel = getattr(module, "_linear_filter", None)
    return kernel if callable(kernel) else None


def lfilter(b: Array, a: Array, x: npt.NDArray[Any], zi: Array) -> tuple[Array, Array]:
    """``scipy.signal.lfilter(b, a, x, axis=-1, zi=zi)`` for ``len(a) > 1``: ``(y, zf)``.

    ``b`` and ``a`` are 1-d (``a[0]`` need not be 1), ``x`` is (..., n), ``zi`` is (...,
    max(len(a), len(b)) - 1), the direct form II transposed state; ``y`` has ``x``'s shape in the
    common dtype (float64 for float64 coefficients), ``zf`` is the state after the last sample.
    """
    kernel = _kernel()
    if kernel is None or len(a) < 2:
        from scipy.signal import lfilter as scipy_lfilter  # type: ignore[import-untyped, unused-ignore]

        y, zf = scipy_lfilter(b, a, x, axis=-1, zi=zi)
    else:
        y, zf = kernel(b, a, x, -1, zi)
    return y, zf
