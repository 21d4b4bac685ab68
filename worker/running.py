"""A stream the worker holds: its lease, its session (what the worker needs of one) and its load.

A session is a :class:`worker.session.StreamSession` (a thread of the worker's process) or a
:class:`worker.shards.RemoteSession` (a media process) by default; the worker is handed a
:class:`SessionFactory`, so that its loop can be tested with sessions that decode nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.models import StreamStatus
from worker import metrics
from worker.capacity import StreamLoad
from worker.detectors import StreamContext
from worker.leases import Lease
from worker.session import Figures, Outcome, SessionConfig
from worker.timeline import Timeline
from worker.transport import TransportCounters


class LivePublisher(Protocol):
    """The session's evidence recorder, as far as the wall's live picture goes."""

    def publish_live(self, on_item: Callable[[dict[str, Any]], object], /) -> object: ...


class Session(Protocol):
    """One stream's open → demux → decode → detect, run by the worker in a thread of its own."""

    @property
    def figures(self) -> Figures: ...  # live figures, read by the event loop while it runs

    @property
    def ctx(self) -> StreamContext: ...

    @property
    def recorder(self) -> LivePublisher | None: ...

    def run(self) -> tuple[Outcome, str | None]:
        """Until the source ends or the ``stop`` it was made with is set."""
        ...

    def mark_overloaded(self, flag: bool) -> None: ...

    def timeline(self) -> Timeline | None: ...

    def transport_counters(self) -> TransportCounters | None: ...


class SessionFactory(Protocol):
    """Makes the session of a taken stream. Called with StreamSession's keyword arguments
    (``emit``, ``worker_id``, ``stop``, ``emit_event``), which a test's factory may ignore but
    ``stop``: once it is set, ``run`` must return."""

    def __call__(self, stream_id: str, config: SessionConfig, **wiring: Any) -> Session: ...


@dataclass
class Running:
    lease: Lease
    session: Session
    thread: threading.Thread
    stop: threading.Event
    done: asyncio.Future[tuple[Outcome, str | None]] = field(repr=False)
    load: StreamLoad
    handed_back: bool = False

    def figures(self) -> dict[str, float | int | str | None]:
        """The live figures published with each renewal (and the release)."""
        f = self.session.figures
        media_time = None if f.media_time_s is None else round(f.media_time_s, 3)
        figures: dict[str, float | int | str | None] = {
            "frames_analysed": f.frames_analysed,
            "lag_s": f.lag_s,
            "media_time_s": media_time,
        }
        if f.dropped_datagrams:
            figures["dropped_datagrams"] = f.dropped_datagrams
        if f.captions is not None:
            figures["captions"] = f.captions
        sync = self.session.ctx.extra.get("av_sync")
        if isinstance(sync, dict) and sync.get("offset_ms") is not None:
            figures["av_sync_offset_ms"] = round(float(sync["offset_ms"]), 1)
            figures["av_sync_confidence"] = round(float(sync.get("confidence") or 0.0), 3)
        timeline = self.session.timeline()
        if timeline is not None:
            figures.update(timeline.figures())  # a worker that takes it over continues it
        return figures

    def sample(self, stream_id: str, now: float, warmup_s: float) -> metrics.StreamSample:
        """Its metrics; ``now``: wall-clock seconds, ``warmup_s``: the CPU measurement's."""
        f = self.session.figures
        return metrics.StreamSample(
            stream_id=stream_id,
            frames_analysed=f.frames_analysed,
            lag_s=f.lag_s,
            media_time_s=f.media_time_s,
            lease_expires_in_s=round(self.lease.expires_at - now, 3),
            reconnecting=f.status is StreamStatus.RECONNECTING,
            cpu_cores=self.load.measured(warmup_s),
            dropped_datagrams=f.dropped_datagrams,
            frames_dropped=int(self.session.ctx.extra.get("frames_dropped", 0)),
        )

    def transport(self) -> TransportCounters | None:
        """A UDP session's transport counters, read from the event loop while its thread counts
        on: a scrape that meets a resize is skipped, not an error."""
        try:
            return self.session.transport_counters()
        except RuntimeError:
            return None
