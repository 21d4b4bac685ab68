"""Missing pictures: counted one by one, reported as ``stutter`` when a viewer can see them.

A picture is *missing* where a steady frame rate skips: the last ``STEADY_FRAMES`` intervals
between decoded pictures are within 10 % of their median, an interval is more than
``GAP_FACTOR`` times that median and at most ``MAX_GAP_S``, and the next interval is normal
again. The gap holds ``round(interval / median) - 1`` missing pictures. That is what frames lost
without a transport layer to report it look like (frames missing from an MP4 or an HLS segment,
an encoder dropping frames), and also an edit or a loop that leaves out a picture. Up to
``MAX_PENDING_GAPS`` (3) long intervals in a row wait together for the normal one (pictures lost
one apart). A change of frame rate is not a loss (long intervals go on), an irregular rate (variable
frame rate: phone and WebRTC recordings) is not judged, and longer gaps are
``timestamp_jump``'s.

Counting and reporting are separate, because one missing picture is invisible in practice
(measured: six single-picture steps in 40 s of real footage with hard cuts) and an operator
cannot act on it:

* every missing picture is counted in :attr:`StutterDetector.frames_dropped`, published as
  ``StreamContext.extra["frames_dropped"]`` (the stream's frames-dropped metric);
* a ``stutter`` defect (severity warning) opens when the missing pictures are visible: a gap of
  at least ``run_frames`` (3) pictures in a row, or at least ``rate_frames`` (3) pictures missing
  within ``window`` (5) seconds: a judder a viewer sees (hard cuts that each lose a picture
  usually come seconds apart). It starts at the first missing picture of the gaps that made it
  (the gap itself, for a run; the earliest gap in the window, for a rate), stays open while
  pictures keep going missing, and closes once ``window`` seconds pass without a gap; ``end_s``
  is the first picture after its last gap. Metrics: ``missing_frames`` (in the defect), ``gaps``,
  ``longest_gap_frames`` and ``longest_gap_s`` (the longest interval between two pictures).

Pictures the decoder refused or the transport damaged (``decode_error``'s evidence, read from
``StreamContext.extra["video_errors"]``) are counted as dropped but not as stutter: that is
``decode_error``'s defect.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from shared.models import DefectType
from worker.detectors.base import Detector, Finding, Severity, StreamContext, VideoFrame
from worker.detectors.options import DetectorOptions, opt

STEADY_FRAMES = 25  # intervals between pictures that establish the frame rate
GAP_FACTOR = 1.75  # an interval this many times the usual one has lost pictures
MAX_GAP_S = 1.0  # longer gaps are timestamp jumps (timestamp_jump's max_gap)
STEADY_TOLERANCE = 0.1  # intervals within this fraction of each other are a steady rate
# Gaps in a row awaiting a normal interval: pictures lost at random leave some one picture apart
# (two long intervals in a row). More in a row than this is a new frame rate, not losses.
MAX_PENDING_GAPS = 3


@dataclass(frozen=True, slots=True)
class StutterOptions(DetectorOptions):
    """Options of the ``stutter`` detector."""

    run_frames: int = opt(
        3, "frames", "pictures missing in a row that are a stutter (120 ms at 25 fps)", ge=2,
    )
    rate_frames: int = opt(
        3, "frames", "pictures missing within `window` that are a stutter (single ones, repeatedly)", ge=2
    )
    window: float = opt(
        5.0, "s", "the span `rate_frames` is counted over; a stutter ends "
        "after this long without a gap", gt=0.0
    )


@dataclass(slots=True)
class _Gap:
    """Pictures missing between two decoded pictures."""

    start: float  # media time the first missing picture was due, s
    end: float  # media time of the picture after the gap, s
    missing: int  # pictures missing
    interval: float  # between the pictures either side of it, s


@dataclass(slots=True)
class _Stutter:
    """An open stutter defect."""

    start: float
    end: float  # the picture after its latest gap, s
    missing: int = 0
    gaps: int = 0
    longest_frames: int = 0
    longest_s: float = 0.0


class StutterDetector(Detector):
    """Counts missing pictures and reports visible stutter (warning)."""

    name: ClassVar[DefectType] = DefectType.STUTTER
    Options: ClassVar[type[StutterOptions]] = StutterOptions
    options: StutterOptions

    def __init__(self, options: StutterOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self.frames_dropped = 0  # missing pictures counted since the stream began
        self._last_picture: float | None = None  # time of the previous decoded picture, s
        self._intervals: deque[float] = deque(maxlen=STEADY_FRAMES)  # between pictures, s
        # Gaps in a row awaiting a normal interval to confirm them, each with whether video
        # errors came between its pictures.
        self._pending: list[tuple[_Gap, bool]] = []
        self._errors_then = 0  # decode_error's video error count at the previous picture
        self._recent: deque[_Gap] = deque()  # confirmed gaps (not explained) within the window
        self._open: _Stutter | None = None
        self.ctx.extra.setdefault("frames_dropped", 0)

    def feed_video(self, frame: VideoFrame) -> list[Finding]:
        t = frame.t
        findings = self._expire(t) if self._open is not None or self._recent else []
        last, self._last_picture = self._last_picture, t
        errors = self.ctx.extra.get("video_errors", 0)
        explained = errors != self._errors_then or frame.corrupt
        self._errors_then = errors
        if last is None:
            return findings
        dt = t - last
        if -MAX_GAP_S <= dt <= 0.0:
            # Out of order (a decoder whose references went missing, a field repeated): not
            # a picture of the timeline the rate was learnt on. Keep the latest time.
            self._last_picture = last
            return findings
        if not 0.0 < dt <= MAX_GAP_S:
            self._intervals.clear()  # a discontinuity: the rate is learnt afresh
            self._pending = []
            if dt < 0.0:  # a new timeline: what came before is over
                self._recent.clear()
                findings += self.flush(last)
            return findings
        intervals = self._intervals
        steady = len(intervals) == STEADY_FRAMES
        if steady and not self._pending:
            lo, hi = min(intervals), max(intervals)
            if hi - lo <= STEADY_TOLERANCE * lo and dt <= GAP_FACTOR * lo:
                # The median lies in [lo, hi]: steady, and no gap whatever its value (the common
                # case, decided without sorting the intervals).
                intervals.append(dt)
                return findings
        usual = statistics.median(intervals) if steady else 0.0
        if steady and max(intervals) - min(intervals) > STEADY_TOLERANCE * usual:
            steady = False
        if steady and dt > GAP_FACTOR * usual:
            if len(self._pending) == MAX_PENDING_GAPS:
                # Long intervals that go on: a lower frame rate. Learn it afresh.
                self._pending = []
                intervals.clear()
                intervals.append(dt)
                return findings
            self._pending.append((_Gap(last + usual, t, round(dt / usual) - 1, dt), explained))
            return findings  # the gap does not teach the rate
        pending, self._pending = self._pending, []
        if steady and abs(dt - usual) <= STEADY_TOLERANCE * usual:
            for gap, gap_explained in pending:
                findings += self._confirm(gap, gap_explained)
        intervals.append(dt)
        return findings

    def flush(self, t_end: float) -> list[Finding]:
        stutter, self._open = self._open, None
        self._recent.clear()
        return [self._finding(stutter, stutter.end)] if stutter is not None else []

    # ------------------------------------------------------------ state

    def _confirm(self, gap: _Gap, explained: bool) -> list[Finding]:
        """A gap followed by a normal interval: count it, and judge whether it is visible."""
        self.frames_dropped += gap.missing
        self.ctx.extra["frames_dropped"] = self.frames_dropped
        if explained:
            return []  # decode_error reports the damage that lost these pictures
        opts = self.options
        recent = self._recent
        recent.append(gap)
        while recent and gap.end - recent[0].end > opts.window:
            recent.popleft()
        stutter = self._open
        findings: list[Finding] = []
        if stutter is None:
            if gap.missing >= opts.run_frames:
                first = gap
            elif sum(g.missing for g in recent) >= opts.rate_frames:
                first = recent[0]
            else:
                return []
            stutter = self._open = _Stutter(start=first.start, end=gap.end)
            gaps = list(recent)[list(recent).index(first) :]
            opened = True
        else:
            gaps = [gap]
            opened = False
        for g in gaps:
            stutter.end = max(stutter.end, g.end)
            stutter.missing += g.missing
            stutter.gaps += 1
            stutter.longest_frames = max(stutter.longest_frames, g.missing)
            stutter.longest_s = max(stutter.longest_s, g.interval)
        if opened:
            findings.append(self._finding(stutter, None))
        return findings

    def _expire(self, t: float) -> list[Finding]:
        """Forget gaps older than the window; close a stutter quiet for that long."""
        window = self.options.window
        recent = self._recent
        while recent and t - recent[0].end > window:
            recent.popleft()
        stutter = self._open
        if stutter is not None and t - stutter.end >= window:
            self._open = None
            return [self._finding(stutter, stutter.end)]
        return []

    def _finding(self, stutter: _Stutter, end_s: float | None) -> Finding:
        metrics = {
            "missing_frames": float(stutter.missing),
            "gaps": float(stutter.gaps),
            "longest_gap_frames": float(stutter.longest_frames),
            "longest_gap_s": stutter.longest_s,
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - stutter.start
        return Finding(
            type=self.name,
            start_s=stutter.start,
            end_s=end_s,
            severity=Severity.WARNING,
            metrics=metrics,
        )
