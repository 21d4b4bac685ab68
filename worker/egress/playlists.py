"""Playlists through the egress proxy: every URI a playlist names must be http(s) (FFmpeg opens
any protocol its whitelist holds), read whole within a size, a deadline and a minimum rate."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from worker.egress.wire import _headers, _lines, _Refused

PLAYLIST_MAX_BYTES = 1_000_000
PLAYLIST_DEADLINE_S = 10.0  # a whole playlist, read by the proxy before it passes any of it on
PLAYLIST_MIN_RATE_BPS = 1024.0  # ... and at least this fast on average after the grace period
PLAYLIST_RATE_GRACE_S = 2.0
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
