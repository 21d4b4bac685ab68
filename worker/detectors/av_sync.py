"""Audio/video synchronisation: the offset between sound and picture, and its drift.

Sign convention (DESIGN.md §4): ``offset_ms`` = audio time − video time of the same event, in
milliseconds; positive means the sound is late, negative that it is early. By default a defect
is an offset outside ITU-R BT.1359's *detectability* window, sound more than ``max_early_ms``
(45 ms) early or more than ``max_late_ms`` (125 ms) late, or an offset that keeps changing (a
drift). Three measurements feed it; ``offset_ms`` keeps BT.1359's limits in our sign (BT.1359
itself counts sound *before* picture as positive: its +45 / −125 ms are our −45 / +125).

**Sync marks (key ``""``).** Test signals carry marks: a white picture and, at the
same instant, a short 1 kHz beep (``avmon.testsrc``: once a second, one white frame and a 40 ms
-12 dBFS beep whose envelope crosses half amplitude at the frame's time).

* A *flash* is a white picture: its mean luma (on every 16th row) is at least
  ``FLASH_LEVEL`` of the way from black to white, ``FLASH_COVER`` of the sampled pixels are at
  least ``FLASH_PIXEL`` of the way (a camera flash that lights a scene is not white), and it is
  ``FLASH_JUMP`` above the median of the preceding pictures; the bright run must end within
  ``FLASH_MAX_S`` (a white card or a fade to white is no flash). Marks that flash only part of
  the picture (a white box) are not recognised. Its time is the time of its first picture, so
  it is quantised to the frame grid: where a stream's beeps are not frame-aligned, the offset
  carries up to one frame of error (±half a frame around its mean; the generator puts its beeps
  on the flash frame's time, so it measures 0).
* A *beep* is found on 10 ms Hann frames every 5 ms: the amplitude of the ``beep_hz`` component
  must be above ``BEEP_MIN_DBFS``, hold ``BEEP_TONAL`` of the frame's power, rise
  ``BEEP_SNR_DB`` above the median of the preceding 0.5 s, and fall back within ``BEEP_MAX_S``
  (a line-up tone is no beep). Its onset is where the per-sample envelope (demodulated at
  ``beep_hz``, smoothed by a symmetric 2 ms triangle, so without delay) first crosses half of the
  beep's amplitude, interpolated between samples: within 0.5 ms under a loud bed, 0.2 ms through
  AAC on the generator's clips (measured).
* Flashes and beeps are paired one to one, as mutual nearest neighbours no further apart than
  ``max_pair_ms``, once both timelines are 2 ``max_pair_ms`` past the flash (nothing can compete
  for it any more); ``offset_ms`` = beep time − flash time. Marks once a second are ambiguous
  beyond ±500 ms: a mark then pairs with its neighbour's flash.
* Marks are *present* after ``min_pairs`` consecutive pairs within ``presence_s`` that are
  regular (intervals within MARK_RHYTHM_S of their median) and whose offsets lie within
  ``consistency_ms`` of a straight line (steady, or drifting); until then nothing is reported.
  Flashes and tones that programme pairs up by chance have offsets spread over ±``max_pair_ms``
  and no rhythm (adversarial programme, a white picture and a 1 kHz pip every 1.2 s on average,
  unrelated: in 30 runs of two minutes, about 75 chance pairs each, never taken for marks).
  Marks are lost after ``marks_timeout_s`` without a pair (what was running ends half a mark
  spacing after the last one), and must then be found again.
* Each pair is classified with the median of its own offset and its two neighbours' (one stray
  pair neither opens nor closes a defect); the last pair of the media, which has no successor,
  on its own. A defect is a run of pairs outside the window, or of pairs in a drift: ``start_s``
  is halfway between the last good pair's flash and the first bad one's (the change happened
  somewhere between two marks: at most half the mark spacing off, a quarter on average for a
  change at a random time, which no estimate from the marks alone can beat; bad from the first
  mark on, half a spacing before it), ``end_s`` halfway between the last bad pair and the first good
  one, or the end of the media. It is reported once it has lasted ``d``. A pair is decided
  2 ``max_pair_ms`` after its flash and classified with the next one, so with marks once a
  second the open finding comes 3-4 s after ``start_s + d`` (later while marks are still being
  found: that takes ``min_pairs`` marks).
* A *drift* is at least ``drift_pairs`` pairs on a line with a slope of at least
  ``max_drift_ms_per_s`` and a change of at least ``drift_min_ms`` along it, every pair within
  ``drift_tolerance_ms`` of a hinge fit (a steady offset, then the line; :func:`hinge_fit`) over
  up to twice as many pairs: the hinge is where the drift began, so a drift from 0 ms is dated
  where it started, before it left the window. Later pairs join while they stay within
  ``drift_tolerance_ms`` of the line (refitted on the latest pairs: it may bend); the first that
  does not ends it. A drift is a defect even inside the window (a clock mismatch only gets
  worse); ``drifting`` = 1 says so. The tolerance is meant for frame-aligned marks; marks with
  a frame of jitter still report offsets outside the window, but rarely count as a drift.
* Severity: ``critical`` once the offset (median-filtered; as measured on a drift's line) passes
  BT.1359's *acceptability* limits, ``critical_early_ms`` (90 ms early) or ``critical_late_ms``
  (185 ms late); ``warning`` below them (a constant offset between the two windows, or a drift
  still inside them): a drift's open finding is usually a warning and its close critical.
* Metrics: ``offset_ms`` (median of the defect's pairs, the last MEDIAN_PAIRS), ``offset_min_ms``,
  ``offset_max_ms``, ``drift_ms_per_s`` (least-squares slope of offset against time over the
  defect), ``drifting`` (1 or 0), ``pairs``, and ``duration_s`` on the close.
* ``AvSyncDetector.measurements`` holds the latest pairs (flash time s, offset ms),
  ``last_offset_ms`` the latest offset and ``marks_present`` whether marks are being followed.

**Timestamps (key ``"pts"``).** From demuxed packets: the time each timeline has reached (the
largest ``t + duration`` of its packets) and their difference D = audio reached − video reached,
sampled in packet order and reduced to its median per second of video time. Interleaving and
muxer buffering make D wander by hundreds of milliseconds, so only a persistent, steady trend
counts: over the last ``ts_window_s`` (at least TS_FILL of it present), the medians of D's
first, middle and last thirds must each move the same way, each half by at least
``ts_linearity`` of the whole, for a slope (first to last third) of at least
``ts_max_drift_ms_per_s`` and a change of at least ``ts_min_change_ms``; and this must hold for
``ts_d``. Medians ignore bursts; a one-off step (a buffer that filled) moves one third's median
only, and a bounded wander has no steady direction. The defect starts at the window's first
second (the trend was visible since at least then) and ends when the slope falls below half the
limit (or turns). Metrics: ``drift_ms_per_s`` (positive: the audio timestamps run ahead, so a
player that follows them plays the sound increasingly late), ``pts_offset_ms`` (D's change over
the window) and ``divergence_ms`` (since the first third of the window in which it was found);
warning, critical once the divergence passes the acceptability limits. With the defaults a
drift of 2 ms/s is reported after about 105 s. Packet order follows production time only on
live sources; in a file the muxer interleaves by timestamp, which hides a divergence, so this
mode then reports nothing (it never guesses). Timestamp jumps (``timestamp_jump``'s defect) and
reconnects end a running defect and restart the measurement.

**Programme content (no marks, key ``"content"``).** :mod:`worker.sync_content` correlates
audio onsets (rises of band energies) with visual onsets (rises of motion energy in the cells of
a coarse grid) over ±``content_max_lag_s`` in windows of ``content_window_s``, one ending every
``content_hop_s`` of video time (see that module for the method, what SyncNet, Synchformer,
audio-offset-finder and broadcast monitors do, and how we differ). Each window gives an offset
with a ``confidence`` (1 − second-best peak / peak) and a ``prominence`` (the peak's robust
standard score), or is *unknown* (too few events, a weak, flat or ambiguous correlation:
silence, a static picture, sound unrelated to the picture). Unknown is neither in sync nor a
defect: it does not move a defect either way.

* A defect opens after ``content_windows`` consecutive confident windows outside BT.1359's
  detectability window (the same ``max_early_ms`` / ``max_late_ms``), each within
  ``content_agree_ms`` of the one before; ``start_s`` is halfway between the centres of the
  last confident window inside and the first outside, or the first window's start. With the
  defaults an offset present from the start is reported 30 s in (three windows: 20, 25, 30 s).
* It closes after ``content_close_windows`` consecutive confident windows inside, halfway
  between the last bad window's centre and the first good one's; or after
  ``content_timeout_s`` without a confident window, at the end of the last bad one; or at the
  end of the media.
* Severity as for marks (the median offset against the acceptability limits). Metrics:
  ``offset_ms`` (median of its windows), ``offset_min_ms``, ``offset_max_ms``,
  ``drift_ms_per_s`` (slope of the windows' offsets against their centres), ``confidence`` and
  ``prominence`` (medians), ``windows``, ``window_s``, ``first_window_s`` and
  ``last_window_s`` (the span of the windows used), ``duration_s`` on the close. The method is
  the key (``content``; marks ``""``, timestamps ``pts``): metrics are numbers.
* Marks have priority: once marks are present, no content window is evaluated and a content
  defect ends; content resumes when the marks are lost.
* The latest confident offset, from marks or content, is published for the stream's API view
  as ``ctx.extra["av_sync"] = {"offset_ms", "confidence", "method", "t"}`` (``confidence``
  1.0 for marks; ``t`` the media time of the mark or the window's end).

Cost (measured, one core): a flash test is one mean over 1/64 of the luma (plus a count when the
picture is bright), 6 µs per 640x360 picture and 20 µs per 1920x1080 one; the beep search is
two small matrix products per audio block, with a Python loop only over the 5 ms frames of
blocks that hold a loud 1 kHz component: about 1.1 ms per second of 48 kHz stereo audio (1.7
ms with a beep every second). Packets cost a few dictionary updates each. The content
measurement's cost is measured in ``bench.accuracy_sync`` as a share of 720p decoding.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from shared.models import DefectType
from worker.detectors.base import (
    AudioBlock,
    Detector,
    Finding,
    PacketInfo,
    Severity,
    StreamContext,
    VideoFrame,
)
from worker.detectors.options import DetectorOptions, opt
from worker.sync_content import ContentSync, WindowEstimate

F64 = npt.NDArray[np.float64]

CONTENT_KEY = ""  # key of the sync-mark measurement (marks are content too: the first path)
PTS_KEY = "pts"  # key of the timestamp drift
PROGRAMME_KEY = "content"  # key of the measurement on programme content, without marks
EXTRA_KEY = "av_sync"  # StreamContext.extra entry: the latest confident offset (see the docstring)

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

# Beeps.
BEEP_HOP_S = 0.005  # analysis step; frames are two steps (10 ms) long, Hann-windowed
BEEP_MIN_DBFS = -36.0  # amplitude of the tone component (a -12 dBFS beep is far above)
BEEP_TONAL = 0.5  # share of the frame's power in the beep's frequency bin
BEEP_SNR_DB = 15.0  # rise over the median tone amplitude of the preceding BEEP_FLOOR_S
BEEP_FLOOR_S = 0.5
BEEP_MIN_S = 0.01  # shortest and longest run of beep frames (a 40 ms beep spans about 45 ms)
BEEP_MAX_S = 0.25
BEEP_REANCHOR_S = 0.002  # a block this far from the expected time starts a new timeline
BEEP_BATCH_S = 0.1  # audio gathered before it is analysed (numpy's per-call cost on small blocks)

MARK_RHYTHM_S = 0.07  # marks are regular: intervals within this of their median (a 15 fps frame)
PAIR_QUEUE = 64  # flashes waiting for a partner, at most (a stream without usable audio)
SEQUENCE = 64  # pairs kept for classification and drift search
MEDIAN_PAIRS = 600  # pairs of a defect in its offset median (10 min of marks once a second)

# Timestamps.
TS_BIN_S = 1.0  # D is reduced to one median per second of video time
TS_FILL = 0.8  # share of the window's seconds that must be present for a fit
TS_MAX_STEP_S = 5.0  # a timeline moving further than this at once is a jump: start afresh

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class AvSyncOptions(DetectorOptions):
    """Options of the ``av_sync`` detector."""

    max_early_ms: float = opt(
        45.0, "ms", "sound earlier than this is a defect (BT.1359 detectability: 45 ms)", ge=0.0, le=1000.0
    )
    max_late_ms: float = opt(
        125.0, "ms", "sound later than this is a defect (BT.1359 detectability: 125 ms)", ge=0.0, le=1000.0
    )
    critical_early_ms: float = opt(90.0, "ms", "critical beyond (BT.1359 acceptability)", ge="max_early_ms")
    critical_late_ms: float = opt(185.0, "ms", "critical beyond (BT.1359 acceptability)", ge="max_late_ms")
    d: float = opt(2.0, "s", "minimum duration of a defect", ge=0.0)
    beep_hz: float = opt(1000.0, "Hz", "frequency of the marks' beep", ge=200.0, le=8000.0)
    max_pair_ms: float = opt(1000.0, "ms", "a flash and a beep further apart are no pair", gt=0.0, le=5000.0)
    min_pairs: int = opt(5, "pairs", "regular, consistent pairs that make marks present", ge=3, le=20)
    presence_s: float = opt(10.0, "s", "... within this time", gt=0.0)
    consistency_ms: float = opt(40.0, "ms", "... with offsets this close to a line", gt=0.0)
    marks_timeout_s: float = opt(10.0, "s", "marks are lost after this without a pair", gt=0.0)
    drift_pairs: int = opt(5, "pairs", "pairs on a line that make a drift", ge=3, le=60)
    max_drift_ms_per_s: float = opt(5.0, "ms/s", "slope of a drift, at least", gt=0.0)
    drift_min_ms: float = opt(60.0, "ms", "change along the drift's pairs, at least", ge=0.0)
    drift_tolerance_ms: float = opt(15.0, "ms", "largest distance of a pair from the line", gt=0.0)
    ts_window_s: float = opt(120.0, "s", "timestamp-drift window (in thirds)", ge=10.0, le=3600.0)
    ts_max_drift_ms_per_s: float = opt(1.0, "ms/s", "timestamp drift slope, at least", gt=0.0)
    ts_min_change_ms: float = opt(60.0, "ms", "change of D over the window, at least", ge=0.0)
    ts_linearity: float = opt(
        0.25, "1", "share of the change each half of the window must make, in its direction", gt=0.0, le=0.5
    )
    ts_d: float = opt(10.0, "s", "the trend must hold this long", ge=0.0)
    content: bool = opt(True, "bool", "measure programme content without marks")
    content_window_s: float = opt(20.0, "s", "length of a content window", ge=5.0, le=120.0)
    content_hop_s: float = opt(
        5.0, "s", "a window ends every this much video time", gt=0.0, le="content_window_s",
    )
    content_max_lag_s: float = opt(1.0, "s", "offsets searched: ±this (BT.1359: ±1 s)", ge=0.2, le=2.0)
    content_windows: int = opt(
        3, "count", "consecutive confident windows outside the window that open a defect", ge=1, le=20
    )
    content_close_windows: int = opt(2, "count", "... inside it that close one", ge=1, le=20)
    content_agree_ms: float = opt(
        40.0, "ms", "consecutive windows of an opening run agree this closely (one frame at 25 fps)", gt=0.0
    )
    content_timeout_s: float = opt(
        120.0, "s", "a defect without a confident window this long ends at its last bad window", gt=0.0
    )


# ----------------------------------------------------------------------------- helpers


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


class BeepFinder:
    """Finds beep onsets (see the module docstring) in audio blocks fed in order."""

    def __init__(self, hz: float) -> None:
        self.hz = hz
        self._rate = 0
        self._hop = 0  # samples per analysis step
        self._frame = 0  # samples per analysis frame (two steps)
        self._kernel = np.ones(1)  # the envelope smoother: a triangle of two tone periods
        self._ref = np.zeros(0, np.complex128)  # Hann window times the conjugate tone
        self._norm = 1.0  # sum of the window: amplitude = 2 |X| / norm
        self._power = np.zeros(0)  # squared window, normalised to sum 1
        self._buf = np.zeros(0)  # mono samples since _t0
        self._t0 = 0.0  # media time of _buf[0], s
        self._next = 0  # index in _buf of the next frame to analyse
        self._expected: float | None = None  # media time of the next block, s
        self._pending: list[npt.NDArray[np.float32]] = []  # blocks fed, not yet analysed
        self._pending_n = 0  # samples in _pending
        self._floor: deque[float] = deque()  # tone amplitudes of the last BEEP_FLOOR_S
        self._run: list[int] = []  # [index in _buf of its first frame, frames] of a beep, or []
        self._run_peak = 0.0
        self._min_amp = 10.0 ** (BEEP_MIN_DBFS / 20.0)
        self._snr = 10.0 ** (BEEP_SNR_DB / 20.0)
        self.progress = -math.inf  # no beep onset before this media time (s) is still undecided

    def _setup(self, rate: int) -> None:
        self._rate = rate
        self._hop = max(1, round(BEEP_HOP_S * rate))
        self._frame = 2 * self._hop
        n = np.arange(self._frame)
        window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / self._frame)  # periodic Hann
        self._ref = window * np.exp(-2j * np.pi * self.hz * n / rate)
        self._norm = float(window.sum())
        self._power = window**2 / float((window**2).sum())
        period = max(1, round(rate / self.hz))
        # Two boxcars of one tone period: zeros at every multiple of the tone frequency, so the
        # demodulated image at twice the frequency vanishes; odd length, centred: no delay.
        self._kernel = np.convolve(np.ones(period), np.ones(period)) / float(period * period)
        self._floor = deque(maxlen=max(1, round(BEEP_FLOOR_S / BEEP_HOP_S)))
        self._restart(0.0)

    def _restart(self, t: float) -> None:
        self._buf = np.zeros(0)
        self._t0 = t
        self._next = 0
        self._floor.clear()
        self._run = []
        self._run_peak = 0.0

    def feed(self, block: AudioBlock) -> list[float]:
        """Onset times (s) of the beeps that ended in this block."""
        samples = block.samples
        if samples.ndim != 2 or samples.shape[1] == 0 or block.rate <= 0:
            return []
        onsets: list[float] = []
        if block.rate != self._rate:
            onsets += self._drain()
            self._setup(block.rate)
            self._restart(block.t)
        elif self._expected is None or abs(block.t - self._expected) > BEEP_REANCHOR_S:
            onsets += self._drain()
            self._restart(block.t)  # a gap or overlap: the sample count no longer tells the time
        self._expected = block.t + samples.shape[1] / block.rate
        self._pending.append(samples)
        self._pending_n += samples.shape[1]
        if self._pending_n >= BEEP_BATCH_S * self._rate:
            onsets += self._drain()
        return onsets

    def _drain(self) -> list[float]:
        """Analyse the blocks gathered so far."""
        if not self._pending:
            return []
        samples = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        self._pending = []
        self._pending_n = 0
        mono = samples.mean(axis=0, dtype=np.float64)
        self._buf = np.concatenate((self._buf, mono))
        onsets = self._analyse()
        self._trim()
        first = self._run[0] if self._run else self._next
        # A beep not yet found starts after the earliest frame that may still hold its onset.
        self.progress = self._t0 + (first - self._frame) / self._rate
        return onsets

    def _analyse(self) -> list[float]:
        count = (self._buf.size - self._next - self._frame) // self._hop + 1
        if count <= 0:
            return []
        span = self._buf[self._next : self._next + (count - 1) * self._hop + self._frame]
        frames = np.lib.stride_tricks.sliding_window_view(span, self._frame)[:: self._hop]
        amplitude = 2.0 * np.abs(frames @ self._ref) / self._norm
        power = (frames * frames) @ self._power  # mean square under the window
        tonal = 0.5 * amplitude * amplitude >= BEEP_TONAL * np.maximum(power, 1e-20)
        candidate = tonal & (amplitude >= self._min_amp)
        start = self._next
        self._next += count * self._hop
        if not self._run and not candidate.any():
            self._floor.extend(amplitude.tolist())  # the common case: no tone at all
            return []
        onsets: list[float] = []
        for k in range(count):
            a = float(amplitude[k])
            floor = float(np.median(np.fromiter(self._floor, float))) if self._floor else 0.0
            above = bool(candidate[k]) and a >= floor * self._snr
            if self._run:
                if above:
                    self._run[1] += 1
                    self._run_peak = max(self._run_peak, a)
                    continue
                onset = self._finish_run()
                if onset is not None:
                    onsets.append(onset)
            if above:
                self._run = [start + k * self._hop, 1]
                self._run_peak = a
            else:
                self._floor.append(a)
        return onsets

    def finish(self) -> list[float]:
        """The end of the audio: the onsets (s) of the beeps not yet reported, if any."""
        onsets = self._drain()
        onset = self._finish_run() if self._run else None
        self._expected = None
        return onsets if onset is None else [*onsets, onset]

    def _finish_run(self) -> float | None:
        """End the current run of beep frames: the onset time (s) if it was a beep."""
        first, frames = self._run
        self._run = []
        duration = frames * self._hop / self._rate
        if not BEEP_MIN_S <= duration <= BEEP_MAX_S:
            return None
        return self._onset(first, self._run_peak)

    def _onset(self, first: int, peak: float) -> float | None:
        """Time (s) where the envelope first reaches half of ``peak`` around the run that starts
        with the frame at ``first`` (index in _buf)."""
        margin = self._kernel.size
        lo = max(0, first - self._frame - margin)
        hi = min(self._buf.size, first + 3 * self._frame + margin)
        x = self._buf[lo:hi]
        phase = np.exp(-2j * np.pi * self.hz * np.arange(lo, hi) / self._rate)
        envelope = 2.0 * np.abs(np.convolve(x * phase, self._kernel, mode="same"))
        half = 0.5 * peak
        # Upward crossings of half the peak, away from the ends (where the smoothing lacks data).
        above = envelope >= half
        crossings = np.flatnonzero(above[margin:-margin] & ~above[margin - 1 : -margin - 1]) + margin
        if crossings.size == 0:
            return None
        i = int(crossings[0])
        before, after = float(envelope[i - 1]), float(envelope[i])
        fraction = (half - before) / (after - before) if after > before else 1.0
        return self._t0 + (lo + i - 1 + fraction) / self._rate

    def _trim(self) -> None:
        """Drop samples no analysis needs any more (keep a frame and a kernel for refinement)."""
        keep_from = (self._run[0] if self._run else self._next) - self._frame - 2 * self._kernel.size
        if keep_from > 4 * self._frame:  # trim in chunks, not every block
            self._buf = self._buf[keep_from:]
            self._t0 += keep_from / self._rate
            self._next -= keep_from
            if self._run:
                self._run[0] -= keep_from


class MarkPairer:
    """Pairs flashes and beeps as mutual nearest neighbours within ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._pending: list[float] = []  # flashes not yet decided, in time order
        self._flashes: list[float] = []  # recent flashes, decided or not, in time order
        self._beeps: list[float] = []  # recent unpaired beeps, in time order

    def add_flash(self, t: float) -> None:
        bisect.insort(self._pending, t)
        bisect.insort(self._flashes, t)
        if len(self._pending) > PAIR_QUEUE:
            del self._pending[0]  # no sound to pair them with (a picture-only stretch)
        if len(self._flashes) > 2 * PAIR_QUEUE:
            del self._flashes[0]

    def add_beep(self, t: float) -> None:
        bisect.insort(self._beeps, t)
        if len(self._beeps) > PAIR_QUEUE:
            del self._beeps[0]  # no pictures to pair them with (an audio-only stretch)

    def resolve(self, progress: float) -> list[tuple[float, float]]:
        """Pairs (flash time, beep time − flash time), s, for the flashes that can be decided:
        every beep and flash that could compete for them is known once both timelines have
        reached ``progress`` ≥ flash + 2 ``window``."""
        w = self.window
        pairs: list[tuple[float, float]] = []
        while self._pending and self._pending[0] + 2.0 * w <= progress:
            f = self._pending.pop(0)
            near = [b for b in self._beeps if abs(b - f) <= w]
            if not near:
                continue
            b = min(near, key=lambda x: abs(x - f))
            rival = min(self._flashes, key=lambda x: abs(x - b))
            if rival == f:
                pairs.append((f, b - f))
                self._beeps.remove(b)
        horizon = progress - 4.0 * w
        self._beeps = [b for b in self._beeps if b >= horizon]
        self._flashes = [x for x in self._flashes if x >= horizon or x in self._pending]
        return pairs


# ----------------------------------------------------------------------------- sync-mark state


@dataclass(slots=True, eq=False)  # compared by identity
class _Pair:
    t: float  # flash time, s
    offset: float  # beep − flash, ms
    drift: bool = False  # part of a drift run
    classified: bool = False


@dataclass(slots=True)
class _DriftRun:
    pairs: list[_Pair]
    start_s: float  # where the drift began (extrapolated), s
    slope: float = 0.0  # ms/s
    intercept: float = 0.0  # ms at t = 0

    def refit(self, last: int) -> None:
        """Fit the line to the ``last`` latest pairs (a drift may bend slowly)."""
        t = np.array([p.t for p in self.pairs[-last:]])
        o = np.array([p.offset for p in self.pairs[-last:]])
        self.slope, self.intercept = line_fit(t, o)

    def predict(self, t: float) -> float:
        return self.intercept + self.slope * t


@dataclass(slots=True)
class _Episode:
    """A defect in the making: a run of bad pairs."""

    start_s: float
    last_bad_t: float = 0.0
    opened: bool = False
    drifting: bool = False
    critical: bool = False
    count: int = 0
    low: float = math.inf  # ms
    high: float = -math.inf  # ms
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=MEDIAN_PAIRS))  # offsets, ms
    members: list[_Pair] = field(default_factory=list)  # its pairs, kept until it is reported
    # Least-squares sums of (t - start_s, offset) for the drift slope.
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def add(self, pair: _Pair) -> None:
        x, y = pair.t - self.start_s, pair.offset
        self.count += 1
        self.low, self.high = min(self.low, y), max(self.high, y)
        self.recent.append(y)
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y
        self.drifting = self.drifting or pair.drift
        if not self.opened:
            self.members.append(pair)

    def slope(self) -> float:
        """Least-squares slope of offset against time, ms/s (0 with fewer than 2 pairs)."""
        n = self.count
        den = n * self.sxx - self.sx * self.sx
        return (n * self.sxy - self.sx * self.sy) / den if n >= 2 and den > 1e-12 else 0.0


# ----------------------------------------------------------------------------- timestamp state


@dataclass(frozen=True, slots=True)
class _Trend:
    """D over the timestamp window, from the medians of its thirds."""

    slope: float  # ms/s, from the first third's median to the last one's
    change: float  # ms, last third's median − first third's
    steady: bool  # each half of the change goes the same way and makes its share of it
    first_t: float  # video time of the window's first second, s
    level: float  # the last third's median D, s
    level_t: float  # ... at this video time, s


@dataclass(slots=True)
class _PtsEpisode:
    start_s: float
    held_since: float  # video time at which the trend was first seen, s
    base: float  # D when it was first seen (first third's median), s
    sign: float  # +1: audio timestamps running ahead, -1: behind
    opened: bool = False
    critical: bool = False
    slope: float = 0.0  # ms/s
    change: float = 0.0  # ms, over the window
    divergence: float = 0.0  # ms, since ``base``


class _PtsDrift:
    """Divergence of the audio and video timestamp timelines (see the module docstring)."""

    def __init__(self, options: AvSyncOptions) -> None:
        self.options = options
        self.reached: dict[str, float] = {}
        self._bin = -math.inf  # index of the second of video time being collected
        self._samples: list[float] = []  # D values (s) in that second
        self._bins: deque[tuple[float, float]] = deque()  # (video time, median D), s
        self.episode: _PtsEpisode | None = None
        self.resets = 0  # timelines started afresh

    def reset(self) -> None:
        self.resets += 1
        self.reached.clear()
        self._bin = -math.inf
        self._samples = []
        self._bins.clear()

    def feed(self, packet: PacketInfo) -> bool:
        """Take a packet; True when a second of video time has been completed (evaluate then)."""
        t = packet.t
        if t is None or packet.kind not in ("audio", "video"):
            return False
        end = t + (packet.duration or 0.0)
        last = self.reached.get(packet.kind)
        if last is not None and (end > last + TS_MAX_STEP_S or end < last - TS_MAX_STEP_S):
            self.reset()  # a timestamp jump: timestamp_jump's defect; the trend starts afresh
            last = None
        self.reached[packet.kind] = end if last is None else max(last, end)
        if len(self.reached) < 2:
            return False
        video = self.reached["video"]
        index = math.floor(video / TS_BIN_S)
        completed = False
        if index != self._bin:
            if self._samples:
                self._bins.append(((self._bin + 0.5) * TS_BIN_S, statistics.median(self._samples)))
                completed = True
            self._bin, self._samples = index, []
        self._samples.append(self.reached["audio"] - video)
        while self._bins and self._bins[0][0] < video - self.options.ts_window_s:
            self._bins.popleft()
        return completed

    def trend(self) -> _Trend | None:
        """D's trend over the window, or None while the window is not filled well enough.

        Medians of thirds, not a least-squares line: a muxer's bursts move D by hundreds of
        milliseconds for a moment, which a median ignores, and a single step (a buffer that
        filled once) moves one median only, which ``steady`` rejects."""
        opts = self.options
        n = len(self._bins)
        if n < TS_FILL * opts.ts_window_s / TS_BIN_S:
            return None
        bins = list(self._bins)
        thirds = [bins[i * n // 3 : (i + 1) * n // 3] for i in range(3)]
        times = [statistics.median(b[0] for b in third) for third in thirds]
        levels = [statistics.median(b[1] for b in third) for third in thirds]
        change = levels[2] - levels[0]
        share = opts.ts_linearity * abs(change)
        steady = change != 0.0 and all(
            (later - earlier) * math.copysign(1.0, change) >= share
            for earlier, later in itertools.pairwise(levels)
        )
        return _Trend(
            slope=change / (times[2] - times[0]) * 1000.0,
            change=change * 1000.0,
            steady=steady,
            first_t=bins[0][0] - 0.5 * TS_BIN_S,
            level=levels[2],
            level_t=times[2],
        )

    @property
    def now(self) -> float:
        return self.reached.get("video", 0.0)


# ----------------------------------------------------------------------------- content state


def _centre(window: WindowEstimate) -> float:
    return 0.5 * (window.start_s + window.end_s)


@dataclass(slots=True)
class _ContentEpisode:
    """A content defect: confident windows outside the detectability window."""

    start_s: float
    windows: list[WindowEstimate]
    opened: bool = False
    critical: bool = False
    good: list[WindowEstimate] = field(default_factory=list)  # confident windows inside, since

    @property
    def last_bad(self) -> WindowEstimate:
        return self.windows[-1]

    def offsets(self) -> F64:
        return np.array([w.offset_ms or 0.0 for w in self.windows[-MEDIAN_PAIRS:]])


# ----------------------------------------------------------------------------- the detector


class AvSyncDetector(Detector):
    """Reports A/V offsets outside BT.1359's window and drifts, from sync marks (key ``""``)
    and from diverging timestamps (key ``"pts"``); warning, critical beyond acceptability."""

    name: ClassVar[DefectType] = DefectType.AV_SYNC
    Options: ClassVar[type[AvSyncOptions]] = AvSyncOptions
    options: AvSyncOptions

    def __init__(self, options: AvSyncOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        opts = self.options
        self._flashes = FlashFinder()
        self._beeps = BeepFinder(opts.beep_hz)
        self._pairer = MarkPairer(opts.max_pair_ms / 1000.0)
        self._seq: deque[_Pair] = deque(maxlen=SEQUENCE)  # pairs since marks were (last) found
        self._present = False
        self._before: _Pair | None = None  # the pair just before marks were found, if in rhythm
        self._drift: _DriftRun | None = None
        self._episode: _Episode | None = None
        self._last_end = -math.inf  # end of the last closed episode, s
        self._origin = math.inf  # earliest media time seen, s
        self._pts = _PtsDrift(opts)
        self._connection = self.ctx.connection
        # Every measured pair (flash time s, offset ms), for inspection and tests.
        self.measurements: deque[tuple[float, float]] = deque(maxlen=3600)
        self.marks_present = False
        self._content = (
            ContentSync(opts.content_window_s, opts.content_hop_s, opts.content_max_lag_s)
            if opts.content
            else None
        )
        self._content_run: list[WindowEstimate] = []  # confident bad windows, not yet a defect
        self._content_good: WindowEstimate | None = None  # the latest confident window inside
        self._content_episode: _ContentEpisode | None = None
        self._content_end = -math.inf  # end of the last content defect, s
        # Every content window (known or not), for inspection, tests and the benchmark.
        self.content_windows: deque[WindowEstimate] = deque(maxlen=720)
        # (media time s at which it was reported, finding) of every content finding.
        self.content_reports: list[tuple[float, Finding]] = []

    @property
    def last_offset_ms(self) -> float | None:
        """The latest measured offset (ms, positive: audio late), None before the first pair."""
        return self.measurements[-1][1] if self.measurements else None

    # -- feeding -------------------------------------------------------------------------------

    def feed_video(self, frame: VideoFrame) -> list[Finding]:
        self._origin = min(self._origin, frame.t)
        if frame.corrupt:
            return []  # concealment says nothing about a flash
        flash = self._flashes.feed(frame)
        if flash is not None:
            self._pairer.add_flash(flash)
        findings = self._advance()
        if self._content is not None:
            self._content.feed_video(frame.t, frame.luma)
            findings += self._judge_content()
        return findings

    def feed_audio(self, block: AudioBlock) -> list[Finding]:
        self._origin = min(self._origin, block.t)
        for onset in self._beeps.feed(block):
            self._pairer.add_beep(onset)
        findings = self._advance()
        if self._content is not None:
            self._content.feed_audio(block.t, block.samples, block.rate)
            findings += self._judge_content()
        return findings

    def feed_packet(self, packet: PacketInfo) -> list[Finding]:
        pts = self._pts
        findings: list[Finding] = []
        resets, now = pts.resets, pts.now
        if self.ctx.connection != self._connection:
            self._connection = self.ctx.connection
            pts.reset()
        completed = pts.feed(packet)
        if pts.resets != resets:
            # A new timeline (reconnect, timestamp jump): the trend is no longer seen, and a
            # drift that persists is found again once the window has filled.
            findings += self._close_pts(now)
        if completed:
            findings += self._judge_pts()
        return findings

    def flush(self, t_end: float) -> list[Finding]:
        flash = self._flashes.finish()
        if flash is not None:
            self._pairer.add_flash(flash)
        for onset in self._beeps.finish():
            self._pairer.add_beep(onset)
        findings = self._advance(math.inf)
        findings += self._classify_last()
        findings += self._close_episode(t_end)
        findings += self._close_pts(t_end)
        findings += self._close_content(t_end, t_end)
        return findings

    # -- sync marks ------------------------------------------------------------------------------

    def _advance(self, progress: float | None = None) -> list[Finding]:
        """Turn the flashes and beeps both timelines are past into pairs, and judge them."""
        ahead = max(self._flashes.progress, self._beeps.progress)
        if progress is None:
            progress = min(self._flashes.progress, self._beeps.progress)
        findings: list[Finding] = []
        for flash, offset in self._pairer.resolve(progress):
            findings += self._on_pair(_Pair(flash, offset * 1000.0))
        # Lost marks are judged on the timeline that is ahead: one that stalls (its stream
        # stopped) makes pairs impossible, which is a loss too.
        if (
            self._seq
            and math.isfinite(progress)
            and ahead - self._seq[-1].t > self.options.marks_timeout_s + 2.0 * self._pairer.window
        ):
            findings += self._lose_marks()
        return findings

    def _classify_last(self) -> list[Finding]:
        """Classify the latest pair, which has no successor (the end, or the marks' end), on its
        own offset: a median with its predecessors would carry a defect that ended just before
        the last mark on to the end; a stray last pair cannot open a defect of ``d`` alone."""
        seq = list(self._seq)
        if not self._present or not seq or seq[-1].classified:
            return []
        return self._step(seq[-1], seq[-1].offset, seq[-2] if len(seq) > 1 else self._before)

    def _lose_marks(self) -> list[Finding]:
        """No pair for marks_timeout_s: end what was running half a mark spacing after the last
        pair, and look for marks afresh."""
        findings = self._classify_last()
        seq = list(self._seq)
        spacing = statistics.median([b.t - a.t for a, b in itertools.pairwise(seq)] or [1.0])
        end = (self._episode.last_bad_t if self._episode else seq[-1].t) + 0.5 * spacing
        findings += self._close_episode(end)
        self._seq.clear()
        self._present = self.marks_present = False
        self._drift = None
        self._before = None
        return findings

    def _on_pair(self, pair: _Pair) -> list[Finding]:
        opts = self.options
        self.measurements.append((pair.t, pair.offset))
        if self._present:
            self._publish(pair.offset, 1.0, "marks", pair.t)
        findings: list[Finding] = []
        if self._seq and pair.t - self._seq[-1].t > opts.marks_timeout_s:
            findings += self._lose_marks()
        self._seq.append(pair)
        if not self._present:
            recent = list(self._seq)[-opts.min_pairs :]
            if len(recent) < opts.min_pairs or not self._look_like_marks(recent):
                return findings
            self._present = self.marks_present = True
            # Marks take priority over the content measurement from here on.
            findings += self._close_content(pair.t, pair.t)
            earlier = list(self._seq)[: -opts.min_pairs]
            self._seq = deque(recent, maxlen=SEQUENCE)  # earlier pairs did not line up: not marks
            spacing = statistics.median(b.t - a.t for a, b in itertools.pairwise(recent))
            gap = recent[0].t - earlier[-1].t if earlier else math.inf
            if gap <= opts.marks_timeout_s and abs(gap - spacing * round(gap / spacing)) <= MARK_RHYTHM_S:
                # ... but the one before, in the marks' rhythm (marks may be missing between:
                # a sound skipped by an early offset swallows a beep), was most likely a mark
                # whose offset differed: the change happened between them.
                self._before = earlier[-1]
        self._update_drift(pair)
        seq = list(self._seq)
        # Classify every pair that now has a successor, with the median of it and its neighbours.
        for i in range(len(seq) - 1):
            if seq[i].classified:
                continue
            lo = max(0, min(i - 1, len(seq) - 3))
            window = [p.offset for p in seq[lo : lo + 3]]
            findings += self._step(seq[i], statistics.median(window), seq[i - 1] if i else self._before)
        return findings

    def _look_like_marks(self, pairs: list[_Pair]) -> bool:
        """Whether consecutive ``pairs`` are sync marks: within ``presence_s``, regular (their
        intervals within MARK_RHYTHM_S of the median interval), and with offsets within
        ``consistency_ms`` of a straight line (a steady offset, or one that drifts). Flashes and
        tones that programme pairs up by chance do neither: offsets spread over ±max_pair_ms."""
        opts = self.options
        t = np.array([p.t for p in pairs])
        o = np.array([p.offset for p in pairs])
        intervals = np.diff(t)
        slope, intercept = line_fit(t, o)
        return (
            float(t[-1] - t[0]) <= opts.presence_s
            and float(np.abs(intervals - np.median(intervals)).max()) <= MARK_RHYTHM_S
            and float(np.abs(o - (intercept + slope * t)).max()) <= opts.consistency_ms
        )

    def _update_drift(self, pair: _Pair) -> None:
        """Extend the running drift with ``pair``, or end it; else look for a new one that ends
        with ``pair``."""
        opts = self.options
        k = opts.drift_pairs
        run = self._drift
        if run is not None:
            if abs(pair.offset - run.predict(pair.t)) <= opts.drift_tolerance_ms:
                run.pairs.append(pair)
                if len(run.pairs) > SEQUENCE:
                    del run.pairs[0]  # only the latest are fitted (and a defect has the first)
                pair.drift = True
                run.refit(2 * k)
                return
            self._drift = None  # the pair left the line: the drift ended before it
        # Context: the latest pairs of one regime (none of an earlier drift or defect).
        context: list[_Pair] = []
        for p in reversed(self._seq):
            if p.drift or p.t < self._last_end or len(context) == 2 * k:
                break
            context.insert(0, p)
        if len(context) < k:
            return
        tail = context[-k:]
        slope, _ = line_fit(np.array([p.t for p in tail]), np.array([p.offset for p in tail]))
        if abs(slope) < opts.max_drift_ms_per_s:
            return  # the common case: a steady offset
        t = np.array([p.t for p in context])
        o = np.array([p.offset for p in context])
        t0, slope, residual = hinge_fit(t, o)
        ramp = [p for p in context if p.t >= t0 - _EPS]
        if (
            len(ramp) < k
            or abs(slope) < opts.max_drift_ms_per_s
            or abs(slope) * (ramp[-1].t - t0) < opts.drift_min_ms
            or residual > opts.drift_tolerance_ms
        ):
            return
        run = _DriftRun(pairs=ramp, start_s=max(t0, self._last_end))
        run.refit(2 * k)
        for p in ramp:
            p.drift = True
        self._drift = run
        ep = self._episode
        if ep is not None and not ep.opened and run.start_s < ep.start_s:
            # A defect not reported yet (it left the window first) began with this drift.
            self._episode = _Episode(start_s=run.start_s)
            for p in sorted({id(p): p for p in ramp + ep.members}.values(), key=lambda p: p.t):
                if p.t <= ep.last_bad_t:
                    self._episode.add(p)
            self._episode.last_bad_t = ep.last_bad_t
            self._episode.critical = ep.critical

    def _step(self, pair: _Pair, median: float, previous: _Pair | None) -> list[Finding]:
        """Advance the episode over one classified pair (``median``: its filtered offset, ms)."""
        opts = self.options
        pair.classified = True
        bad = pair.drift or median < -opts.max_early_ms or median > opts.max_late_ms
        ep = self._episode
        if not bad:
            if ep is None:
                return []
            return self._close_episode(0.5 * (ep.last_bad_t + pair.t))
        findings: list[Finding] = []
        if ep is None:
            if previous is not None:
                start = 0.5 * (previous.t + pair.t)
            else:
                # Bad from the first mark on: the change came before it, by half a mark spacing
                # as far as anyone can tell (but not before the media began).
                seq = list(self._seq)
                spacing = statistics.median([b.t - a.t for a, b in itertools.pairwise(seq)] or [1.0])
                start = max(pair.t - 0.5 * spacing, min(pair.t, self._origin))
            run = (
                self._drift if pair.drift and self._drift is not None and pair in self._drift.pairs else None
            )
            if run is not None:
                start = min(start, run.start_s)
            ep = self._episode = _Episode(start_s=max(start, self._last_end))
            if run is not None:
                # A drift found late: its earlier pairs (classified before it was seen) belong here.
                for p in run.pairs:
                    if p.t < pair.t:
                        ep.add(p)
        ep.add(pair)
        ep.last_bad_t = pair.t
        # A drift's pairs are on its line, not strays: its latest offset counts as it is.
        level = pair.offset if pair.drift else median
        ep.critical = ep.critical or level < -opts.critical_early_ms or level > opts.critical_late_ms
        if not ep.opened and pair.t - ep.start_s >= opts.d - _EPS:
            ep.opened = True
            findings.append(self._finding(ep, None))
        return findings

    def _close_episode(self, end: float) -> list[Finding]:
        ep = self._episode
        if ep is None:
            return []
        self._episode = None
        end = max(end, ep.start_s)
        self._last_end = end
        findings: list[Finding] = []
        if not ep.opened and end - ep.start_s >= self.options.d - _EPS:
            findings.append(self._finding(ep, None))  # long enough only with its end
            ep.opened = True
        if ep.opened:
            findings.append(self._finding(ep, end))
        return findings

    def _finding(self, ep: _Episode, end_s: float | None) -> Finding:
        metrics = {
            "offset_ms": statistics.median(ep.recent) if ep.recent else 0.0,
            "offset_min_ms": ep.low if ep.count else 0.0,
            "offset_max_ms": ep.high if ep.count else 0.0,
            "drift_ms_per_s": ep.slope(),
            "drifting": 1.0 if ep.drifting else 0.0,
            "pairs": float(ep.count),
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - ep.start_s
        return Finding(
            type=self.name,
            start_s=ep.start_s,
            end_s=end_s,
            severity=Severity.CRITICAL if ep.critical else Severity.WARNING,
            metrics=metrics,
            key=CONTENT_KEY,
            labels={"method": "marks"},
        )

    # -- programme content -----------------------------------------------------------------------

    def _publish(self, offset_ms: float, confidence: float, method: str, t: float) -> None:
        """The stream's latest confident offset, for its API view (``ctx.extra["av_sync"]``)."""
        self.ctx.extra[EXTRA_KEY] = {
            "offset_ms": round(offset_ms, 1),
            "confidence": round(confidence, 3),
            "method": method,
            "t": round(t, 3),
        }

    def _judge_content(self) -> list[Finding]:
        assert self._content is not None
        findings: list[Finding] = []
        for window in self._content.ready(skip=self._present):
            findings += self._on_window(window)
        return findings

    def _on_window(self, window: WindowEstimate) -> list[Finding]:
        """Advance the content defect over one window (see the module docstring)."""
        opts = self.options
        self.content_windows.append(window)
        ep = self._content_episode
        if window.offset_ms is None:
            # Unknown: neither in sync nor a defect; a defect with nothing confident for long
            # ends where its evidence did.
            if ep is not None and window.end_s - ep.last_bad.end_s > opts.content_timeout_s:
                return self._close_content(ep.last_bad.end_s, window.end_s)
            return []
        offset = window.offset_ms
        self._publish(offset, window.confidence, "content", window.end_s)
        if -opts.max_early_ms <= offset <= opts.max_late_ms:
            self._content_run.clear()
            self._content_good = window
            if ep is None:
                return []
            ep.good.append(window)
            if len(ep.good) < opts.content_close_windows:
                return []
            return self._close_content(0.5 * (_centre(ep.last_bad) + _centre(ep.good[0])), window.end_s)
        if ep is not None:
            ep.good.clear()
            ep.windows.append(window)
            ep.critical = ep.critical or self._content_critical(ep)
            return []
        run = self._content_run
        if run and abs(offset - (run[-1].offset_ms or 0.0)) > opts.content_agree_ms:
            run.clear()  # not the same offset: start the run afresh
        run.append(window)
        if len(run) < opts.content_windows:
            return []
        good = self._content_good
        # The change came between the last window in sync and the first one out, as far as the
        # windows tell; bad from the first window on: from its start.
        start = 0.5 * (_centre(good) + _centre(run[0])) if good is not None else run[0].start_s
        start = max(start, self._content_end, min(self._origin, run[0].start_s))
        ep = self._content_episode = _ContentEpisode(start_s=start, windows=list(run), opened=True)
        run.clear()
        ep.critical = self._content_critical(ep)
        finding = self._content_finding(ep, None)
        self.content_reports.append((window.end_s, finding))
        return [finding]

    def _content_critical(self, ep: _ContentEpisode) -> bool:
        level = float(np.median(ep.offsets()))
        return level < -self.options.critical_early_ms or level > self.options.critical_late_ms

    def _close_content(self, end: float, now: float) -> list[Finding]:
        """End the content defect at ``end`` (reported at media time ``now``); forget the run."""
        self._content_run.clear()
        ep = self._content_episode
        if ep is None:
            return []
        self._content_episode = None
        end = max(end, ep.start_s)
        self._content_end = end
        finding = self._content_finding(ep, end)
        self.content_reports.append((now, finding))
        return [finding]

    def _content_finding(self, ep: _ContentEpisode, end_s: float | None) -> Finding:
        offsets = ep.offsets()
        centres = np.array([_centre(w) for w in ep.windows[-MEDIAN_PAIRS:]])
        slope, _ = line_fit(centres, offsets)
        metrics = {
            "offset_ms": float(np.median(offsets)),
            "offset_min_ms": float(offsets.min()),
            "offset_max_ms": float(offsets.max()),
            "drift_ms_per_s": slope,
            "confidence": float(np.median([w.confidence for w in ep.windows])),
            "prominence": float(np.median([w.prominence for w in ep.windows])),
            "windows": float(len(ep.windows)),
            "window_s": self.options.content_window_s,
            "first_window_s": ep.windows[0].start_s,
            "last_window_s": ep.last_bad.end_s,
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - ep.start_s
        return Finding(
            type=self.name,
            start_s=ep.start_s,
            end_s=end_s,
            severity=Severity.CRITICAL if ep.critical else Severity.WARNING,
            metrics=metrics,
            key=PROGRAMME_KEY,
            labels={"method": "content"},
        )

    # -- timestamps ------------------------------------------------------------------------------

    def _judge_pts(self) -> list[Finding]:
        opts = self.options
        pts = self._pts
        trend = pts.trend()
        if trend is None:
            return []
        ep = pts.episode
        now = pts.now
        limit = opts.ts_max_drift_ms_per_s
        drifting = trend.steady and abs(trend.slope) >= limit and abs(trend.change) >= opts.ts_min_change_ms
        if ep is None:
            if not drifting:
                return []
            sign = math.copysign(1.0, trend.slope)
            base = trend.level - trend.change / 1000.0  # the first third's median
            ep = pts.episode = _PtsEpisode(start_s=trend.first_t, held_since=now, base=base, sign=sign)
        elif not ep.opened and not drifting:
            pts.episode = None  # it did not hold for ts_d: no defect
            return []
        elif trend.slope * ep.sign < 0.5 * limit:
            return self._close_pts(now)  # faded, with hysteresis: bursts may dent one median
        ep.slope, ep.change = trend.slope, trend.change
        ep.divergence = (trend.level + trend.slope / 1000.0 * (now - trend.level_t) - ep.base) * 1000.0
        ep.critical = ep.critical or not -opts.critical_early_ms <= ep.divergence <= opts.critical_late_ms
        if not ep.opened and now - ep.held_since >= opts.ts_d - _EPS:
            ep.opened = True
            return [self._pts_finding(ep, None)]
        return []

    def _close_pts(self, end: float) -> list[Finding]:
        ep = self._pts.episode
        self._pts.episode = None
        if ep is None or not ep.opened:
            return []
        return [self._pts_finding(ep, max(end, ep.start_s))]

    def _pts_finding(self, ep: _PtsEpisode, end_s: float | None) -> Finding:
        metrics = {
            "drift_ms_per_s": ep.slope,
            "pts_offset_ms": ep.change,
            "divergence_ms": ep.divergence,
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - ep.start_s
        return Finding(
            type=self.name,
            start_s=ep.start_s,
            end_s=end_s,
            severity=Severity.CRITICAL if ep.critical else Severity.WARNING,
            metrics=metrics,
            key=PTS_KEY,
            labels={"method": "pts"},
        )
