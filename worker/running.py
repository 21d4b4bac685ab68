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
    (``emit``, ``worker_id``, ``stop``, ``on_evidence``, ``emit_event``), which a test's factory
    may ignore but ``stop``: once it is set, ``run`` must return."""

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
