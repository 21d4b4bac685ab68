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

Channels. Each channel is named by the block's layout (``AudioBlock.names``: FL, FR, FC, LFE,
SL, SR...), and every finding lists the channels it is about in ``Finding.channels`` (DESIGN.md
§4: ``metrics.channels``). The channels in ``exempt`` (the LFE by default: a subwoofer feed is
silent whenever the programme has no bass effects) are never judged, alone or with the others.

* When every other channel is silent the defect has key ``""`` and names them all.
* A channel silent while another is not is judged alone: the front pair (FL, FR; for unnamed
  layouts the first two) after ``d``, any other channel after ``other_d`` (a centre or
  surround channel carries less, and its loss - "dialogue lost" for the centre - is a defect
  once it lasts). A channel beyond the front pair is judged only once it has been heard since
  the layout began: stereo carried as 5.1 has a silent centre and surrounds from start to end
  (measured on a stereo clip re-encoded to AC-3 5.1), and that is not a loss.
* Channels lost while another channel is lost make *one* defect naming them all: its key is the
  names of the channels that opened it, joined by ``+`` (``"FC"``, ``"SL+SR"``), its
  ``start_s`` the start of the first channel's silence and its ``end_s`` the end of the last
  one. These spans may overlap an all-channel defect.

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

from shared.models import DefectType
from worker.detectors.base import AudioBlock, Detector, Finding, Severity, StreamContext
from worker.detectors.options import DetectorOptions, opt
from worker.detectors.runs import RunTracker

ALL_CHANNELS = ""  # key of a silence of every channel
FRONT = ("FL", "FR")  # the pair judged after ``d``; other channels after ``other_d``
FRONT_INDEXES = 2  # ... or, for a layout without those names, its first two channels
BATCH_HOPS = 10  # hops of audio gathered before they are analysed (100 ms by default)
FLOOR_DBFS = -150.0  # reported for digital zero instead of -inf (float32 audio cannot go lower)


@dataclass(frozen=True, slots=True)
class SilenceOptions(DetectorOptions):
    """Options of the ``silence`` detector (``noise_db`` and ``d`` as FFmpeg's silencedetect)."""

    noise_db: float = opt(
        -60.0, "dBFS", "window RMS below this is silent (0 dBFS = RMS of a full-scale square wave, 1.0)",
        ge=-150.0, le=0.0,
    )
    d: float = opt(2.0, "s", "minimum duration of a silence", ge=0.0)
    window_s: float = opt(
        0.4, "s", "RMS window: long enough to bridge the gaps of speech and music, so only energy counts",
        ge="hop_s", le=10.0,
    )
    hop_s: float = opt(0.01, "s", "window step: the boundary resolution", gt=0.0, le="window_s")
    other_d: float = opt(
        5.0, "s", "minimum duration of the silence of one channel beyond "
        "the front pair (FC, SL, SR...), alone",
        ge=0.0,
    )
    exempt: tuple[str, ...] = opt(("LFE",), "names", "channels never judged, alone or with the others")


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
    # Summed in float32, then widened: einsum with a float64 dtype casts every sample first and
    # costs 60 times more (measured: 1.6 ms against 27 us a second of 5.1). A hop's sum of
    # squares keeps float32's relative precision (about 1e-7 of its own value), silent or not;
    # windows are summed from these in float64 (window_rms).
    energies: npt.NDArray[np.float64] = np.einsum("chk,chk->ch", whole, whole).astype(np.float64)
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


class _Loss:
    """Channels lost (silent alone) together: one defect naming them all."""

    __slots__ = ("active", "end", "key", "max_rms", "members", "start")

    def __init__(self, start: float, key: str) -> None:
        self.start = start  # start of the first member's silence, s
        self.end = start  # end of the last member's silence that ended, s
        self.key = key
        self.max_rms = 0.0  # loudest window RMS of its members (full scale 1.0)
        self.members: set[int] = set()  # every channel that was part of it
        self.active: set[int] = set()  # members still silent


class SilenceDetector(Detector):
    """Reports silences (window RMS below ``noise_db``) of at least ``d`` (severity critical)."""

    name: ClassVar[DefectType] = DefectType.SILENCE
    Options: ClassVar[type[SilenceOptions]] = SilenceOptions
    options: SilenceOptions

    def __init__(self, options: SilenceOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self._threshold = 10.0 ** (self.options.noise_db / 20.0)  # window RMS, full scale 1.0
        # (channels, rate, names) the state below is for
        self._layout: tuple[int, int, tuple[str, ...]] | None = None
        self._names: tuple[str, ...] = ()
        self._hop = 0  # samples per hop
        self._hops_per_window = 0
        self._hop_s = 0.0  # exact hop duration at this rate, s
        self._pending = np.zeros((0, 0), np.float32)  # samples not yet making up a whole hop
        self._pending_t = 0.0  # media time of the first pending sample, s
        self._queue: list[npt.NDArray[np.float32]] = []  # blocks fed but not yet analysed
        self._queued = 0  # samples in _queue
        self._history = np.zeros((0, 0), np.float64)  # energies of the last window's hops but one
        self._history_t = np.zeros(0, np.float64)  # start times of those hops, s
        self._next_t: float | None = None  # media time of the sample expected next, s
        self._all: _Run | None = None
        self._all_run = RunTracker(self.options.d)  # whether the all-channel silence has opened
        self._counted = np.zeros(0, np.bool_)  # channels judged together (all but the exempt)
        self._alone: list[int] = []  # channels judged one by one
        self._front = np.zeros(0, np.bool_)  # ... after d (the others after other_d)
        self._heard = np.zeros(0, np.bool_)  # channels audible at some time since the layout began
        self._needed: list[int] = []  # per channel: windows of channel-only silence making a loss
        self._channels: list[_Run | None] = []
        self._loss: _Loss | None = None

    # -- feeding -------------------------------------------------------------------------------

    def feed_audio(self, block: AudioBlock) -> list[Finding]:
        samples = block.samples
        if samples.ndim != 2 or 0 in samples.shape or block.rate <= 0:
            return []
        findings: list[Finding] = []
        channels = samples.shape[0]
        if (
            self._layout is None
            or self._layout[:2] != (channels, block.rate)
            or (block.channels and block.channels != self._layout[2])
        ):
            findings += self._drain()
            findings += self._close_all(block.t)
            self._reset(channels, block.rate, block.names)
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
        # A channel heard anywhere in this batch counts as heard for all of it: a run it starts
        # before that is ended by the sound within the batch, far short of a defect.
        self._heard |= ~silent.all(axis=1)
        everything = silent[self._counted].all(axis=0)
        judged = self._front | self._heard
        if (
            not everything.any()
            and not silent[self._alone][judged[self._alone]].any()
            and self._all is None
            and not any(self._channels)
        ):
            return []  # the common case: sound everywhere it is judged, nothing running
        return self._track(silent, everything, judged, rms, win_start, win_end)

    def flush(self, t_end: float) -> list[Finding]:
        findings = self._drain()
        findings += self._close_all(t_end)
        self._pending = self._pending[:, :0]
        self._next_t = None
        return findings

    # -- state ---------------------------------------------------------------------------------

    def _reset(self, channels: int, rate: int, names: tuple[str, ...]) -> None:
        opts = self.options
        self._layout = (channels, rate, names)
        self._names = names
        self._hop = max(1, round(opts.hop_s * rate))
        self._hop_s = self._hop / rate
        self._hops_per_window = max(1, round(opts.window_s / self._hop_s))
        self._pending = np.zeros((channels, 0), np.float32)
        self._queue = []
        self._queued = 0
        self._history = np.zeros((channels, 0), np.float64)
        self._history_t = np.zeros(0, np.float64)
        self._next_t = None
        self._all = None
        self._loss = None
        exempt = np.array([name in opts.exempt for name in names], np.bool_)
        self._counted = ~exempt if not exempt.all() else np.ones(channels, np.bool_)
        named_front = [name in FRONT for name in names]
        self._front = np.array(
            named_front if any(named_front) else [c < FRONT_INDEXES for c in range(channels)], np.bool_
        )
        self._heard = np.zeros(channels, np.bool_)
        # One channel is "all channels": only the "" key is used for mono.
        self._alone = [c for c in range(channels) if self._counted[c]] if self._counted.sum() > 1 else []
        # A channel's exclusive stretch of k windows spans (k - 1) hops plus one window: the
        # number of windows for that span to reach its minimum duration.
        window = self._hops_per_window * self._hop_s
        self._needed = [
            max(1, math.ceil(((opts.d if front else opts.other_d) - window) / self._hop_s - 1e-9) + 1)
            for front in self._front.tolist()
        ]
        self._channels = [None] * channels

    def _track(
        self,
        silent: npt.NDArray[np.bool_],
        everything: npt.NDArray[np.bool_],
        judged: npt.NDArray[np.bool_],
        rms: npt.NDArray[np.float64],
        win_start: npt.NDArray[np.float64],
        win_end: npt.NDArray[np.float64],
    ) -> list[Finding]:
        """Advance every run over the windows of one batch, in time order."""
        findings: list[Finding] = []
        alone = [c for c in self._alone if judged[c]]
        silent_t = silent.T.tolist()
        rms_t = rms.T.tolist()
        counted_rms = rms[self._counted].max(axis=0).tolist()
        for j, (start, end) in enumerate(zip(win_start.tolist(), win_end.tolist(), strict=True)):
            channel_silent: list[bool] = silent_t[j]
            channel_rms: list[float] = rms_t[j]
            all_silent = bool(everything[j])

            run = self._all
            if all_silent:
                loudest = counted_rms[j]
                if run is None:
                    run = self._all = _Run(start, end, loudest)
                    self._all_run.begin(start)
                    self.ctx.audio_silent_since = start
                run.end = end
                run.max_rms = max(run.max_rms, loudest)
                if self._all_run.extend(end):
                    findings.append(self._finding(run, ALL_CHANNELS, None, self._counted_names()))
            elif run is not None:
                findings += self._end(run)
                self._all = None
                self.ctx.audio_silent_since = None

            lost: list[int] = []
            for c in alone:
                ch_run = self._channels[c]
                if channel_silent[c]:
                    if ch_run is None:
                        ch_run = self._channels[c] = _Run(start, end, channel_rms[c])
                    ch_run.end = end
                    ch_run.max_rms = max(ch_run.max_rms, channel_rms[c])
                    ch_run.exclusive = 0 if all_silent else ch_run.exclusive + 1
                    if not ch_run.open and ch_run.exclusive >= self._needed[c]:
                        lost.append(c)
                elif ch_run is not None:
                    findings += self._channel_ended(c, ch_run)
            if lost:
                findings += self._lose(lost)
        return findings

    def _lose(self, lost: list[int]) -> list[Finding]:
        """Channels ``lost`` have been silent alone long enough: they open a loss, or join the one open."""
        runs = [run for c in lost if (run := self._channels[c]) is not None]
        for run in runs:
            run.open = True
        loss = self._loss
        opened = loss is None
        if loss is None:
            loss = self._loss = _Loss(min(run.start for run in runs), "+".join(self._names[c] for c in lost))
        loss.members.update(lost)
        loss.active.update(lost)
        loss.max_rms = max(loss.max_rms, *(run.max_rms for run in runs))
        return [self._loss_finding(loss, None)] if opened else []

    def _channel_ended(self, c: int, run: _Run) -> list[Finding]:
        """Channel ``c``'s silence ``run`` ended at ``run.end``."""
        self._channels[c] = None
        loss = self._loss
        if not run.open or loss is None:
            return []
        loss.active.discard(c)
        loss.end = max(loss.end, run.end)
        loss.max_rms = max(loss.max_rms, run.max_rms)
        if loss.active:
            return []
        self._loss = None
        return [self._loss_finding(loss, loss.end)]

    def _end(self, run: _Run) -> list[Finding]:
        """Findings for an all-channel run that ended at ``run.end`` (nothing if it never became
        a defect; both if it is long enough only now that its end is known)."""
        names = self._counted_names()
        return [self._finding(run, ALL_CHANNELS, end, names) for _, end in self._all_run.stop(run.end)]

    def _close_all(self, t_end: float) -> list[Finding]:
        """End every run at ``t_end``; runs that are long enough by then are reported whole."""
        findings: list[Finding] = []
        if self._all is not None:
            run = self._all
            run.end = max(t_end, run.start)
            findings += self._end(run)
        lost: list[int] = []
        for c, ch_run in enumerate(self._channels):
            if ch_run is None:
                continue
            tail = max(t_end, ch_run.start) - ch_run.end
            span = (ch_run.exclusive - 1) * self._hop_s + self._hops_per_window * self._hop_s + tail
            ch_run.end = max(t_end, ch_run.start)
            minimum = self.options.d if self._front[c] else self.options.other_d
            if not ch_run.open and ch_run.exclusive > 0 and span >= minimum:
                lost.append(c)
        if lost:
            findings += self._lose(lost)
        for c, ch_run in enumerate(self._channels):
            if ch_run is not None:
                findings += self._channel_ended(c, ch_run)
        self._all = None
        self._loss = None
        self._channels = [None] * len(self._channels)
        self.ctx.audio_silent_since = None
        return findings

    def _counted_names(self) -> tuple[str, ...]:
        return tuple(
            name for name, counted in zip(self._names, self._counted.tolist(), strict=True) if counted
        )

    def _loss_finding(self, loss: _Loss, end_s: float | None) -> Finding:
        run = _Run(loss.start, loss.end, loss.max_rms)
        names = tuple(self._names[c] for c in sorted(loss.members))
        return self._finding(run, loss.key, end_s, names)

    def _finding(self, run: _Run, key: str, end_s: float | None, channels: tuple[str, ...]) -> Finding:
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
            channels=channels,
        )
