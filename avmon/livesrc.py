"""Live outputs of the test-signal generator: MPEG-TS over UDP, HLS over local HTTP, RTMP push.

``LiveSource.start(kind, ...)`` encodes the media of ``avmon.testsrc`` (same content, defects and
ground truth for a seed) in a background thread and sends it paced in real time: each packet
leaves when its decode time is due (``speed`` times faster, for tests). ``signal_loss`` spans are
not sent at all; the stream then resumes with the timestamps it would have had by then.
``truth.origin_s`` is the container time of media time 0 (0.08 s: the B-frame delay, as in a
.ts file); a receiver that joins late starts its own media time at its first packet, so it
should add (its first container time - ``origin_s``) to its times before comparing.

* ``udp``: one MPEG-TS muxer writes into memory and our own socket sends 7 TS packets (1316 bytes)
  per datagram as they come out, so pacing and loss are ours rather than FFmpeg's udp protocol's.
  PAT and PMT precede every video frame, so a receiver can join at any keyframe. Receive with
  ``av.open("udp://127.0.0.1:PORT", timeout=...)``: FFmpeg binds that address and port
  (``udp://@:PORT`` binds all addresses; both receive). Start the receiver first: datagrams sent
  to a port nobody has bound are gone. When the datagrams stop, reads do not end: PyAV raises
  ``av.ExitError`` once its read timeout expires, with the decoder still holding the last two
  pictures (B-frame delay) unless the receiver flushes it.
* ``hls``: the same MPEG-TS byte stream, cut before every keyframe (one segment per ``gop_s``; each
  starts with PAT, PMT and an IDR), kept in memory and served by a small HTTP server on
  ``http://HOST:PORT/live.m3u8``: a sliding window of ``window`` segments, the media sequence
  advancing, ``#EXT-X-ENDLIST`` once the source has ended; segments that left the window are
  evicted after another ``window``. During a signal loss the segment in progress is published at
  once and then nothing appears until the stream resumes. ``start`` returns once the first segment
  is out (FFmpeg refuses an empty live playlist).
* ``rtmp``: FLV published to an RTMP server that listens (``rtmp://HOST:PORT/APP/KEY``), e.g. a
  receiver opened with ``av.open(url, options={"listen": "1"})`` or nginx-rtmp. The bundled FFmpeg
  could listen for players itself (``-listen 1``), but PyAV opens an output URL without protocol
  options, so the generator can only push. A listening receiver and this sender in one process
  hang (observed; PyAV connects an output without releasing the GIL): run one side in another
  process. The end of an RTMP stream reaches a PyAV reader as ``OSError`` (EIO), not EOF. SRT is
  not compiled into the bundled FFmpeg.
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av

from avmon.testsrc import (
    PSI_PIDS,
    TS_CLOCK,
    TS_OPTIONS,
    TS_PACKET,
    VIDEO_PID,
    DefectSpec,
    GroundTruth,
    Pacer,
    SignalSpec,
    TsDrop,
    TsPackets,
    build_truth,
    encode,
    ts_pes_pts,
    ts_pid,
    ts_random_access,
)

KINDS = ("udp", "hls", "rtmp")
DATAGRAM = 7 * TS_PACKET  # 1316 bytes: what fits an Ethernet MTU, as IPTV sends it
# Live MPEG-TS: PAT/PMT before every frame (join anywhere, cut segments anywhere), one PES per
# audio frame, and every packet out of the muxer (and its 1-packet interleaving queue) at once.
LIVE_TS_OPTIONS = TS_OPTIONS | {
    "mpegts_flags": "pat_pmt_at_frames",
    "pes_payload_size": "0",
    "flush_packets": "1",
    "max_interleave_delta": "1",
}


class _Datagrams:
    """Sends an MPEG-TS byte stream to HOST:PORT in datagrams of 7 TS packets."""

    def __init__(self, host: str, port: int) -> None:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._addr = addr
        self._buf = b""
        self.sent = 0  # datagrams

    def write(self, data: bytes) -> int:
        buf = self._buf + bytes(data)
        whole = len(buf) - len(buf) % DATAGRAM
        for i in range(0, whole, DATAGRAM):
            self._send(buf[i : i + DATAGRAM])
        self._buf = buf[whole:]
        return len(data)

    def _send(self, datagram: bytes) -> None:
        try:
            self._sock.sendto(datagram, self._addr)
            self.sent += 1
        except ConnectionRefusedError:  # an ICMP "port unreachable" for an earlier one: send on
            pass

    def pause(self) -> None:
        pass

    def finish(self) -> None:
        if self._buf:
            self._send(self._buf)
            self._buf = b""
        self._sock.close()


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


class _Segmenter:
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


class _HlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], playlist: Playlist) -> None:
        self.playlist = playlist
        super().__init__(address, _HlsHandler)


class _HlsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _HlsServer)
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


class LiveSource:
    """A test signal sent live from a background thread; see the module docstring. Use
    ``LiveSource.start(...)``; ``url`` is what a receiver opens, ``truth`` what it should find.
    A context manager: leaving the block stops the source (and its HTTP server)."""

    def __init__(self, kind: str, spec: SignalSpec, *, url: str, speed: float, window: int) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown live output {kind!r} (expected one of {', '.join(KINDS)})")
        spec.check_output(live=True)
        if window < 1:
            raise ValueError("window must be >= 1 segment")
        self.kind, self.spec, self.url = kind, spec, url
        self._stop = threading.Event()
        self._pacer = Pacer(speed, self._stop)
        self._ready = threading.Event()
        self._done = threading.Event()
        self.error: BaseException | None = None
        self._truth: GroundTruth | None = None
        self.playlist: Playlist | None = None
        self._server: _HlsServer | None = None
        self._thread = threading.Thread(target=self._run, name=f"livesrc-{kind}", daemon=True)
        self._udp: tuple[str, int] | None = None

    @classmethod
    def start(
        cls,
        kind: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        url: str | None = None,
        duration_s: float = 30.0,
        defects: Sequence[DefectSpec] = (),
        seed: int = 0,
        width: int = 640,
        height: int = 360,
        fps: int = 25,
        sample_rate: int = 48000,
        channels: int = 2,
        gop_s: float = 2.0,
        sync_marks: bool = False,
        speed: float = 1.0,
        window: int = 6,
        ready_timeout_s: float = 60.0,
    ) -> LiveSource:
        """Start sending. ``udp``: to ``host``:``port`` (required). ``hls``: serve on
        ``host``:``port`` (0: a free port; see ``url``). ``rtmp``: publish to ``url``.
        Returns once the first data is out (HLS: the first segment); raises what the sender hit."""
        spec = SignalSpec(
            duration_s=duration_s,
            defects=tuple(defects),
            seed=seed,
            width=width,
            height=height,
            fps=fps,
            sample_rate=sample_rate,
            channels=channels,
            gop_s=gop_s,
            sync_marks=sync_marks,
        )
        if kind == "udp":
            if not 0 < port < 65536:
                raise ValueError("a UDP source needs the receiver's port")
            source = cls(kind, spec, url=f"udp://{_netloc(host, port)}", speed=speed, window=window)
            source._udp = (host, port)
        elif kind == "hls":
            source = cls(kind, spec, url="", speed=speed, window=window)
            source.playlist = Playlist(math.ceil(spec.gop / spec.fps - 1e-9), window)
            source._server = _HlsServer((host, port), source.playlist)
            threading.Thread(target=source._server.serve_forever, name="livesrc-http", daemon=True).start()
            source.url = f"http://{_netloc(host, source._server.server_address[1])}/live.m3u8"
        elif kind == "rtmp":
            if not url or urlsplit(url).scheme not in ("rtmp", "rtmps"):
                raise ValueError(f"an RTMP source needs an rtmp:// URL to publish to, not {url!r}")
            source = cls(kind, spec, url=url, speed=speed, window=window)
        else:
            raise ValueError(f"unknown live output {kind!r} (expected one of {', '.join(KINDS)})")
        source._thread.start()
        if not source._ready.wait(ready_timeout_s) or source.error is not None:
            source.stop()
            if source.error is not None:
                raise source.error
            raise TimeoutError(f"{source.url}: nothing sent within {ready_timeout_s:g} s")
        return source

    @property
    def truth(self) -> GroundTruth:
        if self._truth is None:
            raise RuntimeError("the source has not started yet")
        return self._truth

    @property
    def done(self) -> bool:
        """Whether the sender has finished (the end of the media, a stop, or an error)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the sender to finish; True if it has. Raises the error it stopped on, if any."""
        finished = self._done.wait(timeout)
        if self.error is not None:
            raise self.error
        return finished

    def stop(self) -> None:
        """Stop sending (the muxer is closed properly) and stop the HTTP server."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(30)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pipeline(self) -> _Pipeline | None:
        """The byte path behind the MPEG-TS muxer (None for RTMP, where FFmpeg does the I/O)."""
        if self.kind == "rtmp":
            return None
        if self._udp is not None:
            sink: _Datagrams | _Segmenter = _Datagrams(*self._udp)
        else:
            assert self.playlist is not None
            sink = _Segmenter(self.playlist, self.spec.fps)
        return _Pipeline(sink, TsDrop(sink.write, self.spec) if self.spec.of("drop") else None)

    def _run(self) -> None:
        pipe: _Pipeline | None = None
        try:
            pipe = self._pipeline()
            if pipe is None:
                out = av.open(self.url, "w", format="flv", timeout=10.0)
            else:
                out = av.open(
                    pipe, "w", format="mpegts", buffer_size=DATAGRAM, container_options=LIVE_TS_OPTIONS
                )
            with out:
                paused: int | None = None  # the signal loss in progress
                for item in encode(out, self.spec):
                    if self._truth is None:  # the muxer moves the first dts (B-frame delay) to 0
                        self._truth = build_truth(self.spec, self.url, max(0.0, -item.pace_s))
                    loss = self.spec.lost(item.kind, item.t)
                    if loss is not None:
                        if loss != paused and pipe is not None:
                            pipe.pause()
                        paused = loss
                        continue
                    if not self._pacer.wait(item.pace_s):
                        break
                    out.mux(item.packet)
                    if self.playlist is None or self.playlist.first.is_set():
                        self._ready.set()
        except BaseException as exc:  # reported by start() and wait()
            self.error = exc
        finally:
            if pipe is not None:
                try:
                    pipe.finish()
                except Exception as exc:
                    self.error = self.error or exc
            self._ready.set()
            self._done.set()


class _Pipeline:
    """The file object behind a live MPEG-TS muxer: [the drop filter →] datagrams or segments."""

    def __init__(self, sink: _Datagrams | _Segmenter, drop: TsDrop | None) -> None:
        self._sink, self._drop = sink, drop

    def write(self, data: bytes) -> int:
        (self._drop or self._sink).write(data)
        return len(data)

    def pause(self) -> None:
        self._sink.pause()

    def finish(self) -> None:
        if self._drop is not None:
            self._drop.finish()
        self._sink.finish()


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_cli(args: argparse.Namespace, media: dict[str, Any]) -> int:
    """``avmon testsrc --udp/--hls/--rtmp``: send until the media ends, Ctrl-C or SIGTERM."""
    if args.udp is not None:
        kind, (host, port), url = "udp", args.udp, None
    elif args.hls is not None:
        kind, (host, port), url = "hls", args.hls, None
    else:
        kind, host, port, url = "rtmp", "127.0.0.1", 0, args.rtmp
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    try:
        source = LiveSource.start(
            kind, host=host, port=port, url=url, speed=args.speed, window=args.window, **media
        )
    except (OSError, av.FFmpegError, TimeoutError) as exc:
        print(f"testsrc: cannot send {kind}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    port = urlsplit(source.url).port or 0
    path = Path(args.truth or f"testsrc-{kind}{f'-{port}' if port else ''}.truth.json")
    with source:
        path.write_text(source.truth.to_json())
        spec = source.spec
        print(
            f"sending {source.url}: {spec.duration_s:g} s {spec.width}x{spec.height}@{spec.fps} h264/aac, "
            f"{len(spec.defects)} defect(s), truth in {path}; Ctrl-C stops",
            flush=True,
        )
        try:
            while not source.wait(0.5):
                pass
            if kind == "hls":  # let readers at the live edge reach the ENDLIST
                time.sleep(args.window * spec.gop / spec.fps / args.speed)
        except KeyboardInterrupt:
            pass
        except (OSError, av.FFmpegError) as exc:
            print(f"testsrc: {source.url}: {exc}", file=sys.stderr)
            return 1
    print(f"sent {source.url} ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0
