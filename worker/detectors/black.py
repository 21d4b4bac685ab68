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

from shared.models import DefectType
from worker.detectors.base import BlackPicture, Detector, Finding, Severity, StreamContext, VideoFrame
from worker.detectors.options import DetectorOptions, opt
from worker.detectors.runs import RunTracker

LIMITED_BLACK = 16  # luma code of black in limited (MPEG) range
LIMITED_RANGE = 235 - 16  # luma codes from black to white in limited range
FULL_RANGE = 255  # luma codes from black to white in full (JPEG) range
BLACKDETECT = BlackPicture()  # FFmpeg blackdetect's picture and pixel thresholds


@dataclass(frozen=True, slots=True)
class BlackOptions(DetectorOptions):
    """Options of the ``black`` detector (names and defaults as FFmpeg's ``blackdetect``)."""

    d: float = opt(2.0, "s", "minimum duration of a run of black pictures", ge=0.0)
    pic_th: float = opt(
        BLACKDETECT.pic_th, "fraction", "share of black pixels that makes a picture black", ge=0.0, le=1.0
    )
    pix_th: float = opt(
        BLACKDETECT.pix_th,
        "fraction",
        "pixel threshold, as a fraction of the luma range above black (16..235 limited, 0..255 full)",
        ge=0.0,
        le=1.0,
    )
    row_step: int = opt(
        2, "rows", "analyse every n-th row: halves the cost; the black share of a picture does not change",
        ge=1, le=16,
    )


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

    name: ClassVar[DefectType] = DefectType.BLACK
    Options: ClassVar[type[BlackOptions]] = BlackOptions
    options: BlackOptions

    def __init__(self, options: BlackOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        # What this detector calls black, for the others (freeze leaves such pictures to it).
        self.ctx.black_picture = BlackPicture(self.options.pic_th, self.options.pix_th)
        self._run = RunTracker(self.options.d)  # from the first black picture of the current run
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

        opens = self._run.extend(frame.t)
        self._ratio_sum += ratio
        self._luma_sum += mean_luma(sample)
        self._pictures += 1
        if opens:
            assert self._run.start is not None
            findings.append(self._finding(self._run.start, None))
        return findings

    def flush(self, t_end: float) -> list[Finding]:
        return self._end_run(t_end)

    def _end_run(self, t: float) -> list[Finding]:
        """End the current run at ``t`` (the first non-black picture, or the end of the media)."""
        if not self._run.active:
            return []
        findings = [self._finding(start, end) for start, end in self._run.stop(t)]
        self._ratio_sum = self._luma_sum = 0.0
        self._pictures = 0
        return findings

    def _finding(self, start: float, end_s: float | None) -> Finding:
        pictures = max(self._pictures, 1)
        metrics = {
            "black_ratio": self._ratio_sum / pictures,
            "mean_luma": self._luma_sum / pictures,
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - start
        return Finding(
            type=self.name,
            start_s=start,
            end_s=end_s,
            severity=Severity.CRITICAL,
            metrics=metrics,
        )
