"""Feeding one stream's consumers: every detector and the evidence recorder, the same way.

A consumer is anything with some of the feeds of :class:`~worker.detectors.Detector`
(``feed_video``, ``feed_audio``, ``feed_packet``, ``feed_decode_error``, ``flush``); each feed
is called only on the consumers that define it (every call costs, per picture or packet). What a
feed returns (findings, or nothing) goes to ``record`` as it comes, so records keep media order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from worker.detectors import AudioBlock, Detector, Finding, PacketInfo, VideoFrame

FEEDS = ("feed_video", "feed_audio", "feed_packet", "feed_decode_error", "flush")


def feeds(consumer: object, feed: str) -> bool:
    """Whether ``consumer`` looks at ``feed``: it defines it, and not as the base class's no-op."""
    method = getattr(type(consumer), feed, None)
    return method is not None and method is not getattr(Detector, feed, None)


class Dispatcher:
    """Calls each feed on the consumers that take it, in the order given, and hands their
    findings to ``record``."""

    def __init__(self, consumers: Sequence[Any], record: Callable[[list[Finding]], None]) -> None:
        self.consumers = list(consumers)
        self.record = record
        taking = {feed: [getattr(c, feed) for c in self.consumers if feeds(c, feed)] for feed in FEEDS}
        self._video = taking["feed_video"]
        self._audio = taking["feed_audio"]
        self._packet = taking["feed_packet"]
        self._decode_error = taking["feed_decode_error"]
        self._flush = taking["flush"]

    @property
    def wants_packets(self) -> bool:
        """Whether any consumer looks at packets (else none need be described)."""
        return bool(self._packet)

    def video(self, frame: VideoFrame) -> None:
        for feed in self._video:
            found = feed(frame)
            if found:
                self.record(found)

    def audio(self, block: AudioBlock) -> None:
        for feed in self._audio:
            found = feed(block)
            if found:
                self.record(found)

    def packet(self, info: PacketInfo) -> None:
        for feed in self._packet:
            found = feed(info)
            if found:
                self.record(found)

    def decode_error(self, t: float, kind: str, message: str) -> None:
        for feed in self._decode_error:
            found = feed(t, kind, message)
            if found:
                self.record(found)

    def flush(self, t_end: float) -> None:
        for feed in self._flush:
            found = feed(t_end)
            if found:
                self.record(found)
