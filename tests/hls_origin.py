"""A live HLS ladder over local HTTP with faults on demand, for the playlist monitor's tests.

:func:`ffmpeg_ladder` makes the media with the ffmpeg CLI's hls muxer: a two-rendition VOD
ladder (320x180 and 160x90 H.264 + AAC, 1 s segments) with its master playlist.
:class:`LadderOrigin` serves it as a live stream: each rendition a sliding window of ``window``
segments over those files that moves one segment per :meth:`LadderOrigin.advance` (or, with
:meth:`LadderOrigin.run_live`, every segment duration), ENDLIST once the media is used up. The
master is ffmpeg's own. Faults, each on one rendition or one segment:

* ``stall(name)``: the rendition's playlist stops moving (stale);
* ``rewind(name, n)``: its window goes ``n`` segments back (an origin failover to a late copy);
* ``extinf[(name, index)] = s``: that segment's EXTINF says ``s``;
* ``missing.add((name, index))``: that segment answers 404;
* ``discontinuities.add(index)``: an EXT-X-DISCONTINUITY before that segment in every rendition,
  and ``count_discontinuities = False``: the DISCONTINUITY-SEQUENCE forgets those that left;
* ``tags[index] = [...]``: lines written before that segment (cue tags);
* ``dropped.add(uri)``: that variant left out of the master.

Segments honour ``Range: bytes=a-b`` (206), as origins and CDNs do. ``requests`` counts paths.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.media import ffmpeg


def ffmpeg_ladder(root: Path, seconds: float, segment_s: int = 1) -> Path:
    """A two-rendition HLS VOD ladder of ``seconds`` s in ``root`` (``master.m3u8``, ``r0.m3u8``
    320x180, ``r1.m3u8`` 160x90, segments ``rN_XXX.ts`` of ``segment_s``); returns the master's path."""
    root.mkdir(parents=True, exist_ok=True)
    gop = str(25 * segment_s)
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-filter_complex", "[0:v]split=2[a][b];[b]scale=160:90[b2]",
        "-map", "[a]", "-map", "[b2]", "-map", "1:a", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
        "-b:v:0", "400k", "-b:v:1", "150k", "-c:a", "aac", "-b:a", "64k",
        "-f", "hls", "-hls_time", str(segment_s), "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(root / "r%v_%03d.ts"), "-master_pl_name", "master.m3u8",
        "-var_stream_map", "v:0,a:0 v:1,a:1", str(root / "r%v.m3u8"),
    )  # fmt: skip
    return root / "master.m3u8"


@dataclass
class Track:
    """One rendition: its segments (file name, EXTINF s) and where its window starts."""

    name: str
    target: int
    segments: list[tuple[str, float]]
    position: int = 0
    stalled: bool = False
    moved_at: float = 0.0  # wall-clock time its window last gained a segment


_EXTINF = re.compile(r"#EXTINF:([0-9.]+)")


def _read_vod(path: Path) -> tuple[int, list[tuple[str, float]]]:
    """An ffmpeg VOD playlist's target duration and segments. A fixture we wrote, not input
    under test: read by hand so the origin does not share the parser it tests."""
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    target = next(int(line.split(":", 1)[1]) for line in lines if line.startswith("#EXT-X-TARGETDURATION:"))
    segments, duration = [], 0.0
    for line in lines:
        m = _EXTINF.match(line)
        if m:
            duration = float(m[1])
        elif not line.startswith("#"):
            segments.append((line, duration))
    return target, segments


@dataclass
class LadderOrigin:
    root: Path
    window: int = 4
    tracks: dict[str, Track] = field(default_factory=dict)
    extinf: dict[tuple[str, int], float] = field(default_factory=dict)
    missing: set[tuple[str, int]] = field(default_factory=set)
    discontinuities: set[int] = field(default_factory=set)
    count_discontinuities: bool = True
    tags: dict[int, list[str]] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._master = (self.root / "master.m3u8").read_text()
        for uri in [line for line in self._master.splitlines() if line.strip().endswith(".m3u8")]:
            name = uri.strip().removesuffix(".m3u8")
            target, segments = _read_vod(self.root / uri.strip())
            self.tracks[name] = Track(name, target, segments)
        self._frozen_dseq = {name: 0 for name in self.tracks}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.origin = self  # type: ignore[attr-defined]
        self._threads = [threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)]
        self._threads[0].start()
        self._live = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def master_url(self) -> str:
        return f"{self.base}/master.m3u8"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}.m3u8"

    # ------------------------------------------------------------ time and faults

    def advance(self, n: int = 1) -> None:
        """Every rendition that is not stalled gains ``n`` segments (and drops as many)."""
        with self.lock:
            for t in self.tracks.values():
                if not t.stalled and t.position < len(t.segments) - self.window:
                    t.position = min(t.position + n, len(t.segments) - self.window)
                    t.moved_at = time.time()

    def stall(self, name: str, stalled: bool = True) -> None:
        with self.lock:
            self.tracks[name].stalled = stalled

    def rewind(self, name: str, n: int) -> None:
        with self.lock:
            t = self.tracks[name]
            t.position = max(0, t.position - n)

    def ended(self) -> bool:
        with self.lock:
            return all(t.position >= len(t.segments) - self.window for t in self.tracks.values())

    def run_live(self, period_s: float) -> None:
        """Advance every ``period_s`` in a thread, until the media is used up or :meth:`close`."""

        def tick() -> None:
            while not self._live.wait(period_s) and not self.ended():
                self.advance()

        thread = threading.Thread(target=tick, daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        self._live.set()
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------ rendering

    def master(self) -> str:
        lines = self._master.splitlines()
        out: list[str] = []
        for i, line in enumerate(lines):
            if line.strip() in self.dropped or (i + 1 < len(lines) and lines[i + 1].strip() in self.dropped):
                continue
            out.append(line)
        return "\n".join(out) + "\n"

    def media(self, name: str) -> str:
        with self.lock:
            t = self.tracks[name]
            pos = t.position
            left = sum(1 for i in self.discontinuities if i < pos)
            if self.count_discontinuities:
                self._frozen_dseq[name] = left
            dseq = self._frozen_dseq[name]
            end = pos + self.window >= len(t.segments)
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:3",
                f"#EXT-X-TARGETDURATION:{t.target}",
                f"#EXT-X-MEDIA-SEQUENCE:{pos}",
                f"#EXT-X-DISCONTINUITY-SEQUENCE:{dseq}",
            ]
            for i in range(pos, min(pos + self.window, len(t.segments))):
                lines += self.tags.get(i, [])
                if i in self.discontinuities:
                    lines.append("#EXT-X-DISCONTINUITY")
                uri, duration = t.segments[i]
                lines += [f"#EXTINF:{self.extinf.get((name, i), duration):.6f},", uri]
            if end:
                lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def segment(self, path: str) -> bytes | None:
        m = re.fullmatch(r"/(\w+?)_(\d+)\.ts", path)
        if m is None or (m[1], int(m[2])) in self.missing:
            return None
        file = self.root / path.lstrip("/")
        return file.read_bytes() if file.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        origin: LadderOrigin = self.server.origin  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        with origin.lock:
            origin.requests[path] += 1
        body: bytes | None
        if path == "/master.m3u8":
            body, ctype = origin.master().encode(), "application/vnd.apple.mpegurl"
        elif path.endswith(".m3u8") and path[1:-5] in origin.tracks:
            body, ctype = origin.media(path[1:-5]).encode(), "application/vnd.apple.mpegurl"
        else:
            body, ctype = origin.segment(path), "video/mp2t"
        if body is None:
            self.send_error(404)
            return
        status, extra = 200, {}
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged and ctype == "video/mp2t":
            first = int(ranged[1])
            last = min(int(ranged[2]) if ranged[2] else len(body) - 1, len(body) - 1)
            extra = {"Content-Range": f"bytes {first}-{last}/{len(body)}"}
            body, status = body[first : last + 1], 206
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass
