"""The defect writer: batched, idempotent, fenced, and patient with an unreachable store.

Records arrive from the stream threads (through the event loop), are kept per stream by
``defect_id`` (a close supersedes its open), and are written every ``interval`` in one
``TransactWriteItems`` per stream whose condition is the writer's lease. A store that does not
answer keeps the records in the buffer for the next attempt; a lost lease drops them (the new
owner reports from its own reading), loudly.

It also writes the live picture of each held stream (``worker/picture.py``, for the router's
wall): the newest one offered, at most one ``PutItem`` per stream per ``live_interval_s``
(20 s: ≤ 180 requests per stream-hour, counted in ``bench/aws_calls.py``). A picture that
cannot be written is dropped: the next one is due soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from shared import aws, store
from shared.models import Defect, Event
from shared.retry import Backoff
from worker.leases import call
from worker.picture import LIVE_INTERVAL_S  # the bound on live-picture writes, per stream

log = logging.getLogger("avmon.worker.sink")
MAX_PER_TRANSACTION = 99  # 100 items per TransactWriteItems, one is the lease check


class DefectWriter:
    def __init__(
        self,
        ddb: Any,
        tables: store.Tables,
        worker_id: str,
        *,
        ttl_days: int,
        max_buffered: int = 10_000,
        on_written: Callable[[Defect], None] | None = None,
        live_interval_s: float = LIVE_INTERVAL_S,
        on_event_written: Callable[[Event], None] | None = None,
    ) -> None:
        self.ddb, self.tables, self.worker_id = ddb, tables, worker_id
        self.ttl_days, self.max_buffered = ttl_days, max_buffered
        self.on_written = on_written
        self.on_event_written = on_event_written
        self._pending: dict[str, dict[str, Defect]] = {}
        self._evidence: dict[tuple[str, str], dict[str, Any]] = {}  # written with its defect
        self._fences: dict[str, int] = {}
        self.written = 0
        self.dropped = 0
        # A store that does not answer is left alone for 0.4 s, doubling to 10 s (no jitter: one
        # writer per worker); flushes meanwhile return at once and the records stay buffered.
        self._backoff = Backoff(base_s=0.4, cap_s=10.0, jitter=False)
        self.live_interval_s = live_interval_s
        self._live: dict[str, dict[str, Any]] = {}  # the newest picture offered, per stream
        self._live_at: dict[str, float] = {}  # monotonic time of each stream's last live write
        self.live_written = 0
        self._events: dict[str, dict[str, Event]] = {}  # cue events (rare), fenced like defects
        self.events_written = 0

    def fence(self, stream_id: str, counter: int) -> None:
        """Writes for ``stream_id`` carry this lease counter from now on."""
        self._fences[stream_id] = counter

    def submit(self, defect: Defect, evidence: dict[str, Any] | None = None) -> None:
        """Queue a record and its evidence item, written with it (event-loop thread only)."""
        if evidence is not None:
            self._evidence[(defect.stream_id, defect.defect_id)] = evidence
        per_stream = self._pending.setdefault(defect.stream_id, {})
        per_stream[defect.defect_id] = defect
        if sum(len(v) for v in self._pending.values()) > self.max_buffered:
            oldest_stream = max(self._pending, key=lambda s: len(self._pending[s]))
            victim = next(iter(self._pending[oldest_stream]))
            self._pending[oldest_stream].pop(victim)
            self.dropped += 1
            log.error("defect buffer full (%d): dropped %s/%s", self.max_buffered, oldest_stream, victim)

    def submit_event(self, event: Event) -> None:
        """Queue an event (event-loop thread only); beyond ``max_buffered`` the newest is dropped
        (the session already bounds their rate: worker/cue_events.py)."""
        if sum(len(v) for v in self._events.values()) >= self.max_buffered:
            self.dropped += 1
            return
        self._events.setdefault(event.stream_id, {})[event.event_id] = event

    async def _flush_events(self, only: str | None) -> bool:
        """Write the buffered events, up to 99 a stream per transaction; False: retry later."""
        for stream_id in [only] if only is not None else list(self._events):
            events = self._events.get(stream_id)
            if not events:
                self._events.pop(stream_id, None)
                continue
            counter = self._fences.get(stream_id)
            if counter is None:  # not ours (any more): the new owner reports its own reading
                self.dropped += len(events)
                del self._events[stream_id]
                continue
            batch = list(events.values())[:MAX_PER_TRANSACTION]
            now = time.time()
            items = [store.event_item(e, ttl_days=self.ttl_days, now=now) for e in batch]
            request = store.fenced_defect_writes(
                self.tables, stream_id, worker_id=self.worker_id, counter=counter, items=items
            )
            try:
                await call(self.ddb.transact_write_items, **request)
            except aws.ConflictError:
                log.warning("lease on %s lost: %d events not written (fenced)", stream_id, len(events))
                self.dropped += len(events)
                self._events.pop(stream_id, None)
                continue
            except aws.AvmonError as exc:
                log.warning("event store unavailable (%s): %d events kept", exc, len(events))
                return False
            for event in batch:
                events.pop(event.event_id, None)
                if self.on_event_written is not None:
                    self.on_event_written(event)
            self.events_written += len(batch)
        return True

    def offer_live(self, stream_id: str, picture: dict[str, Any]) -> None:
        """The stream's newest live picture (event-loop thread only); replaces an unwritten one."""
        self._live[stream_id] = picture

    async def write_live(self) -> int:
        """Write the live pictures that are due; how many were written."""
        if self._backoff.waiting:
            return 0
        written = 0
        for stream_id, picture in list(self._live.items()):
            if self._fences.get(stream_id, -1) < 0:  # not ours (any more)
                del self._live[stream_id]
                self._live_at.pop(stream_id, None)
                continue
            now = time.monotonic()
            if now - self._live_at.get(stream_id, -math.inf) < self.live_interval_s:
                continue
            del self._live[stream_id]
            self._live_at[stream_id] = now
            request = store.put_live_picture(self.tables, stream_id, picture, now=time.time())
            try:
                await call(self.ddb.put_item, **request)
            except aws.AvmonError as exc:
                log.debug("live picture of %s not written: %s", stream_id, exc)
                continue
            written += 1
        self.live_written += written
        return written

    @property
    def buffered(self) -> int:
        """Records not yet written: defects and events."""
        return sum(len(v) for v in self._pending.values()) + sum(len(v) for v in self._events.values())

    def pending_for(self, stream_id: str) -> int:
        return len(self._pending.get(stream_id, {})) + len(self._events.get(stream_id, {}))

    async def flush(self, only: str | None = None) -> bool:
        """Write what is buffered (or only one stream's). True when nothing is left to write."""
        if self._backoff.waiting and only is None:
            return False
        for stream_id in [only] if only is not None else list(self._pending):
            records = self._pending.get(stream_id)
            if not records:
                self._pending.pop(stream_id, None)
                continue
            counter = self._fences.get(stream_id)
            if counter is None:
                log.error("no lease for %s: %d defect records dropped", stream_id, len(records))
                self.dropped += len(records)
                del self._pending[stream_id]
                continue
            if not await self._write_stream(stream_id, counter, records):
                return False
        if not await self._flush_events(only):
            return False
        return not any(self._pending.values()) and not any(self._events.values())

    async def _write_stream(self, stream_id: str, counter: int, records: dict[str, Defect]) -> bool:
        batch = list(records.values())[:MAX_PER_TRANSACTION]
        now = time.time()
        items = [
            store.defect_item(
                d, ttl_days=self.ttl_days, now=now, evidence=self._evidence.get((stream_id, d.defect_id))
            )
            for d in batch
        ]
        request = store.fenced_defect_writes(
            self.tables, stream_id, worker_id=self.worker_id, counter=counter, items=items
        )
        try:
            await call(self.ddb.transact_write_items, **request)
        except aws.ConflictError:
            log.warning("lease on %s lost: %d defect records not written (fenced)", stream_id, len(records))
            self.dropped += len(records)
            self._pending.pop(stream_id, None)
            self._evidence = {k: v for k, v in self._evidence.items() if k[0] != stream_id}
            return True
        except aws.AvmonError as exc:
            delay = self._backoff.failed()
            log.warning(
                "defect store unavailable (%s): %d buffered, retry in %.1f s", exc, self.buffered, delay
            )
            return False
        self._backoff.succeeded()
        for defect in batch:
            if records.get(defect.defect_id) is defect:  # not superseded meanwhile
                del records[defect.defect_id]
                if defect.end_s is not None:  # final: its evidence is stored
                    self._evidence.pop((stream_id, defect.defect_id), None)
            if self.on_written is not None:
                self.on_written(defect)
        self.written += len(batch)
        return True

    async def run(self, interval_s: float, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.flush()
            await self.write_live()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
