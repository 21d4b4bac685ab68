"""When diverging timestamps are a defect: the episode of the trend of
:class:`worker.sync.timestamps.PtsDrift` (the rules are in :mod:`worker.detectors.av_sync`'s
docstring).

A steady trend with a slope of at least ``ts_max_drift_ms_per_s`` and a change of at least
``ts_min_change_ms`` starts an episode at the window's first second; it opens once held for
``ts_d`` and ends when the slope falls below half the limit (or turns), when the timelines
start afresh (a timestamp jump, a reconnect) or at the end of the media.
"""

from __future__ import annotations

import math
from typing import Protocol

from worker.detectors.base import Finding, PacketInfo
from worker.sync.findings import PTS_KEY, sync_finding
from worker.sync.timestamps import PtsDrift, PtsEpisode, PtsOptions

_EPS = 1e-9


class PtsJudgeOptions(PtsOptions, Protocol):
    """What the judgement reads of the detector's options (and the measurement's)."""

    @property
    def ts_max_drift_ms_per_s(self) -> float: ...

    @property
    def ts_min_change_ms(self) -> float: ...

    @property
    def ts_d(self) -> float: ...

    @property
    def critical_early_ms(self) -> float: ...

    @property
    def critical_late_ms(self) -> float: ...


class PtsJudge:
    """The timestamp-drift defect in progress, packet by packet (see the module docstring)."""

    def __init__(self, options: PtsJudgeOptions, connection: int) -> None:
        self.options = options
        self.drift = PtsDrift(options)
        self.episode: PtsEpisode | None = None
        self._connection = connection  # StreamContext.connection of the timelines measured

    def feed(self, packet: PacketInfo, connection: int) -> list[Finding]:
        """Take a demuxed packet (``connection``: the stream's current connection)."""
        pts = self.drift
        findings: list[Finding] = []
        resets, now = pts.resets, pts.now
        if connection != self._connection:
            self._connection = connection
            pts.reset()
        completed = pts.feed(packet)
        if pts.resets != resets:
            # A new timeline (reconnect, timestamp jump): the trend is no longer seen, and a
            # drift that persists is found again once the window has filled.
            findings += self.close(now)
        if completed:
            findings += self._judge()
        return findings

    def close(self, end: float) -> list[Finding]:
        """End the episode at ``end``: the close finding if it had opened."""
        ep = self.episode
        self.episode = None
        if ep is None or not ep.opened:
            return []
        return [self._finding(ep, max(end, ep.start_s))]

    def _judge(self) -> list[Finding]:
        opts = self.options
        pts = self.drift
        trend = pts.trend()
        if trend is None:
            return []
        ep = self.episode
        now = pts.now
        limit = opts.ts_max_drift_ms_per_s
        drifting = trend.steady and abs(trend.slope) >= limit and abs(trend.change) >= opts.ts_min_change_ms
        if ep is None:
            if not drifting:
                return []
            sign = math.copysign(1.0, trend.slope)
            base = trend.level - trend.change / 1000.0  # the first third's median
            ep = self.episode = PtsEpisode(start_s=trend.first_t, held_since=now, base=base, sign=sign)
        elif not ep.opened and not drifting:
            self.episode = None  # it did not hold for ts_d: no defect
            return []
        elif trend.slope * ep.sign < 0.5 * limit:
            return self.close(now)  # faded, with hysteresis: bursts may dent one median
        ep.slope, ep.change = trend.slope, trend.change
        ep.divergence = (trend.level + trend.slope / 1000.0 * (now - trend.level_t) - ep.base) * 1000.0
        ep.critical = ep.critical or not -opts.critical_early_ms <= ep.divergence <= opts.critical_late_ms
        if not ep.opened and now - ep.held_since >= opts.ts_d - _EPS:
            ep.opened = True
            return [self._finding(ep, None)]
        return []

    def _finding(self, ep: PtsEpisode, end_s: float | None) -> Finding:
        metrics = {
            "drift_ms_per_s": ep.slope,
            "pts_offset_ms": ep.change,
            "divergence_ms": ep.divergence,
        }
        return sync_finding(ep.start_s, end_s, ep.critical, metrics, PTS_KEY, "pts")
