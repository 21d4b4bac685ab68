"""Delivery health of an HLS ladder: RFC 8216 and Apple's authoring rules judged on its playlists.

Pure logic: parsed playlists (:mod:`worker.hls_playlist`), segment check results and a clock in,
:class:`~worker.detectors.base.Finding` events out. The clock is the caller's, in seconds (the
monitor gives wall-clock epoch seconds at a monotonic pace, so the session can place the findings
on the media timeline as it places the transport analyser's); staleness is judged on it.

One state per rendition (media sequence, discontinuity numbers, segment URIs, when it last
gained a segment), as Eyevinn's hls-monitor keeps one per variant. The rules, raise and clear
side by side (``key``: the rendition, ``v0``/``audio0``/``media``...; ``labels.uri`` its URI):

======================= ============================================ ===========================
finding (rule)          raised when                                  closes
======================= ============================================ ===========================
manifest_stale          a live playlist gains no segment for more    a new segment or ENDLIST
                        than ``stale_targets`` x its target duration (start: when the last
                                                                     new one was seen)
manifest_error          the media sequence goes down (an origin      at once (an event)
media_sequence_         failover to a stale copy)
decreased
manifest_error          a media sequence number names another URI    at once
media_sequence_reused   than it did on the previous reload
manifest_error          a segment's discontinuity number differs     at once
discontinuity_sequence  from the previous reload's: the
                        EXT-X-DISCONTINUITY-SEQUENCE does not count
                        the discontinuities that left the window
manifest_error          an EXTINF, rounded, is above the target      when no segment of the
extinf_exceeds_target   duration (RFC 8216 §4.3.3.1)                 window is
manifest_error          a live playlist that has dropped segments    when the window is long
live_window_short       is shorter than ``min_window_targets`` x     enough again
                        target duration (RFC 8216 §6.2.2)
manifest_error          the decoded variant is no longer in the      when it is back
variant_missing         master playlist
manifest_error          a playlist cannot be fetched (HTTP status,   the next good fetch
playlist_unavailable    timeout) ``unavailable_after`` times running
manifest_error          a playlist ``m3u8`` cannot read              the next readable one
malformed
segment_error           a new segment answers an HTTP error, times   the rendition's next good
                        out or ends early (``status``: 0 for a       segment
                        timeout or a cut)
rendition_mismatch      two renditions of one target duration:       when they agree again
                        newest media sequences more than
                        ``msn_tolerance`` apart (both updating), or
                        at one media sequence other discontinuity
                        numbers, or program date-times more than
                        ``pdt_tolerance_s`` apart
======================= ============================================ ===========================

Not judged: I-frame playlists; low-latency parts (EXT-X-PART) beyond their parent segments;
renditions of another target duration than the reference are not compared (their media
sequences need not align).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from shared.models import DefectType as D
from worker.detectors.base import Finding, Severity
from worker.hls_playlist import MasterPlaylist, MediaPlaylist, Rendition

STALE_TARGETS = 3.0  # players give up after about this many target durations without a new segment
MIN_WINDOW_TARGETS = 3.0  # RFC 8216 §6.2.2: a live playlist never shorter than 3 target durations
# Not the RFC's: EXTINF values a little short of the target (5.96 s of 6) make a 3-segment window
# read as 17.88 s of 18; so much is not a fault a player notices.
WINDOW_SLACK_S = 0.5
MSN_TOLERANCE = 2  # renditions fetched a moment apart may straddle one new segment
PDT_TOLERANCE_S = 1.0  # not the standard's: about what a player's variant switch hides
UNAVAILABLE_AFTER = 2  # failed reloads in a row before a playlist counts as unavailable
# A rendition counts as updating (and is compared on its media sequence) while its last new
# segment is no older than this many target durations: a stalled one is manifest_stale, not a
# mismatch too.
FRESH_TARGETS = 1.5


@dataclass(frozen=True)
class HealthOptions:
    """Settings of the rules (defaults above; ``stale_targets`` is ``AVMON_HLS_STALE_TARGETS``)."""

    stale_targets: float = STALE_TARGETS
    min_window_targets: float = MIN_WINDOW_TARGETS
    window_slack_s: float = WINDOW_SLACK_S
    msn_tolerance: int = MSN_TOLERANCE
    pdt_tolerance_s: float = PDT_TOLERANCE_S
    unavailable_after: int = UNAVAILABLE_AFTER


def identity(uri: str) -> str:
    """What names one playlist or segment across reloads: its URI without query or fragment
    (CDNs put tokens there that may change from one reload to the next)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def shown_uri(uri: str) -> str:
    """A URI as a defect shows it: no credentials, no query (they may carry tokens)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class _Open:
    start: float
    finding: Finding


@dataclass
class _Rendition:
    rendition: Rendition
    playlist: MediaPlaylist | None = None
    newest: int | None = None  # newest media sequence number seen
    changed_at: float | None = None  # when a new segment was last seen
    failures: int = 0
    checked: int | None = None  # newest media sequence whose segment was checked
    opened: dict[str, _Open] = field(default_factory=dict)  # condition name -> its open finding


class LadderHealth:
    """The rules above over one source: a master's renditions, or one media playlist (``media``).

    Feed it what the monitor fetched (:meth:`master`, :meth:`media`, :meth:`unavailable`,
    :meth:`segment`), then :meth:`tick`; each returns the findings it raised or closed."""

    def __init__(self, options: HealthOptions | None = None) -> None:
        self.options = options or HealthOptions()
        self.renditions: dict[str, _Rendition] = {}  # by identity(uri)
        self.decoded: str | None = None  # identity of the variant the session decodes
        self._master_opened: _Open | None = None
        self._mismatch: dict[str, _Open] = {}
        self._out: list[Finding] = []

    # ------------------------------------------------------------ inputs

    def single(self, uri: str) -> None:
        """The source is one media playlist (no master): it is the only rendition, decoded."""
        if identity(uri) not in self.renditions:
            self.renditions[identity(uri)] = _Rendition(Rendition("media", uri, "variant"))
        self.decoded = identity(uri)

    def master(self, master: MasterPlaylist, now: float) -> list[Finding]:
        """A master playlist was read: renditions appear and go; the decoded variant's presence."""
        uris = {identity(r.uri) for r in master.renditions}
        for uri in [u for u in self.renditions if u not in uris]:
            self._close_all(self.renditions.pop(uri), now)
        for r in master.renditions:
            state = self.renditions.get(identity(r.uri))
            if state is None:
                self.renditions[identity(r.uri)] = _Rendition(r)
            else:
                state.rendition = r
        variants = [identity(r.uri) for r in master.variants]
        if self.decoded is None and variants:
            # As worker.media.select_streams chooses, until the session says which it decodes.
            self.decoded = identity(max(master.variants, key=lambda r: r.bandwidth).uri)
        missing = self.decoded is not None and self.decoded not in variants and bool(variants)
        if missing and self._master_opened is None:
            f = Finding(
                D.MANIFEST_ERROR.value,
                now,
                None,
                Severity.CRITICAL,
                {"variants": float(len(variants))},
                key="master",
                labels={"rule": "variant_missing", "uri": shown_uri(self.decoded or "")},
            )
            self._master_opened = _Open(now, f)
            self._out.append(f)
        elif not missing and self._master_opened is not None:
            o, self._master_opened = self._master_opened, None
            self._out.append(_close(o.finding, now))
        return self._take()

    def decoding(self, bandwidth: int) -> None:
        """The session decodes the variant of this BANDWIDTH (FFmpeg's ``variant_bitrate``)."""
        for state in self.renditions.values():
            if state.rendition.kind == "variant" and state.rendition.bandwidth == bandwidth:
                self.decoded = identity(state.rendition.uri)
                return

    def unavailable(self, uri: str, status: int, reason: str, now: float) -> list[Finding]:
        """A reload of ``uri`` failed (``status`` 0: no HTTP answer: timeout, cut, refused)."""
        state = self.renditions.get(identity(uri))
        if state is None:
            return []
        state.failures += 1
        if state.failures >= self.options.unavailable_after:
            self._raise(
                state,
                "playlist_unavailable",
                now,
                D.MANIFEST_ERROR,
                Severity.CRITICAL,
                {"status": float(status), "failures": float(state.failures)},
                reason=reason,
            )
        return self._take()

    def malformed(self, uri: str, reason: str, now: float) -> list[Finding]:
        state = self.renditions.get(identity(uri))
        if state is not None:
            self._raise(state, "malformed", now, D.MANIFEST_ERROR, Severity.WARNING, {}, reason=reason)
        return self._take()

    def media(self, uri: str, playlist: MediaPlaylist, now: float) -> list[Finding]:
        """A media playlist of rendition ``uri`` was reloaded at ``now``."""
        state = self.renditions.get(identity(uri))
        if state is None:
            return []
        state.failures = 0
        self._clear(state, "playlist_unavailable", now)
        self._clear(state, "malformed", now)
        prev, state.playlist = state.playlist, playlist
        newest = playlist.newest_msn
        if prev is not None and playlist.media_sequence < prev.media_sequence:
            self._event(
                state,
                "media_sequence_decreased",
                now,
                {"previous": float(prev.media_sequence), "media_sequence": float(playlist.media_sequence)},
            )
            state.newest = state.checked = None  # the timeline starts again from this playlist
        elif prev is not None:
            self._compare_reloads(state, prev, playlist, now)
        if newest is not None and (state.newest is None or newest > state.newest):
            state.newest, state.changed_at = newest, now
            self._clear(state, "stale", now)
        elif state.changed_at is None:
            state.changed_at = now
        if not playlist.live:
            self._clear(state, "stale", now)  # it ended (ENDLIST): no segment is owed any more
        self._judge_window(state, playlist, now)
        return self._take()

    def segment(
        self, uri: str, msn: int, segment_uri: str, status: int, reason: str | None, now: float
    ) -> list[Finding]:
        """The check of rendition ``uri``'s segment ``msn``: ``reason`` None when it answered well,
        else why not (``status``: the HTTP status, 0 without one)."""
        state = self.renditions.get(identity(uri))
        if state is None:
            return []
        if reason is None:
            self._clear(state, "segment", now)
        else:
            self._raise(
                state,
                "segment",
                now,
                D.SEGMENT_ERROR,
                Severity.WARNING,
                {"status": float(status), "media_sequence": float(msn)},
                reason=reason,
                uri=segment_uri,
            )
        return self._take()

    def to_check(self, uri: str, first_only: int = 1, most: int = 3) -> list[tuple[int, str]]:
        """The segments of rendition ``uri`` to check now (media sequence, URI): the new ones,
        at most ``most``; the newest ``first_only`` of the first playlist seen."""
        state = self.renditions.get(identity(uri))
        if state is None or state.playlist is None:
            return []
        segs = state.playlist.segments
        if state.checked is None:
            todo = segs[-first_only:] if first_only else ()
        else:
            todo = tuple(s for s in segs if s.msn > state.checked)[-most:]
        if segs:
            state.checked = segs[-1].msn
        return [(s.msn, s.uri) for s in todo]

    def tick(self, now: float) -> list[Finding]:
        """Judge what depends on time (staleness) and across renditions, at ``now``."""
        for state in self.renditions.values():
            pl = state.playlist
            if pl is None or not pl.live or not pl.target_s or state.changed_at is None:
                continue
            limit = self.options.stale_targets * pl.target_s
            if now - state.changed_at > limit and "stale" not in state.opened:
                f = Finding(
                    D.MANIFEST_STALE.value,
                    state.changed_at,
                    None,
                    Severity.CRITICAL,
                    {
                        "target_duration_s": pl.target_s,
                        "limit_s": round(limit, 3),
                        "media_sequence": float(state.newest or 0),
                    },
                    key=state.rendition.key,
                    labels={"uri": shown_uri(state.rendition.uri)},
                )
                state.opened["stale"] = _Open(state.changed_at, f)
                self._out.append(f)
        self._compare_renditions(now)
        return self._take()

    def next_deadline(self) -> float | None:
        """When the earliest live rendition would turn stale (the caller's clock), if none is yet."""
        deadlines = [
            state.changed_at + self.options.stale_targets * state.playlist.target_s
            for state in self.renditions.values()
            if state.playlist is not None
            and state.playlist.live
            and state.playlist.target_s
            and state.changed_at is not None
            and "stale" not in state.opened
        ]
        return min(deadlines, default=None)

    def close(self, now: float) -> list[Finding]:
        """The monitoring ends: every open finding closes at ``now``."""
        for state in self.renditions.values():
            self._close_all(state, now)
        if self._master_opened is not None:
            self._out.append(_close(self._master_opened.finding, now))
            self._master_opened = None
        for o in self._mismatch.values():
            self._out.append(_close(o.finding, now))
        self._mismatch.clear()
        return self._take()

    # ------------------------------------------------------------ rules

    def _compare_reloads(self, state: _Rendition, prev: MediaPlaylist, pl: MediaPlaylist, now: float) -> None:
        before = {s.msn: identity(s.uri) for s in prev.segments}
        reused = [s for s in pl.segments if s.msn in before and before[s.msn] != identity(s.uri)]
        if reused:
            self._event(
                state,
                "media_sequence_reused",
                now,
                {"media_sequence": float(reused[0].msn), "segments": float(len(reused))},
            )
        old, new = prev.discontinuity_numbers(), pl.discontinuity_numbers()
        common = [msn for msn in new if msn in old]
        wrong = [msn for msn in common if old[msn] != new[msn]]
        if wrong and not reused:
            msn = wrong[0]
            self._event(
                state,
                "discontinuity_sequence",
                now,
                {
                    "media_sequence": float(msn),
                    "expected": float(old[msn]),
                    "found": float(new[msn]),
                    "discontinuity_sequence": float(pl.discontinuity_sequence),
                },
            )

    def _judge_window(self, state: _Rendition, pl: MediaPlaylist, now: float) -> None:
        o = self.options
        target = pl.target_s
        if not target:
            return
        long = [s for s in pl.segments if round(s.duration_s) > target]
        if long:
            worst = max(long, key=lambda s: s.duration_s)
            self._raise(
                state,
                "extinf_exceeds_target",
                now,
                D.MANIFEST_ERROR,
                Severity.WARNING,
                {
                    "extinf_s": worst.duration_s,
                    "target_duration_s": target,
                    "media_sequence": float(worst.msn),
                },
            )
        else:
            self._clear(state, "extinf_exceeds_target", now)
        # Only once segments have left the window: a live playlist starts short and grows.
        window = pl.window_s
        short = (
            pl.live and pl.media_sequence > 0 and window + o.window_slack_s < o.min_window_targets * target
        )
        if short:
            self._raise(
                state,
                "live_window_short",
                now,
                D.MANIFEST_ERROR,
                Severity.WARNING,
                {
                    "window_s": round(window, 3),
                    "target_duration_s": target,
                    "segments": float(len(pl.segments)),
                },
            )
        else:
            self._clear(state, "live_window_short", now)

    def _compare_renditions(self, now: float) -> None:
        o = self.options
        ref = self.renditions.get(self.decoded or "")
        found: dict[str, tuple[Finding, str]] = {}
        if ref is not None and ref.playlist is not None and ref.playlist.segments:
            rp = ref.playlist
            for state in self.renditions.values():
                pl = state.playlist
                if state is ref or pl is None or not pl.segments or pl.target_s != rp.target_s:
                    continue
                for what, metrics in _disagreements(rp, pl, ref, state, now, o):
                    name = f"{state.rendition.key}-{what}"
                    f = Finding(
                        D.RENDITION_MISMATCH.value,
                        now,
                        None,
                        Severity.WARNING,
                        metrics,
                        key=name,
                        labels={
                            "what": what,
                            "uri": shown_uri(state.rendition.uri),
                            "reference_uri": shown_uri(ref.rendition.uri),
                        },
                    )
                    found[name] = (f, what)
        for name, (f, _) in found.items():
            if name not in self._mismatch:
                self._mismatch[name] = _Open(now, f)
                self._out.append(f)
        for name in [n for n in self._mismatch if n not in found]:
            self._out.append(_close(self._mismatch.pop(name).finding, now))

    # ------------------------------------------------------------ bookkeeping

    def _event(self, state: _Rendition, rule: str, now: float, metrics: dict[str, float]) -> None:
        self._out.append(
            Finding(
                D.MANIFEST_ERROR.value,
                now,
                now,
                Severity.WARNING,
                metrics,
                key=f"{state.rendition.key}-{rule}",
                labels={"rule": rule, "uri": shown_uri(state.rendition.uri)},
            )
        )

    def _raise(
        self,
        state: _Rendition,
        name: str,
        now: float,
        kind: D,
        severity: Severity,
        metrics: dict[str, float],
        *,
        reason: str | None = None,
        uri: str | None = None,
    ) -> None:
        if name in state.opened:
            return
        labels = {"uri": shown_uri(uri or state.rendition.uri)}
        if kind is D.MANIFEST_ERROR:
            labels["rule"] = name
        if reason:
            labels["reason"] = reason[:200]
        key = state.rendition.key if kind is D.SEGMENT_ERROR else f"{state.rendition.key}-{name}"
        f = Finding(kind.value, now, None, severity, metrics, key=key, labels=labels)
        state.opened[name] = _Open(now, f)
        self._out.append(f)

    def _clear(self, state: _Rendition, name: str, now: float) -> None:
        o = state.opened.pop(name, None)
        if o is not None:
            self._out.append(_close(o.finding, now))

    def _close_all(self, state: _Rendition, now: float) -> None:
        for name in list(state.opened):
            self._clear(state, name, now)

    def _take(self) -> list[Finding]:
        out, self._out = self._out, []
        return out


def _close(f: Finding, now: float) -> Finding:
    end = max(f.start_s, now)
    metrics = dict(f.metrics)
    metrics["duration_s"] = round(end - f.start_s, 3)
    return Finding(f.type, f.start_s, end, f.severity, metrics, key=f.key, labels=f.labels)


def _disagreements(
    rp: MediaPlaylist, pl: MediaPlaylist, ref: _Rendition, other: _Rendition, now: float, o: HealthOptions
) -> list[tuple[str, dict[str, float]]]:
    out: list[tuple[str, dict[str, float]]] = []
    target = rp.target_s or 0.0
    fresh = all(
        s.changed_at is not None and now - s.changed_at <= FRESH_TARGETS * target for s in (ref, other)
    )
    a, b = rp.newest_msn, pl.newest_msn
    if fresh and a is not None and b is not None and abs(a - b) > o.msn_tolerance:
        out.append(
            (
                "media_sequence",
                {"media_sequence": float(b), "reference": float(a), "difference": float(b - a)},
            )
        )
    ref_dsn, dsn = rp.discontinuity_numbers(), pl.discontinuity_numbers()
    common = [msn for msn in dsn if msn in ref_dsn]
    if common and ref_dsn[common[-1]] != dsn[common[-1]]:
        msn = common[-1]
        out.append(
            (
                "discontinuity_sequence",
                {
                    "media_sequence": float(msn),
                    "discontinuity": float(dsn[msn]),
                    "reference": float(ref_dsn[msn]),
                },
            )
        )
    ref_pdt = {s.msn: s.pdt_s for s in rp.segments if s.pdt_s is not None}
    pdts = [(s.msn, s.pdt_s) for s in pl.segments if s.pdt_s is not None and s.msn in ref_pdt]
    if pdts:
        msn, pdt = pdts[-1]
        delta = (pdt or 0.0) - (ref_pdt[msn] or 0.0)
        if abs(delta) > o.pdt_tolerance_s:
            out.append(("program_date_time", {"media_sequence": float(msn), "offset_s": round(delta, 3)}))
    return out
