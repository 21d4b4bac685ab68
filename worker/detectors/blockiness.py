"""Block corruption and macroblocking: decoder evidence plus a no-reference blockiness measure.

Two kinds of evidence make a picture *damaged*:

1. **The decoder's own word** (severity ``critical``). A corrupt picture (``VideoFrame.corrupt``:
   the decoder concealed errors in it, or its packet was flagged by the demuxer) or a video decode
   error. Lost or damaged slices are concealed by copying and smearing neighbouring pictures, which
   looks like smear, not like 8x8 block edges: no picture measure (FFmpeg's ``blockdetect``
   included) sees it reliably, the decoder does. Concealed damage propagates through prediction
   until the next keyframe refreshes the picture, so evidence keeps the picture damaged until the
   first clean keyframe after it, at most ``hold`` seconds after the last evidence (streams with
   periodic intra refresh have no keyframes). The decoder is terse, too: it flags one picture of
   a damaged run, often not every damaged picture, and under frame threading not always the same
   one (observed with FFmpeg 8 / PyAV 18), hence the hold.
2. **The blockiness measure** (severity ``warning``). The classic no-reference *blockiness
   ratio*: mean absolute difference between neighbouring pixels across the 8x8 block grid (column
   and row edges at positions 7|8 and 15|16 modulo 16) relative to the median difference at the
   14 other positions modulo 16, horizontally and vertically (:func:`edge_profile`,
   :func:`blockiness_ratio`). The 16x16 macroblock grid alone is measured too, because concealed
   or skipped macroblocks show edges only there. Natural pictures score about 1, and H.264's
   in-loop deblocking keeps normally compressed streams near it: on moving textured content at
   CRF 18-35, medians 0.9-1.15 and single pictures at most 1.25; on flat moving gradients,
   medians up to 1.3 and single pictures up to 1.8 at CRF 35. Coarse quantisation raises it
   (CRF 51: medians 1.35-1.7 on textured content, 2.2 on flat gradients), 8x8 block averaging
   to 3 and more. Concealment raises it only where it leaves blocky macroblocks, not smear.

   A picture-only episode (no decoder evidence in it) must also be *strong and sustained*: blocky
   almost everywhere, not only on average. Sharp-edged graphics over a smooth, upscaled gradient
   (a lower third, a caption box) put a few very strong edges on the grid, and the mean over the
   picture reads as blocking (measured from outside: 1.34 times the baseline, more than real
   bitstream damage reads, 1.22, with no decoder evidence). So each 16-pixel period of the
   picture gets its own ratio, and the median over the periods (:func:`grid_line_ratio`: 1.1
   for a synthetic lower third over a gradient whose mean ratio is 5.1; 15.9 for 8x8 block
   averaging) must stay above the same threshold for ``d`` without a break before a picture-only
   episode becomes a defect. Decoder evidence needs none of this: it stays the main signal.

   Content can be blocky by itself (a grid-aligned overlay, a checkerboard, pixel art), so the
   smoothed ratio (median of the last 3 evaluations) must exceed both an absolute floor ``th`` and
   ``rise`` times the stream's own *baseline*, the median ratio of the last ``baseline`` seconds.
   The baseline includes blocky pictures on purpose: a pattern that persists for half the window
   becomes the stream's normal and stops being reported, so a measured episode longer than
   ``baseline / 2`` seconds is cut there, sooner in the first minute of a stream, when the
   history is shorter (decoder-reported damage is never absorbed). For the same reason a stream
   that is blocky from its first picture is its own normal: the measure reports changes. It
   turns off again below ``(1 - hyst)`` times the current threshold, and a measured episode is a
   defect only once it has lasted ``d`` seconds.

Damage separated by less than ``gap`` seconds of clean pictures is one defect: continuous packet
loss is one long defect, not one per GOP. A defect starts at the first damaged picture (for the
measure, the first evaluation above the threshold among those that turned it on) and ends at the
first clean picture after the last damage; the close is reported ``gap`` seconds later. Decoder
evidence opens a defect at once; a measured one opens once it lasts ``d``. The close finding
carries the worst severity seen.

Timing: the session flags the picture that left the decoder together with a corrupt packet,
which with B-frames and frame threading is up to a few pictures (about 0.1-0.3 s) before the
picture the packet carried; the start is accurate to that.

Overlap with ``decode_error``: both may report the same corruption. ``decode_error`` says the
decoder failed (undecodable data, in either stream); this detector says the picture is visibly
damaged, for how long, and how badly.

Cost: two vectorised OpenCV passes (absolute differences of strided row views, then column or
row sums) on every ``step``-th picture, on a sample of the picture: every ``row_step``-th row for
horizontal edges, every row of every ``band_step``-th 16-row band for vertical ones. At 1280x720
that is 7,200 differences per horizontal grid position and 14,080 per vertical one, plenty for a
mean (at 640x360, 1,800 and 3,840), and a quarter of the picture's bytes: the passes are bound
by memory, not arithmetic, and the decoder's own traffic pays for what they add once several
streams share the cores. About 30 µs per picture at 720p at the default ``step`` of 2, read
straight from memory; 2 % of decoding the same picture with one thread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from shared.models import DefectType
from worker.detectors.base import Detector, Finding, Severity, StreamContext, VideoFrame
from worker.detectors.options import DetectorOptions, opt

PERIOD = 16  # pixels: the macroblock grid, which contains the 8x8 transform grid
BLOCK_EDGES = (7, 15)  # difference positions mod 16 that cross an 8x8 block edge (7|8, 15|16)
MACROBLOCK_EDGE = 15  # ... and the one that crosses a 16x16 macroblock edge
_INSIDE = [k for k in range(16) if k not in BLOCK_EDGES]  # the 14 positions inside blocks
EPS = 1.0  # luma codes added to both sides of the ratio: flat pictures score about 1, not noise
SMOOTHING = 3  # evaluations in the running median that decides (rejects one-picture spikes)
BASELINE_REFRESH_S = 1.0  # the baseline median (of up to 750 values) is recomputed at most this often
DISCONTINUITY_S = 1.0  # time going back more than this is a new timeline: end and relearn

Luma = npt.NDArray[np.uint8]
Profile = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BlockinessOptions(DetectorOptions):
    """Options of the ``blockiness`` detector."""

    th: float = opt(
        1.5, "ratio", "absolute floor: the smoothed blockiness ratio must exceed it to count as blocky",
        ge=1.0,
    )
    rise: float = opt(1.3, "factor", "... and exceed the stream's baseline times this", ge=1.0)
    hyst: float = opt(
        0.1, "fraction", "hysteresis: blocky until the ratio falls below (1 - hyst) times the threshold",
        ge=0.0, le=0.5,
    )
    d: float = opt(0.5, "s", "minimum duration of a measured (not decoder-reported) episode", ge=0.0)
    gap: float = opt(
        1.0, "s", "damage with less clean time between is one defect; its close comes this late", ge=0.0
    )
    baseline: float = opt(
        60.0, "s", "window of the running median baseline; a pattern lasting half of it is normal", gt=0.0
    )
    hold: float = opt(
        2.0, "s", "decoder evidence keeps the picture damaged until the next clean keyframe, at most "
        "this long", ge=0.0,
    )
    step: int = opt(
        2, "pictures", "evaluate the measure on every n-th picture (decoder evidence: every picture)",
        ge=1, le=16,
    )
    row_step: int = opt(8, "rows", "every n-th row is sampled for horizontal differences", ge=1, le=16)
    band_step: int = opt(
        4, "bands", "every n-th band of 16 rows is sampled for vertical differences", ge=1, le=16,
    )


def edge_periods(luma: Luma, row_step: int = 8, band_step: int = 4) -> tuple[Profile, Profile]:
    """Mean absolute luma difference (codes) between neighbouring pixels, by grid position, in
    every 16-pixel period of the picture.

    Returns ``(horizontal, vertical)``, each (periods, 16) float64: horizontal neighbours
    (columns c and c+1, on every ``row_step``-th row) averaged down each 16-column period, and
    vertical neighbours (rows r and r+1, every column) averaged across each sampled 16-row band
    (every ``band_step``-th one). Position 7 crosses an 8x8 block edge, 15 a macroblock edge too.
    ``luma`` is (height, width) uint8, possibly a row-strided view; only whole periods are used,
    and a picture smaller than 17 pixels in a direction has no periods there.
    """
    if luma.strides[-1] != 1:
        luma = np.ascontiguousarray(luma)
    height, width = luma.shape
    horizontal: Profile = np.zeros((0, PERIOD), np.float64)
    vertical: Profile = np.zeros((0, PERIOD), np.float64)
    if width > PERIOD:
        rows = luma[::row_step]
        # absdiff of uint8 is exact (|a - b| <= 255); OpenCV takes row-strided views as they are.
        diff = cv2.absdiff(rows[:, 1:], rows[:, :-1])
        sums = cv2.reduce(diff, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]
        n = (width - 1) // PERIOD * PERIOD
        horizontal = np.asarray(sums[:n].reshape(-1, PERIOD) / float(rows.shape[0]), np.float64)
    if height > PERIOD:
        # Every band_step-th band of 16 row pairs (rows 16 band_step k to 16 band_step k + 16),
        # as the horizontal differences take every row_step-th row. A band's 17 rows lie end to
        # end in memory (with the rows' padding between them), so one view with a row per band
        # holds them all, and row r + 1 less row r is that view shifted by one picture row.
        pitch = luma.strides[0]  # bytes from one picture row to the next (width, or more)
        bands = (height - PERIOD - 1) // (band_step * PERIOD) + 1
        view = np.lib.stride_tricks.as_strided(
            luma,
            shape=(bands, PERIOD * pitch + width),
            strides=(band_step * PERIOD * pitch, 1),
            writeable=False,
        )
        # The differences are written with the same pitch, so that they read as (row pair, column)
        # rows again: summing rows is much cheaper for OpenCV than summing columns.
        diff = np.empty((bands, PERIOD * pitch), np.uint8)
        cv2.absdiff(view[:, pitch:], view[:, :-pitch], dst=diff[:, : (PERIOD - 1) * pitch + width])
        pairs = diff.reshape(bands * PERIOD, pitch)[:, :width]  # padding columns left out
        sums = cv2.reduce(pairs, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
        vertical = np.asarray(sums.reshape(bands, PERIOD) / float(width), np.float64)
    return horizontal, vertical


def profile_of(periods: tuple[Profile, Profile]) -> Profile:
    """The (2, 16) :func:`edge_profile` of :func:`edge_periods` (each direction's mean period)."""
    profile = np.zeros((2, PERIOD), np.float64)
    for row, direction in enumerate(periods):
        if direction.shape[0]:
            profile[row] = direction.mean(axis=0)
    return profile


def edge_profile(luma: Luma, row_step: int = 8, band_step: int = 4) -> Profile:
    """Mean absolute luma difference (codes) between neighbouring pixels, by grid position.

    Returns a (2, 16) float64 array: row 0 holds horizontal neighbours (columns c and c+1, on
    every ``row_step``-th row) and row 1 vertical neighbours (rows r and r+1, every column, in
    every ``band_step``-th 16-row band), averaged separately for each position ``c mod 16`` (``r mod 16``).
    Position 7 crosses an 8x8 block edge, 15 a macroblock edge too. ``luma`` is (height, width)
    uint8, possibly a row-strided view; only whole 16-pixel periods are used, and a picture
    smaller than 17 pixels in a direction gives zeros there.
    """
    return profile_of(edge_periods(luma, row_step, band_step))


def grid_line_ratio(periods: tuple[Profile, Profile], eps: float = EPS) -> float:
    """The blockiness ratio of each 16-pixel period of :func:`edge_periods`, and its median over
    the periods of both directions: how blocky the picture is *almost everywhere*.

    Blocking from coarse quantisation or block averaging raises every period's ratio; content
    edges that happen to lie on the grid (graphics, text, a lower third over a smooth gradient)
    raise a few periods' ratios a lot, and with them :func:`blockiness_ratio`'s means, but not
    this median (synthetic lower third over an upscaled gradient: mean ratio 5.1, this 1.1; 8x8
    block averaging: 16.6 and 15.9).
    """
    horizontal, vertical = periods
    both = np.concatenate((horizontal, vertical))
    if both.shape[0] == 0:
        return 1.0
    inside = np.median(both[:, _INSIDE], axis=1)
    edges = np.maximum(both[:, list(BLOCK_EDGES)].mean(axis=1), both[:, MACROBLOCK_EDGE])
    return float(np.median((edges + eps) / (inside + eps)))


def blockiness_ratio(profile: Profile, eps: float = EPS) -> float:
    """Blockiness ratio (dimensionless, about 1 for natural pictures) of an :func:`edge_profile`.

    Horizontal and vertical profiles are averaged, then the mean difference across 8x8 block
    edges, or across macroblock edges alone if that is higher, is divided by the median
    difference at the 14 positions inside blocks. ``eps`` (codes) is added to both, so flat
    pictures score about 1 and faint grids in flat areas do not explode the ratio.
    """
    mean: list[float] = profile.reshape(-1, PERIOD).mean(axis=0).tolist()
    # Plain Python on 16 numbers: numpy's median costs more per call than the sort itself.
    inside = sorted(mean[k] for k in range(PERIOD) if k not in BLOCK_EDGES)
    middle = len(inside) // 2
    median = (inside[middle - 1] + inside[middle]) / 2
    edges = max(sum(mean[k] for k in BLOCK_EDGES) / len(BLOCK_EDGES), mean[MACROBLOCK_EDGE])
    return (edges + eps) / (median + eps)


class BlockinessDetector(Detector):
    """Reports visibly damaged pictures: critical when the decoder says so, warning when measured."""

    name: ClassVar[DefectType] = DefectType.BLOCKINESS
    Options: ClassVar[type[BlockinessOptions]] = BlockinessOptions
    options: BlockinessOptions

    def __init__(self, options: BlockinessOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self._pictures = 0  # pictures seen, for `step`
        self._last_t: float | None = None
        # The measure.
        self._recent: deque[tuple[float, float]] = deque(maxlen=SMOOTHING)  # (t, ratio)
        self._ratio = 1.0  # latest smoothed ratio
        self._history: deque[tuple[float, float]] = deque()  # (t, ratio) of clean pictures
        self._baseline: float | None = None
        self._baseline_t = -np.inf  # when the baseline was last recomputed
        self._blocky = False  # the measure is above its threshold (with hysteresis)
        # Decoder evidence: t of the latest, while the picture is still damaged by it.
        self._evidence_t: float | None = None
        # The current defect (a run of damage, possibly with clean gaps shorter than `gap`).
        self._start: float | None = None
        self._clean_since: float | None = None  # first clean picture after the latest damage
        self._open = False
        self._decoder = False  # decoder evidence seen in this run: critical
        self._peak = 0.0
        self._run_baseline: float | None = None
        self._corrupt_frames = 0
        self._decode_errors = 0
        self._last_end: float | None = None  # end of the previous run: the next starts after it
        # Strong evidence for a run without decoder evidence: grid_line_ratio's recent values,
        # and since when their median has been over the threshold.
        self._line_recent: deque[float] = deque(maxlen=SMOOTHING)
        self._strong_since: float | None = None

    # ------------------------------------------------------------ feeding

    def feed_video(self, frame: VideoFrame) -> list[Finding]:
        t = frame.t
        findings: list[Finding] = []
        if self._last_t is not None and t < self._last_t - DISCONTINUITY_S:
            # A new timeline: what was running cannot extend across it, and the baseline's
            # time window means nothing any more.
            findings += self._end_run(self._last_t)
            self._last_end = None
            self._evidence_t = None
            self._blocky = False
            self._history.clear()
            self._recent.clear()
            self._baseline, self._baseline_t = None, -np.inf
        self._last_t = t if self._last_t is None else max(t, self._last_t)

        if frame.corrupt:
            findings += self._evidence(t, corrupt_frames=1)
        elif self._evidence_t is not None and (
            (frame.key_frame and t > self._evidence_t) or t - self._evidence_t >= self.options.hold
        ):
            self._evidence_t = None  # a clean keyframe refreshes the whole picture

        self._pictures += 1
        if (self._pictures - 1) % self.options.step == 0:
            periods = edge_periods(frame.luma, self.options.row_step, self.options.band_step)
            ratio = blockiness_ratio(profile_of(periods))
            self._measure(t, ratio, clean=not frame.corrupt and self._evidence_t is None)
            if self._start is not None and not self._decoder:
                self._judge_alone(t, grid_line_ratio(periods))
            if self._start is not None:
                self._peak = max(self._peak, self._ratio)
        return findings + self._advance(t)

    def feed_decode_error(self, t: float, kind: str, message: str) -> list[Finding]:
        if kind != "video":
            return []
        return self._evidence(t, decode_errors=1)

    def flush(self, t_end: float) -> list[Finding]:
        return self._end_run(t_end)

    # ------------------------------------------------------------ state

    def _evidence(self, t: float, corrupt_frames: int = 0, decode_errors: int = 0) -> list[Finding]:
        """The decoder reported damage at ``t``: the picture is damaged from here on."""
        self._evidence_t = t if self._evidence_t is None else max(t, self._evidence_t)
        if self._start is None:
            self._begin(t)
        self._decoder = True
        self._corrupt_frames += corrupt_frames
        self._decode_errors += decode_errors
        self._clean_since = None
        if self._open:
            return []
        self._open = True
        return [self._finding(None)]

    def _measure(self, t: float, ratio: float, clean: bool) -> None:
        """Update the smoothed ratio, the baseline and the hysteresis state with one evaluation."""
        opts = self.options
        self._recent.append((t, ratio))
        ratios = sorted(r for _, r in self._recent)
        self._ratio = ratios[len(ratios) // 2] if len(ratios) % 2 else (ratios[0] + ratios[-1]) / 2
        if clean:
            # Concealment output is not the stream's normal picture; everything else is, even
            # when blocky: that is how a persistent pattern becomes the baseline.
            self._history.append((t, ratio))
            while self._history and self._history[0][0] < t - opts.baseline:
                self._history.popleft()
        if t - self._baseline_t >= BASELINE_REFRESH_S and self._history:
            self._baseline = float(np.median([r for _, r in self._history]))
            self._baseline_t = t
        if self._baseline is None:
            return
        on = max(opts.th, self._baseline * opts.rise)
        if self._blocky:
            self._blocky = self._ratio >= on * (1.0 - opts.hyst)
        elif self._ratio > on:
            self._blocky = True
            if self._start is None:
                # Start at the first of the evaluations above the threshold that turned it on.
                onset = min(ti for ti, r in self._recent if r > on)
                self._begin(max(onset, self._last_end) if self._last_end is not None else onset)

    def _judge_alone(self, t: float, line_ratio: float) -> None:
        """Whether a run without decoder evidence is blocky almost everywhere (strong evidence):
        the running median of :func:`grid_line_ratio` above the same threshold as the ratio."""
        self._line_recent.append(line_ratio)
        ratios = sorted(self._line_recent)
        smoothed = ratios[len(ratios) // 2] if len(ratios) % 2 else (ratios[0] + ratios[-1]) / 2
        baseline = self._baseline if self._baseline is not None else 1.0
        if smoothed > max(self.options.th, baseline * self.options.rise):
            if self._strong_since is None:
                # Strong from its first look: from the evaluation that began the run.
                first = len(self._line_recent) == 1 and self._start is not None
                self._strong_since = self._start if first and self._start is not None else t
        elif self._strong_since is not None and not self._open:
            self._strong_since = None  # not sustained: it must hold for d without a break

    def _advance(self, t: float) -> list[Finding]:
        """Extend, open or end the current run after the picture at ``t``."""
        if self._start is None:
            return []
        if self._evidence_t is not None or self._blocky:
            self._clean_since = None
            if not self._open and self._strong_since is not None and t - self._strong_since >= self.options.d:
                self._open = True
                return [self._finding(None)]
            return []
        if self._clean_since is None:
            self._clean_since = t
        if not self._open or t - self._clean_since >= self.options.gap:
            # A short measured blip ends at once; an open defect waits `gap` for more damage.
            return self._end_run(t)
        return []

    def _begin(self, t: float) -> None:
        self._start = t
        self._clean_since = None
        self._open = False
        self._decoder = False
        self._peak = self._ratio
        self._run_baseline = self._baseline
        self._line_recent.clear()
        self._strong_since = None
        self._corrupt_frames = 0
        self._decode_errors = 0

    def _end_run(self, t: float) -> list[Finding]:
        """End the current run: at its first clean picture, or at ``t`` if still damaged."""
        if self._start is None:
            return []
        end = max(self._clean_since if self._clean_since is not None else t, self._start)
        findings: list[Finding] = []
        strong = self._strong_since
        if not self._open and strong is not None and end - strong >= self.options.d:
            # Long enough only once its end is known (an episode of exactly d): report it whole.
            self._open = True
            findings.append(self._finding(None))
        if self._open:
            findings.append(self._finding(end))
        self._start = None
        self._clean_since = None
        self._open = False
        self._last_end = end
        return findings

    def _finding(self, end_s: float | None) -> Finding:
        assert self._start is not None
        metrics = {
            "blockiness": self._peak,
            "corrupt_frames": float(self._corrupt_frames),
            "decode_errors": float(self._decode_errors),
        }
        if self._run_baseline is not None:
            metrics["baseline"] = self._run_baseline
        if end_s is not None:
            metrics["duration_s"] = end_s - self._start
        return Finding(
            type=self.name,
            start_s=self._start,
            end_s=end_s,
            severity=Severity.CRITICAL if self._decoder else Severity.WARNING,
            metrics=metrics,
        )
