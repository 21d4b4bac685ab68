"""The notifier: written defects and cues in, signed webhook POSTs and SNS messages out.

It composes the parts of :mod:`worker.notify`: the incident rules (``incidents``) decide what is
worth saying and when, ``messages`` forms the bodies, ``lanes`` queues them per target, and
``delivery`` (webhooks, signed by ``signing``) and ``sns`` send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Any

import aiohttp

from shared.models import Defect, Event
from worker.notify.delivery import Deliverer, Delivery, Outcome, RecordCallback, Result, redact_target
from worker.notify.incidents import IncidentTracker
from worker.notify.lanes import Lanes
from worker.notify.messages import Message, cue_message, incident_message
from worker.notify.sns import publish

log = logging.getLogger("avmon.worker.notify")


@dataclass(frozen=True, slots=True)
class Targets:
    """Where one stream's notifications go: the global webhooks (settings), the stream's own
    webhook (optional) and an SNS topic (optional)."""

    webhooks: tuple[str, ...] = ()
    stream_webhook: str | None = None
    sns_topic_arn: str | None = None

    @classmethod
    def from_settings(
        cls,
        webhook_urls: str | Iterable[str] = "",
        stream_webhook: str | None = None,
        sns_topic_arn: str | None = None,
    ) -> Targets:
        """``webhook_urls`` as a comma-separated setting or a list."""
        urls = webhook_urls.split(",") if isinstance(webhook_urls, str) else list(webhook_urls)
        return cls(
            webhooks=tuple(u.strip() for u in urls if u.strip()),
            stream_webhook=(stream_webhook or "").strip() or None,
            sns_topic_arn=(sns_topic_arn or "").strip() or None,
        )

    @property
    def webhook_urls(self) -> tuple[str, ...]:
        """Global then per-stream, without duplicates."""
        urls = [*self.webhooks, *([self.stream_webhook] if self.stream_webhook else [])]
        return tuple(dict.fromkeys(u.strip() for u in urls if u.strip()))


class Notifier:
    """Turns written defect records into notifications (see :mod:`worker.notify`).

    The worker feeds every defect record the sink has durably written (``DefectWriter.on_written``)
    to :meth:`submit` (or the awaitable :meth:`defect_written`). Both return at once: delivery
    happens in background tasks of the same event loop, so a slow or dead receiver never holds up
    the sink or the decode threads.

    Event-loop only: ``submit`` must be called from the loop's thread (``on_written`` is).
    ``sns`` is an aioboto3 SNS client; ``http`` an aiohttp session (made and owned here when not
    given: call :meth:`aclose`, or use ``async with``). ``url_check`` is called (in a thread: it
    may resolve DNS) before each webhook attempt; a ``ValueError`` refuses the URL for good, an
    ``OSError`` counts as a connection failure (e.g. ``shared.urlpolicy.check_url``).
    Times: ``*_s`` are seconds; ``group_window_s`` and the fold test of ``min_gap_s`` compare
    media times, the waits (``coalesce_s``, the hold of ``min_gap_s``) are wall-clock.
    """

    def __init__(
        self,
        *,
        secret: str | bytes = "",
        sns: Any | None = None,
        http: aiohttp.ClientSession | None = None,
        record: RecordCallback | None = None,
        url_check: Callable[[str], None] | None = None,
        group_window_s: float = 2.0,
        coalesce_s: float = 1.0,
        min_gap_s: float = 10.0,
        max_queue: int = 1000,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.sns = sns
        self.clock = clock
        self.incidents = IncidentTracker(
            group_window_s=group_window_s, coalesce_s=coalesce_s, min_gap_s=min_gap_s, clock=clock
        )
        self.deliverer = Deliverer(
            secret=self.secret,
            http=http,
            record=record,
            url_check=url_check,
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
            timeout_s=timeout_s,
            clock=clock,
        )
        self._lanes = Lanes(max_queue=max_queue, deliver=self._deliver, drop=self._drop)
        self._warned_unsigned = False  # said once, when a webhook is first due
        self.dropped = 0
        self._targets: dict[str, Targets] = {}
        self._seq = 0
        self._wake = asyncio.Event()
        self._side_tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -------------------------------------------------------------- counters (for metrics)

    events = property(attrgetter("incidents.events"))  # events derived (acknowledged ones not)
    folded = property(attrgetter("incidents.folded"))  # re-occurrences folded into an episode
    acknowledged = property(attrgetter("incidents.acknowledged"))  # episodes silenced by an operator
    delivered = property(attrgetter("deliverer.delivered"))  # messages delivered to a target
    failed = property(attrgetter("deliverer.failed"))  # messages given up after their last attempt

    @property
    def pending(self) -> int:
        """Messages waiting or being delivered, and events not yet formed into messages."""
        return self._lanes.pending + self.incidents.pending

    # -------------------------------------------------------------- input

    async def defect_written(self, defect: Defect, targets: Targets) -> None:
        """Awaitable form of :meth:`submit`; returns at once."""
        self.submit(defect, targets)

    def submit(self, defect: Defect, targets: Targets) -> None:
        """A defect record was durably written: derive its events and return (µs; the event
        loop's thread only, as ``DefectWriter.on_written`` is called)."""
        if targets.webhook_urls and not self.secret and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("no webhook secret configured: webhook notifications are not signed")
        self._targets[defect.stream_id] = targets
        self.incidents.submit(defect)
        self._wake.set()

    def submit_cue(self, event: Event, targets: Targets) -> None:
        """A written cue event (SCTE-35, worker/cue_events.py): one message to every target.
        Event-loop only, like :meth:`submit`; the sink writes each event once (its id is stable)."""
        self._send(targets, cue_message(event))

    def end_stream(self, stream_id: str) -> None:
        """The stream's session is over and its records are written: send its held closes now
        (nothing can re-open them) instead of after ``min_gap_s``."""
        self.incidents.end_stream(stream_id)
        self._wake.set()

    def acknowledge(self, stream_id: str, defect_ids: Iterable[str]) -> None:
        """Operators acknowledged these defects (the API records who and when): their episodes
        send nothing more, their close and any re-occurrence folded into them included."""
        self.incidents.acknowledge(stream_id, defect_ids)

    # -------------------------------------------------------------- timing

    def _release_due(self, *, everything: bool = False) -> None:
        for batch in self.incidents.due(everything=everything):
            self._send(self._targets.get(batch.incident.stream_id, Targets()), incident_message(batch))

    async def run(self, stopping: asyncio.Event) -> None:
        """Release coalesced and held events when due, until ``stopping`` is set. Deliveries
        run in their own tasks; after ``stopping``, :meth:`drain` sends what is left."""
        while not stopping.is_set():
            self._wake.clear()
            self._release_due()
            deadline = self.incidents.next_deadline()
            # Wake for new events, due batches, and at least 4×/s to notice ``stopping``.
            timeout = 0.25 if deadline is None else min(0.25, max(0.0, deadline - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def drain(self, timeout_s: float) -> bool:
        """Send everything now (held closes and coalescing batches included) and wait up to
        ``timeout_s`` for the deliveries to finish. True when nothing is left."""
        self._release_due(everything=True)
        deadline = self.clock() + timeout_s
        await self._lanes.wait(deadline, self.clock)
        if self._side_tasks:
            await asyncio.wait(list(self._side_tasks), timeout=max(0.05, deadline - self.clock()))
        return self.pending == 0

    async def aclose(self) -> None:
        """Stop delivering (what is still queued is dropped and counted) and close the session."""
        await self._lanes.close()
        if self._side_tasks:
            await asyncio.gather(*self._side_tasks, return_exceptions=True)
        await self.deliverer.aclose()

    # -------------------------------------------------------------- delivery

    def _send(self, targets: Targets, message: Message) -> None:
        """``message`` queued for every target."""
        kinds = [("webhook", url) for url in targets.webhook_urls]
        if targets.sns_topic_arn:
            if self.sns is None:
                log.error("SNS topic set for %s but no SNS client given: not published", message.stream_id)
            else:
                kinds.append(("sns", targets.sns_topic_arn))
        for kind, target in kinds:
            self._seq += 1
            self._lanes.put(Delivery(self._seq, uuid.uuid4().hex, kind, target, message))

    async def _deliver(self, delivery: Delivery) -> None:
        if delivery.kind == "sns":
            await self.deliverer.deliver(delivery, partial(publish, self.sns))
        else:
            await self.deliverer.deliver(delivery, self.deliverer.post)

    def _drop(self, delivery: Delivery, why: str) -> None:
        self.dropped += 1
        message = delivery.message
        log.warning(
            "notification dropped (%s; %d so far): %s %s of %s to %s",
            why,
            self.dropped,
            message.event,
            message.incident_id,
            message.stream_id,
            redact_target(delivery.target),
        )
        self._spawn(self.deliverer.report(delivery, 0, Outcome.DROPPED, Result(None, why, False), None))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a side job (a delivery-log write for a drop) without making the caller wait."""
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop: nowhere to record into
            coro.close()
            return
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
