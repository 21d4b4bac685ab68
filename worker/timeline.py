"""A live stream's timeline against the wall clock: where its live edge is, and how far behind it.

Lag is how long ago the media being analysed now was live at the source. It is measured from the
packets, before decoding: for each packet, ``arrival - media time`` (its decode timestamp) is
when media time 0 was live, as seen through that packet; the least of these over recent packets
is the live edge (a packet can arrive late, never early, at the source's real-time pace). Then
``lag = now - (media time of the packet just analysed + edge)``.

That makes neither probing nor the decoder's start-up count as lag: the packets read while FFmpeg
probes the source, or before the first keyframe, are judged by when they arrived, not by when the
session opened the source. Arrival is the kernel's receive time for UDP read by the worker itself
(:mod:`worker.udp`), so a stream that has been behind since it started is seen to be; for other
sources it is when the demuxer returned the packet, which under-reads a lag present from the very
first packet by at most the probe's buffer.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Timeline:
    """Where a stream's media timeline stood when its owner last published it: media time
    ``media_time_s`` was live at wall-clock ``wall`` (epoch s), and media time 0 is source time
    ``origin_s`` (s). A worker that takes the stream over continues that timeline."""

    origin_s: float
    media_time_s: float
    wall: float

    def figures(self) -> dict[str, float]:
        return {
            "timeline_origin_s": round(self.origin_s, 6),
            "timeline_media_s": round(self.media_time_s, 3),
            "timeline_wall": round(self.wall, 3),
        }

    @classmethod
    def from_item(cls, item: dict[str, object]) -> Timeline | None:
        """The timeline a streams item carries (published with the renewals), if any."""
        try:
            values = [float(item[k]) for k in ("timeline_origin_s", "timeline_media_s", "timeline_wall")]  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return None
        return cls(*values) if all(math.isfinite(v) for v in values) else None


class LiveEdge:
    """The wall-clock time at which media time 0 was live: the least ``arrival - t`` seen.

    ``window_s``: only packets of the last ``window_s`` count (in buckets of ``bucket_s``), so a
    source whose clock runs slow against ours (100 ppm is 0.36 s an hour) does not read as a
    growing lag. Only for arrival times that do not depend on our own reading (the kernel's): a
    windowed minimum of read times would forget a lag that has lasted longer than the window.
    ``None``: every packet since the connection opened counts.
    """

    def __init__(self, window_s: float | None = None, bucket_s: float = 10.0) -> None:
        self.value = math.inf
        self._bucket_s = bucket_s
        self._buckets: deque[float] | None = (
            None if window_s is None else deque(maxlen=max(1, round(window_s / bucket_s)))
        )
        self._bucket_end = -math.inf
        self._current = math.inf

    def observe(self, arrival: float, t: float) -> None:
        """A packet of media time ``t`` (s) arrived at wall-clock ``arrival`` (epoch s)."""
        edge = arrival - t
        if self._buckets is not None and arrival >= self._bucket_end:
            self._buckets.append(self._current)
            self._bucket_end = arrival + self._bucket_s
            self._current = math.inf
            self.value = min(self._buckets)
        if edge < self._current:
            self._current = edge
        if edge < self.value:
            self.value = edge

    def lag(self, now: float, t: float) -> float | None:
        """How long ago (s) media time ``t`` was live, or None before any packet."""
        if self.value == math.inf:
            return None
        return max(0.0, now - (t + self.value))
