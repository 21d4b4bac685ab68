"""Feeding MPEG-TS to the transport analyser and to a session over UDP (the sources themselves:
:func:`tests.media.transport_sources`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from avmon.tsfault import Injected
from infra import local
from shared.models import Defect, Event
from worker.detectors.base import Finding
from worker.session import SessionConfig, StreamSession
from worker.transport import TransportAnalyzer, TransportOptions

DATAGRAM = 7 * 188  # bytes: the usual MPEG-TS over UDP payload


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
