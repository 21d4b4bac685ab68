"""Undecodable data: the decoder refusing packets, the demuxer flagging them, concealed pictures.

Three reports count as an *error*, per stream kind (``"video"`` / ``"audio"``):

* a decode error (``feed_decode_error``: ``packet.decode()`` raised, e.g. a damaged AAC frame
  gives ``InvalidDataError``; FFmpeg's H.264 decoder almost never raises, it conceals);
* a corrupt packet (``PacketInfo.corrupt``: the demuxer saw e.g. an MPEG-TS continuity-counter
  gap, i.e. lost transport packets);
* a corrupt picture (``VideoFrame.corrupt``: the decoder concealed errors in it);
* a lost reference picture (H.264: the next picture's ``frame_num`` skips one, read from the
  packet's slice header by :mod:`worker.detectors._h264`): a whole picture lost in delivery where
  no transport reports it (a frame missing from an MP4 or an HLS segment). FFmpeg conceals it
  without marking a picture corrupt, and the damage shows until the next IDR. Pictures an
  encoder or an edit left out were never coded and leave no such gap.

Pictures missing from a steady frame rate with no such report (a timestamp step of two frame
durations: an edit, a loop, an encoder's frame drop) are not a decoding error: ``stutter``
counts them and reports them when they are visible. This detector publishes its count of video
errors as ``StreamContext.extra["video_errors"]``, so that ``stutter`` leaves the pictures lost
to them to this defect.

Errors less than ``window`` seconds apart are one defect (keyed by kind). It opens at the first
error, with no minimum duration (a decode error is an event), and closes once ``window`` seconds
of media pass without another error; ``end_s`` is the first cleanly decoded picture or audio
block of that kind after the last error (the last error itself if none came). The defect is a
``warning`` and becomes ``critical`` (in its close finding) once it holds ``critical_errors``
errors: the decoder is failing persistently, not once.

``errors`` counts reports, not damaged packets: the session marks the picture decoded together
with a corrupt packet as corrupt too, so one lost packet may count twice (``corrupt_packets``
and ``corrupt_frames``); each count is reported separately as well.

Overlap with ``blockiness``: both may report the same corruption. This detector says the decoder
failed, in either stream; ``blockiness`` says the picture is visibly damaged and for how long.

Times: packets carry their own presentation time, which runs ahead of decoded media by the
decoder's delay; a decode error carries the time of the latest decoded media. FFmpeg's MPEG-TS
demuxer (8.x) puts the corrupt flag on the packet stored just before the one that lost data, so
a start can precede the damage by up to a B-frame group (0.1-0.3 s observed). The media clock
that closes defects is the latest time seen in any feed; a step back of more than
``DISCONTINUITY_S`` is a new timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from shared.models import DefectType
from worker.detectors._h264 import ReferenceLossCounter
from worker.detectors.base import (
    AudioBlock,
    Detector,
    Finding,
    PacketInfo,
    Severity,
    StreamContext,
    VideoFrame,
)
from worker.detectors.options import DetectorOptions, opt

DISCONTINUITY_S = 5.0  # the clock going back more than this (a timestamp reset) restarts it

Counter = Literal["decode_errors", "corrupt_packets", "corrupt_frames", "lost_references"]
HEADER_PREFIX = 4096  # bytes of a packet read for its slice header (parameter sets, SEI first)


@dataclass(frozen=True, slots=True)
class DecodeErrorOptions(DetectorOptions):
    """Options of the ``decode_error`` detector."""

    window: float = opt(
        1.0, "s", "errors closer than this are one defect, which closes "
        "after this long without errors", gt=0.0
    )
    critical_errors: int = opt(
        10, "count", "errors in one defect that make it critical (1: every decode error is critical)", ge=1
    )


@dataclass(slots=True)
class _Defect:
    """An open defect of one kind."""

    start: float
    last: float  # media time of the latest error
    clean_since: float | None = None  # first clean decoded media of this kind after `last`
    decode_errors: int = 0
    corrupt_packets: int = 0
    corrupt_frames: int = 0
    lost_references: int = 0

    @property
    def errors(self) -> int:
        return self.decode_errors + self.corrupt_packets + self.corrupt_frames + self.lost_references


class DecodeErrorDetector(Detector):
    """Reports bursts of decode errors, corrupt packets and concealed pictures, per stream kind."""

    name: ClassVar[DefectType] = DefectType.DECODE_ERROR
    Options: ClassVar[type[DecodeErrorOptions]] = DecodeErrorOptions
    options: DecodeErrorOptions

    def __init__(self, options: DecodeErrorOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        self._open: dict[str, _Defect] = {}  # kind → its open defect
        self._now: float | None = None  # the media clock: latest time seen in any feed
        self._video_errors = 0  # video errors, ever (StreamContext.extra["video_errors"])
        self._references: ReferenceLossCounter | None = None  # H.264 streams only
        self._codec: tuple[str, bytes] | None = None  # the (codec, extradata) it was built for
        self._connection = -1

    # ------------------------------------------------------------ feeding

    def feed_packet(self, packet: PacketInfo) -> list[Finding]:
        findings = self._tick(packet.t)
        if packet.corrupt:
            findings += self._error(packet.kind, packet.t, "corrupt_packets")
        elif packet.data is not None and packet.kind == "video":
            lost = self._lost_references(packet.data)
            if lost:
                findings += self._error("video", packet.t, "lost_references", lost)
        return findings

    def _lost_references(self, data: Any) -> int:
        codec = self.ctx.extra.get("video_codec")
        if codec != self._codec:  # a (re)opened source: its own parameter sets
            self._codec = codec
            self._references = ReferenceLossCounter(codec[1]) if codec and codec[0] == "h264" else None
        references = self._references
        if references is None:
            return 0
        if self.ctx.connection != self._connection:
            self._connection = self.ctx.connection
            references.reset()  # what was lost while disconnected is signal_loss's
        return references.feed(bytes(memoryview(data)[:HEADER_PREFIX]))

    def feed_video(self, frame: VideoFrame) -> list[Finding]:
        findings = self._tick(frame.t)
        if frame.corrupt:
            return findings + self._error("video", frame.t, "corrupt_frames")
        self._clean("video", frame.t)
        return findings

    def feed_audio(self, block: AudioBlock) -> list[Finding]:
        findings = self._tick(block.t)
        self._clean("audio", block.t)
        return findings

    def feed_decode_error(self, t: float, kind: str, message: str) -> list[Finding]:
        return self._tick(t) + self._error(kind, t, "decode_errors")

    def flush(self, t_end: float) -> list[Finding]:
        findings: list[Finding] = []
        for kind, defect in list(self._open.items()):
            # Nothing clean came since the last error: the failure lasted to the end.
            end = defect.clean_since if defect.clean_since is not None else max(defect.last, t_end)
            findings.append(self._close(kind, end))
        return findings

    # ------------------------------------------------------------ state

    def _tick(self, t: float | None) -> list[Finding]:
        """Advance the media clock to ``t`` and close the defects that have been quiet a window."""
        if t is None:
            return []
        if self._now is None or t > self._now or t < self._now - DISCONTINUITY_S:
            self._now = t
        findings: list[Finding] = []
        for kind, defect in list(self._open.items()):
            if self._now - defect.last >= self.options.window:
                end = defect.clean_since if defect.clean_since is not None else defect.last
                findings.append(self._close(kind, end))
        return findings

    def _error(self, kind: str, t: float | None, counter: Counter, n: int = 1) -> list[Finding]:
        """Count ``n`` errors of ``kind`` at ``t`` (the clock when the report has no time)."""
        at = t if t is not None else self._now
        if at is None:
            at = 0.0
        if kind == "video":
            self._video_errors += n
            self.ctx.extra["video_errors"] = self._video_errors
        findings: list[Finding] = []
        defect = self._open.get(kind)
        if defect is not None and at < defect.start - self.options.window:
            # Time went back (a new timeline): this is not the same burst.
            end = defect.clean_since if defect.clean_since is not None else defect.last
            findings.append(self._close(kind, end))
            defect = None
        if defect is None:
            defect = self._open[kind] = _Defect(start=at, last=at)
            setattr(defect, counter, n)
            findings.append(self._finding(kind, defect, None))
            return findings
        setattr(defect, counter, getattr(defect, counter) + n)
        defect.last = max(defect.last, at)
        defect.clean_since = None
        return findings

    def _clean(self, kind: str, t: float) -> None:
        defect = self._open.get(kind)
        if defect is not None and defect.clean_since is None and t > defect.last:
            defect.clean_since = t

    def _close(self, kind: str, end: float) -> Finding:
        defect = self._open.pop(kind)
        return self._finding(kind, defect, max(end, defect.start))

    def _finding(self, kind: str, defect: _Defect, end_s: float | None) -> Finding:
        metrics = {
            "errors": float(defect.errors),
            "decode_errors": float(defect.decode_errors),
            "corrupt_packets": float(defect.corrupt_packets),
            "corrupt_frames": float(defect.corrupt_frames),
            "lost_references": float(defect.lost_references),
        }
        if end_s is not None:
            metrics["duration_s"] = end_s - defect.start
        critical = defect.errors >= self.options.critical_errors
        return Finding(
            type=self.name,
            start_s=defect.start,
            end_s=end_s,
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            metrics=metrics,
            key=kind,
        )
