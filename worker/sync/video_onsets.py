"""Visual onset strength: the rectified rise of motion energy in the cells of a coarse grid.

Motion energy is the mean absolute luma difference between consecutive pictures, per cell of a
GRID over a downscaled luma sample (about SAMPLE_COLUMNS wide); a picture's onset is the rise
of each cell's log motion over its largest of the previous REFERENCE_PICTURES pictures, summed
over cells (a flash, a hit that starts motion, a cut). Per picture: a strided luma sample, one
absolute difference, OpenCV's cell means and a few 48-element operations.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

SAMPLE_COLUMNS = 64  # the luma is sampled about this many columns wide (every n-th pixel)
GRID = (6, 8)  # cells (rows, columns) whose motion energy is followed separately
MOTION_FLOOR = 4.0  # luma codes added before the log: coding noise and grain are not motion
# A rise is over the largest motion of this many previous pictures (a maximum filter, as in
# SuperFlux): motion that alternates between pictures (repeated frames, judder, pans stepping by
# whole pixels) does not rise over it, nor an object sliding into a cell over a few pictures.
REFERENCE_PICTURES = 4
VIDEO_RISE = 0.7  # rises of log motion energy below this (natural log, 2x) are not onsets
VIDEO_CELL_CAP = 1.5  # largest contribution of one cell

# float32 scalars made once: numpy builds one in microseconds, as long as the per-cell work.
_MOTION_FLOOR32 = np.float32(MOTION_FLOOR)
_VIDEO_RISE32 = np.float32(VIDEO_RISE)
_VIDEO_CELL_CAP32 = np.float32(VIDEO_CELL_CAP)
_ZERO32 = np.float32(0.0)


def luma_sample(luma: U8) -> U8:
    """A contiguous copy of every n-th pixel of ``luma`` (h, w uint8), about SAMPLE_COLUMNS wide,
    cropped to whole cells of GRID (OpenCV's cell means are three times faster then)."""
    step = max(1, round(luma.shape[1] / SAMPLE_COLUMNS))
    sample = luma[::step, ::step]
    rows, cols = GRID
    h, w = sample.shape
    if h >= rows and w >= cols:
        sample = sample[: h - h % rows, : w - w % cols]
    return np.ascontiguousarray(sample)


def cell_motion(sample: U8, previous: U8) -> F32:
    """(rows·columns of GRID) mean absolute difference (luma codes) between two samples, per cell."""
    diff = cv2.absdiff(sample, previous)
    rows, cols = GRID
    h, w = diff.shape
    if h < rows or w < cols:
        return np.full(rows * cols, float(diff.mean()) if diff.size else 0.0, np.float32)
    # INTER_AREA to the grid's size is the mean of each cell, in OpenCV's kernel.
    cells = cv2.resize(diff.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    return np.asarray(cells, np.float32).ravel()


def log_motion(motion: F32) -> F32:
    """log(MOTION_FLOOR + motion), per cell (motion in luma codes)."""
    out: F32 = np.log(motion + _MOTION_FLOOR32)
    return out


def visual_onset(log_now: F32, log_reference: F32) -> float:
    """Onset strength of a picture: the rises of :func:`log_motion` per cell over
    ``log_reference`` (the cells' largest in the previous REFERENCE_PICTURES pictures), above
    VIDEO_RISE and at most VIDEO_CELL_CAP each, summed over cells, as log(1 + sum)."""
    rise = log_now - log_reference
    # Each cell counts up to VIDEO_CELL_CAP and the sum is compressed: a cut (every cell) must
    # not outweigh the dozen small events of a window in the correlation.
    np.subtract(rise, _VIDEO_RISE32, out=rise)
    np.minimum(rise, _VIDEO_CELL_CAP32, out=rise)
    np.maximum(rise, _ZERO32, out=rise)
    return math.log1p(float(rise.sum()))
