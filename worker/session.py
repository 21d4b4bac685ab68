"""One stream: open → demux → decode → every detector, in one thread, frames in memory.

The session owns the stream's media timeline (seconds from the earliest first timestamp of its
audio and video, continued across reconnects), turns detector findings into defect records and
hands them to ``emit``. It never raises for a bad source: an unreachable or broken source is a
``signal_loss`` defect and a retry with capped, jittered exponential backoff; a source beyond the
deployment's limits ends the session as refused, with the reason.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import av

from shared.models import Defect, DefectType, StreamStatus, defect_id_for
from shared.urlpolicy import UrlRefused, check_url, to_url
from worker.detectors import (
    AudioBlock,
    Detector,
    Finding,
    PacketInfo,
    Severity,
    StreamContext,
    VideoFrame,
    build_detectors,
    wants,
)
from worker.evidence import Evidence, EvidenceRecorder
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

log = logging.getLogger("avmon.worker.session")
# A file or HTTP source that FFmpeg has never once read as media (empty, truncated, text, an
# HTML error page) is refused after this many opens, not retried for ever.
NOT_MEDIA_TRIES = 3


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


@dataclass
class Figures:
    """Live figures the async side publishes with each lease renewal."""

    frames_analysed: int = 0
    media_time_s: float | None = None
    lag_s: float | None = None
    status: StreamStatus = StreamStatus.MONITORING
    reason: str | None = None


def is_finite(url: str, container: Any) -> bool:
    """A file, or media with a known duration (VOD, HLS with ENDLIST): its end is completion.
    A live source that ends has been lost."""
    scheme = urlsplit(url).scheme.lower()
    return scheme in ("", "file") or container.duration is not None


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
    ) -> None:
        self.stream_id = stream_id
        self.config = config
        self.emit = emit
        self.worker_id = worker_id
        self.stop = stop or threading.Event()
        self.figures = Figures()
        self.ctx = StreamContext()
        self.detectors: list[Detector] = build_detectors(self.ctx, set(config.detectors or []) or None)
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
        self._not_media = 0  # opens that failed as "not media" before any succeeded

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
            type=DefectType(finding.type),
            start_s=round(finding.start_s, 3),
            end_s=None if finding.end_s is None else round(finding.end_s, 3),
            start_at=start_at,
            end_at=None if finding.end_s is None else _iso(self._wall_at(finding.end_s)),
            severity=finding.severity.value,
            metrics={k: round(float(v), 4) for k, v in finding.metrics.items()},
            worker_id=self.worker_id,
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

    def _record_all(self, findings: list[Finding]) -> None:
        for finding in findings:
            self._record(finding)

    def _flush_detectors(self) -> None:
        t_end = self._last_t if self._last_t is not None else 0.0
        for detector in self.detectors:
            self._record_all(detector.flush(t_end))

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
                    with open_source(
                        self.config.url,
                        self.config.limits,
                        open_timeout,
                        self.config.read_timeout_s,
                        allow_private=self.config.allow_private,
                        stop=self.stop,
                    ) as container:
                        video, audio = select_streams(container, self.config.limits)
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
        return Outcome.STOPPED, None

    def _unreadable_kind(self, exc: Exception) -> str | None:
        """Why no retry can read this source with this build of FFmpeg, if that is why it failed."""
        url = self.config.url
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
            # PyAV's wheels build FFmpeg without libxml2, hence without its DASH demuxer.
            return "this worker's FFmpeg cannot read DASH manifests (.mpd); give an HLS or MPEG-TS URL"
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
            video.thread_type = "AUTO"
            video.codec_context.thread_count = self.config.limits.decode_threads
        converter = AudioConverter(min(audio.codec_context.channels or 2, 16)) if audio is not None else None
        selected = [s for s in (video, audio) if s is not None]
        starts = [
            float(s.start_time * s.time_base) for s in selected if s.start_time is not None and s.time_base
        ]
        # After an outage the media timeline goes on: media time at least kept wall pace.
        resume = None if self._loss is None else self._loss[0] + (time.time() - self._loss[1])
        seen_before = self._last_t if self._connected_before else None
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
        for packet in container.demux(selected):
            if stopped():
                return False
            is_video = packet.stream is video
            kind = "video" if is_video else "audio"
            size = packet.size
            if size:
                self._last_data_wall = time.time()
                self._got_data = True
                tb = seconds.get(packet.stream_index)
                pts = packet.pts
                if origin is None and pts is not None and tb:
                    origin = self._settle_origin(pts * tb, resume)
                pt = None if pts is None or origin is None or not tb else pts * tb - origin + self._offset
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
                if packet_detectors:
                    info = PacketInfo(
                        t=pt,
                        kind=kind,
                        size=size,
                        key=bool(packet.is_keyframe),
                        corrupt=bool(packet.is_corrupt),
                        duration=packet.duration * tb if packet.duration and tb else None,
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
                    )
                    feed_video(vf)
                    ctx.last_video_t = t
                    figures.frames_analysed += 1
                elif converter is not None:
                    for samples in converter.convert(frame):
                        for block in batcher.add(t, samples):
                            self._feed_audio(block)
                        t += samples.shape[1] / ANALYSIS_RATE
                    ctx.last_audio_t = t
                if self._last_t is None or t > self._last_t:
                    self._last_t = t
            if pace and first_t is not None and self._last_t is not None:
                figures.lag_s = round(max(0.0, (time.time() - open_wall) - (self._last_t - first_t)), 3)
            figures.media_time_s = self._last_t
        return True


def analyze(
    url: str,
    emit: Callable[[Defect], None],
    *,
    realtime: bool = False,
    stop: threading.Event | None = None,
    stream_id: str = "local",
) -> tuple[Outcome, str | None]:
    """Run the worker's full detection pipeline on one source, in this thread, with no AWS."""
    config = SessionConfig(url=to_url(url), realtime=realtime, reconnect=False)
    session = StreamSession(stream_id, config, emit, stop=stop)
    return session.run()
