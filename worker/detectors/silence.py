"""Silence detection on energy (windowed RMS), per channel and over all channels.

FFmpeg's ``silencedetect`` compares each *sample peak* with the noise level, so a single click
ends a silence and a quiet passage whose waveform happens to stay small is called silent. Here a
stretch is silent when the RMS of every ``window_s`` window in it is below ``noise_db`` dBFS:

* the signal is cut into hops of ``hop_s``; each hop's energy (sum of squares) is computed once
  per channel, and a window's RMS is ``sqrt(sum of its hops' energies / samples in window)``,
  evaluated at every hop;
* a silence is the union of consecutive silent windows: it starts at the start of its first
  silent window and ends at the end of its last one. Program audio before or after it makes
  every window that overlaps it loud, so both boundaries land within one hop (10 ms by default)
  of the true, sample-exact ones; quieter neighbours (a few dB above ``noise_db``) can pull them
  by up to ``window_s * 10 ** ((noise_db - neighbour_db) / 10)``;
* a defect is a silence that lasts at least ``d``.

Keys: when every channel is silent the defect has key ``""`` and the channels are not reported
one by one. A channel is reported (key ``"ch0"``, ``"ch1"``...) when it stays silent for at least
``d`` while another channel is not (a dead channel of a stereo pair). Its ``start_s`` / ``end_s``
are those of the channel's whole silence, which may overlap an all-channel defect. With more than
two channels only the front pair (the first two: FFmpeg orders every standard layout, 2.1 to
7.1, from front left and right) is judged channel by channel: a centre, LFE or surround channel
is silent for long stretches of normal programmes, and always in stereo carried as 5.1 (measured
on a stereo clip re-encoded to AC-3 5.1: four channels silent from start to end).

Times are media seconds, counted in samples from the block timestamps: ``AudioBlock.t`` is taken
as the time of the block's first sample, and a block that does not continue the previous one
within half a hop re-anchors the hop grid to its own timestamp.

The detector owns ``StreamContext.audio_silent_since``: the start of the current all-channel
silence as soon as one full window is silent (before ``d`` has passed; consumers judge how long
is long enough), ``None`` while any channel is audible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from worker.detectors.base import AudioBlock, Detector, Finding, Severity, StreamContext

ALL_CHANNELS = ""  # key of a silence of every channel
JUDGED_ALONE = 2  # channels judged one by one: the front pair
BATCH_HOPS = 10  # hops of audio gathered before they are analysed (100 ms by default)
FLOOR_DBFS = -150.0  # reported for digital zero instead of -inf (float32 audio cannot go lower)


@dataclass(frozen=True, slots=True)
class SilenceOptions:
    """Options of the ``silence`` detector (``noise_db`` and ``d`` as FFmpeg's silencedetect).

    ========  =====  =======  ==============  ==================================================
    name      unit   default  range           meaning
    ========  =====  =======  ==============  ==================================================
    noise_db  dBFS   -60.0    [-150, 0]       window RMS below this is silent (0 dBFS = RMS of
                                              a full-scale square wave, 1.0)
    d         s      2.0      [0, inf)        minimum duration of a silence
    window_s  s      0.4      [hop_s, 10]     RMS window: long enough to bridge the gaps of
                                              speech and music, so only energy counts
    hop_s     s      0.01     (0, window_s]   window step: the boundary resolution
    ========  =====  =======  ==============  ==================================================
    """

    noise_db: float = -60.0
    d: float = 2.0
    window_s: float = 0.4
    hop_s: float = 0.01

    def __post_init__(self) -> None:
        if not -150.0 <= self.noise_db <= 0.0:
            raise ValueError(f"noise_db must be in [-150, 0] dBFS, got {self.noise_db}")
        if not self.d >= 0.0:
            raise ValueError(f"d must be >= 0 s, got {self.d}")
        if not 0.0 < self.hop_s <= self.window_s <= 10.0:
            raise ValueError(f"need 0 < hop_s <= window_s <= 10 s, got {self.hop_s}, {self.window_s}")


def dbfs(rms: float) -> float:
    """RMS (full scale 1.0) in dBFS, floored at :data:`FLOOR_DBFS` so that zero stays finite."""
    if rms <= 0.0:
        return FLOOR_DBFS
    return max(20.0 * math.log10(rms), FLOOR_DBFS)


def hop_energies(samples: npt.NDArray[np.float32], hop: int) -> npt.NDArray[np.float64]:
    """Energy (sum of squared sample values) of each whole hop of ``hop`` samples.

    ``samples`` is (channels, n) float32 at full scale ±1.0; the result is (channels, n // hop)
    float64. Samples after the last whole hop are ignored (the caller carries them over).
    """
    channels, n = samples.shape
    hops = n // hop
    whole = samples[:, : hops * hop].reshape(channels, hops, hop)
    energies: npt.NDArray[np.float64] = np.einsum("chk,chk->ch", whole, whole, dtype=np.float64)
    return energies


def window_rms(energies: npt.NDArray[np.float64], hops_per_window: int, hop: int) -> npt.NDArray[np.float64]:
    """RMS (full scale 1.0) of every window of ``hops_per_window`` consecutive hops.

    ``energies`` is (channels, m) hop energies from :func:`hop_energies`; the result is
    (channels, m - hops_per_window + 1), window ``j`` covering hops ``j .. j + hops_per_window - 1``.
    Sums are taken directly (not as differences of a running sum), so a silent window next to a
    loud one keeps its true, tiny value.
    """
    windows = np.lib.stride_tricks.sliding_window_view(energies, hops_per_window, axis=1)
    power = windows.sum(axis=2) / float(hops_per_window * hop)
    rms: npt.NDArray[np.float64] = np.sqrt(power)
    return rms


class _Run:
    """One key's silence in progress: built from consecutive silent windows."""

    __slots__ = ("end", "exclusive", "max_rms", "open", "start")

    def __init__(self, start: float, end: float, rms: float) -> None:
        self.start = start  # start of the first silent window, s
        self.end = end  # end of the last silent window, s
        self.max_rms = rms  # loudest window RMS seen (full scale 1.0)
        self.open = False  # an open finding has been emitted
        self.exclusive = 0  # consecutive windows in which this channel alone (not all) was silent


class SilenceDetector(Detector):
    """Reports silences (window RMS below ``noise_db``) of at least ``d`` (severity critical)."""

    name: ClassVar[str] = "silence"
    Options: ClassVar[type[SilenceOptions]] = SilenceOptions
    options: SilenceOptions

    def __init__(self, options: SilenceOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self._threshold = 10.0 ** (self.options.noise_db / 20.0)  # window RMS, full scale 1.0
        self._layout: tuple[int, int] | None = None  # (channels, rate) the state below is for
        self._hop = 0  # samples per hop
        self._hops_per_window = 0
        self._exclusive_needed = 1  # windows of channel-only silence that make a channel defect
        self._hop_s = 0.0  # exact hop duration at this rate, s
        self._pending = np.zeros((0, 0), np.float32)  # samples not yet making up a whole hop
        self._pending_t = 0.0  # media time of the first pending sample, s
        self._queue: list[npt.NDArray[np.float32]] = []  # blocks fed but not yet analysed
        self._queued = 0  # samples in _queue
        self._history = np.zeros((0, 0), np.float64)  # energies of the last window's hops but one
        self._history_t = np.zeros(0, np.float64)  # start times of those hops, s
        self._next_t: float | None = None  # media time of the sample expected next, s
        self._all: _Run | None = None
        self._channels: list[_Run | None] = []

    # -- feeding -------------------------------------------------------------------------------

    def feed_audio(self, block: AudioBlock) -> list[Finding]:
        samples = block.samples
        if samples.ndim != 2 or 0 in samples.shape or block.rate <= 0:
            return []
        findings: list[Finding] = []
        channels = samples.shape[0]
        if self._layout != (channels, block.rate):
            findings += self._drain()
            findings += self._close_all(block.t)
            self._reset(channels, block.rate)
        tolerance = self._hop_s / 2
        if self._next_t is None or abs(block.t - self._next_t) > tolerance:
            # A gap or overlap in the timestamps: keep the energies (the level does not jump) but
            # restart the hop grid at this block, so that times follow the stream's clock.
            findings += self._drain()
            self._pending = samples[:, :0]
            self._pending_t = block.t
        self._next_t = block.t + samples.shape[1] / block.rate
        # Blocks are batched to BATCH_HOPS hops before the arithmetic: numpy's per-call overhead
        # on a decoder's 1,024-sample blocks costs more than the sums. Times are counted in
        # samples from _pending_t, so boundaries do not move; findings come up to a batch later.
        self._queue.append(samples)
        self._queued += samples.shape[1]
        if self._queued + self._pending.shape[1] < BATCH_HOPS * self._hop:
            return findings
        return findings + self._drain()

    def _drain(self) -> list[Finding]:
        """Analyse the queued blocks."""
        if not self._queue:
            return []
        queued = [self._pending, *self._queue] if self._pending.shape[1] else self._queue
        signal = queued[0] if len(queued) == 1 else np.concatenate(queued, axis=1)
        self._queue = []
        self._queued = 0
        energies = hop_energies(signal, self._hop)
        hops = energies.shape[1]
        starts = self._pending_t + np.arange(hops) * self._hop_s
        self._pending = signal[:, hops * self._hop :].copy()
        self._pending_t += hops * self._hop_s
        if hops == 0:
            return []

        all_energies = np.concatenate((self._history, energies), axis=1)
        all_starts = np.concatenate((self._history_t, starts))
        keep = self._hops_per_window - 1
        first_kept = max(0, all_starts.size - keep)
        self._history = all_energies[:, first_kept:]
        self._history_t = all_starts[first_kept:]
        if all_energies.shape[1] < self._hops_per_window:
            return []

        rms = window_rms(all_energies, self._hops_per_window, self._hop)
        windows = rms.shape[1]
        win_start = all_starts[:windows]
        win_end = all_starts[keep:] + self._hop_s
        silent = rms < self._threshold
        if not silent.any() and self._all is None and not any(self._channels):
            return []  # the common case: sound everywhere, nothing running
        return self._track(silent, rms, win_start, win_end)

    def flush(self, t_end: float) -> list[Finding]:
        findings = self._drain()
        findings += self._close_all(t_end)
        self._pending = self._pending[:, :0]
        self._next_t = None
        return findings

    # -- state ---------------------------------------------------------------------------------

    def _reset(self, channels: int, rate: int) -> None:
        opts = self.options
        self._layout = (channels, rate)
        self._hop = max(1, round(opts.hop_s * rate))
        self._hop_s = self._hop / rate
        self._hops_per_window = max(1, round(opts.window_s / self._hop_s))
        # A channel's exclusive stretch of k windows spans (k - 1) hops plus one window: the
        # number of windows for that span to reach d.
        window = self._hops_per_window * self._hop_s
        self._exclusive_needed = max(1, math.ceil((opts.d - window) / self._hop_s - 1e-9) + 1)
        self._pending = np.zeros((channels, 0), np.float32)
        self._queue = []
        self._queued = 0
        self._history = np.zeros((channels, 0), np.float64)
        self._history_t = np.zeros(0, np.float64)
        self._next_t = None
        self._all = None
        # One channel is "all channels": only the "" key is used for mono.
        self._channels = [None] * min(channels, JUDGED_ALONE) if channels > 1 else []

    def _track(
        self,
        silent: npt.NDArray[np.bool_],
        rms: npt.NDArray[np.float64],
        win_start: npt.NDArray[np.float64],
        win_end: npt.NDArray[np.float64],
    ) -> list[Finding]:
        """Advance every key's run over the windows of one block, in time order."""
        findings: list[Finding] = []
        d = self.options.d
        silent_t = silent.T.tolist()
        rms_t = rms.T.tolist()
        for j, (start, end) in enumerate(zip(win_start.tolist(), win_end.tolist(), strict=True)):
            channel_silent: list[bool] = silent_t[j]
            channel_rms: list[float] = rms_t[j]
            everything = all(channel_silent)

            run = self._all
            if everything:
                loudest = max(channel_rms)
                if run is None:
                    run = self._all = _Run(start, end, loudest)
                    self.ctx.audio_silent_since = start
                run.end = end
                run.max_rms = max(run.max_rms, loudest)
                if not run.open and end - run.start >= d:
                    run.open = True
                    findings.append(self._finding(run, ALL_CHANNELS, None))
            elif run is not None:
                findings += self._end(run, ALL_CHANNELS)
                self._all = None
                self.ctx.audio_silent_since = None

            for c, ch_run in enumerate(self._channels):
                if channel_silent[c]:
                    if ch_run is None:
                        ch_run = self._channels[c] = _Run(start, end, channel_rms[c])
                    ch_run.end = end
                    ch_run.max_rms = max(ch_run.max_rms, channel_rms[c])
                    ch_run.exclusive = 0 if everything else ch_run.exclusive + 1
                    if not ch_run.open and ch_run.exclusive >= self._exclusive_needed:
                        ch_run.open = True
                        findings.append(self._finding(ch_run, f"ch{c}", None))
                elif ch_run is not None:
                    findings += self._end(ch_run, f"ch{c}")
                    self._channels[c] = None
        return findings

    def _end(self, run: _Run, key: str) -> list[Finding]:
        """Findings for a run that ended at ``run.end`` (nothing if it never became a defect)."""
        return [self._finding(run, key, run.end)] if run.open else []

    def _close_all(self, t_end: float) -> list[Finding]:
        """End every run at ``t_end``; runs that are long enough by then are reported whole."""
        findings: list[Finding] = []
        d = self.options.d
        if self._all is not None:
            run = self._all
            run.end = max(t_end, run.start)
            if not run.open and run.end - run.start >= d:
                findings.append(self._finding(run, ALL_CHANNELS, None))
                run.open = True
            findings += self._end(run, ALL_CHANNELS)
        for c, ch_run in enumerate(self._channels):
            if ch_run is None:
                continue
            tail = max(t_end, ch_run.start) - ch_run.end
            span = (ch_run.exclusive - 1) * self._hop_s + self._hops_per_window * self._hop_s + tail
            ch_run.end = max(t_end, ch_run.start)
            if not ch_run.open and ch_run.exclusive > 0 and span >= d:
                findings.append(self._finding(ch_run, f"ch{c}", None))
                ch_run.open = True
            findings += self._end(ch_run, f"ch{c}")
        self._all = None
        self._channels = [None] * len(self._channels)
        self.ctx.audio_silent_since = None
        return findings

    def _finding(self, run: _Run, key: str, end_s: float | None) -> Finding:
        metrics = {"rms_dbfs": dbfs(run.max_rms)}
        if end_s is not None:
            metrics["duration_s"] = end_s - run.start
        return Finding(
            type=self.name,
            start_s=run.start,
            end_s=end_s,
            severity=Severity.CRITICAL,
            metrics=metrics,
            key=key,
        )
