"""PyAV at the edge: opening a source safely, within the deployment's limits, through the
egress policy; and fetching what the worker reads itself (playlists, manifests, segments).

What decoded media looks like to the detectors is :mod:`worker.decoded`.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import av

from worker import egress, hls_playlist

# Nested protocols FFmpeg may use for each scheme: an HLS playlist fetched over HTTP cannot make
# the demuxer read local files, or anything else, because `file` is not in its list.
PROTOCOLS = {
    "file": "file",
    "http": "http,https,tcp,tls,crypto",
    "https": "http,https,tcp,tls,crypto",
    "udp": "udp",
    "srt": "srt,udp",
    "rtmp": "rtmp,tcp",
    "rtsp": "rtsp,rtp,udp,tcp",
}
# Through the egress proxy (worker/egress.py) HTTPS needs one more: FFmpeg's tls protocol reaches
# the proxy with httpproxy (CONNECT). Without it an https:// source fails with EINVAL.
PROXIED_HTTP_PROTOCOLS = "http,https,tcp,tls,httpproxy,crypto"


class SourceRefused(Exception):
    """The source exceeds what this deployment monitors (size, rate, channels); not retried."""


@dataclass(frozen=True)
class Limits:
    max_width: int = 4096
    max_height: int = 2304
    max_fps: float = 120.0
    max_channels: int = 16
    max_sample_rate: int = 192_000
    probe_size: int = 5_000_000  # bytes FFmpeg may read to find the streams
    analyze_duration_s: float = 5.0
    decode_threads: int = 2


def open_options(url: str, limits: Limits, *, proxy_url: str | None = None) -> dict[str, str]:
    """FFmpeg's options for ``url``. With ``proxy_url`` (an :class:`worker.egress.EgressProxy`),
    every HTTP(S) request FFmpeg makes for an http(s) source, nested ones included (HLS segments,
    keys, variant playlists, redirects), goes through that proxy and its host policy."""
    scheme = (urlsplit(url).scheme or "file").lower()
    options = {
        "protocol_whitelist": PROTOCOLS.get(scheme, "file"),
        "probesize": str(limits.probe_size),
        "analyzeduration": str(int(limits.analyze_duration_s * 1_000_000)),
    }
    if scheme in ("http", "https"):
        options["reconnect"] = "0"  # we reconnect ourselves, with backoff and a signal_loss record
        options["user_agent"] = "avmon"
        if proxy_url is not None:
            # The HLS demuxer copies http_proxy into the options of every URL it opens; the tls
            # protocol gets it from http and tunnels with CONNECT.
            options["http_proxy"] = proxy_url
            options["protocol_whitelist"] = PROXIED_HTTP_PROTOCOLS
    if scheme == "udp":
        options["fifo_size"] = "1000000"
        options["overrun_nonfatal"] = "1"
    return options


# HLS: a live playlist gains a segment every target duration, and FFmpeg's demuxer waits for it
# inside one read; a read timeout shorter than that ends the stream at every segment (it reads as
# the end of the playlist). An HLS source counts as stalled after this many target durations
# without media, as players do, and never sooner than the configured read timeout.
HLS_STALL_TARGETS = 3.0
HLS_MAX_READ_TIMEOUT_S = 120.0
PLAYLIST_MAX_BYTES = egress.PLAYLIST_MAX_BYTES
# Every fetch the worker makes itself has a total deadline (its caller's timeout, redirects
# included) and, once FETCH_RATE_GRACE_S have passed, a minimum average rate: an origin that
# sends a comment line a second never ends its answer, and a read timeout alone never fires.
# 1 KiB/s is far below any origin a player could watch (a 1 MB playlist at 1 KiB/s is 16 min).
FETCH_MIN_RATE_BPS = 1024.0
FETCH_RATE_GRACE_S = 2.0
# The variant and rendition playlists of a master the probe reads to find loops (FFmpeg opens
# every one); a ladder is rarely over 10.
PROBE_MAX_VARIANTS = 16


class OriginTooSlow(TimeoutError):
    """A fetch the worker makes itself ran past its total deadline or below the minimum rate:
    a lost signal (retried), not a refusal."""


class FetchCancelled(OSError):
    """The session was stopped (DELETE, lease lost, shutdown) while a fetch was in flight."""


class NestedProtocolRefused(SourceRefused):
    """A playlist names a URI of another protocol than http(s) (``tcp://``, ``httpproxy://``,
    ``udp://``...): FFmpeg would open it directly, past the egress proxy."""


class PlaylistLoop(SourceRefused):
    """A master playlist whose variant or rendition is itself a master playlist: FFmpeg would
    reload them without end (a hostile run saw 11,720 requests in 10 s)."""


class _Watchdog:
    """One thread that cuts the sockets of fetches past their deadline or whose session stopped.

    A socket timeout bounds each ``recv``, not a fetch, and ``http.client`` cannot resume after
    one; ``shutdown()`` wakes the blocked read at once, whatever it waits for.
    """

    def __init__(self, tick_s: float = 0.05) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[socket.socket, float, threading.Event | None]] = {}
        self._next = 0
        self._tick_s = tick_s
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float, stop: threading.Event | None) -> int:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # again after a fork
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            self._next += 1
            self._watched[self._next] = (sock, deadline, stop)
            return self._next

    def unwatch(self, token: int) -> None:
        with self._lock:
            self._watched.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(self._tick_s)
            now = time.monotonic()
            with self._lock:
                due = [
                    token
                    for token, (_, deadline, stop) in self._watched.items()
                    if now >= deadline or (stop is not None and stop.is_set())
                ]
                socks = [self._watched.pop(token)[0] for token in due]
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


def _watched_connection(
    tokens: list[int], deadline: float, stop: threading.Event | None, address: tuple[str, int], *args: Any
) -> socket.socket:
    """``socket.create_connection`` for ``http.client``, the new socket under the watchdog."""
    sock = socket.create_connection(address, *args)
    tokens.append(_watchdog.watch(sock, deadline, stop))
    return sock


@dataclass(frozen=True)
class Fetched:
    """What an origin answered to one of the worker's own fetches (redirects followed)."""

    status: int
    body: bytes  # at most the fetch's ``limit`` bytes
    length: int | None  # the body's announced length (Content-Length), if any
    url: str  # after redirects


def proxied_connection(
    proxy_host: str,
    proxy_port: int | None,
    target: SplitResult,
    deadline: float,
    stop: threading.Event | None,
) -> tuple[http.client.HTTPConnection, str, list[int]]:
    """An unopened HTTP(S) connection to ``target`` (an http or https URL with a host) through
    the egress proxy, and the request path to send on it. Its sockets are watched from the TCP
    connect on (the CONNECT tunnel and the TLS handshake count too) against ``deadline`` and
    ``stop``; the watch tokens land in the list, for the caller to unwatch."""
    remaining = max(0.05, deadline - time.monotonic())
    assert target.hostname
    connection: http.client.HTTPConnection
    if target.scheme.lower() == "https":
        tls = ssl.create_default_context()
        connection = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=remaining, context=tls)
        connection.set_tunnel(target.hostname, target.port or 443)  # CONNECT through the proxy
        path = urlunsplit(("", "", target.path or "/", target.query, ""))
    else:
        connection = http.client.HTTPConnection(proxy_host, proxy_port, timeout=remaining)
        path = urlunsplit((target.scheme.lower(), target.netloc, target.path or "/", target.query, ""))
    tokens: list[int] = []
    connection._create_connection = functools.partial(  # type: ignore[attr-defined]
        _watched_connection, tokens, deadline, stop
    )
    return connection, path, tokens


def fetch(
    url: str,
    proxy_url: str,
    timeout_s: float,
    redirects: int = 5,
    *,
    stop: threading.Event | None = None,
    headers: dict[str, str] | None = None,
    limit: int = PLAYLIST_MAX_BYTES,
    playlist: bool = True,
) -> Fetched | None:
    """GET ``url`` through the egress proxy: by hand, not with urllib, whose ProxyHandler goes
    straight to hosts listed in NO_PROXY. None when ``url`` (or a redirect) is not http(s).

    ``playlist``: read an M3U body (``#EXTM3U``) whole, up to ``limit`` bytes, and stop after the
    first bytes of anything else (a media stream); otherwise read up to ``limit`` bytes. The
    whole fetch, redirects included, ends within ``timeout_s`` (s) and at the minimum rate
    (:data:`FETCH_MIN_RATE_BPS`), else :class:`OriginTooSlow`; a ``stop`` set meanwhile ends it
    at once with :class:`FetchCancelled`. The proxy's refusal of a playlist's nested URIs is
    :class:`NestedProtocolRefused`."""
    proxy = urlsplit(proxy_url)
    proxy_host, proxy_port = proxy.hostname or "127.0.0.1", proxy.port
    started = time.monotonic()
    deadline = started + timeout_s
    for _ in range(redirects + 1):
        target = urlsplit(url)
        scheme = target.scheme.lower()
        if scheme not in ("http", "https") or not target.hostname:
            return None
        connection, path, tokens = proxied_connection(proxy_host, proxy_port, target, deadline, stop)
        try:
            connection.connect()
            if scheme == "https" and connection.sock is not None:
                # TLS wrapped (and detached) the socket watched above: watch its successor.
                tokens.append(_watchdog.watch(connection.sock, deadline, stop))
            connection.request("GET", path, headers={"User-Agent": "avmon", **(headers or {})})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location", ""))
                continue
            if response.status == 403 and response.getheader(egress.EGRESS_HEADER) == "refused":
                text = response.read(4096).decode("utf-8", "replace").strip()
                if text.startswith(egress.PLAYLIST_REFUSED):
                    raise NestedProtocolRefused(text.removeprefix(egress.PLAYLIST_REFUSED))
            announced = response.getheader("Content-Length")
            length = int(announced) if announced is not None and announced.strip().isdigit() else None
            if response.status not in (200, 206):
                return Fetched(response.status, b"", length, url)
            body = b""
            while len(body) < 7 or body.startswith(b"#EXTM3U") or not playlist:
                chunk = response.read1(min(65536, limit + 1 - len(body)))
                if not chunk or len(body) > limit:
                    break
                body += chunk
                elapsed = time.monotonic() - started
                if elapsed > FETCH_RATE_GRACE_S and len(body) / elapsed < FETCH_MIN_RATE_BPS:
                    raise OriginTooSlow(
                        f"the origin sent {len(body)} bytes of its playlist in {elapsed:.1f} s "
                        f"(under {FETCH_MIN_RATE_BPS:.0f} B/s)"
                    )
                if not playlist and len(body) >= limit:
                    break
            # The watchdog's shutdown reads as the end of the body: it is no whole playlist.
            if stop is not None and stop.is_set():
                raise FetchCancelled("the session was stopped during a playlist fetch")
            if time.monotonic() >= deadline:
                raise OriginTooSlow(f"the origin's playlist took over {timeout_s:.1f} s")
            return Fetched(response.status, body[:limit], length, url)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OriginTooSlow):
                raise
            if stop is not None and stop.is_set():
                raise FetchCancelled("the session was stopped during a playlist fetch") from exc
            if time.monotonic() >= deadline:
                raise OriginTooSlow(f"the origin's playlist took over {timeout_s:.1f} s") from exc
            raise
        finally:
            for token in tokens:
                _watchdog.unwatch(token)
            connection.close()
    return None


def _fetch_playlist(
    url: str,
    proxy_url: str,
    timeout_s: float,
    redirects: int = 5,
    *,
    stop: threading.Event | None = None,
) -> bytes | None:
    """The body of ``url`` if it answers 200 with an M3U playlist, else None (a media stream is
    not read past its first bytes); see :func:`fetch` for the limits and errors."""
    got = fetch(url, proxy_url, timeout_s, redirects, stop=stop)
    if got is None or got.status != 200 or not got.body.startswith(b"#EXTM3U"):
        return None
    return got.body


def hls_target_duration(
    url: str, proxy_url: str, timeout_s: float, *, stop: threading.Event | None = None
) -> float | None:
    """EXT-X-TARGETDURATION (s) of the HLS source at ``url`` (of its first variant, for a master
    playlist), or None if ``url`` is not a playlist or its answer is not one.

    Raises :class:`OriginTooSlow` (the origin stalls: a lost signal), :class:`FetchCancelled`
    (``stop`` was set) and :class:`PlaylistLoop` (a master whose variants are masters: refused).
    The whole probe ends within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s

    def get(target: str) -> bytes | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OriginTooSlow(f"the origin's playlists took over {timeout_s:.1f} s")
        return _fetch_playlist(target, proxy_url, remaining, stop=stop)

    try:
        body = get(url)
        if body is None:
            return None
        refused = egress.nested_uri_refused(body, url)
        if refused is not None:
            raise NestedProtocolRefused(refused)
        parsed = hls_playlist.parse(body, url)
        if parsed.master is None:
            return parsed.media.target_s if parsed.media is not None else None
        first: float | None = None
        for index, target in enumerate(parsed.nested[:PROBE_MAX_VARIANTS]):
            if target == url:
                raise PlaylistLoop("the master playlist lists itself as a variant")
            variant = get(target)
            if variant is None:
                continue
            refused = egress.nested_uri_refused(variant, target)
            if refused is not None:
                raise NestedProtocolRefused(f"variant {index + 1}: {refused}")
            if hls_playlist.is_master(variant):
                raise PlaylistLoop(f"variant {index + 1} of the master playlist is a master playlist too")
            got = hls_playlist.parse(variant, target).media
            if first is None and got is not None:
                first = got.target_s
        return first
    except (OriginTooSlow, FetchCancelled):
        raise
    except (OSError, ValueError, http.client.HTTPException):
        return None  # FFmpeg will say what is wrong with the source


def read_timeout_for(
    url: str,
    read_timeout_s: float,
    proxy_url: str | None,
    timeout_s: float,
    *,
    stop: threading.Event | None = None,
) -> float:
    """The read timeout for ``url``: ``read_timeout_s``, or for an HLS source at least
    :data:`HLS_STALL_TARGETS` target durations (at most :data:`HLS_MAX_READ_TIMEOUT_S`).
    The probe's errors (:func:`hls_target_duration`) propagate."""
    if proxy_url is None:
        return read_timeout_s
    target = hls_target_duration(url, proxy_url, timeout_s, stop=stop)
    if target is None or not target > 0:
        return read_timeout_s
    return max(read_timeout_s, min(HLS_MAX_READ_TIMEOUT_S, HLS_STALL_TARGETS * target))


def open_source(
    url: str,
    limits: Limits,
    open_timeout_s: float,
    read_timeout_s: float,
    *,
    allow_private: bool = False,
    stop: threading.Event | None = None,
) -> Any:
    """Open ``url`` for reading with the nested-protocol allowlist and the probe caps. HTTP(S)
    goes through the process's egress proxy, which refuses metadata addresses always and internal
    ones unless ``allow_private`` (the deployment's policy, as given to ``check_url``). An HLS
    playlist's read timeout follows its target duration (:func:`read_timeout_for`); the worker's
    own playlist probe ends within the read timeout (a stalled origin is a lost signal that soon)
    and at once when ``stop`` is set."""
    proxy_url = None
    if (urlsplit(url).scheme or "file").lower() in ("http", "https"):
        proxy_url = egress.shared_proxy(allow_private).url
    options = open_options(url, limits, proxy_url=proxy_url)
    probe_s = min(open_timeout_s, read_timeout_s)
    read_timeout_s = read_timeout_for(url, read_timeout_s, proxy_url, probe_s, stop=stop)
    if stop is not None and stop.is_set():
        raise FetchCancelled("the session was stopped before the source was opened")
    return av.open(url, mode="r", options=options, timeout=(open_timeout_s, read_timeout_s))


@functools.cache
def has_demuxer(name: str) -> bool:
    """Whether this build of FFmpeg can read the container format ``name`` (not only write it)."""
    try:
        av.format.ContainerFormat(name, "r")
    except ValueError:
        return False
    return True


def beyond_limits(stream: Any, limits: Limits) -> str | None:
    """Why ``stream`` asks for more than the deployment allows (memory, CPU), or None."""
    cc = stream.codec_context
    if stream.type == "video":
        if (cc.width or 0) > limits.max_width or (cc.height or 0) > limits.max_height:
            return (
                f"video is {cc.width}x{cc.height}; this deployment monitors up to "
                f"{limits.max_width}x{limits.max_height}"
            )
        rate = stream.average_rate or stream.guessed_rate
        if rate is not None and float(rate) > limits.max_fps:
            return f"video is {float(rate):.1f} fps; the limit is {limits.max_fps:.0f}"
    elif stream.type == "audio":
        if (cc.channels or 0) > limits.max_channels:
            return f"audio has {cc.channels} channels; the limit is {limits.max_channels}"
        if (cc.sample_rate or 0) > limits.max_sample_rate:
            return f"audio is {cc.sample_rate} Hz; the limit is {limits.max_sample_rate}"
    return None


def _bandwidth(stream: Any) -> int:
    """The HLS variant's BANDWIDTH that ``stream`` belongs to (FFmpeg's ``variant_bitrate``), or 0."""
    value = stream.metadata.get("variant_bitrate", "")
    return int(value) if value.isdigit() else 0


def select_streams(container: Any, limits: Limits) -> tuple[Any | None, Any | None]:
    """The video and the audio stream a session monitors, within the deployment's limits; every
    other stream is discarded, so that the demuxer neither parses nor downloads it.

    An HLS master playlist offers the streams of every variant, and FFmpeg's demuxer fetches the
    segments of each variant it is not told to discard: every rendition of the ladder, for one
    monitored. The variant with the highest BANDWIDTH within the limits is monitored (the best
    picture viewers get; point avmon at a variant's own playlist to monitor another), with its
    own audio if it has some, else the first audio stream within the limits. Other sources: the
    first video and the first audio stream. Raises :class:`SourceRefused` with the reason when
    no stream of a kind the source has is within the limits.
    """
    chosen: dict[str, Any] = {}
    for kind in ("video", "audio"):
        streams = [stream for stream in container.streams if stream.type == kind]
        allowed = [stream for stream in streams if beyond_limits(stream, limits) is None]
        if streams and not allowed:
            raise SourceRefused(beyond_limits(streams[0], limits) or f"no {kind} stream within the limits")
        if not allowed:
            continue
        if kind == "audio" and "video" in chosen:
            # max() keeps the first of equals: its own variant's audio, else the first one.
            same = _bandwidth(chosen["video"])
            chosen[kind] = max(allowed, key=lambda stream: _bandwidth(stream) == same)
        else:
            chosen[kind] = max(allowed, key=_bandwidth)
    for stream in container.streams:
        if stream not in chosen.values():
            stream.discard = av.stream.Discard.all
    return chosen.get("video"), chosen.get("audio")
