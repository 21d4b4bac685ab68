"""Flashes: the picture half of a sync mark (a white picture), found in pictures fed in order.

A *flash* is a white picture: its mean luma (on every FLASH_STEP-th row) is at least
``FLASH_LEVEL`` of the way from black to white, ``FLASH_COVER`` of the sampled pixels are at
least ``FLASH_PIXEL`` of the way (a camera flash that lights a scene is not white), and it is
``FLASH_JUMP`` above the median of the preceding pictures; the bright run must end within
``FLASH_MAX_S`` (a white card or a fade to white is no flash). Marks that flash only part of the
picture (a white box) are not recognised. Its time is the time of its first picture, so it is
quantised to the frame grid: where a stream's beeps are not frame-aligned, the offset carries up
to one frame of error (±half a frame around its mean; the generator puts its beeps on the flash
frame's time, so it measures 0).

Cost (measured, one core): one mean over 1/64 of the luma (plus a count when the picture is
bright), 6 µs per 640x360 picture and 20 µs per 1920x1080 one.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

import cv2
import numpy as np
import numpy.typing as npt

from worker.detectors.base import VideoFrame

# Flashes. Levels are fractions of the luma range from black (0) to white (1).
FLASH_STEP = 16  # analyse every 16th row, whole (the rows black rejects on: read once), no copy
FLASH_LEVEL = 0.85  # mean level of a flash (the generator's is 1.0, an encoded one about 0.99)
FLASH_PIXEL = 0.9  # level of a white sampled pixel
# Share of white sampled pixels: the whole picture is white, not lit. A camera flash that pushes
# the picture 80 % of the way to white leaves half of it below FLASH_PIXEL.
FLASH_COVER = 0.9
FLASH_JUMP = 0.3  # rise over the median of the preceding pictures: a flash, not a bright scene
FLASH_MAX_S = 0.25  # a bright run longer than this is a white card or a fade, not a flash
FLASH_HISTORY = 12  # pictures in the median that a flash must rise above

_EPS = 1e-9


def flash_level(luma: npt.NDArray[np.uint8], full_range: bool) -> tuple[float, npt.NDArray[np.uint8]]:
    """Mean level of ``luma`` (h, w uint8 codes) on every FLASH_STEP-th row, as a fraction of
    the range from black (0) to white (1), and the sample it was measured on."""
    sample = luma[::FLASH_STEP]
    if sample.strides[-1] != 1:
        sample = np.ascontiguousarray(sample)
    black, white = (0.0, 255.0) if full_range else (16.0, 235.0)
    # OpenCV's mean of a row-strided view: 7 us at 720p, where numpy's of a 2-d strided one is 25.
    mean = float(cv2.mean(sample)[0]) if sample.size else black
    return (mean - black) / (white - black), sample


def bright_share(sample: npt.NDArray[np.uint8], full_range: bool) -> float:
    """Fraction (0..1) of ``sample``'s pixels at least FLASH_PIXEL of the way to white."""
    black, white = (0.0, 255.0) if full_range else (16.0, 235.0)
    code = black + FLASH_PIXEL * (white - black)
    return float(np.count_nonzero(sample >= code)) / max(sample.size, 1)


class FlashFinder:
    """Finds flashes (see the module docstring) in pictures fed in presentation order."""

    def __init__(self) -> None:
        self._levels: deque[float] = deque(maxlen=FLASH_HISTORY)  # levels of recent non-flash pictures
        self._run_start: float | None = None  # time of the first picture of a bright run, s
        self._run_valid = False  # the run began as a flash (a jump from a darker picture)
        self._last_t: float | None = None
        self.progress = -math.inf  # no flash before this media time (s) is still undecided

    def reset(self) -> None:
        self._levels.clear()
        self._run_start = None
        self._last_t = None

    def finish(self) -> float | None:
        """The end of the pictures: the time (s) of a flash still running, if any."""
        found = self._run_start if self._run_start is not None and self._run_valid else None
        self.reset()
        return found

    def feed(self, frame: VideoFrame) -> float | None:
        """The time (s) of a flash that ends with this picture, if one does."""
        if self._last_t is not None and frame.t < self._last_t:
            self.reset()  # time went back: what came before says nothing about what follows
        self._last_t = frame.t
        level, sample = flash_level(frame.luma, frame.full_range)
        found: float | None = None
        if level >= FLASH_LEVEL:
            if self._run_start is None:
                rise = level - statistics.median(self._levels) if len(self._levels) >= 3 else 0.0
                self._run_valid = rise >= FLASH_JUMP and bright_share(sample, frame.full_range) >= FLASH_COVER
                self._run_start = frame.t
            elif frame.t - self._run_start > FLASH_MAX_S:
                self._run_valid = False  # too long for a flash: a white card, a fade
            if not self._run_valid:
                self._levels.append(level)  # a bright scene is the baseline of the next flash
        else:
            if self._run_start is not None and self._run_valid:
                found = self._run_start
            self._run_start = None
            self._levels.append(level)
        self.progress = self._run_start - _EPS if self._run_start is not None else frame.t
        return found
