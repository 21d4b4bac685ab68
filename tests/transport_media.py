"""Real encoded MPEG-TS for the transport tests, made once per session by independent muxers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from avmon.testsrc import generate
from avmon.tsfault import Injected
from infra import local
from shared.models import Defect, Event
from worker.detectors.base import Finding
from worker.session import SessionConfig, StreamSession
from worker.transport import TransportAnalyzer, TransportOptions

SECONDS = 12
DATAGRAM = 7 * 188  # bytes: the usual MPEG-TS over UDP payload

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")


def _ffmpeg(path: Path, *args: str) -> Path:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", *args,
         "-f", "mpegts", str(path)],
        check=True,
    )
    return path


_made: dict[str, bytes] = {}


def make_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Made once per session, whichever test module asks first. ``cbr``: FFmpeg, libx264 + AAC
    at a constant -muxrate (null packets, PCR-only packets); ``vbr``: FFmpeg, libx264 + MP2
    without; ``testsrc``: ``avmon testsrc`` (PyAV's muxer)."""
    if "cbr" in _made:
        return _made
    d = tmp_path_factory.mktemp("transport")
    cbr = _ffmpeg(d / "cbr.ts", "-b:v", "800k", "-c:a", "aac", "-b:a", "96k", "-muxrate", "1500k")
    vbr = _ffmpeg(d / "vbr.ts", "-c:a", "mp2")
    generate(d / "testsrc.ts", duration_s=SECONDS, width=320, height=180)
    _made.update({p.stem: p.read_bytes() for p in (cbr, vbr, d / "testsrc.ts")})
    return _made


def make_mpts(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Two programs in one TS (FFmpeg, constant 3 Mb/s): PMTs 0x1000 and 0x1001, PIDs 0x100 and
    0x101 (video, audio, PCR on video) and 0x102 and 0x103."""
    if "mpts" not in _made:
        path = tmp_path_factory.mktemp("mpts") / "mpts.ts"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000",
             "-t", "9", "-map", "0", "-map", "1", "-map", "2", "-map", "3",
             "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "mp2",
             "-program", "title=one:st=0:st=1", "-program", "title=two:st=2:st=3",
             "-muxrate", "3M", "-f", "mpegts", str(path)],
            check=True,
        )
        _made["mpts"] = path.read_bytes()
    return _made["mpts"]


def analyse(
    inj: Injected,
    mode: str,
    options: TransportOptions | None = None,
    analyzer: TransportAnalyzer | None = None,
) -> list[Finding]:
    """The whole stream in one call as a file (PCR clock), or as datagrams stamped with the time
    a real-time sender would send them."""
    a = analyzer or TransportAnalyzer(options)
    out: list[Finding] = []
    if mode == "file":
        out += a.feed(inj.data)
    else:
        for i in range(0, len(inj.data), DATAGRAM):
            end = min(i + DATAGRAM, len(inj.data))
            out += a.feed(inj.data[i:end], inj.arrival(end))
    return out + a.flush(1e9)


def monitor_udp(
    data: bytes, arrival: Callable[[int], float] | None, **config: Any
) -> tuple[StreamSession, list[Defect], list[Event]]:
    """Send ``data`` over UDP to a session listening on loopback, each datagram when
    ``arrival(end offset)`` (seconds from the start; None: at once) says; its defects and events.
    ``config``: more :class:`SessionConfig` fields."""
    port = local.free_port()
    found: list[Defect] = []
    events: list[Event] = []
    stop = threading.Event()
    cfg = SessionConfig(url=f"udp://@:{port}", read_timeout_s=2.0, decode_threads=1, **config)
    session = StreamSession("ts", cfg, lambda d, _: found.append(d), stop=stop, emit_event=events.append)
    thread = threading.Thread(target=session.run)
    thread.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        start = time.monotonic() + 0.3
        for i in range(0, len(data), DATAGRAM):
            due = arrival(i + DATAGRAM) if arrival is not None else 0.0
            wait = start + due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            tx.sendto(data[i : i + DATAGRAM], ("127.0.0.1", port))
    time.sleep(0.5)
    stop.set()
    thread.join()
    return session, found, events
