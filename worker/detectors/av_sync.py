"""Audio/video synchronisation: the offset between sound and picture, and its drift.

Sign convention (DESIGN.md §4): ``offset_ms`` = audio time − video time of the same event, in
milliseconds; positive means the sound is late, negative that it is early. By default a defect
is an offset outside ITU-R BT.1359's *detectability* window, sound more than ``max_early_ms``
(45 ms) early or more than ``max_late_ms`` (125 ms) late, or an offset that keeps changing (a
drift). BT.1359 itself counts sound *before* picture as positive: its +45 / −125 ms are our
−45 / +125. Severity is ``critical`` once the offset passes BT.1359's *acceptability* limits,
``critical_early_ms`` (90 ms early) or ``critical_late_ms`` (185 ms late), ``warning`` below.
Three measurements feed it, each its own finding key (and ``labels["method"]``):

**Sync marks (key ``""``, method ``marks``).** A white picture and, at the same instant, a short
beep, as ``avmon.testsrc`` makes them: flashes (:mod:`worker.sync.flash`) and beeps
(:mod:`worker.sync.beep`) are paired (:mod:`worker.sync.marks`), offset = beep − flash.

* Marks are *present* after ``min_pairs`` consecutive pairs within ``presence_s`` that are
  regular (intervals within MARK_RHYTHM_S of their median) and whose offsets lie within
  ``consistency_ms`` of a straight line; until then nothing is reported. Programme flashes and
  tones that pair up by chance spread over ±``max_pair_ms`` with no rhythm (30 adversarial runs
  of two minutes, about 75 chance pairs each: never taken for marks). Marks are lost after
  ``marks_timeout_s`` without a pair (what was running ends half a mark spacing after the last).
* Each pair is classified with the median of its offset and its two neighbours' (one stray pair
  neither opens nor closes a defect); the last pair of the media on its own. A defect is a run of
  pairs outside the window, or in a drift: ``start_s`` is halfway between the last good pair and
  the first bad one (at most half the mark spacing off, which no estimate from the marks alone can
  beat; bad from the first mark on: half a spacing before it), ``end_s`` halfway between the last
  bad pair and the first good one, or the end of the media. It is reported once it has lasted
  ``d``: with marks once a second, 3-4 s after ``start_s + d``.
* A *drift* is at least ``drift_pairs`` pairs on a line with a slope of at least
  ``max_drift_ms_per_s`` and a change of at least ``drift_min_ms``, every pair within
  ``drift_tolerance_ms`` of a hinge fit over up to twice as many pairs
  (:func:`worker.sync.fit.hinge_fit`: the hinge dates where the drift began, before it left the
  window). Later pairs join while within ``drift_tolerance_ms`` of the refitted line. A drift is
  a defect even inside the window (a clock mismatch only gets worse); ``drifting`` = 1 says so.
* Metrics: ``offset_ms`` (median of the defect's last MEDIAN_PAIRS pairs), ``offset_min_ms``,
  ``offset_max_ms``, ``drift_ms_per_s`` (least-squares slope over the defect), ``drifting``,
  ``pairs``, and ``duration_s`` on the close. ``AvSyncDetector.measurements`` holds the latest
  pairs (flash time s, offset ms), ``last_offset_ms`` the latest offset and ``marks_present``
  whether marks are being followed.

**Timestamps (key ``"pts"``).** The steady trend of the demuxed timelines' difference
(:mod:`worker.sync.timestamps`), with a slope of at least ``ts_max_drift_ms_per_s`` and a change
of at least ``ts_min_change_ms`` over ``ts_window_s``, held for ``ts_d``: the defect starts at
the window's first second and ends when the slope falls below half the limit (or turns);
timestamp jumps and reconnects end it. Metrics: ``drift_ms_per_s`` (positive: the audio
timestamps run ahead), ``pts_offset_ms`` (the change over the window) and ``divergence_ms``
(critical past the acceptability limits). With the defaults 2 ms/s is reported after about
105 s. In a file the muxer interleaves by timestamp, which hides a divergence: it then reports
nothing (it never guesses).

**Programme content (no marks, key ``"content"``).** Windows of :mod:`worker.sync.content`,
each an offset with a ``confidence`` and a ``prominence``, or *unknown* (neither in sync nor a
defect: it moves nothing). A defect opens after ``content_windows`` consecutive confident
windows outside the window, each within ``content_agree_ms`` of the one before (with the
defaults, 30 s in for an offset present from the start); ``start_s`` is halfway between the
centres of the last window inside and the first outside. It closes after
``content_close_windows`` confident windows inside, after ``content_timeout_s`` without a
confident window (at the end of the last bad one), or at the end of the media. Metrics:
``offset_ms``, ``offset_min_ms``, ``offset_max_ms``, ``drift_ms_per_s``, ``confidence`` and
``prominence`` (medians), ``windows``, ``window_s``, ``first_window_s``, ``last_window_s``,
``duration_s`` on the close. Marks have priority: while they are present no content window is
evaluated and a content defect ends.

The latest confident offset, from marks or content, is published for the stream's API view as
``ctx.extra["av_sync"] = {"offset_ms", "confidence", "method", "t"}`` (``confidence`` 1.0 for
marks; ``t`` the media time of the mark or the window's end). Costs are in each module.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

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
from worker.sync.beep import BeepFinder
from worker.sync.content import ContentSync
from worker.sync.correlation import WindowEstimate
from worker.sync.episodes import MEDIAN_PAIRS, SEQUENCE
from worker.sync.episodes import ContentEpisode as _ContentEpisode
from worker.sync.episodes import DriftRun as _DriftRun
from worker.sync.episodes import Episode as _Episode
from worker.sync.episodes import Pair as _Pair
from worker.sync.episodes import centre as _centre
from worker.sync.fit import hinge_fit, line_fit
from worker.sync.flash import FlashFinder
from worker.sync.marks import MARK_RHYTHM_S, MarkPairer
from worker.sync.timestamps import PtsDrift as _PtsDrift
from worker.sync.timestamps import PtsEpisode as _PtsEpisode

__all__ = [
    "CONTENT_KEY",
    "EXTRA_KEY",
    "PROGRAMME_KEY",
    "PTS_KEY",
    "AvSyncDetector",
    "AvSyncOptions",
    "BeepFinder",
    "FlashFinder",
    "MarkPairer",
    "hinge_fit",
    "line_fit",
]

CONTENT_KEY = ""  # key of the sync-mark measurement (marks are content too: the first path)
PTS_KEY = "pts"  # key of the timestamp drift
PROGRAMME_KEY = "content"  # key of the measurement on programme content, without marks
EXTRA_KEY = "av_sync"  # StreamContext.extra entry: the latest confident offset (see the docstring)

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
        return self._report(ep.start_s, end_s, ep.critical, metrics, CONTENT_KEY, "marks")

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
        return self._report(ep.start_s, end_s, ep.critical, metrics, PROGRAMME_KEY, "content")

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
        return self._report(ep.start_s, end_s, ep.critical, metrics, PTS_KEY, "pts")

    def _report(
        self,
        start_s: float,
        end_s: float | None,
        critical: bool,
        metrics: dict[str, float],
        key: str,
        method: str,
    ) -> Finding:
        """The finding of one measurement's defect (``duration_s`` added on the close)."""
        if end_s is not None:
            metrics["duration_s"] = end_s - start_s
        return Finding(
            type=self.name,
            start_s=start_s,
            end_s=end_s,
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            metrics=metrics,
            key=key,
            labels={"method": method},
        )
