"""The egress proxy itself: accept, check the target against the policy, connect to the checked
address only, forward one request (or splice a ``CONNECT`` tunnel). See :mod:`worker.egress`."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from shared.urlpolicy import METADATA_NAMES, HostUnresolvable, IpAddress, UrlRefused, check_url
from worker.egress.playlists import (
    _M3U,
    PLAYLIST_DEADLINE_S,
    PLAYLIST_MAX_BYTES,
    PLAYLIST_MIN_RATE_BPS,
    PLAYLIST_RATE_GRACE_S,
    _dechunk,
    _is_chunked,
    nested_uri_refused,
)
from worker.egress.wire import (
    CHUNK,
    PLAYLIST_REFUSED,
    _ip,
    _lines,
    _parse_absolute,
    _parse_authority,
    _read_head,
    _Refused,
    _reply,
    _rewrite_request,
    _rewrite_response,
    _url_host,
)

log = logging.getLogger("avmon.worker.egress")

Deny = Callable[[IpAddress], bool]


@dataclass(frozen=True)
class _Target:
    host: str  # as the client named it (for messages)
    port: int
    addresses: tuple[str, ...]  # checked addresses, in the resolver's order: connect to these only


def _normalise(addr: IpAddress) -> IpAddress:
    """``::ffff:a.b.c.d`` reaches the IPv4 host a.b.c.d: check (and connect to) the IPv4 form,
    so that ``[::ffff:169.254.169.254]`` is recognised as the metadata service."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class EgressProxy:
    """An HTTP proxy on 127.0.0.1 that forwards only what the policy allows (see the module doc)."""

    def __init__(
        self,
        *,
        allow_private: bool,
        deny: Deny | None = None,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 30.0,
        max_connections: int = 1024,  # a bound on threads, far above capacity x renditions
    ) -> None:
        self.allow_private = allow_private
        self._deny = deny
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._conns: dict[threading.Thread, list[socket.socket]] = {}
        self._stopping = threading.Event()
        self.refused = 0  # requests answered 403 by the policy
        self.forwarded = 0  # requests and tunnels that reached an upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A socketpair wakes the accept loop on stop (closing a socket another thread is blocked
        # in accept() on does not wake it on Linux).
        self._wake_r, self._wake_w = socket.socketpair()
        self._pid = os.getpid()
        self._acceptor = threading.Thread(target=self._accept_loop, name="egress-accept", daemon=True)

    @classmethod
    def start(
        cls,
        allow_private: bool,
        *,
        deny: Deny | None = None,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 30.0,
    ) -> EgressProxy:
        """A running proxy. ``deny`` refuses more addresses than the policy does (an operator's
        extra ranges; tests use it to play an internal host on another loopback address)."""
        proxy = cls(
            allow_private=allow_private,
            deny=deny,
            connect_timeout_s=connect_timeout_s,
            idle_timeout_s=idle_timeout_s,
        )
        proxy._acceptor.start()
        return proxy

    @property
    def alive(self) -> bool:
        return self._pid == os.getpid() and self._acceptor.is_alive() and not self._stopping.is_set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, cut the connections in flight and wait for their threads."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._acceptor.is_alive():
            self._acceptor.join(timeout_s)
        with self._lock:
            conns = list(self._conns.items())
        for _, socks in conns:
            for sock in list(socks):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread, _ in conns:
            thread.join(timeout_s)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ accepting

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([self._listener, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                client, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("egress proxy: accept failed")
                continue
            if not self._slots.acquire(blocking=False):
                # Too many transfers at once: refuse fast rather than queue (FFmpeg retries).
                with client:
                    client.settimeout(1.0)
                    with contextlib.suppress(OSError):
                        client.sendall(_reply(503, "egress proxy: too many connections"))
                continue
            thread = threading.Thread(target=self._serve, args=(client,), name="egress-conn", daemon=True)
            with self._lock:
                self._conns[thread] = [client]
            thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns[threading.current_thread()].append(sock)

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(self._idle_timeout_s)
            head, rest = _read_head(client)
            self._handle(client, head, rest)
        except _Refused as exc:
            with contextlib.suppress(OSError):
                client.sendall(_reply(exc.status, exc.reason))
        except (OSError, ValueError) as exc:
            log.debug("egress proxy: connection ended: %s", exc)
        finally:
            with self._lock:
                socks = self._conns.pop(threading.current_thread(), [])
            for sock in socks:  # the client and, once connected, the upstream
                sock.close()
            self._slots.release()

    # ------------------------------------------------------------ one request

    def _handle(self, client: socket.socket, head: bytes, rest: bytes) -> None:
        lines = _lines(head)
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise _Refused(400, "egress proxy: malformed request line") from None
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise _Refused(400, "egress proxy: unsupported HTTP version")
        if method == "CONNECT":
            host, port = _parse_authority(target)
            shown = f"{_url_host(host)}:{port}"
            dest = self._check(host, port, shown)
            upstream = self._connect(dest, shown)
            self._count_forwarded()
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            self._splice(client, upstream)
            return
        if method not in ("GET", "HEAD"):
            # FFmpeg reads with GET (HEAD for some probes); nothing here uploads.
            raise _Refused(405, f"egress proxy: method {method} is not forwarded")
        host, port, origin_form, shown = _parse_absolute(target)
        dest = self._check(host, port, shown)
        request = _rewrite_request(method, origin_form, version, lines[1:], host, port)
        upstream = self._connect(dest, shown)
        self._count_forwarded()
        upstream.sendall(request)
        # GET and HEAD carry no body: whatever the client sends now is ignored (we close after).
        try:
            response_head, body_start = _read_head(upstream)
        except ValueError:
            raise _Refused(502, "egress proxy: the origin closed without an answer") from None
        head = _rewrite_response(response_head)
        body = body_start
        while len(body) < len(_M3U) + 3 and (chunk := upstream.recv(CHUNK)):
            body += chunk
        if _M3U in body[: len(_M3U) + 3] or (_is_chunked(response_head) and _M3U in body[:32]):
            body = self._checked_playlist(
                upstream, response_head, body, f"http://{_url_host(host)}:{port}{origin_form}"
            )
        client.sendall(head + body)
        while chunk := upstream.recv(CHUNK):
            client.sendall(chunk)

    def _checked_playlist(self, upstream: socket.socket, head: bytes, body: bytes, url: str) -> bytes:
        """A playlist's whole body, read before any of it is passed on, if every URI in it may be
        fetched through this proxy; else a 403. FFmpeg opens a variant playlist's URI with any
        protocol its whitelist holds (``tcp`` and ``httpproxy`` must be there to reach this proxy),
        so ``tcp://internal:port`` in a live reload would connect past the policy."""
        started = time.monotonic()
        while len(body) <= PLAYLIST_MAX_BYTES and (chunk := upstream.recv(CHUNK)):
            body += chunk
            elapsed = time.monotonic() - started
            # A playlist that drips (a comment line a second, never ending) holds this thread and
            # FFmpeg's read: the same deadline and minimum rate as the worker's own fetches.
            if elapsed > PLAYLIST_DEADLINE_S or (
                elapsed > PLAYLIST_RATE_GRACE_S and len(body) / elapsed < PLAYLIST_MIN_RATE_BPS
            ):
                raise _Refused(504, "egress proxy: the origin sends its playlist too slowly")
        if len(body) > PLAYLIST_MAX_BYTES:
            raise _Refused(502, "egress proxy: the playlist is too large")
        text = _dechunk(body) if _is_chunked(head) else body
        why = nested_uri_refused(text, url)
        if why is not None:
            with self._lock:
                self.refused += 1
            log.warning("egress refused a playlist from %s: %s", url.split("?", 1)[0], why)
            raise _Refused(403, PLAYLIST_REFUSED + why)
        return body

    def _check(self, host: str, port: int, shown: str) -> _Target:
        """Resolve ``host`` once and apply the policy to what it resolves to, or refuse (403)."""
        try:
            literal: IpAddress | None = _normalise(ipaddress.ip_address(host))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        elif host.rstrip(".") in METADATA_NAMES:
            addresses = []  # check_url refuses the name itself: no DNS query for it
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError) as exc:
                log.info("egress: %s does not resolve: %s", shown, exc)
                raise _Refused(502, f"egress proxy: host {host!r} does not resolve") from None
            addresses = list(dict.fromkeys(str(_normalise(_ip(str(info[4][0])))) for info in infos))
        # The policy is urlpolicy's, applied to the addresses resolved above: the resolver given
        # to check_url answers from them, so the check and the connection see the same answer.
        check_host = host if literal is None else _url_host(str(literal))
        try:
            check_url(
                f"http://{check_host}:{port}/",
                schemes=frozenset({"http"}),
                allow_private=self.allow_private,
                resolve=lambda _host: addresses,
            )
            for addr in addresses:
                ip = ipaddress.ip_address(addr)
                if self._deny is not None and self._deny(ip):
                    raise UrlRefused(f"host {host!r} resolves to a denied address ({ip})")
                if ip == ipaddress.ip_address("127.0.0.1") and port == self.port:
                    raise UrlRefused("the egress proxy does not connect to itself")
        except (UrlRefused, HostUnresolvable) as exc:
            with self._lock:
                self.refused += 1
            log.warning("egress refused %s: %s", shown, exc)
            raise _Refused(403, f"egress refused: {exc}") from None
        return _Target(host=host, port=port, addresses=tuple(addresses))

    def _connect(self, target: _Target, shown: str) -> socket.socket:
        """Connect to one of the checked addresses: never to a name, which could resolve anew."""
        error: OSError | None = None
        for addr in target.addresses:
            try:
                sock = socket.create_connection((addr, target.port), timeout=self._connect_timeout_s)
            except OSError as exc:
                error = exc
                continue
            sock.settimeout(self._idle_timeout_s)
            self._track(sock)
            return sock
        log.info("egress: %s unreachable: %s", shown, error)
        status = 504 if isinstance(error, TimeoutError) else 502
        raise _Refused(status, f"egress proxy: cannot connect to {target.host}:{target.port}")

    def _count_forwarded(self) -> None:
        with self._lock:
            self.forwarded += 1

    def _splice(self, a: socket.socket, b: socket.socket) -> None:
        """Copy bytes both ways until both sides have closed, or nothing moves for the idle timeout."""
        open_ends = {a: b, b: a}
        while open_ends:
            ready, _, _ = select.select(list(open_ends), [], [], self._idle_timeout_s)
            if not ready:
                return  # idle: the tunnel is closed by the caller
            for src in ready:
                dst = open_ends[src]
                chunk = src.recv(CHUNK)
                if chunk:
                    dst.sendall(chunk)
                    continue
                # Half-close: pass the EOF on and keep the other direction open until it ends.
                del open_ends[src]
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
