"""The detector contract: what a detector is fed and what it reports.

A detector is one module in ``worker/detectors/`` that defines one subclass of :class:`Detector`.
It is fed decoded media in presentation order (video frames and audio blocks, interleaved by
time) and answers with :class:`Finding` events:

* an *open* finding (``end_s is None``) once a defect has lasted its minimum duration, and
* a *close* finding (same ``type``, ``key`` and ``start_s``; ``end_s`` set) when it ends.

The pair shares ``start_s`` so that the sink derives the same stable ``defect_id`` for both
(DESIGN.md §4: "the same defect written twice is one record"). ``flush`` closes whatever is
still open when the stream ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from shared.models import DefectType


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One decoded picture.

    ``luma`` is the Y plane as a (height, width) uint8 array, usually a strided view of the
    decoder's buffer (no RGB conversion, no range scaling). ``full_range`` says whether black is
    code 0 (JPEG/full range) or code 16 (MPEG/limited range). Detectors may keep a picture's
    ``luma`` (freeze keeps its reference picture) instead of copying it: whoever feeds a picture
    must not write to its array afterwards, as a decoder never does to a picture it has output.
    ``picture`` is the decoded ``av.VideoFrame`` itself when the feeder has one (the evidence
    recorder reads its chroma planes for colour thumbnails); detectors do not need it.
    """

    t: float  # media seconds from the stream's origin
    luma: npt.NDArray[np.uint8]
    full_range: bool = False
    key_frame: bool = False
    corrupt: bool = False
    picture: Any = None


# FFmpeg's default layout for each channel count (``av_channel_layout_default``), in its channel
# order: the names a block carries when its source did not say (e.g. 6 channels are 5.1).
DEFAULT_CHANNELS: dict[int, tuple[str, ...]] = {
    1: ("FC",),
    2: ("FL", "FR"),
    3: ("FL", "FR", "LFE"),
    4: ("FL", "FR", "FC", "BC"),
    5: ("FL", "FR", "FC", "BL", "BR"),
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"),
    7: ("FL", "FR", "FC", "LFE", "BC", "SL", "SR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}


def channel_names(count: int, names: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Layout names (FL, FR, FC, LFE, SL, SR...) of ``count`` channels: ``names`` when they are
    that many, else FFmpeg's default layout for the count, else ``ch0``, ``ch1``..."""
    if len(names) == count:
        return names
    return DEFAULT_CHANNELS.get(count) or tuple(f"ch{c}" for c in range(count))


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """A block of decoded audio: (channels, samples) float32, nominal full scale ±1.0.

    ``channels`` names each row by the layout's channel names in FFmpeg's order (``FL``, ``FR``,
    ``FC``, ``LFE``, ``SL``, ``SR``...); empty when the feeder did not say (:attr:`names` then
    gives FFmpeg's default layout for the count).
    """

    t: float  # media seconds of the first sample
    samples: npt.NDArray[np.float32]
    rate: int  # Hz
    channels: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        return float(self.samples.shape[1]) / self.rate

    @property
    def names(self) -> tuple[str, ...]:
        """One layout name per row of ``samples``."""
        return channel_names(self.samples.shape[0], self.channels)


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """One demuxed packet, before decoding: enough for timestamp and transport checks."""

    t: float | None  # media seconds of its pts (None: the packet carries no timestamp)
    kind: str  # "video" or "audio"
    size: int  # bytes
    key: bool  # a keyframe
    corrupt: bool  # the demuxer flagged it (e.g. MPEG-TS continuity errors)
    duration: float | None = None  # seconds, when the container says
    # The packet's bytes (any buffer: bytes, an ``av.Packet``), for checks that read the
    # elementary stream's headers (decode_error: lost H.264 reference pictures); None: not given.
    data: Any = None


@dataclass(frozen=True, slots=True, init=False)
class Finding:
    """A detector's report of a defect opening (``end_s is None``) or closing.

    ``type`` is a :class:`~shared.models.DefectType` (DESIGN.md §4). A string is taken as the
    type it names, and one that names none is refused (ValueError) here, where the finding is
    made, not where it is recorded.
    """

    type: DefectType
    start_s: float
    end_s: float | None
    severity: Severity
    metrics: dict[str, float]
    key: str  # distinguishes parallel defects of one type, e.g. a channel: "FC"
    # Layout names of the audio channels the defect is in (DESIGN.md §4: ``metrics.channels``);
    # empty when it is not about particular channels.
    channels: tuple[str, ...]
    # Named, non-numeric facts about the defect, published in its metrics beside the numbers
    # (e.g. av_sync's ``method``: marks, pts, content, track).
    labels: dict[str, str]

    def __init__(
        self,
        type: DefectType | str,
        start_s: float,
        end_s: float | None,
        severity: Severity,
        metrics: dict[str, float] | None = None,
        key: str = "",
        channels: tuple[str, ...] = (),
        labels: dict[str, str] | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "type", type if isinstance(type, DefectType) else DefectType(type))
        set_(self, "start_s", start_s)
        set_(self, "end_s", end_s)
        set_(self, "severity", severity)
        set_(self, "metrics", {} if metrics is None else metrics)
        set_(self, "key", key)
        set_(self, "channels", channels)
        set_(self, "labels", {} if labels is None else labels)


@dataclass(frozen=True, slots=True)
class BlackPicture:
    """What makes a picture black (FFmpeg blackdetect's defaults): at least ``pic_th`` of its
    pixels at most ``pix_th`` of the luma range above black. The black detector publishes the
    thresholds it runs with in :attr:`StreamContext.black_picture`."""

    pic_th: float = 0.98  # fraction of the pixels
    pix_th: float = 0.10  # fraction of the luma range above black


@dataclass
class StreamContext:
    """State the detectors of one stream share, for cross-modal judgement.

    Detectors write the facts they own and read the others' (e.g. freeze reads whether the audio
    is silent to choose its severity). Times are media seconds.
    """

    has_audio: bool = True
    has_video: bool = True
    audio_silent_since: float | None = None  # set by the silence detector while silent
    last_audio_t: float | None = None
    last_video_t: float | None = None
    # Bumped by the session each time it (re)opens the source: the gap it bridges is already a
    # signal_loss, so timeline checks start afresh instead of calling it a jump.
    connection: int = 0
    # The black detector's thresholds (freeze leaves a held black picture to it).
    black_picture: BlackPicture = field(default_factory=BlackPicture)
    extra: dict[str, Any] = field(default_factory=dict)


class Detector:
    """Base class: subclasses set ``name`` (the defect type they report, a
    :class:`~shared.models.DefectType` value) and ``Options`` (a
    :class:`~worker.detectors.options.DetectorOptions` dataclass)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[Any]]

    def __init__(self, options: Any | None = None, ctx: StreamContext | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.ctx = ctx if ctx is not None else StreamContext()

    def feed_video(self, frame: VideoFrame) -> list[Finding]:
        return []

    def feed_audio(self, block: AudioBlock) -> list[Finding]:
        return []

    def feed_packet(self, packet: PacketInfo) -> list[Finding]:
        """Called for every packet, only for detectors that override it (it costs per packet)."""
        return []

    def feed_decode_error(self, t: float, kind: str, message: str) -> list[Finding]:
        """The decoder refused data at media time ``t`` (``kind`` "video"/"audio")."""
        return []

    def flush(self, t_end: float) -> list[Finding]:
        """Close anything still open at the end of the media (``t_end`` in media seconds)."""
        return []
