"""The stereo checks of a broadcast monitor on the front pair: phase inversion and stereo collapsed.

The front left and right channels (``FL`` and ``FR`` by the block's layout names, so the front
pair of a 5.1 or 7.1 programme too; the first two channels of an unnamed layout) are cut into
windows of ``WINDOW_S``; per window the detectors take the energies ``Σ L²``, ``Σ R²`` and the
cross term ``Σ L·R``, and from them

* the *correlation* ``Σ L·R / sqrt(Σ L² Σ R²)`` (+1: the same signal, 0: unrelated, -1: one
  channel the other's negative): what a phase-correlation meter shows;
* the *side-to-mid ratio* ``Σ (L − R)² / Σ (L + R)²`` in dB: how much of the pair is stereo.

A window is judged only when both channels are audible (RMS at least ``floor_db``): a silent or
dead channel is the silence detector's. Two defects, one detector each:

* ``phase_inversion``: correlation at most ``max_correlation`` (-0.5). One channel's polarity is
  reversed (a miswired cable, a wrong patch), so the mono downmix, which many viewers hear
  (television speakers, phones, mono radio), cancels: by ``10 log10((1 + r) / 2)`` dB, so 6 dB at
  r = -0.5 and all of the dialogue, which is panned to the centre, near -1. Programme stereo stays
  well above: wide reverb and out-of-phase effects go below zero only for moments. Severity is
  ``critical`` when the correlation over the defect is at most -0.9 (the downmix loses more than
  13 dB), else ``warning``.
* ``stereo_collapsed``: side-to-mid ratio at most ``collapsed_db`` (-40 dB): the two channels
  carry the same signal (dual mono: a stereo feed lost upstream, a mono source routed to both
  channels). A warning: a mono programme is legitimate, but on a channel that is meant to be
  stereo it is a fault. AAC's mid/side coding keeps a dual-mono pair identical (side -inf dB);
  real stereo programme measures -6 to -25 dB, centre-panned dialogue with room -20 to -30 dB.

Like clipping, flagged windows make a segment while no stretch of unflagged (or unjudged)
windows in between exceeds ``gap_s``; it becomes a defect once its flagged windows add up to
``d``. It starts at the start of its first flagged window and ends at the end of its last.
Metrics: ``correlation`` and ``side_mid_db`` over the flagged windows (energy-weighted) and, on
close, ``duration_s``; ``Finding.channels`` names the pair.

Times are media seconds counted in samples from ``AudioBlock.t``; a block that does not continue
the previous one within half a window ends any segment and restarts the window grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from shared.models import DefectType
from worker.detectors.base import AudioBlock, Detector, Finding, Severity, StreamContext
from worker.detectors.options import DetectorOptions, opt

WINDOW_S = 0.2  # analysis window, s: the boundary resolution
BATCH_S = 0.4  # audio gathered before it is measured (numpy's per-call cost)
FRONT = ("FL", "FR")
FLOOR_DB = -150.0  # reported instead of -inf
CRITICAL_CORRELATION = -0.9  # phase inversion this complete makes the mono downmix lose > 13 dB
_EPS = 1e-9


# A window whose side signal is no more than this far under its mid is stereo: a stream that had
# such windows and then collapses to dual mono is reported; one that never had any is mono by
# production.
STEREO_HEARD_DB = -25.0


@dataclass(frozen=True, slots=True)
class StereoOptions(DetectorOptions):
    """Options of the ``phase_inversion`` and ``stereo_collapsed`` detectors."""

    max_correlation: float = opt(
        -0.5, "-", "a window at or below this correlation is phase-inverted", ge=-1.0, le=0.0
    )
    collapsed_db: float = opt(
        -40.0, "dB", "a window whose side is at least this far under its mid is collapsed (dual mono)",
        ge=-120.0, le=0.0,
    )
    floor_db: float = opt(
        -50.0, "dBFS", "windows where either channel's RMS is under this are not judged", ge=-150.0, le=0.0
    )
    d: float = opt(3.0, "s", "flagged time that makes phase_inversion", ge=0.0)
    collapsed_d: float = opt(10.0, "s", "flagged time that makes stereo_collapsed", ge=0.0)
    gap_s: float = opt(1.0, "s", "longest unflagged stretch inside a segment", ge=0.0, le=10.0)


def pair_sums(
    left: npt.NDArray[np.float32], right: npt.NDArray[np.float32], window: int
) -> npt.NDArray[np.float64]:
    """(3, n // window): ``Σ L²``, ``Σ R²`` and ``Σ L·R`` of every whole window of ``window``
    samples of the two (n,) channels (full scale 1.0)."""
    windows = left.size // window
    pair = np.stack((left[: windows * window], right[: windows * window])).reshape(2, windows, window)
    sums: npt.NDArray[np.float64] = np.empty((3, windows), np.float64)
    # Summed in float32 (einsum with a float64 dtype casts every sample first: 60 times slower,
    # as in silence.hop_energies); a window's sums keep about 1e-7 of their own value, so the
    # side of a pair sits at least 70 dB under its mid only when it is that small (or exactly
    # zero: identical channels give identical sums), far past collapsed_db's -40 dB.
    sums[:2] = np.einsum("cwk,cwk->cw", pair, pair)
    sums[2] = np.einsum("wk,wk->w", pair[0], pair[1])
    return sums


def correlation(ll: float, rr: float, lr: float) -> float:
    """Correlation (-1..1) of a pair from its sums; 0 when either channel is silent."""
    if ll <= 0.0 or rr <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, lr / math.sqrt(ll * rr)))


def side_mid_db(ll: float, rr: float, lr: float) -> float:
    """``10 log10(Σ (L − R)² / Σ (L + R)²)`` from a pair's sums, floored at FLOOR_DB (and
    capped at +150 dB when the mid cancels completely)."""
    side, mid = max(ll + rr - 2.0 * lr, 0.0), max(ll + rr + 2.0 * lr, 0.0)
    if side <= 0.0:
        return FLOOR_DB
    if mid <= 0.0:
        return -FLOOR_DB
    return max(10.0 * math.log10(side / mid), FLOOR_DB)


class _Segment:
    __slots__ = ("flagged_s", "last_end", "ll", "lr", "open", "rr", "start")

    def __init__(self, start: float) -> None:
        self.start = start  # start of the first flagged window, s
        self.last_end = start  # end of the last flagged window, s
        self.flagged_s = 0.0
        self.ll = self.rr = self.lr = 0.0  # sums over the flagged windows
        self.open = False


class _FrontPairDetector(Detector):
    """Windows of the front pair, flagged by :meth:`_flags`, grown into segments."""

    Options: ClassVar[type[StereoOptions]] = StereoOptions
    options: StereoOptions

    def __init__(self, options: StereoOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self._pair: tuple[int, int] | None = None  # rows of FL and FR in the current layout
        self._layout: tuple[int, int, tuple[str, ...]] | None = None
        self._window = 0
        self._window_s = 0.0
        self._batch = 1  # samples gathered before they are measured
        self._queue: list[npt.NDArray[np.float32]] = []  # (2, n) front pairs not yet measured
        self._queued = 0
        self._anchor_t = 0.0  # media time of the first sample of the window grid, s
        self._measured = 0  # samples measured since then
        self._next_t: float | None = None
        self._floor = 0.0  # sum of squares per window under which a channel is not judged
        self._segment: _Segment | None = None

    @property
    def _minimum_s(self) -> float:
        return self.options.d

    def _flags(self, sums: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        raise NotImplementedError

    def _severity(self, segment: _Segment) -> Severity:
        return Severity.WARNING

    def feed_audio(self, block: AudioBlock) -> list[Finding]:
        samples = block.samples
        if samples.ndim != 2 or samples.shape[1] == 0 or block.rate <= 0:
            return []
        findings: list[Finding] = []
        layout = (samples.shape[0], block.rate, block.names)
        if layout != self._layout:
            findings += self._drain() + self._close()
            self._reset(layout)
        if self._pair is None:
            return findings
        if self._next_t is None or abs(block.t - self._next_t) > self._window_s / 2:
            findings += self._drain() + self._close()
            self._anchor_t, self._measured = block.t, 0
        self._next_t = block.t + samples.shape[1] / block.rate
        left, right = self._pair
        self._queue.append(samples[[left, right]])
        self._queued += samples.shape[1]
        if self._queued >= self._batch:
            findings += self._drain(whole_only=True)
        return findings

    def flush(self, t_end: float) -> list[Finding]:
        findings = self._drain() + self._close()
        self._next_t = None
        return findings

    def _reset(self, layout: tuple[int, int, tuple[str, ...]]) -> None:
        channels, rate, names = layout
        self._layout = layout
        if channels < 2:
            self._pair = None
        elif FRONT[0] in names and FRONT[1] in names:
            self._pair = (names.index(FRONT[0]), names.index(FRONT[1]))
        else:
            self._pair = (0, 1)
        self._window = max(1, round(WINDOW_S * rate))
        self._window_s = self._window / rate
        self._batch = max(self._window, round(BATCH_S * rate))
        self._floor = 10.0 ** (self.options.floor_db / 10.0) * self._window
        self._queue, self._queued = [], 0
        self._next_t = None
        self._segment = None

    def _drain(self, whole_only: bool = False) -> list[Finding]:
        """Measure the queued windows (with ``whole_only``, keep a partial last one queued)."""
        if not self._queue:
            return []
        signal = self._queue[0] if len(self._queue) == 1 else np.concatenate(self._queue, axis=1)
        whole = signal.shape[1] // self._window * self._window
        rest = signal[:, whole:] if whole_only else signal[:, :0]
        self._queue, self._queued = ([rest], rest.shape[1]) if rest.shape[1] else ([], 0)
        if whole == 0:
            return []
        sums = pair_sums(signal[0, :whole], signal[1, :whole], self._window)
        starts = self._anchor_t + (self._measured + self._window * np.arange(sums.shape[1])) / self._rate_hz
        self._measured += whole
        judged = (sums[0] >= self._floor) & (sums[1] >= self._floor)
        flagged = judged & self._flags(sums)
        if self._segment is None and not flagged.any():
            return []
        return self._track(starts, flagged, sums)

    @property
    def _rate_hz(self) -> int:
        assert self._layout is not None
        return self._layout[1]

    def _track(
        self, starts: npt.NDArray[np.float64], flagged: npt.NDArray[np.bool_], sums: npt.NDArray[np.float64]
    ) -> list[Finding]:
        findings: list[Finding] = []
        gap_s, duration = self.options.gap_s, self._window_s
        for j, start in enumerate(starts.tolist()):
            seg = self._segment
            if not flagged[j]:
                if seg is not None and start + duration - seg.last_end > gap_s + _EPS:
                    findings += self._close()
                continue
            if seg is not None and start - seg.last_end > gap_s + _EPS:
                findings += self._close()
                seg = None
            if seg is None:
                seg = self._segment = _Segment(start)
            seg.last_end = start + duration
            seg.flagged_s += duration
            seg.ll += float(sums[0, j])
            seg.rr += float(sums[1, j])
            seg.lr += float(sums[2, j])
            if not seg.open and seg.flagged_s >= self._minimum_s - _EPS:
                seg.open = True
                findings.append(self._finding(seg, None))
        return findings

    def _close(self) -> list[Finding]:
        seg, self._segment = self._segment, None
        if seg is None or not seg.open:
            return []
        return [self._finding(seg, seg.last_end)]

    def _finding(self, seg: _Segment, end_s: float | None) -> Finding:
        metrics = {
            "correlation": correlation(seg.ll, seg.rr, seg.lr),
            "side_mid_db": side_mid_db(seg.ll, seg.rr, seg.lr),
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - seg.start
        assert self._layout is not None and self._pair is not None
        names = self._layout[2]
        return Finding(
            type=self.name,
            start_s=seg.start,
            end_s=end_s,
            severity=self._severity(seg),
            metrics=metrics,
            channels=(names[self._pair[0]], names[self._pair[1]]),
        )


class PhaseInversionDetector(_FrontPairDetector):
    """Reports a front pair in antiphase (the mono downmix cancels) for at least ``d``."""

    name: ClassVar[DefectType] = DefectType.PHASE_INVERSION

    def _flags(self, sums: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        # lr <= c * sqrt(ll * rr), for c <= 0: no division, silent windows are not judged anyway.
        flagged: npt.NDArray[np.bool_] = sums[2] <= self.options.max_correlation * np.sqrt(sums[0] * sums[1])
        return flagged

    def _severity(self, segment: _Segment) -> Severity:
        r = correlation(segment.ll, segment.rr, segment.lr)
        return Severity.CRITICAL if r <= CRITICAL_CORRELATION else Severity.WARNING


class StereoCollapsedDetector(_FrontPairDetector):
    """Reports a front pair that carried stereo and then one signal (dual mono) for at least
    ``collapsed_d``. A programme dual mono from the start (a mono source, as much news and talk
    is) is how it is produced, not a fault: it is never reported; stereo that collapses is (a
    mixer or an encoder that fell back to mono)."""

    name: ClassVar[DefectType] = DefectType.STEREO_COLLAPSED

    def __init__(self, options: StereoOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self._heard_stereo = False

    @property
    def _minimum_s(self) -> float:
        return self.options.collapsed_d

    def _flags(self, sums: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        side = sums[0] + sums[1] - 2.0 * sums[2]
        mid = sums[0] + sums[1] + 2.0 * sums[2]
        flagged: npt.NDArray[np.bool_] = side <= 10.0 ** (self.options.collapsed_db / 10.0) * mid
        # Stereo heard: a window whose side is within STEREO_HEARD_DB of its mid.
        stereo = (mid > 0.0) & (side >= 10.0 ** (STEREO_HEARD_DB / 10.0) * mid)
        heard = np.logical_or.accumulate(stereo) | self._heard_stereo
        if heard.size:
            self._heard_stereo = bool(heard[-1])
        return flagged & heard
