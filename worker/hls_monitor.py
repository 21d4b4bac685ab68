"""The playlist monitor of an HLS source: every rendition's playlist, about once per target duration.

Beside the decoding (which stays on one variant), one thread per HLS source reloads the master
and each media playlist it names (variants and EXT-X-MEDIA renditions with a URI, at most
:data:`worker.hls_playlist.MAX_RENDITIONS`; I-frame playlists are not reloaded), feeds them to
:class:`worker.hls_health.LadderHealth` and hands the findings to ``on_findings``. Every fetch
is the worker's own (:func:`worker.media.fetch`) through the egress proxy, with its limits: the
playlist size (1 MB), redirects (5), a deadline and a minimum rate; ``close`` cuts a fetch in
flight at once.

Segments: each new segment of every rendition of a live source is checked with one ranged GET
of its first :data:`SEGMENT_PROBE_BYTES` bytes (the newest one only, on the first reload; a VOD's
are not: they do not change, and the decoding reads the chosen variant's own). An HTTP error,
a timeout or a body that ends before what it announced is a ``segment_error`` with the status.
Why not the egress proxy's view of FFmpeg's own requests: the proxy is shared by every stream
of the worker and sees only the decoded variant's segments, while the check here covers every
rendition for about one small request per segment (a 4-rendition ladder of 6 s segments: under
one request a second), names the rendition, and leaves the segment path untouched. Left out:
a segment cut short after its first kilobyte (only the decoded variant's would show, as a
``decode_error``).

Reload timing: every target duration (the shortest of the ladder, between
:data:`MIN_INTERVAL_S` and :data:`MAX_INTERVAL_S`), and once more just after the moment a
rendition would turn stale, so ``manifest_stale`` is raised within one reload of its limit. A
playlist with ENDLIST (VOD, or a live stream that ended) is not reloaded; once all are, the
thread ends. Rounds are spaced so that their CPU stays under :data:`CPU_SHARE` of a core
(hostile playlists of 1 MB each cost ~0.2 s to parse).
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.settings import WorkerSettings
from worker import egress
from worker.detectors.base import Finding
from worker.hls_cues import PlaylistCues
from worker.hls_health import HealthOptions, LadderHealth, identity
from worker.hls_playlist import MAX_RENDITIONS, Parsed, PlaylistMalformed, parse
from worker.media import FetchCancelled, NestedProtocolRefused, OriginTooSlow, fetch
from worker.transport.cues import Cue

log = logging.getLogger("avmon.worker.hls")

MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 10.0
FETCH_TIMEOUT_S = 5.0  # one playlist or segment check (and never more than a target duration)
SEGMENT_PROBE_BYTES = 1024
STALE_MARGIN_S = 0.05  # the extra reload comes this long after a staleness deadline
# A round's CPU (parsing, mostly) may take at most this share of a core: rounds are spaced out to
# keep it. A normal ladder's round costs ~3 ms; 16 hostile 1 MB playlists would cost ~3 s a round.
CPU_SHARE = 0.05


@dataclass(frozen=True)
class HlsOptions:
    """The playlist monitor's settings (``AVMON_HLS_*`` in :class:`shared.settings.WorkerSettings`)."""

    enabled: bool = True  # AVMON_HLS_HEALTH: judge the playlists of HLS sources at all
    check_segments: bool = True  # AVMON_HLS_CHECK_SEGMENTS: a ranged GET of every new segment
    health: HealthOptions = field(default_factory=HealthOptions)

    @classmethod
    def from_settings(cls, s: WorkerSettings) -> HlsOptions:
        return cls(
            enabled=s.hls_health,
            check_segments=s.hls_check_segments,
            health=HealthOptions(stale_targets=s.hls_stale_targets, pdt_tolerance_s=s.hls_pdt_tolerance_s),
        )


class HlsMonitor:
    """One HLS source's playlists. ``poll`` runs one round (tests drive it with their own clock);
    ``start`` runs rounds in a thread until ``close``."""

    def __init__(
        self,
        url: str,
        proxy_url: str,
        *,
        options: HlsOptions | None = None,
        on_findings: Callable[[list[Finding]], None] | None = None,
    ) -> None:
        self.url = url
        self.proxy_url = proxy_url
        self.options = options or HlsOptions()
        self.on_findings = on_findings
        self.health = LadderHealth(self.options.health)
        self.is_hls: bool | None = None  # None until the first answer says
        self.finished = False  # every playlist has ENDLIST: nothing more to reload
        self.polls = 0
        self.fetches = 0  # requests made (playlists and segment checks)
        self._cues: list[Cue] = []
        self._cue_reader = PlaylistCues()
        self._cue_uri: str | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._mono0, self._wall0 = time.monotonic(), time.time()
        self._target_s: float | None = None
        self._ended: set[str] = set()
        self._uris: list[str] = []

    @classmethod
    def for_source(
        cls, url: str, allow_private: bool, options: HlsOptions, on_findings: Callable[[list[Finding]], None]
    ) -> HlsMonitor:
        """A started monitor of ``url`` through the process's egress proxy for this policy."""
        monitor = cls(url, egress.shared_proxy(allow_private).url, options=options, on_findings=on_findings)
        monitor.start()
        return monitor

    def now(self) -> float:
        """Wall-clock seconds (epoch) at a monotonic pace: the findings' clock."""
        return self._wall0 + (time.monotonic() - self._mono0)

    # ------------------------------------------------------------ what the session tells and asks

    def decoding(self, stream: Any) -> None:
        """The session decodes ``stream`` (a PyAV stream of the HLS demuxer): its variant is the
        reference of the renditions' comparison, the one whose absence from the master counts,
        and the one whose cues are read."""
        value = str(stream.metadata.get("variant_bitrate", ""))
        if value.isdigit():
            with self._lock:
                self.health.decoding(int(value))

    def drain_cues(self) -> list[Cue]:
        """The cues read since the last call (wall-clock times; see :mod:`worker.hls_cues`)."""
        with self._lock:
            out, self._cues = self._cues, []
        return out

    # ------------------------------------------------------------ one round

    def poll(self, now: float | None = None) -> list[Finding]:
        """Reload the playlists once, check the new segments, judge; the findings raised or closed.
        ``now``: the clock (default :meth:`now`)."""
        with self._lock:
            at = self.now() if now is None else now
            self.polls += 1
            out = self._round(at)
            out += self.health.tick(at if now is not None else self.now())
            return out

    def _round(self, now: float) -> list[Finding]:
        out: list[Finding] = []
        top = self._playlist(self.url, now, out, top=True)
        if top is not None and top.master is not None:
            out += self.health.master(top.master, now)
            self._uris = [r.uri for r in top.master.renditions[:MAX_RENDITIONS]]
        elif top is not None:
            self._uris = [self.url]
        elif not self.is_hls:
            return out
        uris = self._uris  # a master that failed to reload: the renditions it named last
        targets: list[float] = []
        for uri in uris:
            if self._cancel.is_set():
                break
            media = top.media if top is not None and uri == self.url else None
            if media is None and identity(uri) not in self._ended and uri != self.url:
                parsed = self._playlist(uri, now, out)
                media = parsed.media if parsed is not None else None
            if media is None:
                continue
            out += self.health.media(uri, media, now)
            if not media.live:
                self._ended.add(identity(uri))
            if media.target_s:
                targets.append(media.target_s)
            if identity(uri) == (self.health.decoded or identity(uri)):
                self._cues += self._cue_reader.read(media, now)
            if self.options.check_segments and media.live:
                for msn, seg_uri in self.health.to_check(uri):
                    out += self._check_segment(uri, msn, seg_uri, now)
        self._target_s = min(targets, default=self._target_s)
        self.finished = bool(uris) and all(identity(u) in self._ended for u in uris)
        return out

    def _playlist(self, uri: str, now: float, out: list[Finding], *, top: bool = False) -> Parsed | None:
        """``uri`` fetched and parsed; a failure is judged (the top URL of a master: not a
        rendition, so only logged) and None."""
        # A master's own failed reload is only logged: its renditions are judged.
        single = not top or identity(self.url) in self.health.renditions
        try:
            self.fetches += 1
            got = fetch(uri, self.proxy_url, self._timeout(), stop=self._cancel)
        except FetchCancelled:
            return None
        except OriginTooSlow as exc:
            self._failed(uri, 0, f"timeout: {exc}", now, out, single)
            return None
        except NestedProtocolRefused as exc:
            self._failed(uri, 403, f"refused: {exc}", now, out, single)
            return None
        except (OSError, http.client.HTTPException) as exc:
            self._failed(uri, 0, f"{type(exc).__name__}: {exc}", now, out, single)
            return None
        if got is None:
            if top and self.is_hls is None:
                self.is_hls, self.finished = False, True  # not http(s): no playlist to reload
            return None
        if got.status != 200:
            self._failed(uri, got.status, f"HTTP {got.status}", now, out, single)
            return None
        if not got.body.startswith(b"#EXTM3U"):
            if top and self.is_hls is None:
                self.is_hls, self.finished = False, True  # not HLS (a progressive stream): nothing to do
                return None
            out += self.health.malformed(uri, "the answer is not an M3U playlist", now)
            return None
        try:
            parsed = parse(got.body, got.url)
        except PlaylistMalformed as exc:
            out += self.health.malformed(uri, str(exc), now)
            return None
        if top and self.is_hls is None:
            self.is_hls = True
            if parsed.master is None:
                self.health.single(self.url)
        return parsed

    def _failed(
        self, uri: str, status: int, reason: str, now: float, out: list[Finding], judged: bool
    ) -> None:
        log.info("hls: %s: %s", uri.split("?", 1)[0], reason)
        if judged:
            out += self.health.unavailable(uri, status, reason, now)

    def _check_segment(self, uri: str, msn: int, seg_uri: str, now: float) -> list[Finding]:
        n = SEGMENT_PROBE_BYTES
        status, reason = 0, None
        try:
            self.fetches += 1
            got = fetch(
                seg_uri,
                self.proxy_url,
                self._timeout(),
                stop=self._cancel,
                headers={"Range": f"bytes=0-{n - 1}"},
                limit=n,
                playlist=False,
            )
        except FetchCancelled:
            return []
        except OriginTooSlow:
            reason = "timeout"
        except (OSError, http.client.HTTPException) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if got is None:
                return []  # not http(s): the proxy would not fetch it either
            status = got.status
            expected = None if got.length is None else min(got.length, n)
            if status not in (200, 206):
                reason = f"HTTP {status}"
            elif not got.body:
                reason = "empty"
            elif expected is not None and len(got.body) < expected:
                reason = "truncated"
        return self.health.segment(uri, msn, seg_uri, status, reason, now)

    def _timeout(self) -> float:
        return min(FETCH_TIMEOUT_S, max(1.0, self._target_s or FETCH_TIMEOUT_S))

    # ------------------------------------------------------------ the thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hls-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._cancel.is_set():
            spent = time.thread_time()
            try:
                found = self.poll()
            except Exception:  # a monitor's bug must not end the stream's monitoring
                log.exception("hls monitor of %s: a round failed", self.url.split("?", 1)[0])
                found = []
            spent = time.thread_time() - spent
            if found and self.on_findings is not None:
                self.on_findings(found)
            if self.finished:
                return
            interval = min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, self._target_s or 2.0))
            wake = self.now() + interval
            with self._lock:
                deadline = self.health.next_deadline()
            if deadline is not None:
                wake = min(wake, deadline + STALE_MARGIN_S)
            wake = max(wake, self.now() + spent / CPU_SHARE)
            if self._cancel.wait(max(MIN_INTERVAL_S / 5, wake - self.now())):
                return

    def close(self, timeout_s: float = 5.0) -> list[Finding]:
        """Stop (a fetch in flight is cut at once) and close every open finding now."""
        self._cancel.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        with self._lock:
            return self.health.close(self.now())
