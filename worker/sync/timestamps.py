"""Timestamp drift: the divergence of the audio and video timelines of demuxed packets.

From demuxed packets: the time each timeline has reached (the largest ``t + duration`` of its
packets) and their difference D = audio reached − video reached, sampled in packet order and
reduced to its median per second of video time (TS_BIN_S). Interleaving and muxer buffering make
D wander by hundreds of milliseconds, so only a persistent, steady trend counts: over the last
``ts_window_s`` (at least TS_FILL of it present), the medians of D's first, middle and last
thirds must each move the same way, each half by at least ``ts_linearity`` of the whole
(:meth:`PtsDrift.trend`). Medians ignore bursts; a one-off step (a buffer that filled) moves one
third's median only, and a bounded wander has no steady direction. A timeline that moves by more
than TS_MAX_STEP_S at once (a timestamp jump) restarts the measurement. Packets cost a few
dictionary updates each.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from worker.detectors.base import PacketInfo

TS_BIN_S = 1.0  # D is reduced to one median per second of video time
TS_FILL = 0.8  # share of the window's seconds that must be present for a fit
TS_MAX_STEP_S = 5.0  # a timeline moving further than this at once is a jump: start afresh


class PtsOptions(Protocol):
    """What the measurement reads of the detector's options."""

    @property
    def ts_window_s(self) -> float: ...

    @property
    def ts_linearity(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Trend:
    """D over the timestamp window, from the medians of its thirds."""

    slope: float  # ms/s, from the first third's median to the last one's
    change: float  # ms, last third's median − first third's
    steady: bool  # each half of the change goes the same way and makes its share of it
    first_t: float  # video time of the window's first second, s
    level: float  # the last third's median D, s
    level_t: float  # ... at this video time, s


@dataclass(slots=True)
class PtsEpisode:
    start_s: float
    held_since: float  # video time at which the trend was first seen, s
    base: float  # D when it was first seen (first third's median), s
    sign: float  # +1: audio timestamps running ahead, -1: behind
    opened: bool = False
    critical: bool = False
    slope: float = 0.0  # ms/s
    change: float = 0.0  # ms, over the window
    divergence: float = 0.0  # ms, since ``base``


class PtsDrift:
    """Divergence of the audio and video timestamp timelines (see the module docstring)."""

    def __init__(self, options: PtsOptions) -> None:
        self.options = options
        self.reached: dict[str, float] = {}
        self._bin = -math.inf  # index of the second of video time being collected
        self._samples: list[float] = []  # D values (s) in that second
        self._bins: deque[tuple[float, float]] = deque()  # (video time, median D), s
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

    def trend(self) -> Trend | None:
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
        return Trend(
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
