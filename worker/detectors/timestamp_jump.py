"""Timestamp discontinuities: a gap or a step back in the presentation times of either stream.

Works on demuxed packets (``PacketInfo``), so it needs no decoding. Per kind (``"video"`` /
``"audio"``) it follows the *running maximum* presentation time ``high`` and the expected next
one, ``high + step``:

* ``step`` is the larger of the packet's duration (when the container gives one) and the median
  of the last increments of ``high``. Video packets arrive in decode order, where B-frames make
  presentation times non-monotonic (I0 P3 B1 B2 P6 B4 B5 ...): ``high`` advances one anchor
  picture at a time, and the median increment is the anchor interval, so a B-frame stream needs
  no special case and its pictures never look like steps back.
* A **jump forward**: a packet later than the expected time by more than ``max_gap`` seconds.
* A **step back**: a packet earlier than ``high`` by more than ``max_backward`` seconds, or by
  more than two anchor intervals if that is longer (B-frames lag the latest anchor by less than
  one interval, which matters only below about 10 fps).

A discontinuity is an instantaneous event, reported as an open and a close finding together
(the sink's record protocol is the same for every defect): ``start_s`` is the last good time
(``high`` before the jump), ``end_s`` the first time after it (for a step back, which would end
before it starts, ``end_s = start_s``). ``jump_s`` is the signed difference between the time
found and the time expected (+10 for a 10 s gap, about -5 for a 5 s step back). Severity is
``warning``. The timeline then continues from the new time.

Splices between B-frame streams leave *stragglers*: pictures displayed before the splice point
but stored after it, on the old timeline. For the next ``STRAGGLERS`` packets of the kind after
a jump, a packet that fits the old timeline is ignored rather than reported as a jump back.

The session maps packet timestamps to media time linearly within one connection, so a jump in
the source's timestamps is a jump of the same size here. Across a reconnect the session
continues the timeline at wall-clock pace, so the first packet of a new connection lands after
the outage, which ``signal_loss`` reports; an outage longer than ``max_gap`` is also seen here.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar

from shared.models import DefectType
from worker.detectors.base import Detector, Finding, PacketInfo, Severity, StreamContext
from worker.detectors.options import DetectorOptions, opt

INCREMENTS = 32  # increments of the running maximum kept for the median step
STRAGGLERS = 16  # packets after a jump during which the old timeline is still accepted
REORDER_STEPS = 2.0  # a step back within this many anchor intervals is B-frame reordering


@dataclass(frozen=True, slots=True)
class TimestampJumpOptions(DetectorOptions):
    """Options of the ``timestamp_jump`` detector."""

    max_gap: float = opt(1.0, "s", "a packet later than expected by more than this is a jump forward", gt=0.0)
    max_backward: float = opt(
        0.5, "s", "a packet earlier than the latest presentation time by "
        "more than this is a step back", gt=0.0
    )


@dataclass(slots=True)
class _Timeline:
    """What one kind's packets have shown so far."""

    high: float  # running maximum presentation time (s)
    increments: deque[float] = field(default_factory=lambda: deque(maxlen=INCREMENTS))
    old_high: float | None = None  # `high` before the latest jump, while stragglers may come
    stragglers: int = 0  # packets left during which `old_high` is accepted


def expected_step(increments: deque[float], duration: float | None) -> float:
    """Expected advance (s) of the running maximum presentation time per packet: the larger of
    the packet's ``duration`` (s, None if unknown) and the median of recent ``increments`` (s);
    0 when neither is known."""
    median = statistics.median(increments) if increments else 0.0
    return max(median, duration or 0.0)


class TimestampJumpDetector(Detector):
    """Reports gaps and steps back in packet presentation times, per stream kind (warning)."""

    name: ClassVar[DefectType] = DefectType.TIMESTAMP_JUMP
    Options: ClassVar[type[TimestampJumpOptions]] = TimestampJumpOptions
    options: TimestampJumpOptions

    def __init__(self, options: TimestampJumpOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self._timelines: dict[str, _Timeline] = {}
        self._connection = self.ctx.connection

    def feed_packet(self, packet: PacketInfo) -> list[Finding]:
        t = packet.t
        if t is None:
            return []  # no timestamp: nothing to judge
        if self.ctx.connection != self._connection:
            self._connection = self.ctx.connection
            self._timelines.clear()  # a reconnect we made: reported as signal_loss, not a jump
        line = self._timelines.get(packet.kind)
        if line is None:
            self._timelines[packet.kind] = _Timeline(high=t)
            return []
        opts = self.options
        high = line.high
        # Within these bounds no expected step (it is >= 0) makes a jump: the common case is
        # decided without the median of the increments, a sort per packet.
        if line.stragglers > 0 or not high - opts.max_backward <= t <= high + opts.max_gap:
            step = expected_step(line.increments, packet.duration)
            expected = high + step
            if line.stragglers > 0:
                line.stragglers -= 1
                assert line.old_high is not None
                if line.old_high - max(opts.max_backward, REORDER_STEPS * step) <= t <= line.old_high + step:
                    return []  # a picture of the old timeline, stored after the splice
            if t > expected + opts.max_gap or t < high - max(opts.max_backward, REORDER_STEPS * step):
                findings = self._jump(packet.kind, high, t, t - expected)
                line.old_high, line.stragglers = high, STRAGGLERS
                line.high = t
                return findings

        if t > high:
            line.increments.append(t - high)
            line.high = t
        return []

    def _jump(self, kind: str, last_good: float, first_after: float, jump_s: float) -> list[Finding]:
        """An open and a close finding for one discontinuity."""
        end = max(first_after, last_good)
        opened = Finding(
            type=self.name,
            start_s=last_good,
            end_s=None,
            severity=Severity.WARNING,
            metrics={"jump_s": jump_s},
            key=kind,
        )
        closed = Finding(
            type=self.name,
            start_s=last_good,
            end_s=end,
            severity=Severity.WARNING,
            metrics={"jump_s": jump_s, "duration_s": end - last_good},
            key=kind,
        )
        return [opened, closed]
