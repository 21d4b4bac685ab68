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
(:mod:`worker.sync.timestamps`, judged by :mod:`worker.sync.pts_judge`), with a slope of at
least ``ts_max_drift_ms_per_s`` and a change of at least ``ts_min_change_ms`` over
``ts_window_s``, held for ``ts_d``: the defect starts at the window's first second and ends when
the slope falls below half the limit (or turns); timestamp jumps and reconnects end it. Metrics:
``drift_ms_per_s`` (positive: the audio timestamps run ahead), ``pts_offset_ms`` (the change
over the window) and ``divergence_ms`` (critical past the acceptability limits). With the
defaults 2 ms/s is reported after about 105 s. In a file the muxer interleaves by timestamp,
which hides a divergence: it then reports nothing (it never guesses).

**Programme content (no marks, key ``"content"``).** Windows of :mod:`worker.sync.content`
(judged by :mod:`worker.sync.content_judge`), each an offset with a ``confidence`` and a
``prominence``, or *unknown* (neither in sync nor a defect: it moves nothing). A defect opens
after ``content_windows`` consecutive confident windows outside the window, each within
``content_agree_ms`` of the one before (with the defaults, 30 s in for an offset present from
the start); ``start_s`` is halfway between the centres of the last window inside and the first
outside. It closes after ``content_close_windows`` confident windows inside, after
``content_timeout_s`` without a confident window (at the end of the last bad one), or at the end
of the media. Metrics: ``offset_ms``, ``offset_min_ms``, ``offset_max_ms``, ``drift_ms_per_s``,
``confidence`` and ``prominence`` (medians), ``windows``, ``window_s``, ``first_window_s``,
``last_window_s``, ``duration_s`` on the close. Marks have priority: while they are present no
content window is evaluated and a content defect ends.

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
from worker.detectors.base import AudioBlock, Detector, Finding, PacketInfo, StreamContext, VideoFrame
from worker.detectors.options import DetectorOptions, opt
from worker.sync.beep import BeepFinder
from worker.sync.content import ContentSync
from worker.sync.content_judge import ContentJudge
from worker.sync.correlation import WindowEstimate
from worker.sync.episodes import SEQUENCE
from worker.sync.episodes import DriftRun as _DriftRun
from worker.sync.episodes import Episode as _Episode
from worker.sync.episodes import Pair as _Pair
from worker.sync.findings import CONTENT_KEY, PROGRAMME_KEY, PTS_KEY, marks_finding
from worker.sync.fit import hinge_fit, line_fit
from worker.sync.flash import FlashFinder
from worker.sync.marks import MARK_RHYTHM_S, MarkPairer
from worker.sync.presence import look_like_marks
from worker.sync.pts_judge import PtsJudge

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
        self._pts = PtsJudge(opts, self.ctx.connection)
        # Every measured pair (flash time s, offset ms), for inspection and tests.
        self.measurements: deque[tuple[float, float]] = deque(maxlen=3600)
        self.marks_present = False
        self._content = (
            ContentSync(opts.content_window_s, opts.content_hop_s, opts.content_max_lag_s)
            if opts.content
            else None
        )
        self._content_judge = ContentJudge(opts)
        # Every content window (known or not), for inspection, tests and the benchmark.
        self.content_windows: deque[WindowEstimate] = self._content_judge.windows
        # (media time s at which it was reported, finding) of every content finding.
        self.content_reports: list[tuple[float, Finding]] = self._content_judge.reports

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
        return self._pts.feed(packet, self.ctx.connection)

    def flush(self, t_end: float) -> list[Finding]:
        flash = self._flashes.finish()
        if flash is not None:
            self._pairer.add_flash(flash)
        for onset in self._beeps.finish():
            self._pairer.add_beep(onset)
        findings = self._advance(math.inf)
        findings += self._classify_last()
        findings += self._close_episode(t_end)
        findings += self._pts.close(t_end)
        findings += self._content_judge.close(t_end, t_end)
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
            enough = len(recent) >= opts.min_pairs
            if not (enough and look_like_marks(recent, opts.presence_s, opts.consistency_ms)):
                return findings
            self._present = self.marks_present = True
            # Marks take priority over the content measurement from here on.
            findings += self._content_judge.close(pair.t, pair.t)
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
            findings.append(marks_finding(ep, None))
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
            findings.append(marks_finding(ep, None))  # long enough only with its end
            ep.opened = True
        if ep.opened:
            findings.append(marks_finding(ep, end))
        return findings

    def _publish(self, offset_ms: float, confidence: float, method: str, t: float) -> None:
        """The stream's latest confident offset, for its API view (``ctx.extra["av_sync"]``)."""
        self.ctx.extra[EXTRA_KEY] = {
            "offset_ms": round(offset_ms, 1),
            "confidence": round(confidence, 3),
            "method": method,
            "t": round(t, 3),
        }

    def _judge_content(self) -> list[Finding]:
        """Judge the content windows now complete (none while marks are present)."""
        assert self._content is not None
        findings: list[Finding] = []
        for window in self._content.ready(skip=self._present):
            if window.offset_ms is not None:
                self._publish(window.offset_ms, window.confidence, "content", window.end_s)
            findings += self._content_judge.on_window(window, self._origin)
        return findings
