"""Least-squares fits of offsets against time: a line, and a hinge (steady, then a line)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def line_fit(x: F64, y: F64) -> tuple[float, float]:
    """Least-squares line through (x, y): (slope, intercept) in y units per x unit and y units;
    slope 0 when x has fewer than two distinct values."""
    ym = float(y.mean()) if y.size else 0.0
    if x.size < 2:
        return 0.0, ym
    xm = float(x.mean())
    dx = x - xm
    sxx = float(dx @ dx)
    if sxx <= 0.0:
        return 0.0, ym
    slope = float(dx @ (y - ym)) / sxx
    return slope, ym - slope * xm


def hinge_fit(t: F64, y: F64, step: float = 0.01) -> tuple[float, float, float]:
    """Fit y = level for t < t0, level + slope (t − t0) after (a steady offset that starts to
    drift at t0) by least squares, t0 searched on a ``step`` grid from t[0] to t[-1] (times in
    s, sorted). Returns (t0 s, slope in y units per s, largest absolute residual in y units)."""
    grid = np.arange(float(t[0]), float(t[-1]), step)
    if grid.size == 0:
        grid = t[:1].astype(np.float64)
    hinge = np.maximum(0.0, t[None, :] - grid[:, None])  # (candidates, points)
    dh = hinge - hinge.mean(axis=1, keepdims=True)
    dy = y - y.mean()
    var = np.einsum("ij,ij->i", dh, dh)
    slope = np.where(var > 0.0, (dh @ dy) / np.maximum(var, 1e-300), 0.0)
    residual = dy[None, :] - slope[:, None] * dh
    best = int(np.argmin(np.einsum("ij,ij->i", residual, residual)))
    return float(grid[best]), float(slope[best]), float(np.abs(residual[best]).max())
