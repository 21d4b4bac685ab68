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

The package, one concept per module: :mod:`~worker.egress.proxy` (the proxy: accept, check,
connect, forward, splice), :mod:`~worker.egress.playlists` (the nested-URI check of playlists) and
:mod:`~worker.egress.wire` (HTTP/1.x heads: parsing, rewriting, refusals). This module holds the
process's shared proxies and re-exports the names callers use (``from worker import egress``).
"""

from __future__ import annotations

import logging
import os
import threading

from worker.egress.playlists import (
    PLAYLIST_DEADLINE_S,
    PLAYLIST_MAX_BYTES,
    PLAYLIST_MIN_RATE_BPS,
    PLAYLIST_RATE_GRACE_S,
    nested_uri_refused,
)
from worker.egress.proxy import Deny, EgressProxy
from worker.egress.wire import CHUNK, EGRESS_HEADER, MAX_HEAD_BYTES, MAX_HEADER_LINES, PLAYLIST_REFUSED

__all__ = [
    "CHUNK",
    "EGRESS_HEADER",
    "MAX_HEADER_LINES",
    "MAX_HEAD_BYTES",
    "PLAYLIST_DEADLINE_S",
    "PLAYLIST_MAX_BYTES",
    "PLAYLIST_MIN_RATE_BPS",
    "PLAYLIST_RATE_GRACE_S",
    "PLAYLIST_REFUSED",
    "Deny",
    "EgressProxy",
    "nested_uri_refused",
    "shared_proxy",
]

log = logging.getLogger("avmon.worker.egress")

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
