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

import math
import socket
import threading
from typing import Unpack
from urllib.parse import urlsplit

import av

from avmon.testsrc.encoder import Pacer, build_truth, encode
from avmon.testsrc.hls import HlsServer, Playlist, Segmenter
from avmon.testsrc.mpegts import TS_OPTIONS, TS_PACKET, TsDrop
from avmon.testsrc.script import GroundTruth
from avmon.testsrc.spec import Media, SignalSpec

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
        self._server: HlsServer | None = None
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
        speed: float = 1.0,
        window: int = 6,
        ready_timeout_s: float = 60.0,
        **media: Unpack[Media],
    ) -> LiveSource:
        """Start sending. ``udp``: to ``host``:``port`` (required). ``hls``: serve on
        ``host``:``port`` (0: a free port; see ``url``). ``rtmp``: publish to ``url``.
        ``media``: the ``SignalSpec`` fields, as in ``generate``. Returns once the first data is out
        (HLS: the first segment); raises what the sender hit."""
        spec = SignalSpec(**media)
        if kind == "udp":
            if not 0 < port < 65536:
                raise ValueError("a UDP source needs the receiver's port")
            source = cls(kind, spec, url=f"udp://{_netloc(host, port)}", speed=speed, window=window)
            source._udp = (host, port)
        elif kind == "hls":
            source = cls(kind, spec, url="", speed=speed, window=window)
            source.playlist = Playlist(math.ceil(spec.gop / spec.fps - 1e-9), window)
            source._server = HlsServer((host, port), source.playlist)
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
            sink: _Datagrams | Segmenter = _Datagrams(*self._udp)
        else:
            assert self.playlist is not None
            sink = Segmenter(self.playlist, self.spec.fps)
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

    def __init__(self, sink: _Datagrams | Segmenter, drop: TsDrop | None) -> None:
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
