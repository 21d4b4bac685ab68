"""Black picture detection, with FFmpeg ``blackdetect`` semantics by default.

A pixel is black when its luma code is at most ``black_level + pix_th * range`` (limited range:
16 + pix_th * 219; full range: pix_th * 255, truncated to an integer code as blackdetect does).
A picture is black when at least ``pic_th`` of its pixels are black, and a defect is a run of
consecutive black pictures that lasts at least ``d`` seconds: ``start_s`` is the time of the first
black picture and ``end_s`` the time of the first picture that is not black (blackdetect's
``black_start`` / ``black_end``).

Fades: a fade to black and back (a programme transition, an ad break) is a short run of black
pictures. It is not a defect simply because it lasts less than ``d``; nothing else is needed to
tell a transition from an outage, so nothing cross-modal is consulted here.

Corrupt pictures (``VideoFrame.corrupt``) are skipped: they neither start, extend nor end a run,
because concealment output says nothing about the programme (``decode_error`` reports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from worker.detectors.base import Detector, Finding, Severity, StreamContext, VideoFrame

LIMITED_BLACK = 16  # luma code of black in limited (MPEG) range
LIMITED_RANGE = 235 - 16  # luma codes from black to white in limited range
FULL_RANGE = 255  # luma codes from black to white in full (JPEG) range


@dataclass(frozen=True, slots=True)
class BlackOptions:
    """Options of the ``black`` detector (names and defaults as FFmpeg's ``blackdetect``).

    ========  =========  =======  ==========  ================================================
    name      unit       default  range       meaning
    ========  =========  =======  ==========  ================================================
    d         s          2.0      [0, inf)    minimum duration of a run of black pictures
    pic_th    fraction   0.98     [0, 1]      share of black pixels that makes a picture black
    pix_th    fraction   0.10     [0, 1]      pixel threshold, as a fraction of the luma range
                                              above black (16..235 limited, 0..255 full)
    row_step  rows       2        [1, 16]     analyse every n-th row: halves the cost; the
                                              black share of a picture does not change
    ========  =========  =======  ==========  ================================================
    """

    d: float = 2.0
    pic_th: float = 0.98
    pix_th: float = 0.10
    row_step: int = 2

    def __post_init__(self) -> None:
        if not self.d >= 0.0:
            raise ValueError(f"d must be >= 0 s, got {self.d}")
        if not 0.0 <= self.pic_th <= 1.0:
            raise ValueError(f"pic_th must be in [0, 1], got {self.pic_th}")
        if not 0.0 <= self.pix_th <= 1.0:
            raise ValueError(f"pix_th must be in [0, 1], got {self.pix_th}")
        if not 1 <= self.row_step <= 16:
            raise ValueError(f"row_step must be in [1, 16], got {self.row_step}")


def black_luma_threshold(pix_th: float, full_range: bool) -> int:
    """Highest luma code (0..255) that counts as black for ``pix_th`` (fraction of the range).

    Truncates like blackdetect's ``pixel_black_th_i``: 0.10 gives 37 in limited range
    (16 + 21.9) and 25 in full range (25.5).
    """
    if full_range:
        return int(pix_th * FULL_RANGE)
    return int(LIMITED_BLACK + pix_th * LIMITED_RANGE)


def black_pixel_fraction(
    luma: npt.NDArray[np.uint8], threshold: int, out: npt.NDArray[np.uint8] | None = None
) -> float:
    """Fraction (0..1) of pixels of ``luma`` ((h, w) uint8 codes) whose code is <= ``threshold``.

    Uses OpenCV's vectorised threshold and count, which accept row-strided views (decoder
    buffers, ``luma[::2]``) without a copy; an empty picture has no black pixels. ``out``, a
    contiguous uint8 array of ``luma``'s shape, is used as scratch space: a fresh 0.5 MB array per
    picture costs more (page faults) than the threshold itself.
    """
    if luma.size == 0:
        return 0.0
    if luma.strides[-1] != 1:
        luma = np.ascontiguousarray(luma)
    if out is None or out.shape != luma.shape:
        out = np.empty(luma.shape, np.uint8)
    # THRESH_BINARY marks codes > threshold, i.e. the pixels that are *not* black.
    cv2.threshold(luma, threshold, 255, cv2.THRESH_BINARY, dst=out)
    return 1.0 - cv2.countNonZero(out) / luma.size


def mean_luma(luma: npt.NDArray[np.uint8]) -> float:
    """Mean luma code (0..255) of ``luma`` ((h, w) uint8)."""
    if luma.size == 0:
        return 0.0
    if luma.strides[-1] != 1:
        luma = np.ascontiguousarray(luma)
    return float(cv2.mean(luma)[0])


class BlackDetector(Detector):
    """Reports runs of black pictures lasting at least ``d`` seconds (severity critical)."""

    name: ClassVar[str] = "black"
    Options: ClassVar[type[BlackOptions]] = BlackOptions
    options: BlackOptions

    def __init__(self, options: BlackOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self._start: float | None = None  # t of the first black picture of the current run
        self._open = False  # an open finding has been emitted for the current run
        self._ratio_sum = 0.0  # sums over the run's pictures, for the mean metrics
        self._luma_sum = 0.0
        self._pictures = 0
        self._last_t: float | None = None
        self._scratch: npt.NDArray[np.uint8] | None = None  # reused by black_pixel_fraction
        self._coarse: npt.NDArray[np.uint8] | None = None  # the same for the early rejection

    def feed_video(self, frame: VideoFrame) -> list[Finding]:
        if frame.corrupt:
            return []
        findings: list[Finding] = []
        if self._last_t is not None and frame.t < self._last_t:
            # Time went backwards (a discontinuity): what was running cannot extend across it.
            findings += self._end_run(self._last_t)
        self._last_t = frame.t

        opts = self.options
        sample = frame.luma[:: opts.row_step]
        threshold = black_luma_threshold(opts.pix_th, frame.full_range)
        # Exact early rejection: every 8th sampled row is a subset of the sample, so if its
        # non-black pixels alone exceed what pic_th allows the picture cannot be black. Only
        # black or nearly black pictures pay for the full pass.
        coarse = sample[::8]
        # Cheaper still, and as exact: a mean this far above the threshold needs at least this
        # share of non-black pixels (black ones are at most `threshold`, the others at most 255).
        nonblack = (mean_luma(coarse) - threshold) / (255 - threshold)
        if 1.0 - nonblack * coarse.size / max(sample.size, 1) < opts.pic_th:
            return findings + self._end_run(frame.t)
        if self._coarse is None or self._coarse.shape != coarse.shape:
            self._coarse = np.empty(coarse.shape, np.uint8)
        coarse_ratio = black_pixel_fraction(coarse, threshold, self._coarse)
        if 1.0 - (1.0 - coarse_ratio) * coarse.size / max(sample.size, 1) < opts.pic_th:
            return findings + self._end_run(frame.t)
        if self._scratch is None or self._scratch.shape != sample.shape:
            self._scratch = np.empty(sample.shape, np.uint8)
        ratio = black_pixel_fraction(sample, threshold, self._scratch)
        if ratio < opts.pic_th:
            return findings + self._end_run(frame.t)

        if self._start is None:
            self._start = frame.t
        self._ratio_sum += ratio
        self._luma_sum += mean_luma(sample)
        self._pictures += 1
        if not self._open and frame.t - self._start >= opts.d:
            self._open = True
            findings.append(self._finding(None))
        return findings

    def flush(self, t_end: float) -> list[Finding]:
        return self._end_run(t_end)

    def _end_run(self, t: float) -> list[Finding]:
        """End the current run at ``t`` (the first non-black picture, or the end of the media)."""
        if self._start is None:
            return []
        findings: list[Finding] = []
        end = max(t, self._start)
        if not self._open and end - self._start >= self.options.d:
            # Long enough only once its end is known (e.g. a run of exactly d): report it whole.
            findings.append(self._finding(None))
            self._open = True
        if self._open:
            findings.append(self._finding(end))
        self._start = None
        self._open = False
        self._ratio_sum = self._luma_sum = 0.0
        self._pictures = 0
        return findings

    def _finding(self, end_s: float | None) -> Finding:
        assert self._start is not None
        pictures = max(self._pictures, 1)
        metrics = {
            "black_ratio": self._ratio_sum / pictures,
            "mean_luma": self._luma_sum / pictures,
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - self._start
        return Finding(
            type=self.name,
            start_s=self._start,
            end_s=end_s,
            severity=Severity.CRITICAL,
            metrics=metrics,
        )
