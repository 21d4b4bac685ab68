"""DASH input: the worker fetches an MPD's segments itself and feeds them to PyAV.

PyAV's FFmpeg has no DASH demuxer (it needs libxml2), so :class:`DashSource` does a player's
work: it reads the MPD (:mod:`worker.dash.mpd`), chooses one video and one audio representation
within the worker's :class:`~worker.media.Limits` (the highest ``@bandwidth`` within them, as for
an HLS ladder), starts a live MPD near its live edge (``suggestedPresentationDelay`` behind the
newest segment), reloads it per ``minimumUpdatePeriod`` and fetches each representation's
initialization and media segments through the egress proxy (:mod:`worker.dash.fetch`) for the
readers of :mod:`worker.dash.input`, one a representation.

Timestamps are the segments' own (their ``tfdt``): the media clock of the MPD's timeline, so the
session's media time follows the MPD's. What the delivery does wrong is reported through
``on_finding`` as findings on that clock (seconds): ``segment_error`` (a segment that answers an
HTTP error, times out, or is truncated: skipped, decoding goes on with the next one),
``manifest_stale`` (a live MPD whose segments and publishTime stop advancing for
:attr:`DashOptions.stale_multiple` update periods) and ``manifest_error`` (``labels.rule``: an
MPD reload that does not parse, a timeline that skips segments or goes back).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from worker import egress
from worker.dash.fetch import Truncated, fetch
from worker.dash.mpd import ManifestInvalid, Mpd, Representation, Segment, parse_mpd
from worker.detectors.base import Finding, Severity
from worker.media import FetchCancelled, Limits, OriginTooSlow, SourceRefused

log = logging.getLogger("avmon.worker.dash")

MPD_MAX_BYTES = egress.PLAYLIST_MAX_BYTES
SEGMENT_MAX_BYTES = 64 * 1024 * 1024  # a 4 s segment at 100 Mb/s is 50 MB
INIT_MAX_BYTES = 1024 * 1024
POLL_S = 0.05  # step of a wait for the next segment (a stop ends it within this)
MANIFEST_ERROR_GAP_S = 10.0  # one manifest_error per rule this often at most
AVAILABILITY_TOLERANCE_S = 1.0  # a segment listed this much (or a segment) before it is available
WINDOW_MIN_SEGMENTS = 3  # a live window shorter than this many segments (Apple's HLS rule, for DASH)

Report = Callable[[Finding], None]


class UnusableManifest(OSError):
    """The MPD read at open does not parse or breaks a rule this reader needs."""


@dataclass(frozen=True)
class DashOptions:
    """How a DASH source is followed and judged."""

    # A live MPD whose newest segment and publishTime do not advance for this many update
    # periods (minimumUpdatePeriod, or the longest segment where it is shorter) is manifest_stale.
    stale_multiple: float = 3.0
    # Seconds behind the newest segment a live MPD is started at; None: its
    # suggestedPresentationDelay, else three segment durations.
    live_delay_s: float | None = None


def _shown(url: str) -> str:
    """A URL for a defect's metrics: no credentials, no query (they may carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _within(rep: Representation, limits: Limits) -> bool:
    if rep.kind == "video":
        return (
            (rep.width or 0) <= limits.max_width
            and (rep.height or 0) <= limits.max_height
            and (rep.frame_rate or 0.0) <= limits.max_fps
        )
    return (rep.channels or 0) <= limits.max_channels and (rep.sample_rate or 0) <= limits.max_sample_rate


def choose(mpd: Mpd, limits: Limits) -> list[Representation]:
    """The video and the audio representation monitored: of each kind, the highest bandwidth
    within ``limits`` (the first of equals). Raises :class:`SourceRefused` when a kind the MPD
    has has none within them, or the MPD has neither kind."""
    chosen: list[Representation] = []
    for kind in ("video", "audio"):
        reps = [rep for rep in mpd.representations if rep.kind == kind]
        allowed = [rep for rep in reps if _within(rep, limits)]
        if reps and not allowed:
            rep = reps[0]
            raise SourceRefused(
                f"no {kind} representation within the limits (e.g. {rep.id}: "
                f"{rep.width}x{rep.height}, {rep.channels} channels)"
            )
        if allowed:
            chosen.append(max(allowed, key=lambda rep: rep.bandwidth))
    if not chosen:
        raise SourceRefused("the MPD has neither a video nor an audio representation")
    return chosen


class Track:
    """Where one representation's reading stands."""

    def __init__(self, rep: Representation) -> None:
        self.rep = rep
        self.next_start: int | None = None  # media ticks of the next segment to read
        self.last_data = time.monotonic()  # when a segment last arrived whole


class DashSource:
    """One DASH presentation as its representations' byte streams (see the module doc)."""

    def __init__(
        self,
        url: str,
        limits: Limits,
        open_timeout_s: float,
        read_timeout_s: float,
        *,
        allow_private: bool,
        stop: threading.Event,
        on_finding: Report,
        options: DashOptions | None = None,
    ) -> None:
        self.url = url
        self.limits = limits
        self.read_timeout_s = read_timeout_s
        self.stop = stop
        self.on_finding = on_finding
        self.options = options or DashOptions()
        self.proxy_url = egress.shared_proxy(allow_private).url
        self._segment_s: tuple[Mpd, float] | None = None
        self.mpd = self._first_load(open_timeout_s)
        self.tracks = [Track(rep) for rep in choose(self.mpd, limits)]
        self._start(time.time())
        self._loaded_at = time.monotonic()
        self._advanced_at = time.monotonic()
        self._newest = self._newest_end()
        self._stale_open: float | None = None  # source time of an open manifest_stale
        self._errors_at: dict[str, float] = {}
        self._static_segments: dict[str, tuple[Mpd, tuple[Segment, ...]]] = {}
        self._breaking: dict[str, tuple[float, dict[str, float]]] = {}  # rule -> its start, numbers
        self._judge(self._position())

    # ------------------------------------------------------------ the manifest

    def _load(self, timeout_s: float) -> Mpd:
        answer = fetch(self.url, self.proxy_url, timeout_s, MPD_MAX_BYTES, stop=self.stop)
        if answer.status != 200:
            raise OSError(f"the MPD answered HTTP {answer.status}")
        return parse_mpd(answer.body, answer.url, time.time())

    def _first_load(self, timeout_s: float) -> Mpd:
        """The MPD at open: one naming what the worker may not fetch is refused; one that is
        unusable now is a lost signal (retried: an origin may be mid-update)."""
        try:
            return self._load(timeout_s)
        except ManifestInvalid as exc:
            if exc.rule == "url":
                raise SourceRefused(str(exc)) from exc
            raise UnusableManifest(f"the MPD is unusable ({exc.rule}): {exc}") from exc

    @property
    def segment_s(self) -> float:
        """The longest segment duration (s) of the chosen representations, as far as known."""
        if self._segment_s is None or self._segment_s[0] is not self.mpd:
            longest = self.mpd.max_segment_duration_s or 0.0
            for track in self.tracks:
                listed = track.rep.listed or ()
                for seg in listed[-4:]:
                    longest = max(longest, seg.duration / seg.timescale)
                if track.rep.segment_duration:
                    longest = max(longest, track.rep.segment_duration / track.rep.timescale)
            self._segment_s = (self.mpd, longest or 2.0)
        return self._segment_s[1]

    @property
    def update_s(self) -> float:
        """How often a live MPD is reloaded while a segment is awaited (s)."""
        period = self.mpd.minimum_update_period_s or self.segment_s
        return max(0.2, min(period, self.segment_s) / 2)

    @property
    def stale_limit_s(self) -> float:
        period = self.mpd.minimum_update_period_s or 0.0
        return self.options.stale_multiple * max(period, self.segment_s)

    @property
    def stall_s(self) -> float:
        """No new segment of a track for this long (s) is a lost signal (the session reconnects)."""
        return max(self.read_timeout_s, 3 * self.segment_s, self.stale_limit_s + self.segment_s)

    def _newest_end(self) -> tuple[float, float]:
        """The newest segment's end (s, summed over the tracks) and the publishTime: what advances."""
        now = time.time()
        ends = 0.0
        for track in self.tracks:
            rep = next((r for r in self.mpd.representations if r.id == track.rep.id), None)
            segs = self.mpd.segments(rep, now) if rep is not None else ()
            ends += segs[-1].end_s if segs else 0.0
        return ends, self.mpd.publish_time or 0.0

    def _error(self, rule: str, at: float, message: str, **metrics: float) -> None:
        last = self._errors_at.get(rule)
        now = time.monotonic()
        if last is not None and now - last < MANIFEST_ERROR_GAP_S:
            return
        self._errors_at[rule] = now
        log.warning("DASH %s: %s", _shown(self.url), message)
        self.on_finding(
            Finding(
                "manifest_error",
                at,
                at,
                Severity.WARNING,
                metrics,
                key=rule,
                labels={"rule": rule, "uri": _shown(self.url), "detail": message[:200]},
            )
        )

    def _reload(self, at: float) -> None:
        """Reload the MPD (``at``: source time now, for findings). A reload that fails keeps the
        previous MPD: for the network's failures staleness judges; a bad MPD is manifest_error."""
        self._loaded_at = time.monotonic()
        try:
            mpd = self._load(max(0.5, min(self.read_timeout_s, self.stale_limit_s)))
        except ManifestInvalid as exc:
            self._error(exc.rule, at, f"the reloaded MPD is unusable: {exc}")
            return
        except (OriginTooSlow, Truncated) as exc:
            log.info("DASH %s: reload failed: %s", _shown(self.url), exc)
            return
        except FetchCancelled:
            raise
        except OSError as exc:
            log.info("DASH %s: reload failed: %s", _shown(self.url), exc)
            return
        for track in self.tracks:
            rep = next((r for r in mpd.representations if r.id == track.rep.id), None)
            if rep is None:
                self._error("representation_gone", at, f"representation {track.rep.id} left the MPD")
                raise OSError(f"representation {track.rep.id} left the MPD")
            track.rep = rep
        self.mpd = mpd
        newest = self._newest_end()
        if newest[0] > self._newest[0] or newest[1] > self._newest[1]:
            self._advanced_at = time.monotonic()
            self._close_stale()
        self._newest = newest
        self._judge(at)

    def _violations(self) -> dict[str, tuple[str, dict[str, float]]]:
        """The rules a live MPD breaks now, each with its message and numbers: segments listed
        before their availability time (``availability``: a packager's clock ahead of the MPD's
        timeline, or a wrong availabilityStartTime; players that follow the timeline will not
        fetch them yet), and a listed window shorter than three segments (``window_short``:
        players cannot buffer)."""
        found: dict[str, tuple[str, dict[str, float]]] = {}
        mpd, now = self.mpd, time.time()
        if not mpd.dynamic or mpd.availability_start is None:
            return found
        for track in self.tracks:
            listed = track.rep.listed
            if not listed or track.rep.template is not None:
                continue
            rep, last = track.rep, listed[-1]
            ahead = mpd.availability_start + rep.presentation_s(last.start + last.duration) - now
            if ahead > max(AVAILABILITY_TOLERANCE_S, self.segment_s):
                message = f"{rep.kind} segment {last.number} is listed {ahead:.1f} s before it is available"
                found["availability"] = (message, {"ahead_s": ahead})
            window = (listed[-1].start + listed[-1].duration - listed[0].start) / rep.timescale
            # A presentation that has just begun cannot list three segments yet.
            begun = (
                now - mpd.availability_start - rep.period_start_s > (WINDOW_MIN_SEGMENTS + 1) * self.segment_s
            )
            if begun and len(listed) < WINDOW_MIN_SEGMENTS:
                message = f"{rep.kind} lists {window:.1f} s ({len(listed)} segments)"
                found["window_short"] = (message, {"window_s": window, "segments": float(len(listed))})
        return found

    def _judge(self, at: float) -> None:
        """Open a manifest_error for each rule the MPD starts to break, close it once it holds."""
        now = self._violations()
        for rule, (message, metrics) in now.items():
            if rule not in self._breaking:
                self._breaking[rule] = (at, metrics)
                log.warning("DASH %s: %s", _shown(self.url), message)
                self.on_finding(self._rule_finding(rule, at, None, metrics, message))
        for rule in [rule for rule in self._breaking if rule not in now]:
            self._end_rule(rule, at)

    def _end_rule(self, rule: str, at: float) -> None:
        start, metrics = self._breaking.pop(rule)
        self.on_finding(self._rule_finding(rule, start, max(start, at), metrics, ""))

    def _rule_finding(
        self, rule: str, start: float, end: float | None, metrics: dict[str, float], message: str
    ) -> Finding:
        labels = {"rule": rule, "uri": _shown(self.url)}
        if message:
            labels["detail"] = message[:200]
        return Finding("manifest_error", start, end, Severity.WARNING, metrics, key=rule, labels=labels)

    def _check_stale(self, at: float) -> None:
        if not self.mpd.dynamic or self._stale_open is not None:
            return
        stale = time.monotonic() - self._advanced_at
        if stale > self.stale_limit_s:
            self._stale_open = at
            log.warning("DASH %s: the MPD has not advanced for %.1f s", _shown(self.url), stale)
            self.on_finding(
                Finding(
                    "manifest_stale",
                    at,
                    None,
                    Severity.CRITICAL,
                    {
                        "stale_s": stale,
                        "limit_s": self.stale_limit_s,
                        "minimum_update_period_s": self.mpd.minimum_update_period_s or 0.0,
                    },
                    labels={"uri": _shown(self.url)},
                )
            )

    def _close_stale(self) -> None:
        start = self._stale_open
        if start is None:
            return
        self._stale_open = None
        stale = time.monotonic() - self._advanced_at
        end = max([start] + [t.next_start / t.rep.timescale for t in self.tracks if t.next_start is not None])
        self.on_finding(
            Finding(
                "manifest_stale",
                start,
                end,
                Severity.CRITICAL,
                {"stale_s": stale, "limit_s": self.stale_limit_s},
                labels={"uri": _shown(self.url)},
            )
        )

    def close(self) -> None:
        """End what is still open (a stale MPD, a rule broken, when the session gives up on it)."""
        self._advanced_at = time.monotonic()
        self._close_stale()
        at = max([0.0] + [t.next_start / t.rep.timescale for t in self.tracks if t.next_start is not None])
        for rule in list(self._breaking):
            self._end_rule(rule, at)

    # ------------------------------------------------------------ segments

    def _start(self, now: float) -> None:
        """Where reading begins: a static MPD's first segment; a live one's, the segment the
        live delay behind its newest one falls in, the same presentation time for every track."""
        at: float | None = None  # presentation time (s) to start at
        for track in self.tracks:
            segs = self.mpd.segments(track.rep, now)
            if not segs:
                continue
            if not self.mpd.dynamic:
                chosen = segs[0]
            else:
                if at is None:
                    newest = track.rep.presentation_s(segs[-1].start + segs[-1].duration)
                    d = segs[-1].duration / segs[-1].timescale
                    delay = self.options.live_delay_s
                    if delay is None:
                        delay = self.mpd.suggested_presentation_delay_s or 3 * d
                    at = newest - max(delay, d)
                start_at = at
                fits = [s for s in segs if track.rep.presentation_s(s.start) <= start_at + 1e-6]
                chosen = fits[-1] if fits else segs[0]
            track.next_start = chosen.start

    def _position(self) -> float:
        """Source time (s) where reading stands: the earliest next segment of the tracks."""
        starts = [t.next_start / t.rep.timescale for t in self.tracks if t.next_start is not None]
        return min(starts) if starts else 0.0

    def next_segment(self, track: Track) -> Segment | None:
        """The track's next segment, waiting (reloading the MPD) until it is available; None at
        the end of a static presentation. Raises :class:`TimeoutError` after :attr:`stall_s`
        without a segment, :class:`FetchCancelled` on a stop."""
        while True:
            if self.stop.is_set():
                raise FetchCancelled("the session was stopped")
            found = self._after(track, self._segments(track))
            if found is not None:
                return found
            if not self.mpd.dynamic:
                return None
            now = time.monotonic()
            at = (track.next_start or 0) / track.rep.timescale
            if now - self._loaded_at >= self.update_s:
                self._reload(at)
                continue
            self._check_stale(at)
            if now - track.last_data > self.stall_s:
                raise TimeoutError(f"no new {track.rep.kind} segment in {now - track.last_data:.1f} s")
            self.stop.wait(POLL_S)

    def _segments(self, track: Track) -> tuple[Segment, ...]:
        """The track's segments now; a static MPD's are generated once."""
        if self.mpd.dynamic:
            return self.mpd.segments(track.rep, time.time())
        cached = self._static_segments.get(track.rep.id)
        if cached is None or cached[0] is not self.mpd:
            cached = self._static_segments[track.rep.id] = (
                self.mpd,
                self.mpd.segments(track.rep, time.time()),
            )
        return cached[1]

    def _after(self, track: Track, segs: tuple[Segment, ...]) -> Segment | None:
        """The first segment at or after the track's position (reporting segments the MPD skips)."""
        position = track.next_start
        for seg in segs:
            if position is None or seg.start + seg.duration > position + seg.duration // 2:
                if position is not None and seg.start > position + seg.duration // 10:
                    gap = (seg.start - position) / seg.timescale
                    self._error(
                        "segments_missing",
                        position / seg.timescale,
                        f"{track.rep.kind} timeline skips {gap:.3f} s before segment {seg.number}",
                        gap_s=gap,
                    )
                track.next_start = seg.start + seg.duration
                return seg
        return None

    def segment_error(self, track: Track, seg: Segment, status: int, reason: str) -> None:
        log.warning("DASH %s: segment %s failed: %s", _shown(self.url), _shown(seg.url), reason)
        self.on_finding(
            Finding(
                "segment_error",
                seg.start_s,
                seg.end_s,
                Severity.CRITICAL,
                {"status": float(status), "duration_s": seg.duration / seg.timescale},
                key=f"{track.rep.kind}:{track.rep.id}",
                labels={"uri": _shown(seg.url), "reason": reason[:200], "representation": track.rep.id},
            )
        )

    def fetch_body(self, url: str, max_bytes: int, timeout_s: float) -> tuple[int, bytes]:
        answer = fetch(url, self.proxy_url, timeout_s, max_bytes, stop=self.stop)
        return answer.status, answer.body
