"""One stream: its media read, every consumer fed, findings turned into defect records.

The session puts the parts of a stream together, in one thread, frames in memory: a
:class:`~worker.reader.MediaReader` (open, demux, decode, the timeline, outages, pacing) yields
timed pictures, audio blocks and packet/decoder events; a :class:`~worker.dispatch.Dispatcher`
feeds them to every detector and the evidence recorder the same way; the session turns what
they find into :class:`~shared.models.Defect` records and hands each, with its evidence, to one
``emit(defect, evidence)``. Beside the pictures it judges what travels with them: caption data,
SCTE-35 cues and their splice points, an HLS source's playlists, a UDP source's transport.
It never raises for a bad source (see worker/reader.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shared.models import Defect, Event, defect_id_for
from shared.urlpolicy import to_url
from worker.captions import CaptionTracker, a53_from_packet
from worker.cue_events import CueEvents, cue_event
from worker.dash.input import on_media_clock
from worker.detectors import (
    AudioBlock,
    Detector,
    Finding,
    PacketInfo,
    StreamContext,
    VideoFrame,
    build_detectors,
    resolve_options,
)
from worker.dispatch import Dispatcher
from worker.evidence import Evidence, EvidenceRecorder
from worker.hls_monitor import HlsMonitor
from worker.reader import (
    NOT_MEDIA_TRIES,
    OVERLOAD_HOLD_S,
    OVERLOAD_LAG_S,
    DecodeFailed,
    Demuxed,
    MediaReader,
    Opened,
    Resumed,
    UnreadableSource,
    is_finite,
)
from worker.scte35 import PTS_HZ, PTS_WRAP
from worker.session_config import Figures, Outcome, SessionConfig
from worker.timeline import Timeline
from worker.transport import TransportCounters
from worker.transport.cues import Cue, SpliceAligner

__all__ = [
    "NOT_MEDIA_TRIES",
    "OVERLOAD_HOLD_S",
    "OVERLOAD_LAG_S",
    "Emit",
    "Figures",
    "Outcome",
    "SessionConfig",
    "StreamSession",
    "UnreadableSource",
    "analyze",
    "analyze_decode_threads",
    "analyze_session",
    "is_finite",
]

log = logging.getLogger("avmon.worker.session")

# Where a session's records go: each defect record (an open or a close) with its evidence item
# (thumbnails and traces, worker/evidence.py), or None when the session records no evidence.
Emit = Callable[[Defect, dict[str, Any] | None], None]


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
        emit: Emit,
        *,
        worker_id: str = "local",
        stop: threading.Event | None = None,
        evidence: bool = False,
        emit_event: Callable[[Event], None] | None = None,
    ) -> None:
        """``evidence``: record thumbnails and traces and emit them with each defect (the worker
        stores them; ``avmon analyze --report`` draws them)."""
        self.stream_id = stream_id
        self.config = config
        self.emit = emit
        self.worker_id = worker_id
        self.stop = stop or threading.Event()
        self.figures = Figures()
        self.ctx = StreamContext()
        self.reader = MediaReader(
            config, stop=self.stop, figures=self.figures, stream_id=stream_id,
            on_delivery=self._record_delivery,
        )  # fmt: skip
        self._refused: str | None = None
        try:
            options = resolve_options(config.loudness_profile, config.detector_options)
        except ValueError as exc:  # the stream's own detector options: refused, not a crash
            self._refused, options = f"detector_options: {exc}", resolve_options(config.loudness_profile)
        enabled = set(config.detectors or []) or None
        self.detectors: list[Detector] = build_detectors(self.ctx, enabled, options)
        # Evidence (thumbnails and traces) only where someone stores it: the worker does.
        self.recorder = EvidenceRecorder(stream_id) if evidence else None
        consumers: list[Any] = [self.recorder] if self.recorder is not None else []
        self.dispatch = Dispatcher([*consumers, *self.detectors], self._record_all)
        self._opened_evidence: dict[str, Evidence] = {}
        self._opened_at: dict[tuple[str, str, float], str] = {}  # open defects → their start_at
        self._transport_starts: dict[tuple[str, str, float], float] = {}  # open findings' media starts
        self.emit_event = emit_event  # cues as events (None: not kept)
        self._cue_events = CueEvents(config.event_limits)
        self._aligner = SpliceAligner()  # SCTE 172: an IDR at each splice time
        self._captions = CaptionTracker(lost_s=config.captions_lost_s)
        self._video_codec = "h264"  # the video stream's, for the caption data's framing
        self._video_seconds: float | None = None  # the video stream's time base, as a float
        self.hls: HlsMonitor | None = None  # an HLS source's playlist monitor (its own thread), once opened

    # ------------------------------------------------------------ records

    def _record(self, finding: Finding) -> None:
        key = (finding.type, finding.key, finding.start_s)
        start_at = self._opened_at.pop(key, None) if finding.end_s is not None else None
        wall_at = self.reader.wall_at
        if start_at is None:
            start_at = _iso(wall_at(finding.start_s))
        if finding.end_s is None:
            self._opened_at[key] = start_at
        defect = Defect(
            stream_id=self.stream_id,
            defect_id=defect_id_for(finding.type, finding.start_s, finding.key),
            type=finding.type,  # a DefectType: Finding refuses any other
            start_s=round(finding.start_s, 3),
            end_s=None if finding.end_s is None else round(finding.end_s, 3),
            start_at=start_at,
            end_at=None if finding.end_s is None else _iso(wall_at(finding.end_s)),
            severity=finding.severity.value,
            metrics=_metrics(finding),
            worker_id=self.worker_id,
            monitor_overloaded=self.overloaded,
        )
        self.emit(defect, self._evidence(defect).to_item() if self.recorder is not None else None)

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

    def _record_all(self, findings: list[Finding]) -> None:
        for finding in findings:
            self._record(finding)

    @property
    def overloaded(self) -> bool:
        """The monitor itself is not keeping up (its worker said so, or this stream lags or lost
        datagrams lately): what is found now may be our fault, not the source's."""
        return self.figures.overloaded or time.monotonic() < self.reader.overloaded_until

    def mark_overloaded(self, flag: bool) -> None:
        """The worker's word: it is not keeping up (its shedding rule, worker/main.py)."""
        self.figures.overloaded = flag

    def transport_counters(self) -> TransportCounters | None:
        """The TR 101 290 counters of a UDP source (None for others)."""
        udp = self.reader.udp
        return udp.analyzer.counters if udp is not None and udp.analyzer is not None else None

    def timeline(self) -> Timeline | None:
        """Where this stream's timeline stands now, for whoever takes it over."""
        return self.reader.timeline()

    # ------------------------------------------------------------ beside the pictures

    def _record_transport(self, findings: list[Finding]) -> None:
        """The transport analyser's findings (arrival-clock times; ``findings`` is emptied) on
        the media timeline: media time t arrived at t + edge."""
        edge = self.reader.edge.value
        fallback = self.reader.fallback_t()
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
        reader = self.reader
        edge = reader.edge.value if edge_s is None else edge_s
        finite = edge != float("inf")
        fallback = reader.fallback_t()
        pending, cues[:] = list(cues), []
        for cue in pending:
            if not self._cue_events.admit(cue):
                continue  # a heartbeat, a repeat, or over the rate bound: not judged again either
            self._aligner.cue(cue)
            start = max(0.0, cue.arrival_s - edge) if finite else fallback
            splice = None if cue.splice_s is None or not finite else cue.splice_s - edge
            if cue.splice_pts_s is not None and reader.origin is not None:
                wrap = PTS_WRAP / PTS_HZ
                splice = (cue.splice_pts_s - reader.origin + wrap / 2) % wrap - wrap / 2 + reader.offset
            if self.emit_event is not None:
                self.emit_event(cue_event(cue, stream_id=self.stream_id, worker_id=self.worker_id,
                                          start_s=start, splice_s=splice, wall_at=reader.wall_at,
                                          source=source))

    def _record_delivery(self, finding: Finding) -> None:
        """A DASH delivery finding (times on the source's clock) on the media timeline."""
        reader = self.reader
        self._record(on_media_clock(finding, reader.origin, reader.offset, reader.fallback_t()))

    def _record_hls(self, findings: list[Finding]) -> None:
        """The HLS monitor's findings (wall-clock times, from its thread) on the media timeline."""
        self._record_transport(list(findings))

    def _drain_hls_cues(self) -> None:
        """Cues an HLS source's playlists carried (worker/hls_cues.py, wall-clock times) as events,
        placed on the media timeline through the live edge as the transport analyser's are."""
        if self.hls is not None and (cues := self.hls.drain_cues()):
            self._record_cues(cues, edge_s=self.reader.edge.value, source="hls")

    def _opened(self, event: Opened) -> None:
        """A connection's streams: what the detectors may expect, and an HLS source's playlists
        judged beside the decoding (worker/hls_monitor.py)."""
        video, audio, ctx = event.video, event.audio, self.ctx
        ctx.has_video, ctx.has_audio = video is not None, audio is not None
        if video is not None:
            cc = video.codec_context
            self._video_codec = cc.name
            ctx.extra["video_codec"] = (cc.name, bytes(cc.extradata or b""))  # for decode_error
            self._video_seconds = float(video.time_base) if video.time_base else None
        url = self.config.url
        http = urlsplit(url).scheme.lower() in ("http", "https") and not self.reader.dash
        container, stream = event.container, video or audio
        if self.hls is None and self.config.hls.enabled and http and container.format.name == "hls":
            private, options = self.config.allow_private, self.config.hls
            self.hls = HlsMonitor.for_source(url, private, options, self._record_hls)
        if self.hls is not None and stream is not None:
            self.hls.decoding(stream)
        ctx.connection += 1

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

    def _demuxed(self, event: Demuxed) -> None:
        """A packet before decoding: its caption data, the packet checks, and what the transport
        analyser and the HLS monitor have found meanwhile."""
        packet, t = event.packet, event.t
        if event.video and t is not None:
            self._feed_captions(packet, t)
        if self.dispatch.wants_packets:
            tb = event.seconds
            self.dispatch.packet(
                PacketInfo(
                    t=t,
                    kind="video" if event.video else "audio",
                    size=packet.size,
                    key=bool(packet.is_keyframe),
                    corrupt=bool(packet.is_corrupt),
                    duration=packet.duration * tb if packet.duration and tb else None,
                    data=getattr(packet, "raw", packet) if event.video else None,  # DASH wraps it
                )
            )
        udp = self.reader.udp
        if udp is not None and udp.findings:
            self._record_transport(udp.findings)
        if udp is not None and udp.analyzer is not None and udp.analyzer.cues:
            self._record_cues(udp.analyzer.cues)
        elif self.hls is not None and event.video and packet.is_keyframe:
            self._drain_hls_cues()  # (a few times a segment is soon enough for events)

    def _picture(self, frame: VideoFrame) -> None:
        self.dispatch.video(frame)
        picture = frame.picture  # its pts, on the source's clock, for the splice check
        seconds = self._video_seconds or float(picture.time_base)
        self._feed_splice_point(picture, picture.pts * seconds, frame.t)

    def _flush(self) -> None:
        """Close what is still open where the media ends."""
        t_end = self.reader.fallback_t()
        self.dispatch.flush(t_end)
        self._record_all(self._captions.flush(t_end))
        udp = self.reader.udp
        if udp is not None and udp.analyzer is not None:
            udp.findings.extend(udp.analyzer.flush(time.time()))
            self._record_transport(udp.findings)
            self._record_cues(udp.analyzer.cues)

    # ------------------------------------------------------------ the loop

    def run(self) -> tuple[Outcome, str | None]:
        """Monitor until the source ends (finite), is refused, or ``stop`` is set."""
        reader, dispatch = self.reader, self.dispatch
        picture, audio, demuxed = self._picture, dispatch.audio, self._demuxed
        if self._refused is not None:
            reader.close()
            self.figures.reason = self._refused
            return Outcome.REFUSED, self._refused
        try:
            for event in reader.events():
                kind = type(event)
                if kind is Demuxed:
                    demuxed(event)  # type: ignore[arg-type]
                elif kind is VideoFrame:
                    picture(event)  # type: ignore[arg-type]
                elif kind is AudioBlock:
                    audio(event)  # type: ignore[arg-type]
                elif kind is Finding:
                    self._record(event)  # type: ignore[arg-type]
                elif kind is DecodeFailed:
                    assert isinstance(event, DecodeFailed)
                    dispatch.decode_error(event.t, event.kind, event.message)
                elif kind is Opened:
                    self._opened(event)  # type: ignore[arg-type]
                elif kind is Resumed:
                    self.ctx.connection += 1
            if reader.outcome is Outcome.COMPLETED or self.stop.is_set():
                self._flush()
        finally:
            reader.close()
            if self.hls is not None:
                self._record_hls(self.hls.close())
                self._drain_hls_cues()
        return reader.outcome, reader.reason


def analyze_decode_threads() -> int:
    """Decoder threads of ``avmon analyze``: one stream with the whole machine to itself. Frame
    threads decode pictures ahead while the session's thread runs the detectors; twice FFmpeg's
    own choice for decoding alone (cores + 1) keeps them busy through the detectors' turn (60 s
    of 720p25 on 2 cores: 3 threads took 2.06 s, 6 took 1.85 s, decoding alone 1.73 s with
    either; bench.startup). At most 16, FFmpeg's own cap."""
    return min(2 * ((os.cpu_count() or 1) + 1), 16)


def analyze_session(
    url: str,
    emit: Emit,
    *,
    realtime: bool = False,
    stop: threading.Event | None = None,
    stream_id: str = "local",
    evidence: bool = False,
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
    return StreamSession(stream_id, config, emit, stop=stop, evidence=evidence)


def analyze(
    url: str,
    on_defect: Callable[[Defect], None],
    *,
    realtime: bool = False,
    stop: threading.Event | None = None,
    stream_id: str = "local",
) -> tuple[Outcome, str | None]:
    """Run the worker's full detection pipeline on one source, in this thread, with no AWS:
    each defect record to ``on_defect`` (no evidence)."""
    session = analyze_session(
        url, lambda defect, _: on_defect(defect), realtime=realtime, stop=stop, stream_id=stream_id
    )
    return session.run()
