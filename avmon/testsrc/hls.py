"""Live HLS from memory: a sliding-window ``Playlist``, the ``Segmenter`` that cuts an MPEG-TS byte
stream before each keyframe, and the small HTTP server that serves both (see ``live``)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from avmon.testsrc.mpegts import (
    PSI_PIDS,
    TS_CLOCK,
    VIDEO_PID,
    TsPackets,
    ts_pes_pts,
    ts_pid,
    ts_random_access,
)


class Playlist:
    """A live HLS media playlist over in-memory segments: thread-safe, a sliding window."""

    def __init__(self, target_s: int, window: int) -> None:
        self.target_s, self.window = target_s, window
        self._lock = threading.Lock()
        self._segments: dict[int, bytes] = {}
        self._entries: list[tuple[int, float]] = []  # (media sequence, duration s) in the window
        self._next = 0
        self.ended = False
        self.first = threading.Event()  # set once there is a segment to play

    def add(self, data: bytes, duration_s: float) -> None:
        with self._lock:
            seq, self._next = self._next, self._next + 1
            self._segments[seq] = data
            self._entries = [*self._entries, (seq, duration_s)][-self.window :]
            oldest = self._entries[0][0] - self.window  # a reader may still be fetching these
            for old in [s for s in self._segments if s < oldest]:
                del self._segments[old]
        self.first.set()

    def end(self) -> None:
        with self._lock:
            self.ended = True

    def segment(self, seq: int) -> bytes | None:
        with self._lock:
            return self._segments.get(seq)

    def render(self) -> str:
        with self._lock:
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:3",
                f"#EXT-X-TARGETDURATION:{self.target_s}",
                f"#EXT-X-MEDIA-SEQUENCE:{self._entries[0][0] if self._entries else 0}",
            ]
            for seq, duration in self._entries:
                lines += [f"#EXTINF:{duration:.3f},", f"seg{seq}.ts"]
            if self.ended:
                lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


class Segmenter:
    """Cuts an MPEG-TS byte stream into HLS segments just before each video keyframe (before the
    PAT and PMT that precede it) and publishes a segment when the next one starts."""

    def __init__(self, playlist: Playlist, fps: int) -> None:
        self._playlist, self._fps = playlist, fps
        self._packets = TsPackets()
        self._cur: list[bytes] = []
        self._psi_run = 0  # PSI packets at the end of _cur
        self._start: int | None = None  # PTS (90 kHz) of the segment's keyframe
        self._last = 0  # latest picture PTS in the segment

    def write(self, data: bytes) -> int:
        for p in self._packets.split(data):
            pid = ts_pid(p)
            pts = ts_pes_pts(p) if pid == VIDEO_PID else None
            if pts is not None and ts_random_access(p):
                if self._start is not None:
                    cut = len(self._cur) - self._psi_run
                    self._publish(self._cur[:cut])
                    self._cur = self._cur[cut:]
                self._start = self._last = pts
            elif pts is not None:
                self._last = max(self._last, pts)
            self._cur.append(p)
            self._psi_run = self._psi_run + 1 if pid in PSI_PIDS else 0
        return len(data)

    def _publish(self, packets: list[bytes]) -> None:
        if self._start is not None:
            self._playlist.add(b"".join(packets), (self._last - self._start) / TS_CLOCK + 1 / self._fps)
        self._start = None

    def pause(self) -> None:
        """The sender stops (signal loss): publish what there is now; the rest starts a new segment."""
        self._publish(self._cur)
        self._cur, self._psi_run = [], 0

    def finish(self) -> None:
        self.pause()
        self._playlist.end()


class HlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], playlist: Playlist) -> None:
        self.playlist = playlist
        super().__init__(address, _HlsHandler)


class _HlsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, HlsServer)
        path = urlsplit(self.path).path
        m = re.fullmatch(r"/seg(\d+)\.ts", path)
        if path == "/live.m3u8":
            body, ctype = server.playlist.render().encode(), "application/vnd.apple.mpegurl"
        elif m and (data := server.playlist.segment(int(m[1]))) is not None:
            body, ctype = data, "video/mp2t"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: a reader polls every second
        pass
