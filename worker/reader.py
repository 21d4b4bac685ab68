"""One stream's media, read: open → demux → decode, on one timeline, through outages.

A :class:`MediaReader` turns a source URL into a single stream of timed events, in presentation
order, for whoever consumes them (the session's dispatcher, ``bench/``):

* :class:`Opened` each time a connection's streams are known;
* :class:`Demuxed` for every packet that carries data, before it is decoded (its media time,
  for packet checks and caption data);
* :class:`~worker.detectors.VideoFrame` pictures (the luma plane, no conversion) and
  :class:`~worker.detectors.AudioBlock` s (float32 at ``ANALYSIS_RATE``, batched);
* :class:`DecodeFailed` where the decoder refused data;
* :class:`Resumed` at the first fresh media after an outage;
* :class:`~worker.detectors.Finding` s of ``signal_loss``, opened once no data has come for
  ``signal_loss_after_s`` and closed at the first fresh media.

It owns everything that places media in time: the timeline's origin (the earliest first
timestamp of the audio and video, continued across reconnects and take-overs), the wall-clock
anchor, the live edge and the lag behind it, pacing (``realtime``) and the reconnect loop with
capped, jittered exponential backoff. It never raises for a bad source: a broken or unreachable
one is an outage and a retry; a source beyond the deployment's limits or policy ends the reading
as refused (:attr:`MediaReader.outcome`), with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import av

from shared.models import DefectType, StreamStatus
from shared.retry import backoff_delay
from shared.urlpolicy import UrlRefused, check_url
from worker.dash.input import answers_mpd, is_dash_url, open_dash
from worker.decoded import ANALYSIS_RATE, AudioBatcher, AudioConverter, luma_view
from worker.detectors import AudioBlock, Finding, Severity, VideoFrame
from worker.media import SourceRefused, has_demuxer, open_source, select_streams
from worker.session_config import Figures, Outcome, SessionConfig
from worker.timeline import LiveEdge, Timeline
from worker.transport import TransportAnalyzer
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


@dataclass(frozen=True, slots=True)
class Opened:
    """A connection's streams are known (each (re)connection): ``video``/``audio`` are PyAV
    streams or None, ``container`` the demuxer (its ``format.name`` says e.g. ``hls``)."""

    container: Any
    video: Any | None
    audio: Any | None


@dataclass(frozen=True, slots=True)
class Demuxed:
    """A packet with data, before decoding. ``t``: its presentation time on the media timeline
    (None: no timestamp yet); ``seconds``: its stream's time base as a float."""

    packet: Any
    t: float | None
    video: bool
    seconds: float | None


@dataclass(frozen=True, slots=True)
class Resumed:
    """The first fresh media after an outage, at media time ``t``: what came before it is a
    ``signal_loss``, so checks of the timeline start afresh here."""

    t: float


@dataclass(frozen=True, slots=True)
class DecodeFailed:
    """The decoder refused a packet of ``kind`` ("video"/"audio") at media time ``t``."""

    t: float
    kind: str
    message: str


MediaEvent = Opened | Resumed | Demuxed | VideoFrame | AudioBlock | DecodeFailed | Finding


def is_finite(url: str, container: Any) -> bool:
    """A file, or media with a known duration (VOD, HLS with ENDLIST): its end is completion.
    A live source that ends has been lost."""
    scheme = urlsplit(url).scheme.lower()
    return scheme in ("", "file") or container.duration is not None


class MediaReader:
    """The events of one source, on one media timeline (see the module docstring).

    Iterate :meth:`events` from one thread; when it ends, :attr:`outcome` and :attr:`reason`
    say why; then :meth:`close` it. ``figures`` is updated as it reads (status, lag, frames, CPU, media time).
    ``on_delivery`` receives a DASH source's delivery findings (on the source's clock) from
    inside the reading.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        stop: threading.Event | None = None,
        figures: Figures | None = None,
        stream_id: str = "local",
        on_delivery: Callable[[Finding], None] | None = None,
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.figures = figures if figures is not None else Figures()
        self.stream_id = stream_id
        self.on_delivery = on_delivery
        self.outcome = Outcome.STOPPED
        self.reason: str | None = None
        self.last_t: float | None = None  # media time of the latest picture or audio
        self.offset = 0.0  # media time at the start of the current connection
        self.origin: float | None = None  # source seconds at media time ``offset``
        self.anchor = (time.time(), 0.0)  # (wall, media) pair that maps media time to wall clock
        self.edge = LiveEdge()
        self.overloaded_until = 0.0  # monotonic time until which findings are marked
        self.udp: UdpInput | None = None  # a UDP source's socket, kept across reconnects
        self._loss: tuple[float, float, bool] | None = None  # (media start, wall of last data, reported)
        self._last_data_wall: float | None = None
        self._got_data = False
        self._connected_before = False
        self._not_media = 0  # opens that failed as "not media" before any succeeded
        self.dash = is_dash_url(config.url)  # read by worker/dash, not FFmpeg
        if urlsplit(config.url).scheme.lower() == "udp":
            # Bind now, before the thread starts: a sender that starts as soon as the stream is
            # taken loses nothing to the thread's start-up (the socket queues for it).
            with contextlib.suppress(UrlRefused, OSError):
                check_url(config.url, schemes=config.schemes, allow_private=config.allow_private)
                self._new_udp()
        if config.resume is not None:
            # Taken over from another worker: its timeline goes on here. The gap since it last
            # published is bridged as after an outage (media time kept wall pace meanwhile).
            r = config.resume
            self.origin, self.last_t, self._connected_before = r.origin_s, r.media_time_s, True
            self._loss = (r.media_time_s, r.wall, False)
        self._resumed = config.resume is not None  # until the first open says what the source is

    def _new_udp(self) -> UdpInput:
        self.udp = UdpInput(self.config.url, read_timeout_s=self.config.read_timeout_s, stop=self.stop)
        self.udp.analyzer = TransportAnalyzer(self.config.transport)
        return self.udp

    # ------------------------------------------------------------ the timeline

    def wall_at(self, t: float) -> float:
        """The wall-clock time (epoch s) of media time ``t``."""
        wall, media = self.anchor
        return wall + (t - media)

    def timeline(self) -> Timeline | None:
        """Where this stream's timeline stands now, for whoever takes it over."""
        if self.origin is None or self.last_t is None or self.edge.value == float("inf"):
            return None
        return Timeline(self.origin - self.offset, self.last_t, self.last_t + self.edge.value)

    def fallback_t(self) -> float:
        """Media time for what has no timestamp of its own: the latest read, or 0."""
        return self.last_t if self.last_t is not None else 0.0

    def _settle_origin(self, first: float, resume: float | None) -> float:
        """The source time that is media time ``self.offset`` on this connection.

        After a reconnect, a source whose clock kept running (a live encoder) continues the old
        timeline: keep its origin, so media time is the source's own. A source that restarted
        its timestamps is placed at ``resume`` (where the outage left off, plus its length).
        """
        if resume is not None and self.origin is not None and self.last_t is not None:
            continued = first - self.origin + self.offset
            if self.last_t - 1.0 <= continued <= resume + 5.0:
                return self.origin
            self.offset = resume
        self.origin = first
        return first

    # ------------------------------------------------------------ connections

    def events(self) -> Iterator[MediaEvent]:
        """Read until the source ends (finite), is refused, or ``stop`` is set."""
        config, attempt = self.config, 0
        while not self.stop.is_set():
            try:
                check_url(config.url, schemes=config.schemes, allow_private=config.allow_private)
                # While the source is lost, each attempt waits no longer than a read would, so
                # the loop comes round to report the loss on time.
                open_timeout = config.open_timeout_s
                if self._loss is not None:
                    open_timeout = min(open_timeout, config.read_timeout_s)
                with self._open(open_timeout) as container:
                    video, audio = select_streams(container, config.limits)
                    yield Opened(container, video, audio)
                    finished = yield from self._read(container, video, audio)
                    if finished and is_finite(config.url, container):
                        self.outcome = Outcome.COMPLETED
                        return
                if self.stop.is_set():
                    break
                reason = "the source ended"
            except (UrlRefused, SourceRefused) as exc:
                self._refuse(str(exc))
                return
            except (av.FFmpegError, OSError, EOFError, IndexError) as exc:
                if self.stop.is_set():
                    break  # DELETE or a lost lease cut the I/O short: no loss to report
                refused = self._unreadable_kind(exc)
                if refused is not None:
                    yield from self._close_loss()
                    self._refuse(refused)
                    return
                # IndexError: PyAV's stream list can fall out of step when a damaged
                # transport stream announces new streams mid-way; it is the source's fault.
                if not config.reconnect:
                    if isinstance(exc, IndexError):
                        raise UnreadableSource(f"the demuxer failed: {exc}") from exc
                    raise
                reason = f"{type(exc).__name__}: {exc}"[:300]
            if self._got_data:
                attempt = 0
            yield from self._note_loss(reason)
            attempt += 1
            if self.stop.wait(backoff_delay(min(attempt, 10), 1.0, config.reconnect_max_s)):
                break
            yield from self._note_loss(reason)
        self.outcome = Outcome.STOPPED
        yield from self._close_loss()

    def close(self) -> None:
        """Let go of what is kept across connections (a UDP source's socket), once whoever
        reads has taken the last of it (the transport analyser's findings)."""
        if self.udp is not None:
            self.udp.close()
            self.udp = None

    def _refuse(self, reason: str) -> None:
        self.outcome, self.reason = Outcome.REFUSED, reason
        self.figures.reason = reason

    def _open(self, open_timeout: float) -> Any:
        """The source, opened for demuxing. UDP is read by this thread itself (worker.udp: a
        large receive buffer, arrival times, the kernel's drop count); the socket stays bound
        across reconnects, so nothing sent meanwhile is refused."""
        config, limits = self.config, self.config.limits
        if self.dash:  # read by the worker itself (worker/dash/)
            return open_dash(
                config.url,
                limits,
                open_timeout,
                config.read_timeout_s,
                allow_private=config.allow_private,
                stop=self.stop,
                on_finding=self._delivery,
            )
        if urlsplit(config.url).scheme.lower() != "udp":
            return open_source(
                config.url,
                limits,
                open_timeout,
                config.read_timeout_s,
                allow_private=config.allow_private,
                stop=self.stop,
            )
        udp = self.udp
        if udp is None:
            udp = self._new_udp()
        elif udp.analyzer is not None and udp.position:
            # A new connection on the same socket: the time between is the session's
            # signal_loss, not missing tables; counters and sections start afresh.
            udp.findings.extend(udp.analyzer.discontinuity())
        options = {
            "probesize": str(limits.probe_size),
            "analyzeduration": str(int(limits.analyze_duration_s * 1e6)),
        }
        # The first datagram may take the open timeout to come; then the stream's read timeout
        # holds. No FFmpeg interrupt timeout: one that fired mid-probe would throw away the
        # stream's first packets with the attempt (and shift its timeline's origin).
        if not udp.wait(open_timeout):
            raise TimeoutError(f"no datagram in {open_timeout:.0f} s")
        return av.open(udp, mode="r", format="mpegts", options=options, buffer_size=UDP_READ_BYTES)

    def _delivery(self, finding: Finding) -> None:
        if self.on_delivery is not None:
            self.on_delivery(finding)

    def _unreadable_kind(self, exc: Exception) -> str | None:
        """Why no retry can read this source with this build of FFmpeg, if that is why it failed."""
        url = self.config.url
        if isinstance(exc, av.error.InvalidDataError) and not self.dash and not self._connected_before:
            # An MPD under a name without .mpd (application/dash+xml): FFmpeg cannot read it.
            private, timeout = self.config.allow_private, self.config.read_timeout_s
            self.dash = answers_mpd(url, allow_private=private, timeout_s=timeout, stop=self.stop)
            if self.dash:
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

    # ------------------------------------------------------------ outages

    def _note_loss(self, reason: str) -> Iterator[Finding]:
        """No data: remember since when, and report it once it has lasted long enough."""
        if self._loss is None:
            self._loss = (self.fallback_t(), self._last_data_wall or time.time(), False)
            log.warning("stream %s: source lost (%s); retrying", self.stream_id, reason)
        start_s, since_wall, reported = self._loss
        self.figures.status = StreamStatus.RECONNECTING
        self.figures.reason = reason
        if not reported and time.time() - since_wall >= self.config.signal_loss_after_s:
            self.anchor = (since_wall, start_s)
            self._loss = (start_s, since_wall, True)
            yield Finding(DefectType.SIGNAL_LOSS.value, start_s, None, Severity.CRITICAL, {})

    def _close_loss(self, end_s: float | None = None) -> Iterator[Finding]:
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
            metrics = {"duration_s": end_s - start_s}
            yield Finding(DefectType.SIGNAL_LOSS.value, start_s, end_s, Severity.CRITICAL, metrics)

    # ------------------------------------------------------------ one connection

    def _read(
        self, container: Any, video: Any | None, audio: Any | None
    ) -> Generator[MediaEvent, None, bool]:
        """Demux and decode until the end (returns True) or a stop (False)."""
        batcher = AudioBatcher()
        try:
            finished = yield from self._decode(container, video, audio, batcher)
        except GeneratorExit:
            raise
        except BaseException:
            pending = batcher.drain()  # the audio still gathering into a block, though the source broke
            if pending is not None:
                yield pending
            raise
        pending = batcher.drain()
        if pending is not None:
            yield pending
        return finished

    def _configure_video(self, video: Any) -> None:
        threads = self.config.decode_threads or self.config.limits.decode_threads
        video.thread_type = "AUTO" if threads > 1 else "SLICE"
        video.codec_context.thread_count = threads
        cc = video.codec_context
        rate = video.average_rate or video.guessed_rate
        if cc.width and cc.height and rate:
            self.figures.pixel_rate = float(cc.width * cc.height * rate)

    def _decode(
        self, container: Any, video: Any | None, audio: Any | None, batcher: AudioBatcher
    ) -> Generator[MediaEvent, None, bool]:
        if video is None and audio is None:
            raise SourceRefused("the source has neither video nor audio")
        if video is not None:
            self._configure_video(video)
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
                self.origin = self.last_t = self._loss = None
                self._connected_before = False
        # After an outage the media timeline goes on: media time at least kept wall pace.
        resume = None if self._loss is None else self._loss[0] + (time.time() - self._loss[1])
        seen_before = self.last_t if self._connected_before else None
        udp = self.udp
        udp_base = udp.position if udp is not None else 0  # stream offset of this container's byte 0
        udp_drops = udp.drops if udp is not None else 0
        # Kernel arrival times do not depend on our reading: a recent window keeps the edge true
        # against a source clock that drifts. Read times do: every packet since opening counts.
        edge = self.edge = LiveEdge(window_s=60.0 if udp is not None else None)
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
        stopped, realtime = self.stop.is_set, self.config.realtime
        packets = 0
        for packet in container.demux(selected):
            if stopped():
                return False
            is_video = packet.stream is video
            size = packet.size
            dt = None
            arrival: float | None = None
            tb = seconds.get(packet.stream_index)
            if size:
                now = self._last_data_wall = wall()
                self._got_data = True
                pts = packet.pts
                if origin is None and pts is not None and tb:
                    origin = self._settle_origin(pts * tb, resume)
                pt = None if pts is None or origin is None or not tb else pts * tb - origin + self.offset
                dts = packet.dts
                if dts is not None and origin is not None and tb:
                    dt = dts * tb - origin + self.offset
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
                    yield from self._close_loss(pt)
                    yield Resumed(pt)
                elif self._loss is not None:
                    yield from self._close_loss(pt)
                yield Demuxed(packet, pt, is_video, tb)
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                # Undecodable data is a defect of the stream, not of the worker.
                pending = batcher.drain()  # consumers see media in time order
                if pending is not None:
                    yield pending
                yield DecodeFailed(self.fallback_t(), "video" if is_video else "audio", str(exc)[:200])
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
                t = frame.pts * ftb - origin + self.offset
                if first_t is None:
                    first_t = t
                    self.anchor = (open_wall, t)
                if realtime:
                    ahead = (t - first_t) - (time.time() - open_wall)
                    if ahead > 0 and self.stop.wait(ahead):
                        return False
                if is_video:
                    luma, full_range = luma_view(frame)
                    yield VideoFrame(
                        t=t,
                        luma=luma,
                        full_range=full_range,
                        key_frame=bool(frame.key_frame),
                        corrupt=bool(frame.is_corrupt or packet.is_corrupt),
                        picture=frame,  # its chroma, for colour thumbnails; its pts for splices
                    )
                    figures.frames_analysed += 1
                elif converter is not None:
                    for samples in converter.convert(frame):
                        yield from batcher.add(t, samples, converter.names)
                        t += samples.shape[1] / ANALYSIS_RATE
                if self.last_t is None or t > self.last_t:
                    self.last_t = t
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
                        self.overloaded_until = time.monotonic() + OVERLOAD_HOLD_S
            if udp is not None and udp.drops != udp_drops:
                # The kernel dropped datagrams we read too late: our loss, not the source's.
                figures.dropped_datagrams += (udp.drops - udp_drops) % (1 << 32)
                udp_drops = udp.drops
                self.overloaded_until = time.monotonic() + OVERLOAD_HOLD_S
            figures.media_time_s = self.last_t
        figures.cpu_s = thread_time()
        return True
