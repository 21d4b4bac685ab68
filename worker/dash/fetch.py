"""The worker's own HTTP(S) fetches of DASH manifests and segments, through the egress proxy.

Every request, redirects included, goes through :mod:`worker.egress` (the deployment's host
policy on every URL, the address it checked is the one it connects to) with the same deadline,
minimum rate and cancellation as :func:`worker.media._fetch_playlist` (its watchdog cuts the
socket of a fetch past its deadline or whose session stopped). A body is read up to a size cap.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from shared.urlpolicy import UrlRefused
from worker import egress
from worker.media import (
    FETCH_MIN_RATE_BPS,
    FETCH_RATE_GRACE_S,
    FetchCancelled,
    OriginTooSlow,
    _watchdog,
    proxied_connection,
)

MAX_REDIRECTS = 5


class Truncated(OSError):
    """The answer ended before its Content-Length, or ran past the size cap."""


@dataclass(frozen=True)
class Answer:
    status: int  # HTTP status of the final answer (after redirects)
    body: bytes  # empty unless the status is 200
    url: str  # the final URL
    content_type: str


def fetch(
    url: str,
    proxy_url: str,
    timeout_s: float,
    max_bytes: int,
    *,
    stop: threading.Event | None = None,
) -> Answer:
    """GET ``url`` through the egress proxy at ``proxy_url``: the answer within ``timeout_s``
    (redirects included) and at :data:`FETCH_MIN_RATE_BPS` at least, else :class:`OriginTooSlow`.

    Raises :class:`UrlRefused` when the proxy's policy refused the URL (or a redirect's),
    :class:`Truncated` for a body cut short or over ``max_bytes``, :class:`FetchCancelled`
    when ``stop`` is set meanwhile, and :class:`OSError` for the network's own failures."""
    proxy = urlsplit(proxy_url)
    proxy_host, proxy_port = proxy.hostname or "127.0.0.1", proxy.port
    started = time.monotonic()
    deadline = started + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        target = urlsplit(url)
        scheme = target.scheme.lower()
        if scheme not in ("http", "https") or not target.hostname:
            raise UrlRefused(f"only http(s) is fetched, not {url[:80]!r}")
        connection, path, tokens = proxied_connection(proxy_host, proxy_port, target, deadline, stop)
        try:
            try:
                connection.connect()
            except OSError as exc:
                # The proxy answers a refused CONNECT with 403 and its header: http.client
                # reports it as "Tunnel connection failed: 403 ...".
                if "Tunnel connection failed: 403" in str(exc):
                    raise UrlRefused(f"egress refused {target.hostname}") from exc
                raise
            if scheme == "https" and connection.sock is not None:
                tokens.append(_watchdog.watch(connection.sock, deadline, stop))
            connection.request("GET", path, headers={"User-Agent": "avmon"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location", ""))
                continue
            if response.status == 403 and response.getheader(egress.EGRESS_HEADER) == "refused":
                raise UrlRefused(response.read(4096).decode("utf-8", "replace").strip()[:300])
            content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
            if response.status != 200:
                return Answer(response.status, b"", url, content_type)
            declared = response.getheader("Content-Length")
            expected = int(declared) if declared is not None and declared.isdigit() else None
            if expected is not None and expected > max_bytes:
                raise Truncated(f"the answer is {expected} bytes; the cap is {max_bytes}")
            body = bytearray()
            while chunk := response.read1(min(65536, max_bytes + 1 - len(body))):
                body += chunk
                if len(body) > max_bytes:
                    raise Truncated(f"the answer runs past the cap of {max_bytes} bytes")
                elapsed = time.monotonic() - started
                if elapsed > FETCH_RATE_GRACE_S and len(body) / elapsed < FETCH_MIN_RATE_BPS:
                    raise OriginTooSlow(f"the origin sent {len(body)} bytes in {elapsed:.1f} s")
            # The watchdog's shutdown reads as the end of the body.
            if stop is not None and stop.is_set():
                raise FetchCancelled("the session was stopped during a fetch")
            if time.monotonic() >= deadline:
                raise OriginTooSlow(f"the origin took over {timeout_s:.1f} s")
            if expected is not None and len(body) != expected:
                raise Truncated(f"the answer ended after {len(body)} of {expected} bytes")
            return Answer(200, bytes(body), url, content_type)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OriginTooSlow | UrlRefused | Truncated):
                raise
            if stop is not None and stop.is_set():
                raise FetchCancelled("the session was stopped during a fetch") from exc
            if time.monotonic() >= deadline:
                raise OriginTooSlow(f"the origin took over {timeout_s:.1f} s") from exc
            if isinstance(exc, http.client.IncompleteRead):
                raise Truncated(f"the answer ended early: {exc}") from exc
            if isinstance(exc, http.client.HTTPException):
                raise OSError(f"bad HTTP answer: {exc}") from exc
            raise
        finally:
            for token in tokens:
                _watchdog.unwatch(token)
            connection.close()
    raise OSError(f"more than {MAX_REDIRECTS} redirects")
