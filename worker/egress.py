"""The worker's egress proxy: every HTTP(S) request FFmpeg makes goes through a policy check.

The router and the worker check the URL a user submits (:func:`shared.urlpolicy.check_url`), but
FFmpeg then fetches more URLs on its own: an HLS playlist from an allowed public host can list
segments, keys and variant playlists on internal hosts (the cloud metadata service, an admin port
on the VPC, the Docker socket on 127.0.0.1:2375), and FFmpeg follows redirects. ``protocol_whitelist``
stops other protocols (``file:``) but cannot restrict hosts, and PyAV's ``io_open`` hook, which
sees every nested open, aborts the process on HLS in PyAV 18. So FFmpeg is given this proxy as its
``http_proxy`` (see :func:`worker.media.open_options`), and the proxy applies the policy to every
request, including redirects and nested playlists:

* ``http://`` URLs: FFmpeg sends ``GET http://host:port/path HTTP/1.1`` to the proxy. The proxy
  rewrites the request to origin form, forwards it and streams the response back.
* ``https://`` URLs: FFmpeg's ``tls`` protocol opens ``httpproxy://proxy/host:port``, which sends
  ``CONNECT host:port``. The proxy checks the target, answers ``200`` and splices the bytes both
  ways; TLS runs end to end between FFmpeg and the origin.

For each request the target host is resolved once, the resolved addresses are checked with the
deployment's policy (:func:`shared.urlpolicy.check_url`: metadata addresses always refused, in every
form; internal addresses, CGNAT and special-purpose ranges included, refused unless the policy
allows private hosts), and the proxy connects to exactly the
address it checked, so a second DNS answer cannot swap in an internal address (DNS rebinding).
A refusal is a ``403`` with the reason as the body (FFmpeg reports "403 Forbidden", the session
records a lost signal) and a log line naming the URL without credentials or query.

One request per connection: the proxy answers ``Connection: close`` and closes, and FFmpeg opens a
new connection for the next segment. A ``CONNECT`` tunnel lives as long as FFmpeg keeps it (HLS
over HTTPS reuses it for the next segments on the same host, which was checked when the tunnel
opened).

Performance: the proxy is on the segment path only, a few requests per second per stream, each a
blocking thread copying 64 KiB chunks; no event loop is needed at that rate. Threads are daemons:
a worker that exits does not wait for a download in flight.

FFmpeg skips any proxy for the hosts in the lowercase ``no_proxy`` environment variable, so
:func:`shared_proxy` takes that variable out of the environment (see :func:`_drop_no_proxy`).

Nested protocols: the whitelist in :mod:`worker.media` must contain ``tcp`` (to reach the proxy)
and, for HTTPS, ``tls`` and ``httpproxy``, and FFmpeg's HLS demuxer opens a variant playlist with
any whitelisted protocol: ``tcp://host:port`` as a variant would connect past the proxy. So every
playlist is checked before FFmpeg reads it: the proxy reads each HTTP response that starts with
``#EXTM3U`` whole (at most 1 MB, within a deadline and a minimum rate) and refuses it (403) if any
URI in it is not http(s) (:func:`nested_uri_refused`); the worker's own probe
(:func:`worker.media.hls_target_duration`) checks the first playlists of every source, HTTPS ones
included, before FFmpeg opens it. Left open: a playlist *reloaded* over HTTPS (inside a CONNECT
tunnel, which the proxy cannot read) that turns hostile after the open; only a network-level rule
(FFmpeg able to reach nothing but this proxy) closes that.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Self
from urllib.parse import urljoin, urlsplit

from shared.urlpolicy import METADATA_NAMES, HostUnresolvable, IpAddress, UrlRefused, check_url

log = logging.getLogger("avmon.worker.egress")

MAX_HEAD_BYTES = 32 * 1024  # request line + headers, either direction; FFmpeg sends < 1 KiB
MAX_HEADER_LINES = 100
CHUNK = 64 * 1024
# A hostname as it may appear in a URL FFmpeg sends: anything else (spaces, '@', '%' escapes,
# control characters) is refused before DNS sees it.
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,252})$")
# Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own: never forwarded in either direction.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
    }
)

Deny = Callable[[IpAddress], bool]


class _Refused(Exception):
    """The request gets this HTTP status and reason instead of being forwarded."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_STATUS_TEXT = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


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


# ------------------------------------------------------------ one proxy per process and policy

_shared: dict[bool, EgressProxy] = {}
_shared_lock = threading.Lock()


def shared_proxy(allow_private: bool) -> EgressProxy:
    """The process's running proxy for this policy, started on first use (and again after a fork:
    threads do not survive one)."""
    with _shared_lock:
        _drop_no_proxy()
        proxy = _shared.get(allow_private)
        if proxy is None or not proxy.alive:
            proxy = EgressProxy.start(allow_private)
            _shared[allow_private] = proxy
            log.info(
                "egress proxy on %s (private hosts %s)", proxy.url, "allowed" if allow_private else "refused"
            )
        return proxy


def _drop_no_proxy() -> None:
    """Take the lowercase ``no_proxy`` variable out of the process environment.

    FFmpeg's ``http`` and ``tls`` protocols read ``getenv("no_proxy")`` at every connection and go
    straight to a listed host, past the proxy and its checks (``no_proxy=169.254.169.254`` is a
    common container setting; ``*`` disables the proxy altogether). FFmpeg has no option to ignore
    it. Python's HTTP clients (botocore, urllib) also read the uppercase ``NO_PROXY``, which FFmpeg
    ignores, so the value moves there unless it is already set: their behaviour does not change.
    """
    value = os.environ.pop("no_proxy", None)
    if value is None:
        return
    os.environ.setdefault("NO_PROXY", value)
    log.warning("egress: removed no_proxy=%r from the environment (FFmpeg would bypass the proxy)", value)


# ------------------------------------------------------------ playlists

PLAYLIST_MAX_BYTES = 1_000_000
PLAYLIST_DEADLINE_S = 10.0  # a whole playlist, read by the proxy before it passes any of it on
PLAYLIST_MIN_RATE_BPS = 1024.0  # ... and at least this fast on average after the grace period
PLAYLIST_RATE_GRACE_S = 2.0
# Marks the proxy's own refusals (an origin's copy of it is dropped), so that the worker's probe
# can tell "the policy refused this playlist" (not retried) from an origin's 403 (a lost signal).
EGRESS_HEADER = "X-Avmon-Egress"
PLAYLIST_REFUSED = "egress refused the playlist: "
_M3U = b"#EXTM3U"
_URI_ATTRIBUTE = re.compile(rb'URI="([^"\r\n]*)"')


def nested_uri_refused(body: bytes, base: str) -> str | None:
    """Why a playlist's URIs (variants, renditions, segments, keys, maps) cannot all be fetched
    through the egress proxy, or None: each must be http(s), relative ones resolved on ``base``.
    FFmpeg would open any other protocol its whitelist holds (``tcp``, ``httpproxy``) directly."""
    for raw in body.splitlines():
        line = raw.strip()
        if not line:
            continue
        uris = _URI_ATTRIBUTE.findall(line) if line.startswith(b"#") else [line]
        for uri in uris:
            text = uri.decode("utf-8", "replace").strip()
            try:
                scheme = urlsplit(urljoin(base, text)).scheme.lower()
            except ValueError:
                return f"the playlist names a malformed URI {text[:80]!r}"
            if scheme not in ("http", "https"):
                return f"the playlist names a {scheme or 'schemeless'}:// URI; only http(s) is fetched"
    return None


def _is_chunked(head: bytes) -> bool:
    return any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in _headers(_lines(head)[1:], 502)
    )


def _dechunk(body: bytes) -> bytes:
    """A chunked body's data (RFC 9112 §7.1), for inspection only; a malformed one is a 502."""
    out, at = bytearray(), 0
    while at < len(body):
        end = body.find(b"\n", at)
        if end < 0:
            break  # the body ended inside a chunk-size line: what arrived is checked
        try:
            size = int(body[at:end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _Refused(502, "egress proxy: malformed chunked playlist") from None
        if size == 0:
            break
        out += body[end + 1 : end + 1 + size]
        at = end + 1 + size
        at += 2 if body[at : at + 2] == b"\r\n" else 1
    return bytes(out)


# ------------------------------------------------------------ HTTP plumbing


def _url_host(host: str) -> str:
    """``host`` as it goes in a URL or a Host header: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _ip(text: str) -> IpAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the blank line ending the head: (head without it, bytes read past it). A bare LF
    ends lines too (RFC 9112 §2.2 lets a recipient accept it; some origins send it)."""
    buf = bytearray()
    while True:
        ends = [(buf.find(sep), len(sep)) for sep in (b"\r\n\r\n", b"\n\n", b"\n\r\n")]
        found = [(at, size) for at, size in ends if at >= 0]
        if found:
            end, size = min(found)
            head, rest = bytes(buf[:end]), bytes(buf[end + size :])
            if head.count(b"\n") >= MAX_HEADER_LINES:
                raise _Refused(431, "egress proxy: too many header lines")
            return head, rest
        if len(buf) > MAX_HEAD_BYTES:
            raise _Refused(431, "egress proxy: request or response head too large")
        chunk = sock.recv(8192)
        if not chunk:
            raise ValueError("connection closed before the end of the head")
        buf += chunk


def _check_hostname(host: str) -> str:
    if not host:
        raise _Refused(400, "egress proxy: no host")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise _Refused(400, "egress proxy: malformed host")
    return host.lower()


def _parse_authority(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` of a CONNECT request."""
    try:
        parts = urlsplit(f"//{target}")
        port = parts.port
    except ValueError:
        raise _Refused(400, "egress proxy: malformed CONNECT target") from None
    if parts.username is not None or parts.path or parts.query or parts.fragment or port is None:
        raise _Refused(400, "egress proxy: CONNECT needs host:port")
    return _check_hostname(parts.hostname or ""), port


def _parse_absolute(target: str) -> tuple[str, int, str, str]:
    """``http://host[:port]/path?query`` → host, port, origin form, and the URL to log (no
    credentials, no query: they may carry tokens)."""
    try:
        parts = urlsplit(target)
        port = parts.port or 80
    except ValueError:
        raise _Refused(400, "egress proxy: malformed URL") from None
    if parts.scheme.lower() != "http":
        raise _Refused(400, "egress proxy: only absolute http:// URLs (and CONNECT) are proxied")
    host = _check_hostname(parts.hostname or "")
    path = parts.path or "/"
    origin_form = path + (f"?{parts.query}" if parts.query else "")
    return host, port, origin_form, f"http://{_url_host(host)}:{port}{path}"


def _lines(head: bytes) -> list[bytes]:
    return [line.removesuffix(b"\r") for line in head.split(b"\n")]


def _headers(lines: list[bytes], status: int) -> Iterator[tuple[bytes, bytes]]:
    """Name and value of each header line; a malformed one (no colon, space before it, obsolete
    folding) is answered with ``status``: 400 from the client, 502 from the origin."""
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise _Refused(status, "egress proxy: malformed header")
        yield name, value.strip()


def _rewrite_request(
    method: str, origin_form: str, version: str, lines: list[bytes], host: str, port: int
) -> bytes:
    """The request for the origin: origin form, the URL's own Host, no hop-by-hop headers, and
    ``Connection: close`` (one request per connection)."""
    host_header = _url_host(host) if port == 80 else f"{_url_host(host)}:{port}"
    out = [f"{method} {origin_form} {version}".encode("ascii"), b"Host: " + host_header.encode("ascii")]
    for name, value in _headers(lines, 400):
        if name.lower() in _HOP_BY_HOP or name.lower() in (b"host", b"accept-encoding"):
            continue
        out.append(name + b": " + value)
    # Plain bodies: a compressed playlist would pass the check below unread.
    out.append(b"Accept-Encoding: identity")
    out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n"


def _rewrite_response(head: bytes) -> bytes:
    """The origin's response head with ``Connection: close``, so that FFmpeg does not try to send
    its next request on this connection."""
    status, *lines = _lines(head)
    if not status.startswith(b"HTTP/1."):
        raise _Refused(502, "egress proxy: the origin did not answer HTTP/1.x")
    out = [status]
    out += [
        name + b": " + value
        for name, value in _headers(lines, 502)
        if name.lower() not in _HOP_BY_HOP and name.lower() != EGRESS_HEADER.lower().encode()
    ]
    out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n"


def _reply(status: int, reason: str) -> bytes:
    body = (reason + "\n").encode("utf-8", "replace")
    return (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"{EGRESS_HEADER}: refused\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii") + body
