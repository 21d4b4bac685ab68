"""One stream: open → demux → decode → every detector, in one thread, frames in memory.

The session owns the stream's media timeline (seconds from the earliest first timestamp of its
audio and video, continued across reconnects), turns detector findings into defect records and
hands them to ``emit``. It never raises for a bad source: an unreachable or broken source is a
``signal_loss`` defect and a retry with capped, jittered exponential backoff; a source beyond the
deployment's limits ends the session as refused, with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import av

from shared.models import Defect, DefectType, Event, StreamStatus, defect_id_for
from shared.urlpolicy import UrlRefused, check_url, to_url
from worker.captions import CAPTIONS_LOST_S, CaptionTracker, a53_from_packet
from worker.cue_events import CueEvents, EventLimits, cue_event
from worker.dash.input import answers_mpd, is_dash_url, on_media_clock, open_dash
from worker.detectors import (
    AudioBlock,
    Detector,
    Finding,
    PacketInfo,
    Severity,
    StreamContext,
    VideoFrame,
    build_detectors,
    resolve_options,
    wants,
)
from worker.evidence import Evidence, EvidenceRecorder
from worker.hls_monitor import HlsMonitor, HlsOptions
from worker.media import (
    ANALYSIS_RATE,
    AudioBatcher,
    AudioConverter,
    Limits,
    SourceRefused,
    has_demuxer,
    luma_view,
    open_source,
    select_streams,
)
from worker.scte35 import PTS_HZ, PTS_WRAP
from worker.timeline import LiveEdge, Timeline
from worker.transport import TransportAnalyzer, TransportCounters, TransportOptions
from worker.transport.cues import Cue, SpliceAligner
from worker.udp import UdpInput

log = logging.getLogger("avmon.worker.session")
# A file or HTTP source that FFmpeg has never once read as media (empty, truncated, text, an
# HTML error page) is refused after this many opens, not retried for ever.
NOT_MEDIA_TRIES = 3

UDP_READ_BYTES = 64 * 1316  # what the demuxer asks of a UDP source at once: 64 datagrams
# A live stream this far behind its live edge (s) is analysed by an overloaded monitor: what it
# finds until OVERLOAD_HOLD_S after that (s) carries `monitor_overloaded`.
OVERLOAD_LAG_S = 2.0
OVERLOAD_HOLD_S = 10.0


class UnreadableSource(OSError):
    """The source broke the demuxer in a way FFmpeg reports as no error of its own."""


class Outcome(StrEnum):
    COMPLETED = "COMPLETED"  # a finite source read to its end
    STOPPED = "STOPPED"  # asked to stop (DELETE, lease lost, shutdown)
    REFUSED = "REFUSED"  # policy or limits: retrying cannot help


@dataclass(frozen=True)
class SessionConfig:
    url: str
    realtime: bool = False
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    reconnect_max_s: float = 30.0
    signal_loss_after_s: float = 2.0
    schemes: frozenset[str] = frozenset({"file", "http", "https", "udp", "srt", "rtmp", "rtsp"})
    allow_private: bool = True
    limits: Limits = field(default_factory=Limits)
    detectors: frozenset[str] | None = None  # None: every registered detector
    reconnect: bool = True  # False (`avmon analyze`): an unreadable source is an error, not a retry
    # Decoder threads per stream. A worker runs more streams than cores: one thread each is
    # cheapest (frame threading costs synchronisation and a frame of latency per thread) and keeps
    # a stream's whole cost in its own thread, where it is measured. `avmon analyze`, one stream
    # on an idle machine, uses the deployment limit's threads instead.
    decode_threads: int | None = None
    resume: Timeline | None = None  # where the stream's timeline stood (a taken-over stream)
    transport: TransportOptions | None = None  # a UDP source's transport analyser (cue rules too)
    captions_lost_s: float = CAPTIONS_LOST_S  # captions that had text and stop this long: a defect
    event_limits: EventLimits = field(default_factory=EventLimits)  # cue events' rate bound
    hls: HlsOptions = field(default_factory=HlsOptions)  # an HLS source's playlist health
    loudness_profile: str = "ebu_r128"  # the loudness and true-peak targets: ebu_r128 or atsc_a85
    # Detector options over the profile's: {"freeze": {"d": 3}} (AVMON_DETECTOR_OPTIONS).
    detector_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass
class Figures:
    """Live figures the async side publishes with each lease renewal."""

    frames_analysed: int = 0
    media_time_s: float | None = None
    lag_s: float | None = None
    status: StreamStatus = StreamStatus.MONITORING
    reason: str | None = None
    cpu_s: float = 0.0  # CPU time of the stream's thread (demux, decode, detect)
    pixel_rate: float | None = None  # decoded pixels per second (width x height x fps), once known
    dropped_datagrams: int = 0  # UDP datagrams the kernel dropped before we read them (our loss)
    overloaded: bool = False  # the monitor itself is not keeping up: what it finds now is marked
    captions: str | None = None  # "present", "none" (never seen), "lost"; None before a picture
    timeline: Timeline | None = None


def is_finite(url: str, container: Any) -> bool:
    """A file, or media with a known duration (VOD, HLS with ENDLIST): its end is completion.
    A live source that ends has been lost."""
    scheme = urlsplit(url).scheme.lower()
    return scheme in ("", "file") or container.duration is not None


def _metrics(finding: Finding) -> dict[str, float | str | list[str]]:
    """A finding's numbers (rounded), channel names and labels as a defect's metrics."""
    metrics: dict[str, float | str | list[str]] = {k: round(float(v), 4) for k, v in finding.metrics.items()}
    if finding.channels:
        metrics["channels"] = list(finding.channels)
    metrics.update(finding.labels)
    return metrics


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StreamSession:
    def __init__(
        self,
        stream_id: str,
        config: SessionConfig,
        emit: Callable[[Defect], None],
        *,
        worker_id: str = "local",
        stop: threading.Event | None = None,
        on_evidence: Callable[[Defect, dict[str, Any]], None] | None = None,
        emit_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.config = config
        self.emit = emit
        self.worker_id = worker_id
        self.stop = stop or threading.Event()
        self.figures = Figures()
        self.ctx = StreamContext()
        self.detectors: list[Detector] = build_detectors(
            self.ctx,
            set(config.detectors or []) or None,
            resolve_options(config.loudness_profile, config.detector_options),
        )
        self._video_detectors = [d for d in self.detectors if wants(d, "feed_video")]
        self._audio_detectors = [d for d in self.detectors if wants(d, "feed_audio")]
        self._packet_detectors = [d for d in self.detectors if wants(d, "feed_packet")]
        # Evidence (thumbnails and traces) only where someone stores it: the worker does.
        self.on_evidence = on_evidence
        self.recorder = EvidenceRecorder(stream_id) if on_evidence is not None else None
        self._opened_evidence: dict[str, Evidence] = {}
        self._opened_at: dict[tuple[str, str, float], str] = {}  # open defects → their start_at
        self._last_t: float | None = None  # media time of the latest frame or block
        self._offset = 0.0  # media time at the start of the current connection
        self._anchor = (time.time(), 0.0)  # (wall, media) pair that maps media time to wall clock
        self._loss: tuple[float, float, bool] | None = None  # (media start, wall of last data, reported)
        self._last_data_wall: float | None = None
        self._got_data = False
        self._origin: float | None = None  # source seconds at media time ``_offset``
        self._connected_before = False
        self._edge = LiveEdge()
        self._udp: UdpInput | None = None  # a UDP source's socket, kept across reconnects
        self._transport_starts: dict[tuple[str, str, float], float] = {}  # open findings' media starts
        self._overloaded_until = 0.0  # monotonic time until which findings are marked
        self.emit_event = emit_event  # cues as events (None: not kept)
        self._cue_events = CueEvents(config.event_limits)
        self._aligner = SpliceAligner()  # SCTE 172: an IDR at each splice time
        self._captions = CaptionTracker(lost_s=config.captions_lost_s)
        self._video_codec = "h264"  # the video stream's, for the caption data's framing
        self.hls: HlsMonitor | None = None  # an HLS source's playlist monitor (its own thread), once opened
        if urlsplit(config.url).scheme.lower() == "udp":
            # Bind now, before the thread starts: a sender that starts as soon as the stream is
            # taken loses nothing to the thread's start-up (the socket queues for it).
            with contextlib.suppress(UrlRefused, OSError):
                check_url(config.url, schemes=config.schemes, allow_private=config.allow_private)
                self._udp = UdpInput(config.url, read_timeout_s=config.read_timeout_s, stop=self.stop)
                self._udp.analyzer = TransportAnalyzer(config.transport)
        if config.resume is not None:
            # Taken over from another worker: its timeline goes on here. The gap since it last
            # published is bridged as after an outage (media time kept wall pace meanwhile).
            r = config.resume
            self._origin, self._last_t, self._connected_before = r.origin_s, r.media_time_s, True
            self._loss = (r.media_time_s, r.wall, False)
        self._resumed = config.resume is not None  # until the first open says what the source is
        self._not_media = 0  # opens that failed as "not media" before any succeeded
        self._dash = is_dash_url(config.url)  # read by worker/dash, not FFmpeg

    # ------------------------------------------------------------ records

    def _wall_at(self, t: float) -> float:
        wall, media = self._anchor
        return wall + (t - media)

    def _record(self, finding: Finding) -> None:
        key = (finding.type, finding.key, finding.start_s)
        start_at = self._opened_at.pop(key, None) if finding.end_s is not None else None
        if start_at is None:
            start_at = _iso(self._wall_at(finding.start_s))
        if finding.end_s is None:
            self._opened_at[key] = start_at
        defect = Defect(
            stream_id=self.stream_id,
            defect_id=defect_id_for(finding.type, finding.start_s, finding.key),
            type=finding.type,
            start_s=round(finding.start_s, 3),
            end_s=None if finding.end_s is None else round(finding.end_s, 3),
            start_at=start_at,
            end_at=None if finding.end_s is None else _iso(self._wall_at(finding.end_s)),
            severity=finding.severity.value,
            metrics=_metrics(finding),
            worker_id=self.worker_id,
            monitor_overloaded=self.overloaded,
        )
        if self.recorder is not None and self.on_evidence is not None:
            self.on_evidence(defect, self._evidence(defect).to_item())
        self.emit(defect)

    def _evidence(self, defect: Defect) -> Evidence:
        """The defect's evidence; a close keeps the start picture its open saw (a long defect's
        start may have left the recorder's ring by the time it ends)."""
        assert self.recorder is not None
        evidence = self.recorder.evidence_for(defect)
        if defect.end_s is None:
            self._opened_evidence[defect.defect_id] = evidence
            return evidence
        opened = self._opened_evidence.pop(defect.defect_id, None)
        if opened is not None and evidence.thumbnail_for("start") is None:
            start = opened.thumbnail_for("start")
            if start is not None:
                evidence = replace(evidence, thumbnails=(start, *evidence.thumbnails))
        return evidence

    @property
    def overloaded(self) -> bool:
        """The monitor itself is not keeping up (its worker said so, or this stream lags or lost
        datagrams lately): what is found now may be our fault, not the source's."""
        return self.figures.overloaded or time.monotonic() < self._overloaded_until

    def mark_overloaded(self, flag: bool) -> None:
        """The worker's word: it is not keeping up (its shedding rule, worker/main.py)."""
        self.figures.overloaded = flag

    def transport_counters(self) -> TransportCounters | None:
        """The TR 101 290 counters of a UDP source (None for others)."""
        udp = self._udp
        return udp.analyzer.counters if udp is not None and udp.analyzer is not None else None

    def timeline(self) -> Timeline | None:
        """Where this stream's timeline stands now, for whoever takes it over."""
        if self._origin is None or self._last_t is None or self._edge.value == float("inf"):
            return None
        return Timeline(self._origin - self._offset, self._last_t, self._last_t + self._edge.value)

    def _record_transport(self, findings: list[Finding]) -> None:
        """The transport analyser's findings (arrival-clock times) on the media timeline: media
        time t arrived at t + edge."""
        edge = self._edge.value
        fallback = self._last_t if self._last_t is not None else 0.0
        pending, findings[:] = list(findings), []
        for f in pending:
            # A close must carry its open's start (one defect id), whatever the edge does since.
            key = (f.type, f.key, f.start_s)
            start = self._transport_starts.pop(key, None) if f.end_s is not None else None
            if start is None:
                start = max(0.0, f.start_s - edge if edge != float("inf") else fallback)
            if f.end_s is None:
                self._transport_starts[key] = start
            finite = edge != float("inf")
            end = None if f.end_s is None else max(start, f.end_s - edge if finite else fallback)
            self._record(replace(f, start_s=start, end_s=end))

    def _record_cues(self, cues: list[Cue], *, edge_s: float | None = None, source: str = "scte35") -> None:
        """Cues (``cues`` is emptied) as events, bounded (worker/cue_events.py), and the splice
        points of those events for the SCTE 172 check. Their ``arrival_s``/``splice_s`` are on a
        clock ``edge_s`` ahead of media time (default: the transport analyser's arrival clock, as
        for its findings); a splice time on the PTS clock is placed on the media timeline exactly."""
        edge = self._edge.value if edge_s is None else edge_s
        finite = edge != float("inf")
        fallback = self._last_t if self._last_t is not None else 0.0
        pending, cues[:] = list(cues), []
        for cue in pending:
            if not self._cue_events.admit(cue):
                continue  # a heartbeat, a repeat, or over the rate bound: not judged again either
            self._aligner.cue(cue)
            start = max(0.0, cue.arrival_s - edge) if finite else fallback
            splice = None if cue.splice_s is None or not finite else cue.splice_s - edge
            if cue.splice_pts_s is not None and self._origin is not None:
                wrap = PTS_WRAP / PTS_HZ
                splice = (cue.splice_pts_s - self._origin + wrap / 2) % wrap - wrap / 2 + self._offset
            if self.emit_event is not None:
                self.emit_event(cue_event(cue, stream_id=self.stream_id, worker_id=self.worker_id,
                                          start_s=start, splice_s=splice, wall_at=self._wall_at,
                                          source=source))

    def _feed_captions(self, packet: Any, t: float) -> None:
        """A video packet's caption data (A/53 cc_data in its SEI, worker/captions.py) at its
        presentation time ``t``."""
        found = self._captions.picture(t, a53_from_packet(packet, self._video_codec))
        if found:
            self._record_all(found)
        present = self._captions.present
        self.figures.captions = "none" if present is None else "present" if present else "lost"

    def _feed_splice_point(self, frame: Any, pts_s: float, t: float) -> None:
        """A decoded picture for the SCTE 172 check: an IDR at each cue's splice time."""
        found = self._aligner.picture(pts_s, bool(frame.key_frame), t)
        if found:
            self._record_all(found)

    def _record_delivery(self, finding: Finding) -> None:
        """A DASH delivery finding (times on the source's clock) on the media timeline."""
        fallback = self._last_t if self._last_t is not None else 0.0
        self._record(on_media_clock(finding, self._origin, self._offset, fallback))

    def _record_hls(self, findings: list[Finding]) -> None:
        """The HLS monitor's findings (wall-clock times, from its thread) on the media timeline."""
        self._record_transport(list(findings))

    def _watch_delivery(self, container: Any, stream: Any | None) -> None:
        """An HLS source: its playlists are judged beside the decoding (worker/hls_monitor.py)."""
        http = urlsplit(self.config.url).scheme.lower() in ("http", "https") and not self._dash
        if self.hls is None and self.config.hls.enabled and http and container.format.name == "hls":
            self.hls = HlsMonitor.for_source(
                self.config.url, self.config.allow_private, self.config.hls, self._record_hls
            )
        if self.hls is not None and stream is not None:
            self.hls.decoding(stream)

    def _drain_hls_cues(self) -> None:
        """Cues an HLS source's playlists carried (worker/hls_cues.py, wall-clock times) as events,
        placed on the media timeline through the live edge as the transport analyser's are."""
        if self.hls is not None and (cues := self.hls.drain_cues()):
            self._record_cues(cues, edge_s=self._edge.value, source="hls")

    def _record_all(self, findings: list[Finding]) -> None:
        for finding in findings:
            self._record(finding)

    def _flush_detectors(self) -> None:
        t_end = self._last_t if self._last_t is not None else 0.0
        for detector in self.detectors:
            self._record_all(detector.flush(t_end))
        self._record_all(self._captions.flush(t_end))
        udp = self._udp
        if udp is not None and udp.analyzer is not None:
            udp.findings.extend(udp.analyzer.flush(time.time()))
            self._record_transport(udp.findings)
            self._record_cues(udp.analyzer.cues)

    # ------------------------------------------------------------ the loop

    def run(self) -> tuple[Outcome, str | None]:
        """Monitor until the source ends (finite), is refused, or ``stop`` is set."""
        attempt = 0
        try:
            while not self.stop.is_set():
                try:
                    check_url(
                        self.config.url, schemes=self.config.schemes, allow_private=self.config.allow_private
                    )
                    # While the source is lost, each attempt waits no longer than a read would, so
                    # the loop comes round to report the loss on time.
                    open_timeout = self.config.open_timeout_s
                    if self._loss is not None:
                        open_timeout = min(open_timeout, self.config.read_timeout_s)
                    with self._open(open_timeout) as container:
                        video, audio = select_streams(container, self.config.limits)
                        self._watch_delivery(container, video or audio)
                        self.ctx.connection += 1
                        finished = self._read(container, video, audio)
                        if finished and is_finite(self.config.url, container):
                            self._flush_detectors()
                            return Outcome.COMPLETED, None
                    if self.stop.is_set():
                        break
                    reason = "the source ended"
                except (UrlRefused, SourceRefused) as exc:
                    self.figures.reason = str(exc)
                    return Outcome.REFUSED, str(exc)
                except (av.FFmpegError, OSError, EOFError, IndexError) as exc:
                    if self.stop.is_set():
                        break  # DELETE or a lost lease cut the I/O short: no loss to report
                    refused = self._unreadable_kind(exc)
                    if refused is not None:
                        self._close_loss()
                        self.figures.reason = refused
                        return Outcome.REFUSED, refused
                    # IndexError: PyAV's stream list can fall out of step when a damaged
                    # transport stream announces new streams mid-way; it is the source's fault.
                    if not self.config.reconnect:
                        if isinstance(exc, IndexError):
                            raise UnreadableSource(f"the demuxer failed: {exc}") from exc
                        raise
                    reason = f"{type(exc).__name__}: {exc}"[:300]
                if self._got_data:
                    attempt = 0
                self._note_loss(reason)
                attempt += 1
                delay = min(self.config.reconnect_max_s, 0.5 * 2 ** min(attempt, 10))
                if self.stop.wait(random.uniform(delay / 2, delay)):
                    break
                self._note_loss(reason)
        finally:
            if self.stop.is_set():
                self._flush_detectors()
                self._close_loss()
            if self._udp is not None:
                self._udp.close()
                self._udp = None
            if self.hls is not None:
                self._record_hls(self.hls.close())
                self._drain_hls_cues()
        return Outcome.STOPPED, None

    def _open(self, open_timeout: float) -> Any:
        """The source, opened for demuxing. UDP is read by this thread itself (worker.udp: a
        large receive buffer, arrival times, the kernel's drop count); the socket stays bound
        across reconnects, so nothing sent meanwhile is refused."""
        limits = self.config.limits
        if self._dash:  # read by the worker itself (worker/dash/)
            return open_dash(
                self.config.url,
                limits,
                open_timeout,
                self.config.read_timeout_s,
                allow_private=self.config.allow_private,
                stop=self.stop,
                on_finding=self._record_delivery,
            )
        if urlsplit(self.config.url).scheme.lower() != "udp":
            return open_source(
                self.config.url,
                limits,
                open_timeout,
                self.config.read_timeout_s,
                allow_private=self.config.allow_private,
                stop=self.stop,
            )
        if self._udp is None:
            self._udp = UdpInput(self.config.url, read_timeout_s=self.config.read_timeout_s, stop=self.stop)
            self._udp.analyzer = TransportAnalyzer(self.config.transport)
        elif self._udp.analyzer is not None and self._udp.position:
            # A new connection on the same socket: the time between is the session's
            # signal_loss, not missing tables; counters and sections start afresh.
            self._udp.findings.extend(self._udp.analyzer.discontinuity())
        options = {
            "probesize": str(limits.probe_size),
            "analyzeduration": str(int(limits.analyze_duration_s * 1e6)),
        }
        # The first datagram may take the open timeout to come; then the stream's read timeout
        # holds. No FFmpeg interrupt timeout: one that fired mid-probe would throw away the
        # stream's first packets with the attempt (and shift its timeline's origin).
        udp = self._udp
        if not udp.wait(open_timeout):
            raise TimeoutError(f"no datagram in {open_timeout:.0f} s")
        return av.open(udp, mode="r", format="mpegts", options=options, buffer_size=UDP_READ_BYTES)

    def _unreadable_kind(self, exc: Exception) -> str | None:
        """Why no retry can read this source with this build of FFmpeg, if that is why it failed."""
        url = self.config.url
        if isinstance(exc, av.error.InvalidDataError) and not self._dash and not self._connected_before:
            # An MPD under a name without .mpd (application/dash+xml): FFmpeg cannot read it.
            private, timeout = self.config.allow_private, self.config.read_timeout_s
            self._dash = answers_mpd(url, allow_private=private, timeout_s=timeout, stop=self.stop)
            if self._dash:
                return None
        if (
            isinstance(exc, av.error.InvalidDataError)
            and not self._connected_before
            and (urlsplit(url).scheme or "file").lower() in ("file", "http", "https")
        ):
            self._not_media += 1
            if self._not_media >= NOT_MEDIA_TRIES:
                return f"the source is not media FFmpeg can read ({NOT_MEDIA_TRIES} tries): {exc}"[:300]
        if isinstance(exc, av.error.ProtocolNotFoundError) and exc.filename == url:
            # The URL's own scheme (not a nested one's): this build lacks it.
            scheme = urlsplit(url).scheme or "file"
            return f"this worker's FFmpeg cannot read {scheme}:// sources (not built in)"
        if (
            isinstance(exc, av.error.InvalidDataError)
            and urlsplit(url).path.lower().endswith(".mpd")
            and not has_demuxer("dash")
        ):
            # PyAV's wheels build FFmpeg without libxml2, hence without its DASH demuxer: the
            # worker reads DASH itself, over http(s) only.
            return "DASH manifests (.mpd) are read over http(s) only (FFmpeg here has no DASH demuxer)"
        return None

    def _note_loss(self, reason: str) -> None:
        """No data: remember since when, and report it once it has lasted long enough."""
        if self._loss is None:
            last_t = self._last_t if self._last_t is not None else 0.0
            self._loss = (last_t, self._last_data_wall or time.time(), False)
            log.warning("stream %s: source lost (%s); retrying", self.stream_id, reason)
        start_s, since_wall, reported = self._loss
        self.figures.status = StreamStatus.RECONNECTING
        self.figures.reason = reason
        if not reported and time.time() - since_wall >= self.config.signal_loss_after_s:
            self._anchor = (since_wall, start_s)
            self._record(Finding(DefectType.SIGNAL_LOSS.value, start_s, None, Severity.CRITICAL, {}))
            self._loss = (start_s, since_wall, True)

    def _close_loss(self, end_s: float | None = None) -> None:
        """Fresh media again at ``end_s`` (or a stop, now): the loss, if reported, ends there."""
        if self._loss is None:
            return
        start_s, since_wall, reported = self._loss
        self._loss = None
        self.figures.status = StreamStatus.MONITORING
        self.figures.reason = None
        if reported:
            if end_s is None or end_s < start_s:
                end_s = start_s + (time.time() - since_wall)
            self._record(
                Finding(
                    DefectType.SIGNAL_LOSS.value,
                    start_s,
                    end_s,
                    Severity.CRITICAL,
                    {"duration_s": end_s - start_s},
                )
            )

    def _settle_origin(self, first: float, resume: float | None) -> float:
        """The source time that is media time ``self._offset`` on this connection.

        After a reconnect, a source whose clock kept running (a live encoder) continues the old
        timeline: keep its origin, so media time is the source's own. A source that restarted
        its timestamps is placed at ``resume`` (where the outage left off, plus its length).
        """
        if resume is not None and self._origin is not None and self._last_t is not None:
            continued = first - self._origin + self._offset
            if self._last_t - 1.0 <= continued <= resume + 5.0:
                return self._origin
            self._offset = resume
        self._origin = first
        return first

    def _feed_video(self, frame: VideoFrame) -> None:
        if self.recorder is not None:
            self.recorder.observe_video(frame)
        for detector in self._video_detectors:
            found = detector.feed_video(frame)
            if found:
                self._record_all(found)

    def _feed_audio(self, block: AudioBlock) -> None:
        if self.recorder is not None:
            self.recorder.observe_audio(block)
        for detector in self._audio_detectors:
            found = detector.feed_audio(block)
            if found:
                self._record_all(found)

    def _drain_audio(self, batcher: AudioBatcher) -> None:
        pending = batcher.drain()
        if pending is not None:
            self._feed_audio(pending)

    def _read(self, container: Any, video: Any | None, audio: Any | None) -> bool:
        """Demux and decode until the end (True) or a stop (False)."""
        batcher = AudioBatcher()
        try:
            return self._decode(container, video, audio, batcher)
        finally:
            self._drain_audio(batcher)  # the audio still gathering into a block, even if the source broke

    def _decode(self, container: Any, video: Any | None, audio: Any | None, batcher: AudioBatcher) -> bool:
        self.ctx.has_video, self.ctx.has_audio = video is not None, audio is not None
        if video is None and audio is None:
            raise SourceRefused("the source has neither video nor audio")
        if video is not None:
            threads = self.config.decode_threads or self.config.limits.decode_threads
            video.thread_type = "AUTO" if threads > 1 else "SLICE"
            video.codec_context.thread_count = threads
            cc = video.codec_context
            self._video_codec = cc.name
            self.ctx.extra["video_codec"] = (cc.name, bytes(cc.extradata or b""))  # for decode_error
            rate = video.average_rate or video.guessed_rate
            if cc.width and cc.height and rate:
                self.figures.pixel_rate = float(cc.width * cc.height * rate)
        converter = AudioConverter(min(audio.codec_context.channels or 2, 16)) if audio is not None else None
        selected = [s for s in (video, audio) if s is not None]
        starts = [
            float(s.start_time * s.time_base) for s in selected if s.start_time is not None and s.time_base
        ]
        if self._resumed:
            self._resumed = False
            if is_finite(self.config.url, container):
                # A file (or VOD) is read again from its start: its timeline is its own, as the
                # previous owner's was, so the same defects get the same ids. Only a live source
                # continues the published timeline.
                self._origin = self._last_t = self._loss = None
                self._connected_before = False
        # After an outage the media timeline goes on: media time at least kept wall pace.
        resume = None if self._loss is None else self._loss[0] + (time.time() - self._loss[1])
        seen_before = self._last_t if self._connected_before else None
        udp = self._udp
        udp_base = udp.position if udp is not None else 0  # stream offset of this container's byte 0
        udp_drops = udp.drops if udp is not None else 0
        # Kernel arrival times do not depend on our reading: a recent window keeps the edge true
        # against a source clock that drifts. Read times do: every packet since opening counts.
        edge = self._edge = LiveEdge(window_s=60.0 if udp is not None else None)
        thread_time, wall = time.thread_time, time.time
        lag_limit = OVERLOAD_LAG_S
        origin: float | None = self._settle_origin(min(starts), resume) if starts else None
        self._connected_before = True
        self._got_data = False
        open_wall = time.time()
        first_t: float | None = None
        figures = self.figures
        pace = self.config.realtime or not is_finite(self.config.url, container)
        # Seconds per tick as floats, once per stream: `pts * time_base` builds two Fractions a
        # packet (PyAV makes a new one on every access), a few % of the pipeline's CPU.
        seconds = {s.index: float(s.time_base) for s in selected if s.time_base}
        # Loop invariants as locals: this loop runs for every packet and picture.
        stopped, realtime, ctx = self.stop.is_set, self.config.realtime, self.ctx
        packet_detectors, feed_video = self._packet_detectors, self._feed_video
        packets = 0
        for packet in container.demux(selected):
            if stopped():
                return False
            is_video = packet.stream is video
            kind = "video" if is_video else "audio"
            size = packet.size
            dt = None
            arrival: float | None = None
            if size:
                now = self._last_data_wall = wall()
                self._got_data = True
                tb = seconds.get(packet.stream_index)
                pts = packet.pts
                if origin is None and pts is not None and tb:
                    origin = self._settle_origin(pts * tb, resume)
                pt = None if pts is None or origin is None or not tb else pts * tb - origin + self._offset
                dts = packet.dts
                if dts is not None and origin is not None and tb:
                    dt = dts * tb - origin + self._offset
                    arrival = now
                    if udp is not None:
                        pos = packet.pos
                        ok = pos is not None and pos >= 0
                        arrival = udp.arrival_at(udp_base + pos + size) if ok else None
                    if arrival is not None:
                        edge.observe(arrival, dt)
                if seen_before is not None:
                    # After an outage: the tail of what was sent before it is not news, and the
                    # first fresh media ends the loss (timeline checks start afresh there).
                    if pt is None or pt <= seen_before + 1.0:
                        continue
                    seen_before = None
                    self._close_loss(pt)
                    ctx.connection += 1
                elif self._loss is not None:
                    self._close_loss(pt)
                if is_video and pt is not None:
                    self._feed_captions(packet, pt)
                if packet_detectors:
                    info = PacketInfo(
                        t=pt,
                        kind=kind,
                        size=size,
                        key=bool(packet.is_keyframe),
                        corrupt=bool(packet.is_corrupt),
                        duration=packet.duration * tb if packet.duration and tb else None,
                        data=getattr(packet, "raw", packet) if is_video else None,  # DASH wraps it
                    )
                    for detector in packet_detectors:
                        found = detector.feed_packet(info)
                        if found:
                            self._record_all(found)
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                # Undecodable data is a defect of the stream, not of the worker.
                self._drain_audio(batcher)  # detectors see media in time order
                at = self._last_t if self._last_t is not None else 0.0
                for detector in self.detectors:
                    self._record_all(detector.feed_decode_error(at, kind, str(exc)[:200]))
                continue
            for frame in frames:
                if frame.pts is None:
                    continue
                ftb = seconds.get(packet.stream_index)
                if ftb is None:
                    if frame.time_base is None:
                        continue
                    ftb = seconds[packet.stream_index] = float(frame.time_base)
                if origin is None:
                    origin = self._settle_origin(frame.pts * ftb, resume)
                t = frame.pts * ftb - origin + self._offset
                if first_t is None:
                    first_t = t
                    self._anchor = (open_wall, t)
                if realtime:
                    ahead = (t - first_t) - (time.time() - open_wall)
                    if ahead > 0 and self.stop.wait(ahead):
                        return False
                if is_video:
                    luma, full_range = luma_view(frame)
                    vf = VideoFrame(
                        t=t,
                        luma=luma,
                        full_range=full_range,
                        key_frame=bool(frame.key_frame),
                        corrupt=bool(frame.is_corrupt or packet.is_corrupt),
                        picture=frame,  # its chroma, for colour thumbnails
                    )
                    feed_video(vf)
                    self._feed_splice_point(frame, frame.pts * ftb, t)
                    if figures.frames_analysed % 50 == 0:
                        ctx.last_video_t = t
                    figures.frames_analysed += 1
                elif converter is not None:
                    for samples in converter.convert(frame):
                        for block in batcher.add(t, samples, converter.names):
                            self._feed_audio(block)
                        t += samples.shape[1] / ANALYSIS_RATE
                    ctx.last_audio_t = t
                if self._last_t is None or t > self._last_t:
                    self._last_t = t
            if udp is not None and udp.findings:
                self._record_transport(udp.findings)
            if udp is not None and udp.analyzer is not None and udp.analyzer.cues:
                self._record_cues(udp.analyzer.cues)
            elif self.hls is not None and is_video and packet.is_keyframe:
                self._drain_hls_cues()  # (a few times a segment is soon enough for events)
            packets += 1
            if not packets & 31:
                # The thread's CPU clock is a system call that can cost tens of µs while the
                # decoder's threads run (4.5 % of the session's time on a 720p file when read
                # for every packet, bench profile); the load loop reads it every 2 s, and 32
                # packets are about a third of a second of a 25 fps stream with its audio.
                figures.cpu_s = thread_time()
            if dt is not None and pace:
                # UDP: how long ago the kernel received what is analysed now (our own backlog:
                # a source that itself falls behind real time is not our lag). Else: against
                # the live edge the packets' timestamps and read times give.
                lag = wall() - arrival if udp is not None and arrival is not None else edge.lag(wall(), dt)
                if lag is not None:
                    figures.lag_s = round(lag, 3)
                    if lag > lag_limit:
                        self._overloaded_until = time.monotonic() + OVERLOAD_HOLD_S
            if udp is not None and udp.drops != udp_drops:
                # The kernel dropped datagrams we read too late: our loss, not the source's.
                figures.dropped_datagrams += (udp.drops - udp_drops) % (1 << 32)
                udp_drops = udp.drops
                self._overloaded_until = time.monotonic() + OVERLOAD_HOLD_S
            figures.media_time_s = self._last_t
        figures.cpu_s = thread_time()
        return True


def analyze_decode_threads() -> int:
    """Decoder threads of ``avmon analyze``: one stream with the whole machine to itself. Frame
    threads decode pictures ahead while the session's thread runs the detectors; twice FFmpeg's
    own choice for decoding alone (cores + 1) keeps them busy through the detectors' turn (60 s
    of 720p25 on 2 cores: 3 threads took 2.06 s, 6 took 1.85 s, decoding alone 1.73 s with
    either; bench.startup). At most 16, FFmpeg's own cap."""
    return min(2 * ((os.cpu_count() or 1) + 1), 16)


def analyze_session(
    url: str,
    emit: Callable[[Defect], None],
    *,
    realtime: bool = False,
    stop: threading.Event | None = None,
    stream_id: str = "local",
    on_evidence: Callable[[Defect, dict[str, Any]], None] | None = None,
    loudness_profile: str = "ebu_r128",
    detectors: frozenset[str] | None = None,
    detector_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> StreamSession:
    """The session ``avmon analyze`` runs on one source: the worker's full detection pipeline
    (or the ``detectors`` named), in process, with no AWS; a source it cannot read is an error,
    not a retry."""
    config = SessionConfig(
        url=to_url(url), realtime=realtime, reconnect=False, decode_threads=analyze_decode_threads(),
        loudness_profile=loudness_profile, detectors=detectors, detector_options=detector_options or {},
    )  # fmt: skip
    return StreamSession(stream_id, config, emit, stop=stop, on_evidence=on_evidence)


def analyze(
    url: str,
    emit: Callable[[Defect], None],
    *,
    realtime: bool = False,
    stop: threading.Event | None = None,
    stream_id: str = "local",
) -> tuple[Outcome, str | None]:
    """Run the worker's full detection pipeline on one source, in this thread, with no AWS."""
    return analyze_session(url, emit, realtime=realtime, stop=stop, stream_id=stream_id).run()
