"""Clipping detection that survives lossy coding: dense near-full-scale windows and true peak.

"N consecutive samples at exactly ±1.0" finds clipping in PCM but not in what a monitor sees:
after AAC (or any transform codec) a hard-clipped passage has no flat tops. The codec drops the
high-frequency part of the square-ish waveform, so decoded peaks overshoot full scale (1.1-1.6
measured at 128 kbit/s) and ring; hardly two neighbouring samples are equal. What survives is
*density*: a clipped passage keeps putting many samples near the rails, while clean programme,
even mastered loud, touches them only at a few transients. So the signal is cut into windows of
``window_s`` and each window is measured on all channels:

* ``clipped_ratio``: the fraction of the window's samples with ``|x| >= level`` (in the worst
  channel). Measured on AAC-coded music hard-clipped after +20 dB gain: 1-20 % of samples per
  50 ms window, against 0 % for the same music peaking at -0.5 dBFS;
* the *true peak*, per ITU-R BS.1770-4 Annex 2 (as EBU R128 requires it; :mod:`worker.bs1770`):
  the signal is oversampled 4x and the largest magnitude is taken (never less than the sample
  peak). Over ``tp_dbtp`` (-1 dBTP, the R128 ceiling) the window is "over".

A window is *flagged* when ``clipped_ratio >= ratio`` or its true peak is over ``tp_dbtp``. A
segment is a run of flagged windows in which no unflagged stretch exceeds ``gap_s``, so that a hot
master clipping on every beat, or clipped notes that decay in between, make one segment. It starts
at the start of its first flagged window and ends at the end of its last one, so both boundaries
are within one window (50 ms) of the truth, plus the codec's pre-echo. It becomes a defect once
its *flagged* windows add up to ``d``: gaps do not count, so a few isolated loud transients do not
make a segment, and a brief loud passage gives at most a segment as brief as itself.

Severity is ``warning``; ``critical`` once the windows flagged by ``clipped_ratio`` (audible
distortion, not merely a true peak over the R128 ceiling) add up to ``critical_s``. A close
finding carries the severity reached. Metrics: ``peak_dbfs`` (largest sample magnitude),
``true_peak_dbtp``, ``clipped_ratio`` (clipped samples / samples over the whole segment, gaps
included, worst channel per window) and, on close, ``duration_s``. A segment is judged over all
channels at once (one defect, key ``""``); ``Finding.channels`` names, by the block's layout
(FL, FR, FC, LFE...), every channel that had a flagged window in it (DESIGN.md §4:
``metrics.channels``).

Cost. The ratio and sample peak are one pass over the samples. The 4x interpolation (48
multiply-adds per sample and channel) is computed only for the intervals next to a sample at most
``TRUE_PEAK_GATE_DB`` (6 dB) below the lower of ``level`` and ``tp_dbtp``: an intersample peak
more than 6 dB above both neighbouring samples takes a contrived waveform, so programme at normal
level skips most of it. An interpolated value belongs to the window of its nearer sample; a window
is measured once the 6 samples after it, which its last interpolations need, have arrived.

Samples are measured in batches of ``BATCH_S`` (0.2 s), so findings come up to 0.2 s after the
audio that makes them. Times are media seconds counted in samples from ``AudioBlock.t`` (the time
of the block's first sample). A block that does not continue the previous one within half a window
ends any segment at its last flagged window and restarts the window grid at its own timestamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from shared.models import DefectType
from worker.bs1770 import HISTORY, LOOKAHEAD, channel_true_peak_windows
from worker.detectors.base import AudioBlock, Detector, Finding, Severity, StreamContext
from worker.detectors.loudness import loudness_profile
from worker.detectors.options import DetectorOptions, opt

FLOOR_DB = -150.0  # reported for digital zero instead of -inf
TRUE_PEAK_GATE_DB = 6.0  # interpolate only around samples this close to a threshold, dB
BATCH_S = 0.2  # audio measured per call: numpy's per-call overhead outweighs one 50 ms window
_EPS = 1e-9  # s: float slack in duration comparisons


@dataclass(frozen=True, slots=True)
class ClippingOptions(DetectorOptions):
    """Options of the ``clipping`` detector."""

    level: float = opt(
        0.98, "FS", "a sample at or above this magnitude (-0.18 dBFS) counts as clipped (full scale 1.0)",
        gt=0.0, le=2.0,
    )
    ratio: float = opt(
        0.01, "-", "a window is clipped when this fraction of its samples, in some channel, is at `level`",
        gt=0.0, le=1.0,
    )
    tp_dbtp: float = opt(
        -1.0, "dBTP", "a window whose true peak is above this is over (EBU R128 ceiling); `inf` turns it off",
        ge=-20.0, le=math.inf,
    )
    window_s: float = opt(0.05, "s", "measurement window: the boundary resolution", ge=0.005, le=1.0)
    d: float = opt(0.2, "s", "minimum flagged time of a segment (gaps do not count)", ge=0.0)
    gap_s: float = opt(0.5, "s", "longest unflagged stretch inside a segment", ge=0.0, le=10.0)
    critical_s: float = opt(1.0, "s", "clipped (not merely over) time that makes a segment critical", ge=0.0)

    @classmethod
    def for_profile(cls, name: str, **changes: float) -> ClippingOptions:
        """The options for loudness profile ``name`` (``ebu_r128``: -1 dBTP, ``atsc_a85``: -2
        dBTP), with ``changes`` to any other option."""
        return cls(**{"tp_dbtp": loudness_profile(name).true_peak_dbtp, **changes})


def db(amplitude: float) -> float:
    """Magnitude (full scale 1.0) in dB (dBFS, or dBTP for a true peak), floored at FLOOR_DB."""
    if amplitude <= 0.0:
        return FLOOR_DB
    return max(20.0 * math.log10(amplitude), FLOOR_DB)


def channel_window_levels(
    samples: npt.NDArray[np.float32], window: int, level: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """Clipped ratio and sample peak of every whole window of ``window`` samples, per channel.

    ``samples`` is (channels, n) float32, full scale ±1.0. Returns two (channels, n // window)
    arrays: the fraction (0..1) of the window's samples with ``|x| >= level``, and the largest
    ``|x|`` (full scale 1.0).
    """
    channels, n = samples.shape
    windows = n // window
    whole = samples[:, : windows * window].reshape(channels, windows, window)
    # The peak from the largest and the smallest sample (two reductions, no |x| array), and
    # clipped samples counted only in windows that reach the level: almost never, on programme.
    peak: npt.NDArray[np.float32] = np.maximum(
        whole.max(axis=2, initial=0.0), -whole.min(axis=2, initial=0.0)
    )
    clipped = np.zeros((channels, windows), np.float64)
    loud = peak >= level
    if loud.any():
        clipped[loud] = np.count_nonzero(np.abs(whole[loud]) >= level, axis=1)
    return clipped / float(window), peak


def window_levels(
    samples: npt.NDArray[np.float32], window: int, level: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """Clipped ratio and sample peak of every whole window of ``window`` samples.

    ``samples`` is (channels, n) float32, full scale ±1.0. Returns two (n // window,) arrays: the
    fraction (0..1) of the window's samples with ``|x| >= level`` in its worst channel, and the
    largest ``|x|`` over all channels (full scale 1.0).
    """
    ratio, peak = channel_window_levels(samples, window, level)
    return ratio.max(axis=0, initial=0.0), peak.max(axis=0, initial=0.0)


class _Segment:
    """A run of flagged windows, gaps of at most ``gap_s`` included."""

    __slots__ = (
        "channels", "clipped_s", "flagged_s", "gap_clipped_s", "hard_s", "last_end", "open", "peak",
        "start", "tp",
    )  # fmt: skip

    def __init__(self, start: float, channels: int) -> None:
        self.start = start  # start of the first flagged window, s
        self.last_end = start  # end of the last flagged window, s
        self.flagged_s = 0.0  # time of flagged windows, s
        self.hard_s = 0.0  # time of windows flagged by the clipped ratio, s
        self.clipped_s = 0.0  # sum of ratio * window duration up to last_end, s
        self.gap_clipped_s = 0.0  # the same for the unflagged windows after last_end
        self.peak = 0.0  # sample peak of the flagged windows, full scale 1.0
        self.tp = 0.0  # true peak of the flagged windows, full scale 1.0
        self.open = False  # an open finding has been emitted
        self.channels = np.zeros(channels, np.bool_)  # channels with a flagged window in it


class ClippingDetector(Detector):
    """Reports segments of clipped or over-peak audio lasting at least ``d`` (warning/critical)."""

    name: ClassVar[DefectType] = DefectType.CLIPPING
    Options: ClassVar[type[ClippingOptions]] = ClippingOptions
    options: ClippingOptions

    def __init__(self, options: ClippingOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        opts = self.options
        self._tp_limit = 10.0 ** (opts.tp_dbtp / 20.0) if math.isfinite(opts.tp_dbtp) else math.inf
        self._gate = min(opts.level, self._tp_limit) * 10.0 ** (-TRUE_PEAK_GATE_DB / 20.0)
        self._layout: tuple[int, int] | None = None  # (channels, rate) the state below is for
        self._names: tuple[str, ...] = ()  # the layout's channel names
        self._window = 0  # samples per window
        self._window_s = 0.0  # exact window duration at this rate, s
        self._rate = 0
        self._batch = 1  # windows measured per call
        self._buffer = np.zeros((0, 0), np.float32)  # samples not measured yet, in [:, :_fill]
        self._fill = 0
        self._anchor_t = 0.0  # media time of the first sample since the grid was (re)started, s
        self._measured = 0  # samples measured since then: times are counted in samples, no drift
        self._history = np.zeros((0, HISTORY), np.float32)  # the last samples measured, for the FIR
        self._next_t: float | None = None  # media time of the sample expected next, s
        self._segment: _Segment | None = None

    # -- feeding -------------------------------------------------------------------------------

    def feed_audio(self, block: AudioBlock) -> list[Finding]:
        samples = block.samples
        if samples.ndim != 2 or samples.shape[1] == 0 or block.rate <= 0:
            return []
        findings: list[Finding] = []
        if self._layout != (samples.shape[0], block.rate) or (
            block.channels and block.channels != self._names
        ):
            findings += self._close()
            self._reset(samples.shape[0], block.rate)
            self._names = block.names
        if self._next_t is None or abs(block.t - self._next_t) > self._window_s / 2:
            # A gap or overlap in the timestamps: a segment cannot extend across it, and the
            # window grid follows the stream's clock again.
            findings += self._drain()
            findings += self._close()
            self._anchor_t = block.t
            self._measured = 0
            self._history = np.zeros_like(self._history)
        self._next_t = block.t + samples.shape[1] / block.rate

        self._append(samples)
        # A window is measured once the samples its last interpolation needs have arrived.
        windows = max(0, self._fill - LOOKAHEAD) // self._window
        if windows < self._batch:
            return findings
        whole = windows * self._window
        findings += self._measure(self._buffer[:, : whole + LOOKAHEAD], self._window)
        rest = self._fill - whole
        self._buffer[:, :rest] = self._buffer[:, whole : self._fill]
        self._fill = rest
        return findings

    def flush(self, t_end: float) -> list[Finding]:
        findings = self._drain()
        findings += self._close()
        self._next_t = None
        return findings

    # -- state ---------------------------------------------------------------------------------

    def _reset(self, channels: int, rate: int) -> None:
        self._layout = (channels, rate)
        self._rate = rate
        self._window = max(1, round(self.options.window_s * rate))
        self._window_s = self._window / rate
        self._batch = max(1, round(BATCH_S / self._window_s))
        self._buffer = np.zeros((channels, (self._batch + 1) * self._window + LOOKAHEAD), np.float32)
        self._fill = 0
        self._history = np.zeros((channels, HISTORY), np.float32)
        self._next_t = None
        self._segment = None

    def _append(self, samples: npt.NDArray[np.float32]) -> None:
        """Copy ``samples`` (channels, n) after the buffered ones, growing the buffer if needed."""
        end = self._fill + samples.shape[1]
        if end > self._buffer.shape[1]:
            grown = np.zeros((samples.shape[0], 2 * end), np.float32)
            grown[:, : self._fill] = self._buffer[:, : self._fill]
            self._buffer = grown
        self._buffer[:, self._fill : end] = samples
        self._fill = end

    def _drain(self) -> list[Finding]:
        """Measure everything buffered, as if silence followed (the end, or a discontinuity);
        the last, partial window counts for what it holds."""
        n, window = self._fill, self._window
        if n == 0:
            return []
        self._fill = 0
        signal = np.concatenate(
            (self._buffer[:, :n], np.zeros((self._buffer.shape[0], LOOKAHEAD), np.float32)), axis=1
        )
        whole = n // window * window
        findings = self._measure(signal[:, : whole + LOOKAHEAD], window) if whole else []
        if n > whole:
            findings += self._measure(signal[:, whole:], n - whole)
        return findings

    def _measure(self, signal: npt.NDArray[np.float32], window: int) -> list[Finding]:
        """Measure the k windows of ``signal`` (channels, k * window + LOOKAHEAD), the samples
        following the history, and advance the segment over them."""
        opts = self.options
        n = signal.shape[1] - LOOKAHEAD
        channel_ratio, channel_peak = channel_window_levels(signal[:, :n], window, opts.level)
        history = self._history
        self._history = (
            signal[:, n - HISTORY : n].copy()
            if n >= HISTORY
            else (np.concatenate((history, signal[:, :n]), axis=1)[:, -HISTORY:])
        )  # the last HISTORY samples before the lookahead
        # Near the gate anywhere the interpolation reads (the history, the windows, the
        # lookahead)? Judged from the window peaks, without a copy of the signal.
        near = float(channel_peak.max(initial=0.0)) >= self._gate or (
            max(float(np.abs(history).max(initial=0.0)), float(np.abs(signal[:, n:]).max(initial=0.0)))
            >= self._gate
        )
        if near:
            x = np.concatenate((history, signal), axis=1)
            channel_tp = np.maximum(channel_true_peak_windows(x, window, self._gate), channel_peak)
        else:
            channel_tp = channel_peak.astype(np.float64)  # nothing near a threshold: the sample peak will do
        channel_flagged: npt.NDArray[np.bool_] = np.asarray(
            (channel_ratio >= opts.ratio) | (channel_tp > self._tp_limit)
        )
        flagged = np.asarray(channel_flagged.any(axis=0))
        starts = self._anchor_t + (self._measured + window * np.arange(flagged.size)) / self._rate
        self._measured += n
        if self._segment is None and not flagged.any():
            return []  # the common case: clean audio, nothing running
        ratio = channel_ratio.max(axis=0)
        hard = ratio >= opts.ratio
        peak, tp = channel_peak.max(axis=0), channel_tp.max(axis=0)
        return self._track(window / self._rate, starts, flagged, hard, ratio, peak, tp, channel_flagged)

    def _track(
        self,
        duration: float,
        starts: npt.NDArray[np.float64],
        flagged: npt.NDArray[np.bool_],
        hard: npt.NDArray[np.bool_],
        ratio: npt.NDArray[np.float64],
        peak: npt.NDArray[np.float32],
        tp: npt.NDArray[np.float64],
        channel_flagged: npt.NDArray[np.bool_],
    ) -> list[Finding]:
        """Advance the segment over consecutive windows of ``duration`` seconds starting at
        ``starts``; ``channel_flagged`` is (channels, windows), the rest (windows,)."""
        opts = self.options
        findings: list[Finding] = []
        for j, start in enumerate(starts.tolist()):
            end = start + duration
            seg = self._segment
            if not flagged[j]:
                if seg is None:
                    continue
                if end - seg.last_end > opts.gap_s + _EPS:
                    findings += self._close()
                else:
                    seg.gap_clipped_s += float(ratio[j]) * duration
                continue
            if seg is not None and start - seg.last_end > opts.gap_s + _EPS:
                findings += self._close()
                seg = None
            if seg is None:
                seg = self._segment = _Segment(start, channel_flagged.shape[0])
            seg.channels |= channel_flagged[:, j]
            seg.clipped_s += seg.gap_clipped_s + float(ratio[j]) * duration
            seg.gap_clipped_s = 0.0
            seg.last_end = end
            seg.flagged_s += duration
            seg.hard_s += duration if hard[j] else 0.0
            seg.peak = max(seg.peak, float(peak[j]))
            seg.tp = max(seg.tp, float(tp[j]))
            if not seg.open and seg.flagged_s >= opts.d - _EPS:
                seg.open = True
                findings.append(self._finding(seg, None))
        return findings

    def _close(self) -> list[Finding]:
        """End the segment at its last flagged window (nothing if it never became a defect)."""
        seg = self._segment
        self._segment = None
        if seg is None:
            return []
        findings: list[Finding] = []
        if not seg.open and seg.flagged_s >= self.options.d - _EPS:
            findings.append(self._finding(seg, None))  # long enough only with its last window
            seg.open = True
        if seg.open:
            findings.append(self._finding(seg, seg.last_end))
        return findings

    def _finding(self, seg: _Segment, end_s: float | None) -> Finding:
        span = seg.last_end - seg.start
        metrics = {
            "peak_dbfs": db(seg.peak),
            "true_peak_dbtp": db(seg.tp),
            "clipped_ratio": seg.clipped_s / span if span > 0 else 0.0,
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - seg.start
        critical = seg.hard_s >= self.options.critical_s - _EPS
        return Finding(
            type=self.name,
            start_s=seg.start,
            end_s=end_s,
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            metrics=metrics,
            channels=tuple(
                name for name, hit in zip(self._names, seg.channels.tolist(), strict=False) if hit
            ),
        )
