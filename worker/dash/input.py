"""DASH input for the stream session: each chosen representation's byte stream read by its own
PyAV ``mp4`` demuxer, the two presented as one container.

:class:`~worker.dash.source.DashSource` follows the MPD and fetches the segments;
:class:`TrackReader` is one representation as a file-like object (initialization segment, then
its media segments in order); :class:`DashContainer` gives the session's decode loop what it reads
of a container (``streams``, ``duration``, ``demux``, ``close``), packets interleaved by decode
time. The timestamps are the segments' own: the session's media time follows the MPD's timeline.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import av

from worker import egress
from worker.dash.fetch import fetch
from worker.dash.source import (
    INIT_MAX_BYTES,
    MPD_MAX_BYTES,
    SEGMENT_MAX_BYTES,
    DashOptions,
    DashSource,
    Report,
    Track,
)
from worker.detectors.base import Finding
from worker.media import FetchCancelled, Limits

READ_BYTES = 256 * 1024  # what a demuxer asks of a TrackReader at once
# The demuxer for a representation's segments by its @mimeType's subtype (ISO BMFF otherwise):
# WebM and MPEG-TS segments, like fMP4 ones, read as one stream once concatenated.
SEGMENT_FORMATS = {"mp4": "mp4", "webm": "matroska", "mp2t": "mpegts"}


def is_dash_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and parts.path.lower().endswith(".mpd")


def answers_mpd(url: str, *, allow_private: bool, timeout_s: float, stop: threading.Event) -> bool:
    """Whether ``url`` (not named ``.mpd``) answers an MPD: ``application/dash+xml``, or XML
    whose root is ``MPD``. False for anything else, and when the fetch fails."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        return False
    try:
        proxy_url = egress.shared_proxy(allow_private).url
        answer = fetch(url, proxy_url, timeout_s, MPD_MAX_BYTES, stop=stop)
    except (OSError, ValueError):
        return False
    head = answer.body[:4096].lstrip()
    return answer.status == 200 and (
        answer.content_type == "application/dash+xml" or (head.startswith(b"<") and b"<MPD" in head)
    )


class TrackReader:
    """One representation as a file-like object for PyAV: its initialization segment, then its
    media segments in order. ``read`` never returns more than ``size`` bytes (PyAV copies what
    it gets into a buffer of that size)."""

    def __init__(self, source: DashSource, track: Track) -> None:
        self.source = source
        self.track = track
        self._buffer = memoryview(b"")
        self._init_sent = False
        self._ended = False

    def _fill(self) -> bool:
        source, track = self.source, self.track
        timeout = max(source.read_timeout_s, 2 * source.segment_s)
        if not self._init_sent:
            self._init_sent = True
            if track.rep.init_url is not None:
                status, body = source.fetch_body(track.rep.init_url, INIT_MAX_BYTES, timeout)
                if status != 200:
                    raise OSError(f"the {track.rep.kind} initialization segment answered HTTP {status}")
                self._buffer = memoryview(body)
                return True
        while True:
            seg = source.next_segment(track)
            if seg is None:
                return False
            try:
                status, body = source.fetch_body(seg.url, SEGMENT_MAX_BYTES, timeout)
            except FetchCancelled:
                raise
            except OSError as exc:  # OriginTooSlow (a timeout), Truncated, the network's own
                source.segment_error(track, seg, 0, f"{type(exc).__name__}: {exc}")
                continue
            if status != 200 or not body:
                source.segment_error(track, seg, status, f"HTTP {status}" if status != 200 else "empty")
                continue
            track.last_data = time.monotonic()
            self._buffer = memoryview(body)
            return True

    def read(self, size: int = -1) -> bytes:
        if not self._buffer and not self._ended:
            try:
                more = self._fill()
            except BaseException:
                # PyAV keeps this for the demuxer's caller; the demuxer may read once more before
                # it gives up, and a second exception would replace (and print) the first.
                self._ended = True
                raise
            self._ended = not more
        if not self._buffer:
            return b""
        limit = size if size and size > 0 else len(self._buffer)
        out, self._buffer = self._buffer[:limit], self._buffer[limit:]
        return bytes(out)


class _Stream:
    """A representation's PyAV stream under the index it has in the :class:`DashContainer`
    (each representation's demuxer numbers its own streams from 0)."""

    def __init__(self, inner: Any, index: int) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "index", index)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


class _Packet:
    """A demuxed packet that names its :class:`_Stream` (everything else is the packet's own)."""

    __slots__ = ("_packet", "stream", "stream_index")

    def __init__(self, packet: Any, stream: _Stream) -> None:
        self._packet = packet
        self.stream = stream
        self.stream_index = stream.index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._packet, name)

    def __bytes__(self) -> bytes:  # the packet's data (PyAV's Packet is a buffer; this is not)
        return bytes(self._packet)

    @property
    def raw(self) -> Any:
        """The PyAV packet itself: what readers of its bytes (a buffer) are given."""
        return self._packet


class DashContainer:
    """What the session's decode loop needs of a container, over one PyAV container per
    representation: ``streams`` (every stream of each, numbered in order: a representation that
    muxes audio with its video offers both), ``duration`` (µs, None when live), ``demux``
    interleaving their packets by decode time, ``close``."""

    def __init__(self, source: DashSource, containers: list[Any]) -> None:
        self.source = source
        self._containers = containers
        self.streams: list[_Stream] = []
        self._owner: dict[int, int] = {}  # stream index here -> its container
        for number, container in enumerate(containers):
            for inner in container.streams:
                self._owner[len(self.streams)] = number
                self.streams.append(_Stream(inner, len(self.streams)))

    @property
    def duration(self) -> int | None:
        """µs of a static presentation; None while it is live (a live MPD that turns static at
        its end is then read to that end, and the session completes)."""
        mpd = self.source.mpd
        return None if mpd.dynamic else int((mpd.duration_s or 0.0) * 1_000_000) or 1

    def demux(self, selected: Any = None) -> Iterator[_Packet]:
        wanted = list(self.streams) if selected is None else list(selected)
        by_container: dict[int, list[_Stream]] = {}
        for stream in wanted:
            by_container.setdefault(self._owner[stream.index], []).append(stream)
        sources: list[tuple[Iterator[Any], dict[int, tuple[_Stream, float]]]] = []
        for number, streams in by_container.items():
            inner = [stream._inner for stream in streams]
            mapping = {stream._inner.index: (stream, float(stream._inner.time_base)) for stream in streams}
            sources.append((iter(self._containers[number].demux(inner)), mapping))
        heads = [self._next(packets, mapping) for packets, mapping in sources]
        while True:
            live = [i for i, head in enumerate(heads) if head is not None]
            if not live:
                return
            index = min(live, key=lambda i: heads[i][0])  # type: ignore[index]
            head = heads[index]
            assert head is not None
            yield head[1]
            heads[index] = self._next(*sources[index])

    @staticmethod
    def _next(
        packets: Iterator[Any], mapping: dict[int, tuple[_Stream, float]]
    ) -> tuple[float, _Packet] | None:
        for packet in packets:
            found = mapping.get(packet.stream.index)
            if found is None:
                continue
            stream, tb = found
            at = packet.dts * tb if packet.dts is not None else float("-inf")
            return at, _Packet(packet, stream)
        return None

    def close(self) -> None:
        for container in self._containers:
            with contextlib.suppress(Exception):
                container.close()
        self.source.close()

    def __enter__(self) -> DashContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dash(
    url: str,
    limits: Limits,
    open_timeout_s: float,
    read_timeout_s: float,
    *,
    allow_private: bool,
    stop: threading.Event,
    on_finding: Report,
    options: DashOptions | None = None,
) -> DashContainer:
    """The DASH presentation at ``url`` opened for the session (see the module doc)."""
    source = DashSource(
        url,
        limits,
        open_timeout_s,
        read_timeout_s,
        allow_private=allow_private,
        stop=stop,
        on_finding=on_finding,
        options=options,
    )
    probe = {
        "probesize": str(limits.probe_size),
        "analyzeduration": str(int(limits.analyze_duration_s * 1_000_000)),
    }
    containers: list[Any] = []
    try:
        for track in source.tracks:
            reader = TrackReader(source, track)
            fmt = SEGMENT_FORMATS.get(track.rep.mime.partition("/")[2].lower(), "mp4")
            containers.append(av.open(reader, mode="r", format=fmt, options=probe, buffer_size=READ_BYTES))
    except BaseException:
        for container in containers:
            container.close()
        source.close()
        raise
    return DashContainer(source, containers)


def on_media_clock(finding: Finding, origin: float | None, offset: float, fallback: float) -> Finding:
    """A DASH finding (times on the source's clock, s) on the session's media timeline: source
    time ``origin`` is media time ``offset``; before the first packet, ``fallback``."""
    if origin is None:
        end = None if finding.end_s is None else fallback
        return replace(finding, start_s=fallback, end_s=end)
    start = max(0.0, finding.start_s - origin + offset)
    end = None if finding.end_s is None else max(start, finding.end_s - origin + offset)
    return replace(finding, start_s=start, end_s=end)
