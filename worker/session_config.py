"""What a stream's session is told (:class:`SessionConfig`), what it publishes while it runs
(:class:`Figures`) and how it ends (:class:`Outcome`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.models import StreamStatus
from worker.captions import CAPTIONS_LOST_S
from worker.cue_events import EventLimits
from worker.hls_monitor import HlsOptions
from worker.media import Limits
from worker.timeline import Timeline
from worker.transport import TransportOptions


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
