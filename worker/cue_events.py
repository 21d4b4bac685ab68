"""Cues (SCTE-35 in the TS, HLS cue tags) as the events an operator reads: pure, bounded.

A cue becomes an :class:`shared.models.Event` on the stream's media timeline unless it is noise
or the stream floods us with them (every packet of a stream is hostile, and each event is a
DynamoDB write):

- ``splice_null`` (and other commands without a splice meaning: bandwidth_reservation, ...) is a
  heartbeat, not an event;
- a cue repeated within ``repeat_window_s`` (encoders send the same splice_insert several times
  before its splice point, SCTE 67 §8.3.1) is the same event: the first one stands;
- beyond that, a token bucket on the monotonic clock: ``burst`` events at once, ``per_minute``
  sustained; the rest are dropped and counted (``dropped``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shared.models import Event, event_id_for, iso_from_epoch
from worker.transport.cues import Cue

# Commands that say nothing of a splice: heartbeats and reservations, never events.
NOT_EVENTS = frozenset({"splice_null", "bandwidth_reservation", "private_command"})


@dataclass(frozen=True)
class EventLimits:
    """Bounds on the events of one stream (defaults and ranges)."""

    burst: int = 20  # events at once, 1-1000
    per_minute: float = 30.0  # sustained, 0.1-6000 (a break every 2 s: far more than any channel)
    repeat_window_s: float = 60.0  # a repeat within this (seconds of cue time) is no new event, 0-3600
    remembered: int = 256  # repeats are recognised among this many recent cues

    def __post_init__(self) -> None:
        if not (1 <= self.burst <= 1000 and 0.1 <= self.per_minute <= 6000
                and 0.0 <= self.repeat_window_s <= 3600.0 and 1 <= self.remembered <= 65536):
            raise ValueError(f"EventLimits out of range: {self}")


def _identity(cue: Cue) -> tuple[object, ...]:
    splice = None if cue.splice_pts_s is None else round(cue.splice_pts_s, 3)
    return (cue.pid, cue.command, cue.kind, cue.event_id, cue.segmentation_type_id, splice, cue.upid)


class CueEvents:
    """Which cues become events, and the event each one is."""

    def __init__(
        self, limits: EventLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or EventLimits()
        self._clock = clock
        self._tokens = float(self.limits.burst)
        self._refilled = clock()
        self._recent: OrderedDict[tuple[object, ...], float] = OrderedDict()  # identity -> arrival
        self.admitted = 0
        self.repeats = 0
        self.dropped = 0  # over the rate bound

    def admit(self, cue: Cue) -> bool:
        """Whether ``cue`` is a new event (and, if so, spend its share of the rate)."""
        if cue.command in NOT_EVENTS:
            return False
        ident = _identity(cue)
        seen = self._recent.get(ident)
        if seen is not None and abs(cue.arrival_s - seen) <= self.limits.repeat_window_s:
            self.repeats += 1
            return False
        now = self._clock()
        lim = self.limits
        self._tokens = min(float(lim.burst), self._tokens + (now - self._refilled) * lim.per_minute / 60.0)
        self._refilled = now
        if self._tokens < 1.0:
            self.dropped += 1
            return False
        self._tokens -= 1.0
        self._recent[ident] = cue.arrival_s
        self._recent.move_to_end(ident)
        while len(self._recent) > lim.remembered:
            self._recent.popitem(last=False)
        self.admitted += 1
        return True


def cue_event(
    cue: Cue,
    *,
    stream_id: str,
    worker_id: str,
    start_s: float,
    splice_s: float | None,
    wall_at: Callable[[float], float],
    source: str = "scte35",
) -> Event:
    """The event of an admitted cue, at media time ``start_s`` (its splice point at ``splice_s``);
    ``wall_at`` maps media time to epoch seconds; ``source``: scte35 (a TS's cue PID) or hls."""
    hls = source != "scte35"
    seg = cue.segmentation_type_id
    key = f"{source if hls else f'pid{cue.pid}'}_e{cue.event_id or 0}" + ("" if seg is None else f"_s{seg}")
    return Event(
        stream_id=stream_id,
        event_id=event_id_for(cue.command, start_s, key),
        type=cue.command,
        kind=cue.kind,
        start_s=round(start_s, 3),
        start_at=iso_from_epoch(wall_at(start_s)),
        splice_s=None if splice_s is None else round(splice_s, 3),
        splice_pts_s=None if cue.splice_pts_s is None else round(cue.splice_pts_s, 6),
        preroll_s=None if cue.preroll_s is None else round(cue.preroll_s, 3),
        duration_s=None if cue.duration_s is None else round(cue.duration_s, 3),
        splice_event_id=cue.event_id,
        segmentation_type=cue.segmentation_type,
        segmentation_type_id=seg,
        upid=cue.upid or None,
        auto_return=cue.auto_return,
        immediate=cue.immediate,
        pid=None if hls else cue.pid,
        source=source,
        worker_id=worker_id,
    )
