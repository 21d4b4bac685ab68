"""The analyser on datagrams that crossed a real loopback UDP socket, stamped on receipt with
``time.monotonic()``: plain and RTP-wrapped, the clean stream and faults, one of them paced in
real time so that its indicator is judged on real arrival times.

The receiver here is the test's own (the worker's socket reader is another module's job): a
thread that reads datagrams and stamps them. Bursts are sent only as fast as it drains them, so
loopback cannot drop any (a drop would rightly be a continuity error).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from avmon.tsfault import Injected, inject, parse_faults
from tests.media import transport_sources
from tests.support import needs_ffmpeg, wait_for
from tests.transport_media import DATAGRAM
from worker.detectors.base import Finding
from worker.transport import TransportAnalyzer

pytestmark = needs_ffmpeg
BURST = 64  # datagrams between waits for the receiver: 84 KB, well inside a socket buffer


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return transport_sources()


class Receiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[bytes, float]] = []
        self.count = 0
        self.expected = -1
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            self.got.append((data, time.monotonic()))
            self.count += 1
            if self.count == self.expected:
                return

    def wait_for(self, n: int) -> None:
        wait_for(lambda: self.count >= n, 10.0, interval_s=0.001, what=f"{n} datagrams")

    def close(self) -> None:
        self.thread.join(timeout=10.0)
        self.sock.close()


def send(inj: Injected, *, rtp: bool = False, realtime_s: float | None = None) -> list[tuple[bytes, float]]:
    """Send the stream as 1316-byte datagrams; ``realtime_s``: only its first seconds, each
    datagram at its own send time, else bursts as fast as the receiver drains them."""
    rx = Receiver()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    offsets = list(range(0, len(inj.data), DATAGRAM))
    t0 = inj.arrival(DATAGRAM)
    if realtime_s is not None:
        offsets = [i for i in offsets if inj.arrival(min(i + DATAGRAM, len(inj.data))) - t0 < realtime_s]
    rx.expected = len(offsets)
    start = time.monotonic()
    try:
        for k, i in enumerate(offsets):
            end = min(i + DATAGRAM, len(inj.data))
            if realtime_s is not None:
                delay = inj.arrival(end) - t0 - (time.monotonic() - start)
                if delay > 0:
                    time.sleep(delay)
            header = bytes([0x80, 33]) + (k & 0xFFFF).to_bytes(2, "big") + bytes(8) if rtp else b""
            tx.sendto(header + inj.data[i:end], ("127.0.0.1", rx.port))
            if realtime_s is None and k % BURST == BURST - 1:
                rx.wait_for(k + 1)
        rx.wait_for(len(offsets))
    finally:
        tx.close()
        rx.close()
    return rx.got


def analyse(datagrams: list[tuple[bytes, float]]) -> list[Finding]:
    a = TransportAnalyzer()
    out: list[Finding] = []
    for data, t in datagrams:
        out += a.feed(data, t)
    return out + a.flush(datagrams[-1][1])


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("", None),
        ("duplicate@3", None),
        ("drop@3", "continuity_count_error"),
        ("duplicate2@3", "continuity_count_error"),
        ("tei@3", "transport_error"),
        ("sync@3", "sync_byte_error"),
        ("pmt_crc@3", "crc_error"),
        ("garbage@3", "ts_sync_loss"),
    ],
)
def test_a_fault_over_loopback_udp_raises_exactly_its_indicator(
    sources: dict[str, bytes], script: str, expected: str | None
) -> None:
    found = analyse(send(inject(sources["cbr"], parse_faults(script))))
    assert [f.type for f in found] == ([expected] * 2 if expected else [])


def test_rtp_over_loopback_udp_is_unwrapped(sources: dict[str, bytes]) -> None:
    found = analyse(send(inject(sources["vbr"], parse_faults("drop@3")), rtp=True))
    assert [f.type for f in found] == ["continuity_count_error"] * 2


def test_a_pat_withheld_over_real_time_udp_is_a_pat_error_on_arrival_times(sources: dict[str, bytes]) -> None:
    inj = inject(sources["cbr"], parse_faults("pat@1+1"))
    got = send(inj, realtime_s=3.2)
    found = analyse(got)
    assert [f.type for f in found] == ["pat_error"] * 2
    opened, closed = found
    t0 = got[0][1]  # the first datagram left at the stream's first PCR (0 s) ± a packet
    assert opened.start_s - t0 == pytest.approx(1.0 + 0.5, abs=0.25)
    assert closed.end_s is not None and closed.end_s - t0 == pytest.approx(2.0, abs=0.25)
