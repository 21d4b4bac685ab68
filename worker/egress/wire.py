"""HTTP/1.x for the egress proxy: read a head, parse a target, rewrite requests and responses
(hop-by-hop headers out, ``Connection: close`` in), and the proxy's own refusals."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from shared.urlpolicy import IpAddress

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

# Marks the proxy's own refusals (an origin's copy of it is dropped), so that the worker's probe
# can tell "the policy refused this playlist" (not retried) from an origin's 403 (a lost signal).
EGRESS_HEADER = "X-Avmon-Egress"
PLAYLIST_REFUSED = "egress refused the playlist: "


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
