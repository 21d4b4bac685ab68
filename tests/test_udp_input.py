"""The worker's own UDP reader (worker/udp.py): real datagrams over loopback."""

from __future__ import annotations

import socket
import threading
import time

import av
import pytest

from infra import local
from tests.media import make_testsrc
from worker.udp import UdpInput


def _sender() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _ts_packets(n: int, pid: int = 0x100) -> list[bytes]:
    return [bytes([0x47, pid >> 8, pid & 0xFF, 0x10 | (i % 16)]) + bytes([i % 256]) * 184 for i in range(n)]


def test_reads_every_queued_datagram_in_one_read() -> None:
    port = local.free_port()
    with UdpInput(f"udp://@:{port}", read_timeout_s=2.0) as udp, _sender() as tx:
        datagrams = [b"".join(_ts_packets(7)) for _ in range(5)]
        for d in datagrams:
            tx.sendto(d, ("127.0.0.1", port))
        time.sleep(0.1)
        assert udp.read(64 * 1316) == b"".join(datagrams)
        assert udp.datagrams == 5 and udp.position == 5 * 1316


def test_never_returns_more_than_asked_and_keeps_the_rest() -> None:
    port = local.free_port()
    with UdpInput(f"udp://127.0.0.1:{port}", read_timeout_s=2.0) as udp, _sender() as tx:
        data = b"".join(_ts_packets(14))
        tx.sendto(data[:1316], ("127.0.0.1", port))
        tx.sendto(data[1316:], ("127.0.0.1", port))
        time.sleep(0.1)
        first = udp.read(1000)
        rest = udp.read(10_000)
        assert len(first) == 1000 and first + rest == data


def test_unwraps_rtp() -> None:
    port = local.free_port()
    with UdpInput(f"udp://@:{port}", read_timeout_s=2.0) as udp, _sender() as tx:
        ts = b"".join(_ts_packets(7))
        rtp = bytes([0x80, 33, 0, 1]) + (1234).to_bytes(4, "big") + (99).to_bytes(4, "big")
        tx.sendto(rtp + ts, ("127.0.0.1", port))
        assert udp.read(10_000) == ts


def test_read_timeout_is_end_of_stream() -> None:
    port = local.free_port()
    with UdpInput(f"udp://@:{port}", read_timeout_s=0.3) as udp:
        assert udp.read(1316) == b""


def test_a_stop_ends_a_blocked_read() -> None:
    stop = threading.Event()
    port = local.free_port()
    with UdpInput(f"udp://@:{port}", read_timeout_s=30.0, stop=stop) as udp:
        threading.Timer(0.3, stop.set).start()
        assert udp.read(1316) == b""


def test_arrival_time_of_a_byte_is_when_its_datagram_came() -> None:
    port = local.free_port()
    with UdpInput(f"udp://@:{port}", read_timeout_s=2.0) as udp, _sender() as tx:
        before = time.time()
        tx.sendto(b"".join(_ts_packets(7)), ("127.0.0.1", port))
        time.sleep(0.3)  # read well after it arrived: the kernel's stamp says when it came
        udp.read(10_000)
        arrival = udp.arrival_at(100)
        assert arrival is not None and before <= arrival < before + 0.2


def test_kernel_drops_are_counted_as_the_monitors_own_loss() -> None:
    port = local.free_port()
    with UdpInput(f"udp://@:{port}", read_timeout_s=2.0, receive_buffer=32_768) as udp, _sender() as tx:
        for _ in range(400):  # ~526 KB into a ~32 KB buffer nobody reads meanwhile
            tx.sendto(b"".join(_ts_packets(7)), ("127.0.0.1", port))
        time.sleep(0.1)
        udp.read(1 << 20)  # what the buffer held; the rest was dropped
        # The kernel stamps its drop count on each datagram it queues: the next one says.
        tx.sendto(b"".join(_ts_packets(7)), ("127.0.0.1", port))
        udp.read(1 << 20)
        assert 0 < udp.drops < 400


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("udp") / "clip.ts"
    make_testsrc(path, duration_s=2.0, width=160, height=90)
    return path.read_bytes()


def test_pyav_demuxes_and_decodes_a_ts_read_through_it(clip: bytes) -> None:
    port = local.free_port()
    with UdpInput(f"udp://@:{port}", read_timeout_s=0.5) as udp, _sender() as tx:
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        udp.first_read_timeout_s = 5.0

        def send() -> None:
            for i in range(0, len(clip), 1316):
                tx.sendto(clip[i : i + 1316], ("127.0.0.1", port))
                if i % (1316 * 20) == 0:
                    time.sleep(0.002)

        threading.Timer(0.2, send).start()
        with av.open(udp, format="mpegts", buffer_size=64 * 1316) as container:
            frames = sum(1 for _ in container.decode(video=0))
    assert frames == 50  # 2 s at 25 fps, every one
