"""MPEG-TS over UDP, read by the worker itself rather than by FFmpeg's udp protocol.

Why not FFmpeg's: its receiver runs a thread per stream that wakes for every datagram and copies
it into a circular buffer whose size is set in 188-byte units (``fifo_size``: a million of them
is 188 MB a stream once the ring has wrapped), and it cannot say when a datagram arrived or
whether the kernel dropped any. Here the stream's own thread (the one that demuxes and decodes)
drains its socket in batches, without a thread of its own:

* a large receive buffer (:data:`RECEIVE_BUFFER_BYTES`, forced past ``net.core.rmem_max`` where
  the process may, e.g. as root; otherwise the kernel's cap, reported as ``receive_buffer``)
  holds the datagrams that arrive while the thread decodes;
* ``SO_RXQ_OVFL`` makes the kernel count the datagrams it dropped because the buffer was full:
  the monitor's own loss, not the source's (``drops``);
* ``SO_TIMESTAMPNS`` stamps each datagram with its arrival time in the kernel, so that lag behind
  the live edge is measured against when the data arrived, not against when it was read;
* RTP-wrapped TS (a 12-byte RTP header, version 2, before the TS packets) is unwrapped.

:class:`UdpInput` is the file-like object PyAV reads through custom I/O (``av.open(input,
format="mpegts")``): ``read`` blocks until at least one datagram is there, then returns all that
are queued, up to the size asked; after ``read_timeout_s`` without data it returns ``b""`` (end of
stream), which the session reports as a lost signal and reconnects.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from worker.detectors.base import Finding
from worker.transport import TransportAnalyzer

log = logging.getLogger("avmon.worker.udp")

RECEIVE_BUFFER_BYTES = 8 << 20  # ~16 s of a 4 Mb/s stream: time to catch up after a stall
TS_PACKET = 188
RTP_HEADER = 12
# Linux socket options the socket module does not name.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_ANCILLARY = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(16)
_MAX_DATAGRAM = 65_536
_POLL_SLICE_S = 0.25  # a blocked read looks at the stop event this often
_ARRIVALS_KEPT = 4096  # read chunks remembered for arrival_at (a few seconds of reads)


class UdpInput:
    """One bound UDP socket as a readable byte stream of MPEG-TS (see the module docstring).

    ``url``: ``udp://@:PORT`` or ``udp://:PORT`` (every local address), ``udp://ADDR:PORT`` (that
    local address, or a multicast group to join; ``?localaddr=IP`` picks the interface). Raises
    ``OSError`` when the socket cannot be bound.
    """

    def __init__(
        self,
        url: str,
        *,
        read_timeout_s: float,
        stop: threading.Event | None = None,
        receive_buffer: int = RECEIVE_BUFFER_BYTES,
    ) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").strip("[]")
        port = parts.port
        if port is None:
            raise OSError(f"{url}: a UDP source needs a port")
        group: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        if host and host != "@":
            addr = ipaddress.ip_address(socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)[0][4][0])
            group = addr if addr.is_multicast else None
            bind_host = str(addr)
            family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
        else:
            bind_host, family = "", socket.AF_INET
        self.read_timeout_s = read_timeout_s
        self.first_read_timeout_s: float | None = None  # the next read's wait, once (opening)
        # The transport analyser sees exactly the bytes the demuxer reads, as they arrived; its
        # findings (arrival-clock times) wait here for the session to take.
        self.analyzer: TransportAnalyzer | None = None
        self.findings: list[Finding] = []
        self.stop = stop or threading.Event()
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.receive_buffer = self._size_buffer(receive_buffer)
            if self.receive_buffer < receive_buffer // 2:
                _warn_small_buffer(self.receive_buffer, receive_buffer)
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.bind((bind_host, port))
            if group is not None:
                self._join(group, parts.query)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN)
        self.position = 0  # bytes handed to the reader so far
        self.datagrams = 0
        self.drops = 0  # datagrams the kernel dropped: its buffer was full (our fault, not the source's)
        self.last_arrival: float | None = None  # wall-clock time of the newest datagram
        # (stream offset, arrival wall time) of the first datagram of each read, for arrival_at.
        self._offsets: deque[int] = deque(maxlen=_ARRIVALS_KEPT)
        self._pending = b""  # bytes received beyond what the last read asked for
        self._pending_arrival = 0.0
        self._arrivals: deque[float] = deque(maxlen=_ARRIVALS_KEPT)

    def _size_buffer(self, wanted: int) -> int:
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, option, wanted)
                granted = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                if granted >= wanted:
                    break
        # Linux reports twice what was set (its bookkeeping overhead): half is what datagrams get.
        return int(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2

    def _join(self, group: ipaddress.IPv4Address | ipaddress.IPv6Address, query: str) -> None:
        local = "0.0.0.0"
        for item in query.split("&"):
            key, _, value = item.partition("=")
            if key == "localaddr" and value:
                local = str(ipaddress.ip_address(value))
        if group.version == 4:
            request = socket.inet_aton(str(group)) + socket.inet_aton(local)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, request)
        else:
            request = socket.inet_pton(socket.AF_INET6, str(group)) + struct.pack("@I", 0)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request)

    # ------------------------------------------------------------ the file-like side

    def read(self, size: int = -1) -> bytes:
        """At least one datagram's TS bytes (waiting up to the read timeout), then whatever else is
        queued, up to ``size`` bytes; ``b""`` after the read timeout or a stop (end of stream)."""
        limit = size if size and size > 0 else 1 << 20
        parts: list[bytes] = []
        got = 0
        first_arrival: float | None = None
        if self._pending:
            parts.append(self._pending)
            got, first_arrival, self._pending = len(self._pending), self._pending_arrival, b""
        timeout = self.read_timeout_s
        if self.first_read_timeout_s is not None:
            timeout, self.first_read_timeout_s = self.first_read_timeout_s, None
        deadline = time.monotonic() + timeout
        while got == 0:
            if self.stop.is_set():
                return b""
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            if self._poll.poll(int(min(left, _POLL_SLICE_S) * 1000) + 1):
                got, first_arrival = self._drain(parts, limit)
        if got < limit:
            more, arrival = self._drain(parts, limit - got)
            got += more
            first_arrival = first_arrival if first_arrival is not None else arrival
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(data) > limit:  # a datagram larger than the room left: the rest waits for the next read
            data, self._pending, self._pending_arrival = data[:limit], data[limit:], time.time()
        arrival = first_arrival if first_arrival is not None else time.time()
        self._offsets.append(self.position)
        self._arrivals.append(arrival)
        self.position += len(data)
        if self.analyzer is not None:
            found = self.analyzer.feed(data, arrival)
            if found:
                self.findings.extend(found)
        return data

    def wait(self, timeout_s: float) -> bool:
        """Whether a datagram is (or within ``timeout_s`` becomes) ready to read; False on a stop."""
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set():
            if self._pending:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._poll.poll(int(min(left, _POLL_SLICE_S) * 1000) + 1):
                return True
        return False

    def _drain(self, parts: list[bytes], room: int) -> tuple[int, float | None]:
        """Queued datagrams appended to ``parts`` until ``room`` bytes are taken or none is left:
        (bytes taken, arrival of the first)."""
        got = 0
        first: float | None = None
        recvmsg = self.sock.recvmsg
        while got < room:
            try:
                data, ancillary, _flags, _addr = recvmsg(_MAX_DATAGRAM, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            arrival = self._ancillary(ancillary)
            payload = _ts_payload(data)
            if not payload:
                continue
            if first is None:
                first = arrival
            parts.append(payload)
            got += len(payload)
            self.datagrams += 1
        return got, first

    def _ancillary(self, ancillary: list[tuple[int, int, bytes]]) -> float:
        """The datagram's arrival (wall clock), and the kernel's drop count, from its control data."""
        arrival: float | None = None
        for level, kind, data in ancillary:
            if level != socket.SOL_SOCKET:
                continue
            if kind == SO_TIMESTAMPNS and len(data) >= 16:
                seconds, nanos = struct.unpack("@qq", data[:16])
                arrival = seconds + nanos * 1e-9
            elif kind == SO_RXQ_OVFL and len(data) >= 4:
                self.drops = struct.unpack("@I", data[:4])[0]
        if arrival is None:
            arrival = time.time()
        self.last_arrival = arrival
        return arrival

    def arrival_at(self, offset: int) -> float | None:
        """Wall-clock arrival of the datagrams that held stream byte ``offset`` (to within one
        read), or None if it is older than what is remembered."""
        i = bisect.bisect_right(self._offsets, offset) - 1
        return self._arrivals[i] if i >= 0 else None

    def close(self) -> None:
        with contextlib.suppress(OSError, KeyError, ValueError):
            self._poll.unregister(self.sock.fileno())
        self.sock.close()

    def __enter__(self) -> UdpInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_warned_small_buffer = False


def _warn_small_buffer(granted: int, wanted: int) -> None:
    """Once a process: the kernel capped the receive buffer (net.core.rmem_max, no CAP_NET_ADMIN)."""
    global _warned_small_buffer
    if not _warned_small_buffer:
        _warned_small_buffer = True
        log.warning(
            "UDP receive buffers are %d KB, not the %d KB asked for (net.core.rmem_max): a stream "
            "can fall behind by less before the kernel drops its datagrams",
            granted // 1024,
            wanted // 1024,
        )


def _ts_payload(data: bytes) -> bytes:
    """The TS bytes of a datagram: as it is, or without its RTP header (version 2, payload a
    whole number of TS packets after it); anything else is passed on for the demuxer to judge."""
    if data[:1] == b"\x47" or len(data) <= RTP_HEADER:
        return data
    if data[0] >> 6 == 2:
        header = RTP_HEADER + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= header + 4:  # a header extension
            header += 4 + 4 * int.from_bytes(data[header + 2 : header + 4], "big")
        if (len(data) - header) % TS_PACKET == 0 and data[header : header + 1] == b"\x47":
            return data[header:]
    return data
