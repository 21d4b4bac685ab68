"""Loudness out of range: ITU-R BS.1770-4 / EBU R128 metering and sustained short-term excursions.

Measurement: :mod:`worker.bs1770` (K-weighting, 100 ms sub-blocks, momentary and short-term
loudness, gated integrated loudness in a bounded histogram).

Defect. Integrated loudness over a long stream hides a 20 s excursion, and a clipped passage
inflates it, so the judgement is on short-term loudness: an *excursion* is a stretch whose
short-term loudness stays above ``target + tolerance`` (key ``"loud"``) or below
``target - tolerance`` (key ``"quiet"``); it is a defect when it lasts at least ``d``. A return
into range shorter than ``gap_s`` does not end it (speech near a limit dips in and out).

Boundaries. Short-term loudness lags: after a step of +12 dB it crosses the limit 0.4 s late, after
a step of -12 dB 2.2 s late, and it comes back in range 0.5-3 s after the audio does (after a
large step, only once the excursion has left the window entirely). So when it crosses the limit,
the sub-block loudnesses of the window that crossed and of the second before it (40 values) are
fitted with a single step in the crossing's direction (least squares, leaving out pauses: values
more than ``GATE_LU`` under the median), and the boundary is the start of the first sub-block
after the step: within 100 ms of a gain change on music and noise (measured: mean 0.03 s, at most
0.13 s, steps of -25 to +20 dB), mean 0.1 s on speech-like audio with pauses. Where the levels
either side are steady, the boundary is then placed inside the two sub-blocks around the step,
whose power is a mix of both levels (:meth:`LoudnessDetector._step_time`): a gain change on a
tone, wherever it falls in the sub-block grid, is placed to a few ms. Because boundaries remain
estimates, an excursion measured up to ``DURATION_SLACK_S`` (50 ms) short of ``d`` counts as
lasting ``d``. A quiet excursion
that ends in silence ends where the silence detector says the silence began. If short-term
loudness is out of range from its very first value, the fitted step counts only if the audio
before it is in range; otherwise the excursion starts with the stream. An excursion still
running at ``flush`` ends at ``t_end``.

Reporting. A short-term window out of range holds some of the excursion, so the excursion lasts at
least until the start of that window: the open finding is emitted once the current window starts
``d`` or more after the excursion (about ``d + 3`` s after the change), and its end is then never
placed before that window's start, so an open finding is never followed by a close shorter than
``d`` (less the slack). The close comes ``gap_s`` after short-term loudness is back in range.

Silence is not a loudness defect (the silence detector reports it): short-term loudness under
``floor_lufs`` is not judged, and neither is "too quiet" while ``StreamContext.audio_silent_since``
is set. Severity is ``warning``; ``critical`` once the short-term loudness has been more than twice
``tolerance`` from the target (e.g. above -13 or below -33 LUFS by default); a close finding
carries the worst severity seen. Metrics: ``lufs`` (loudness of the excursion's audio: the mean
power of its sub-blocks, ungated), ``integrated_lufs`` (the programme's integrated loudness since
the stream started), ``target_lufs`` and, on close, ``duration_s``.

Channels are weighed as BS.1770 says, in FFmpeg's order (:func:`worker.bs1770.channel_weights`).
Times are media seconds counted in samples from ``AudioBlock.t``; a block that does
not continue the previous one within half a sub-block restarts the sub-block grid at its own
timestamp (the filter state and the recent powers are kept: the level does not jump).
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from shared.models import DefectType
from worker.bs1770 import (
    ABSOLUTE_GATE_LUFS,
    FLOOR_LUFS,
    MOMENTARY_SUBBLOCKS,
    SHORT_TERM_SUBBLOCKS,
    SUBBLOCK_S,
    LoudnessHistogram,
    Power,
    channel_weights,
    k_weighting_filter,
    lufs,
    lufs_array,
)
from worker.detectors.base import AudioBlock, Detector, Finding, Severity, StreamContext
from worker.detectors.options import DetectorOptions, opt
from worker.iir import lfilter  # scipy.signal's, without importing scipy.signal (0.7 s)

STEP_LEVEL_SUBBLOCKS = 5  # sub-blocks either side of a step whose median is the level there
STEP_MIN_LU = 3.0  # a smaller step is not placed inside a sub-block (its levels are too uncertain)
# Step times are estimates, good to a fraction of a sub-block: an excursion of d measured this
# much short of d (an end placed at a sub-block's start on a fluctuating level) still counts.
DURATION_SLACK_S = SUBBLOCK_S / 2
# Sub-blocks kept before the short-term window for locating a boundary: after a large step the
# window that first comes back in range no longer holds any of the excursion.
LOOKBACK_SUBBLOCKS = 10
GATE_LU = 20.0  # boundary fits leave out sub-blocks this far under the median (pauses)

LOUD, QUIET, IN_RANGE = "loud", "quiet", ""


@dataclass(frozen=True, slots=True)
class LoudnessProfile:
    """A loudness recommendation: the programme loudness it aims at and its true-peak ceiling."""

    name: str
    target_lufs: float  # LUFS (LKFS in ATSC's terms: the same BS.1770 measure)
    true_peak_dbtp: float  # dBTP: the clipping detector's ``tp_dbtp``


EBU_R128 = LoudnessProfile("ebu_r128", -23.0, -1.0)  # EBU R128 (2020) and Tech 3343
ATSC_A85 = LoudnessProfile("atsc_a85", -24.0, -2.0)  # ATSC A/85:2013, section 5 and Annex J
PROFILES = {profile.name: profile for profile in (EBU_R128, ATSC_A85)}


def loudness_profile(name: str) -> LoudnessProfile:
    """The profile called ``name`` (``ebu_r128`` or ``atsc_a85``); ValueError for any other."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown loudness profile {name!r}; known: {', '.join(PROFILES)}") from None


@dataclass(frozen=True, slots=True)
class LoudnessOptions(DetectorOptions):
    """Options of the ``loudness`` detector (EBU R128 by default; :meth:`for_profile` gives
    ATSC A/85's, target -24 LKFS, with ``ClippingOptions.for_profile`` for its -2 dBTP ceiling)."""

    target: float = opt(-23.0, "LUFS", "programme loudness aimed at", ge=-60.0, le=0.0)
    tolerance: float = opt(5.0, "LU", "short-term loudness within target ± this is in range", gt=0.0, le=30.0)
    d: float = opt(10.0, "s", "minimum duration of an excursion", ge=0.0)
    gap_s: float = opt(
        1.0, "s", "a return of short-term loudness into range shorter than this does not end an excursion",
        ge=0.0, le=10.0,
    )
    floor_lufs: float = opt(
        -60.0, "LUFS", "short-term loudness under this is not judged (silence is the silence detector's)",
        ge=ABSOLUTE_GATE_LUFS, lt="target",
    )

    @classmethod
    def for_profile(cls, name: str, **changes: float) -> LoudnessOptions:
        """The options for profile ``name`` (its target), with ``changes`` to any other option."""
        return cls(**{"target": loudness_profile(name).target_lufs, **changes})


# -- boundaries ------------------------------------------------------------------------------


def step_onset(levels: Power, rising: bool, first: int = 1, gate: float = -math.inf) -> int:
    """Index of the first element after the best single step in ``levels``.

    ``levels`` is (m,) loudness values (LUFS); the sequence is fitted with two constants, before
    and after index ``k`` (``first <= k < m``, ``first >= 1``), by least squares. Values under
    ``gate`` are left out of the fit (pauses, as BS.1770's gates leave out quiet blocks). Only
    steps in the given direction (up when ``rising``) are considered, unless there is none.

    A step next to a pause fits equally well anywhere in the pause; the pause is taken as part
    of the quieter side, so a step up is placed at the first value after the pause (a loud
    programme that starts after a pause starts there, not where the pause began: measured on
    speech-like audio, 1.4 s early otherwise) and a step down at the first value of the pause.
    """
    m = levels.size
    k = np.arange(max(1, first), m)
    if k.size == 0:
        return m - 1
    used = levels >= gate
    values = np.where(used, levels, 0.0)
    count, total, total_sq = np.cumsum(used), np.cumsum(values), np.cumsum(values**2)
    n_before, before, before_sq = count[k - 1], total[k - 1], total_sq[k - 1]
    n_after, after, after_sq = count[-1] - n_before, total[-1] - before, total_sq[-1] - before_sq
    both = (n_before > 0) & (n_after > 0)
    n_before, n_after = np.maximum(n_before, 1), np.maximum(n_after, 1)
    sse = (before_sq - before**2 / n_before) + (after_sq - after**2 / n_after)
    step = after / n_after - before / n_before
    right_way = both & (step > 0 if rising else step < 0)
    # The wrong way (or a side with nothing to fit) only if there is nothing else.
    sse = np.where(right_way, sse, sse + np.where(both, 1e12, 2e12))
    if rising:
        return int(k[k.size - 1 - np.argmin(sse[::-1])])  # the last of equal fits
    return int(k[np.argmin(sse)])


# -- detector ----------------------------------------------------------------------------------


class _Excursion:
    """Short-term loudness out of range in one direction."""

    __slots__ = ("back", "count", "end", "energy", "kind", "min_end_index", "open", "start", "worst")

    def __init__(self, kind: str, start: float, start_index: int, energy: float, count: int) -> None:
        self.kind = kind  # LOUD or QUIET
        self.start = start  # media time of its first sub-block, s
        self.energy = energy  # sum of its sub-blocks' powers
        self.count = count  # its sub-blocks so far
        self.worst = 0.0  # largest distance of short-term loudness from the target, LU
        self.open = False  # an open finding has been emitted
        self.min_end_index = start_index + 1  # the earliest sub-block number its end may take
        # While short-term loudness is back in range, for less than gap_s so far: where the
        # excursion ends if it stays there (time s, sub-block number, energy, count).
        self.end: tuple[float, int, float, int] | None = None
        self.back = 0  # sub-block number at which it came back


class LoudnessDetector(Detector):
    """Reports short-term loudness outside ``target ± tolerance`` for at least ``d`` (warning/critical)."""

    name: ClassVar[DefectType] = DefectType.LOUDNESS
    Options: ClassVar[type[LoudnessOptions]] = LoudnessOptions
    options: LoudnessOptions

    def __init__(self, options: LoudnessOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self.histogram = LoudnessHistogram()
        self._gap = round(self.options.gap_s / SUBBLOCK_S)  # short-term values
        self.momentary_lufs: float | None = None  # the latest values, None until there are enough
        self.short_term_lufs: float | None = None
        self._layout: tuple[int, int] | None = None  # (channels, rate) the state below is for
        self._b = np.ones(1)
        self._a = np.ones(1)
        self._zi = np.zeros((0, 4))  # K-filter state per channel
        self._weights = np.ones(0)
        self._hop = 0  # samples per sub-block
        self._rate = 0
        self._buffer = np.zeros((0, 0), np.float32)  # samples not filtered yet, in [:, :_fill]
        self._fill = 0
        self._energy = np.zeros(0)  # sum of squares of the sub-block being filled, per channel
        self._filled = 0  # samples in it
        self._anchor_t = 0.0  # media time at which the sub-block grid was (re)started, s
        self._since_anchor = 0  # whole sub-blocks since then: times are counted, not summed
        self._next_t: float | None = None  # media time of the sample expected next, s
        self._count = 0  # sub-blocks measured since the detector started
        self._powers: list[float] = []  # the last sub-block powers (the short-term window and
        self._starts: list[float] = []  # LOOKBACK_SUBBLOCKS before it) and their start times, s
        self._state: str | None = None  # classification of the last short-term value
        self._excursion: _Excursion | None = None
        self._last_end_index = -1  # sub-block number at which the last excursion ended

    @property
    def integrated_lufs(self) -> float:
        """Gated integrated loudness since the stream started, LUFS (FLOOR_LUFS before any)."""
        return self.histogram.integrated()

    # -- feeding -------------------------------------------------------------------------------

    def feed_audio(self, block: AudioBlock) -> list[Finding]:
        samples = block.samples
        if samples.ndim != 2 or samples.shape[1] == 0 or block.rate <= 0:
            return []
        findings: list[Finding] = []
        if self._layout != (samples.shape[0], block.rate):
            findings += self._end(self._next_t if self._next_t is not None else block.t)
            self._reset(samples.shape[0], block.rate)
        if self._next_t is None or abs(block.t - self._next_t) > SUBBLOCK_S / 2:
            # A gap or overlap in the timestamps: restart the sub-block grid at this block.
            findings += self._process()
            self._anchor_t = block.t
            self._since_anchor = 0
            self._energy[:] = 0.0
            self._filled = 0
        self._next_t = block.t + samples.shape[1] / block.rate

        end = self._fill + samples.shape[1]
        if end > self._buffer.shape[1]:
            grown = np.zeros((samples.shape[0], 2 * end), np.float32)
            grown[:, : self._fill] = self._buffer[:, : self._fill]
            self._buffer = grown
        self._buffer[:, self._fill : end] = samples
        self._fill = end
        if self._fill + self._filled < self._hop:
            return findings  # filtered once a sub-block is complete: fewer, longer filter calls
        return findings + self._process()

    def flush(self, t_end: float) -> list[Finding]:
        findings = self._process()
        findings += self._end(t_end)
        # Whatever comes after the end of the media starts afresh (integrated loudness goes on).
        self._powers.clear()
        self._starts.clear()
        self._state = None
        self._next_t = None
        return findings

    # -- state ---------------------------------------------------------------------------------

    def _process(self) -> list[Finding]:
        """K-weight the buffered samples and take the sub-blocks they complete."""
        if self._fill == 0:
            return []
        findings: list[Finding] = []
        filtered, self._zi = lfilter(self._b, self._a, self._buffer[:, : self._fill], self._zi)
        self._fill = 0
        n = filtered.shape[1]
        at = 0
        while at < n:
            take = min(n - at, self._hop - self._filled)
            part = filtered[:, at : at + take]
            self._energy += np.einsum("cn,cn->c", part, part)
            self._filled += take
            at += take
            if self._filled == self._hop:
                power = float(self._weights @ self._energy) / self._hop
                start = self._anchor_t + self._since_anchor * self._hop / self._rate
                self._energy[:] = 0.0
                self._filled = 0
                self._since_anchor += 1
                findings += self._subblock(power, start)
        return findings

    def _reset(self, channels: int, rate: int) -> None:
        self._layout = (channels, rate)
        self._rate = rate
        self._b, self._a = k_weighting_filter(rate)
        self._zi = np.zeros((channels, 4))
        self._weights = channel_weights(channels)
        self._hop = max(1, round(SUBBLOCK_S * rate))
        self._buffer = np.zeros((channels, 2 * self._hop), np.float32)
        self._fill = 0
        self._energy = np.zeros(channels)
        self._filled = 0
        self._next_t = None
        self._powers.clear()
        self._starts.clear()
        self._state = None
        self.momentary_lufs = self.short_term_lufs = None

    def _subblock(self, power: float, start: float) -> list[Finding]:
        """Take one finished 100 ms sub-block: update the meters, then judge short-term loudness."""
        self._count += 1
        self._powers.append(power)
        self._starts.append(start)
        if len(self._powers) > SHORT_TERM_SUBBLOCKS + LOOKBACK_SUBBLOCKS:
            del self._powers[0], self._starts[0]
        if self._excursion is not None:
            self._excursion.energy += power
            self._excursion.count += 1
        if len(self._powers) >= MOMENTARY_SUBBLOCKS:
            momentary = math.fsum(self._powers[-MOMENTARY_SUBBLOCKS:]) / MOMENTARY_SUBBLOCKS
            self.momentary_lufs = lufs(momentary)
            self.histogram.add(momentary)
        if len(self._powers) < SHORT_TERM_SUBBLOCKS:
            return []
        short_term = lufs(math.fsum(self._powers[-SHORT_TERM_SUBBLOCKS:]) / SHORT_TERM_SUBBLOCKS)
        self.short_term_lufs = short_term
        return self._judge(short_term)

    def _classify(self, short_term: float) -> str:
        opts = self.options
        if short_term > opts.target + opts.tolerance:
            return LOUD
        quiet = opts.floor_lufs <= short_term < opts.target - opts.tolerance
        return QUIET if quiet and self.ctx.audio_silent_since is None else IN_RANGE

    def _judge(self, short_term: float) -> list[Finding]:
        """Advance the excursion with the short-term value of the window just completed."""
        opts = self.options
        state = self._classify(short_term)
        previous, self._state = self._state, state
        findings: list[Finding] = []
        run = self._excursion
        if run is not None:
            if state == run.kind:
                run.end = None  # only a short return into range: the excursion goes on
                run.worst = max(run.worst, abs(short_term - opts.target))
                # A window out of range holds some of the excursion, so it lasts at least until
                # the window's start; once that is d after its start, it is a defect.
                window = len(self._powers) - SHORT_TERM_SUBBLOCKS
                if not run.open and self._starts[window] - run.start >= opts.d - DURATION_SLACK_S:
                    run.open = True
                    run.min_end_index = self._first_index + window
                    findings.append(self._finding(run, None))
                return findings
            if run.end is None:
                run.end = self._end_of(run, short_term)
                run.back = self._count
            if state == IN_RANGE and self._count - run.back < self._gap:
                return findings  # it may yet go out again
            findings += self._finish(run)
        if state == IN_RANGE:
            return findings
        # A new excursion: it starts at the step in this window, not before the last one ended.
        first = self._last_end_index - self._first_index
        k = self._onset(rising=state == LOUD, first=first)
        if previous is None and first < 1:
            # No earlier value says the audio was in range: it was only if the part before the
            # step is; otherwise the excursion started before this window.
            before = self._powers[:k]
            if self._classify(lufs(math.fsum(before) / len(before))) == state:
                k = 0
        self._excursion = _Excursion(
            state,
            self._step_time(k) if k > 0 else self._starts[k],
            self._first_index + k,
            math.fsum(self._powers[k:]),
            len(self._powers) - k,
        )
        self._excursion.worst = abs(short_term - opts.target)
        return findings

    @property
    def _first_index(self) -> int:
        """Number of the first sub-block kept (in ``_powers``)."""
        return self._count - len(self._powers)

    def _onset(self, rising: bool, first: int, gated: bool = True) -> int:
        """Index (``max(first, 1)``.. in ``_powers``) of the first sub-block after the best step
        up (``rising``) or down. ``gated``: pauses, sub-blocks more than ``GATE_LU`` under the
        median, are left out (a long quiet stretch is the median or close to it, and stays)."""
        levels = np.maximum(lufs_array(np.array(self._powers)), self.options.floor_lufs)
        gate = float(np.median(levels)) - GATE_LU if gated else -math.inf
        return step_onset(levels, rising, first=max(1, first), gate=gate)

    def _step_time(self, k: int) -> float:
        """When the level stepped, for a step found just before sub-block ``k``, to better than a
        sub-block: a change inside sub-block ``k - 1`` or ``k`` leaves it a mix of the two levels,
        and power mixes linearly, so its power tells what share of it still had the old level.
        The levels either side are the medians of up to ``STEP_LEVEL_SUBBLOCKS`` sub-blocks
        beyond the two; without a clear step (or enough sub-blocks) it is ``k``'s start."""
        powers, starts = self._powers, self._starts
        hop_s = self._hop / self._rate
        if not 2 <= k <= len(powers) - 2 or abs(starts[k] - starts[k - 1] - hop_s) > 1e-6:
            return starts[k]
        new = statistics.median(powers[k + 1 : k + 1 + STEP_LEVEL_SUBBLOCKS])
        if new > 0.0 and lufs(powers[k - 1]) < lufs(new) - GATE_LU:
            # Out of a pause: the new level begins inside sub-block k, after the pause's share.
            return starts[k] + (1.0 - min(1.0, powers[k] / new)) * hop_s
        old = statistics.median(powers[max(0, k - 1 - STEP_LEVEL_SUBBLOCKS) : k - 1])
        if not (old > 0.0 and new > 0.0) or abs(lufs(old) - lufs(new)) < STEP_MIN_LU:
            return starts[k]
        share = sum(min(1.0, max(0.0, (powers[j] - new) / (old - new))) for j in (k - 1, k))
        return starts[k - 1] + share * hop_s

    def _end_of(self, run: _Excursion, short_term: float) -> tuple[float, int, float, int]:
        """Where ``run`` ends, now that short-term loudness has left its direction."""
        first = max(1, run.min_end_index - self._first_index)
        silent_since = self.ctx.audio_silent_since
        refine = True
        if run.kind == QUIET and silent_since is not None:
            # Quiet until silent: it ends where the silence detector says the silence began.
            k = max(first, bisect.bisect_left(self._starts, silent_since))
            refine = False
        elif short_term < self.options.floor_lufs:
            # Into silence the silence detector did not (yet) report: the step down is the
            # silence itself, which a gate would leave out of the fit.
            k = self._onset(rising=False, first=first, gated=False)
        else:
            k = self._onset(rising=run.kind == QUIET, first=first)
        k = min(k, len(self._powers) - 1)
        after = len(self._powers) - k
        return (
            self._step_time(k) if refine else self._starts[k],
            self._first_index + k,
            run.energy - math.fsum(self._powers[k:]),
            run.count - after,
        )

    def _finish(self, run: _Excursion) -> list[Finding]:
        """Report ``run`` as ended where :meth:`_end_of` placed it."""
        assert run.end is not None
        self._excursion = None
        end, self._last_end_index, run.energy, run.count = run.end
        return self._report(run, end)

    def _end(self, t_end: float) -> list[Finding]:
        """End the current excursion at ``t_end`` (the end of the media or of a layout), or where
        it went back in range if it has."""
        run = self._excursion
        if run is None:
            return []
        if run.end is not None:
            return self._finish(run)
        self._excursion = None
        self._last_end_index = self._count
        return self._report(run, t_end)

    def _report(self, run: _Excursion, end: float) -> list[Finding]:
        """The findings for an excursion that ended at ``end`` (none if shorter than ``d``)."""
        if not run.open and end - run.start < self.options.d - DURATION_SLACK_S:
            return []
        findings = [] if run.open else [self._finding(run, None)]
        return [*findings, self._finding(run, max(end, run.start))]

    def _finding(self, run: _Excursion, end_s: float | None) -> Finding:
        opts = self.options
        metrics = {
            "lufs": lufs(run.energy / run.count) if run.count > 0 else FLOOR_LUFS,
            "integrated_lufs": self.integrated_lufs,
            "target_lufs": opts.target,
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - run.start
        critical = run.worst > 2 * opts.tolerance
        return Finding(
            type=self.name,
            start_s=run.start,
            end_s=end_s,
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            metrics=metrics,
            key=run.kind,
        )
