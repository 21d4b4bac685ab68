"""Defect notifications: signed webhook POSTs and SNS messages, grouped into incidents, no storms.

The worker feeds every defect record the sink has durably written (``DefectWriter.on_written``)
to :meth:`Notifier.submit` (or the awaitable :meth:`Notifier.defect_written`). Both return at once:
delivery happens in background tasks of the same event loop, so a slow or dead receiver never
holds up the sink or the decode threads.

Events
------
* ``defect.opened``: the first record of a ``defect_id`` (an open record, ``end_s`` null).
* ``defect.closed``: its close record. A defect that arrives already closed (it opened and closed
  between two sink flushes) gives ``defect.opened`` and then ``defect.closed``. Each
  ``(defect_id, event)`` is sent once, however often the sink writes the record.

Suppression
-----------
* Hysteresis: a close is held for ``min_gap_s`` (10 s) before it is sent. If a defect of the same
  stream and type opens meanwhile and starts less than ``min_gap_s`` (media time) after the held
  one ended, it is *folded* into it: no ``defect.opened`` for it, and the eventual single
  ``defect.closed`` (under the first defect's ``defect_id``) carries ``flaps`` (how many
  re-occurrences were folded), ``folded_defect_ids``, and ``end_s``/``end_at`` of the last one.
  A flapping detector therefore gives one open/close pair per episode. A same-type defect that
  starts later than that releases the held close first.
* Incidents: defects of one stream whose ``start_s`` lie within ``group_window_s`` (2 s, media
  time) of an incident's first defect belong to that incident (``incident_id`` =
  ``"inc-" + first defect_id``: unique within the stream, like defect ids, and deterministic, so
  another worker reading the same defects names it the same; a defect that joins an incident
  whose defects have all closed re-opens it). Its ``title`` is ``"feed lost"`` when it holds
  both ``black`` and ``silence``, else its types joined by ``" + "`` (``"black + freeze"``,
  ``"silence"``). It is closed once every defect in it has been notified closed.
* Coalescing: events of one incident and one kind that are produced within ``coalesce_s``
  (1 s, wall clock) of the first go out in one message, so black + silence of a lost feed arrive
  as one POST with two events (both detectors need the same 2 s, so their records come within a
  sink flush or two of each other). A defect that joins the incident later gets its own message,
  with the same ``incident_id`` and the updated title.

Body (the same JSON for webhooks and as the SNS ``Message``)
-------------------------------------------------------------
::

    {
      "version": 1,
      "event": "defect.opened" | "defect.closed",   # every event in one body is of this kind
      "stream_id": "...",
      "created_at": "2026-01-01T00:00:00.000Z",     # when this message was formed
      "incident": {
        "incident_id": "inc-000000012.480-black",
        "stream_id": "...",
        "title": "feed lost",
        "state": "open" | "closed",
        "types": ["black", "silence"],
        "defect_ids": ["000000012.480-black", "000000012.520-silence"],
        "start_s": 12.48, "start_at": "...",
        "end_s": null | 30.1, "end_at": null | "..."      # set when closed
      },
      "events": [
        {
          "event_id": "000000012.480-black/defect.opened",   # stable: dedupe on it
          "event": "defect.opened",
          "incident_id": "inc-000000012.480-black",
          "defect": { ...the defect record, DESIGN.md §4 (end_s null in an opened event)... },
          "flaps": 0,
          "folded_defect_ids": []
        }
      ]
    }

Cues (``cue``, SCTE-35 events, ``GET /streams/{id}/events``) go to the same targets, one
message each as it is written, neither grouped nor held::

    {"version": 1, "event": "cue", "stream_id": "...", "created_at": "...",
     "cue": { ...the event record: type, kind, start_s, splice_s, duration_s, ... }}

Webhooks
--------
``POST`` with ``Content-Type: application/json``, ``User-Agent: avmon-notify/1``, and

* ``X-Avmon-Event``: the body's ``event``;
* ``X-Avmon-Delivery``: a unique id of this message to this target, the same on every retry
  (receivers dedupe on it, or on ``event_id`` across workers);
* ``X-Avmon-Timestamp``: Unix seconds of this attempt;
* ``X-Avmon-Signature``: ``sha256=`` + hex HMAC-SHA256, keyed with the shared secret, of
  ``"<timestamp>.<raw body>"`` (omitted when no secret is configured).

A receiver verifies with :func:`verify_signature`, or by hand: compute
``hmac.new(secret, f"{ts}.".encode() + raw_body, "sha256").hexdigest()`` over the raw bytes it
received, compare with ``hmac.compare_digest``, and refuse timestamps more than 5 minutes away
from its clock (a replayed request keeps its old timestamp, which the signature covers).

Delivery: a timeout per attempt (``timeout_s``); retries on connection errors, timeouts, 5xx and
429, with capped exponential backoff and jitter (``Retry-After`` honoured up to the cap), at most
``max_attempts`` attempts; no retry on any other status (a 4xx will not change by asking again;
redirects are not followed, so a receiver cannot bounce the worker elsewhere). Messages to one
target go one at a time in order (an opened before its closed); targets are independent. The
queue is bounded (``max_queue`` messages over all targets): when full, the oldest waiting message
is dropped, counted (``dropped``) and logged.

SNS: ``Publish`` to the topic with the body as ``Message`` and the ``MessageAttributes``
``event``, ``stream_id``, ``incident_id`` and ``title`` (String), for subscription filter
policies. Standard topics only (a FIFO topic would need a ``MessageGroupId``). An SQS subscriber
with ``RawMessageDelivery`` gets the body as the SQS message body; without it, the body is the
``Message`` string inside SNS's JSON envelope.

Delivery log: every attempt, and every drop, is reported as a :class:`DeliveryRecord` to the
injected async ``record`` callback (awaited on the target's lane: keep it quick).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shared import aws
from shared.models import Defect, DefectType, Event, utc_now_iso

log = logging.getLogger("avmon.worker.notify")

OPENED = "defect.opened"
CLOSED = "defect.closed"
CUE = "cue"
BODY_VERSION = 1
USER_AGENT = "avmon-notify/1"
SIGNATURE_TOLERANCE_S = 300.0
_SEEN_MAX = 50_000  # (defect_id, event) pairs remembered for dedupe: hours of a busy worker
_INCIDENTS_PER_STREAM = 32
_TYPE_ORDER = {t.value: i for i, t in enumerate(DefectType)}


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"  # this attempt failed; another will follow
    FAILED = "failed"  # the last attempt, or one not worth repeating, failed
    DROPPED = "dropped"  # never attempted (or abandoned): the queue was full, or the worker stopped


# ------------------------------------------------------------------ public values


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


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One attempt to deliver one message to one target (or its drop), for the delivery log.

    Suggested storage: partition ``stream_id``, sort ``f"{at}#{delivery_id}#{attempt}"``, TTL.
    """

    delivery_id: str
    stream_id: str
    target: str  # URL without credentials, query or fragment; or the topic ARN
    kind: str  # "webhook" or "sns"
    event: str
    incident_id: str
    defect_ids: tuple[str, ...]
    attempt: int  # 1-based; 0 when dropped before the first attempt
    outcome: Outcome
    status: int | None = None  # the HTTP status (SNS: 200 on success)
    error: str | None = None
    duration_ms: float | None = None
    at: str = field(default_factory=utc_now_iso)  # ISO 8601 UTC

    def to_item(self) -> dict[str, Any]:
        """JSON-safe dict, without null fields."""
        item: dict[str, Any] = {
            "delivery_id": self.delivery_id,
            "stream_id": self.stream_id,
            "target": self.target,
            "kind": self.kind,
            "event": self.event,
            "incident_id": self.incident_id,
            "defect_ids": list(self.defect_ids),
            "attempt": self.attempt,
            "outcome": self.outcome.value,
            "status": self.status,
            "error": self.error,
            "duration_ms": None if self.duration_ms is None else round(self.duration_ms, 1),
            "at": self.at,
        }
        return {k: v for k, v in item.items() if v is not None}


RecordCallback = Callable[[DeliveryRecord], Awaitable[None]]


def redact_target(url: str) -> str:
    """``scheme://host[:port]/path``: no user info (credentials), query (tokens) or fragment."""
    if url.startswith("arn:"):
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Avmon-Signature`` value: ``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches the raw body and the timestamp is recent."""
    try:
        ts = float(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def incident_title(types: Iterable[str]) -> str:
    """``feed lost`` for black with silence; otherwise the types in a fixed order, joined."""
    present = set(types)
    if {DefectType.BLACK.value, DefectType.SILENCE.value} <= present:
        return "feed lost"
    return " + ".join(sorted(present, key=lambda t: (_TYPE_ORDER.get(t, len(_TYPE_ORDER)), t)))


# ------------------------------------------------------------------ internal state


@dataclass(eq=False)
class _Incident:
    incident_id: str
    stream_id: str
    anchor_s: float  # start_s of its first defect
    chains: list[_Chain] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        first = min(self.chains, key=lambda c: c.first.start_s)
        closed = all(c.released for c in self.chains)
        last = max(self.chains, key=lambda c: c.end_s or 0.0) if closed else None
        return {
            "incident_id": self.incident_id,
            "stream_id": self.stream_id,
            "title": incident_title(c.first.type.value for c in self.chains),
            "state": "closed" if closed else "open",
            "types": sorted({c.first.type.value for c in self.chains}, key=lambda t: _TYPE_ORDER.get(t, 99)),
            "defect_ids": [c.first.defect_id for c in self.chains],
            "start_s": first.first.start_s,
            "start_at": first.first.start_at,
            "end_s": None if last is None else last.end_s,
            "end_at": None if last is None or last.last_close is None else last.last_close.end_at,
        }


@dataclass(eq=False)
class _Chain:
    """A notified defect, with the re-occurrences folded into it (a flapping episode)."""

    first: Defect  # its open record (end_s None)
    incident: _Incident
    members: list[str]  # defect ids: the first, then the folded ones
    open_members: set[str]
    own_close: Defect | None = None  # the first defect's close record
    last_close: Defect | None = None  # the latest-ending close record of any member
    held_until: float | None = None  # monotonic deadline while the close is held
    released: bool = False
    acknowledged: bool = False  # an operator took it: no more events for it

    @property
    def key(self) -> tuple[str, str]:
        return self.first.stream_id, self.first.type.value

    @property
    def end_s(self) -> float | None:
        return None if self.last_close is None else self.last_close.end_s


@dataclass(eq=False)
class _Batch:
    incident: _Incident
    event: str
    due: float
    seq: int
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class _Delivery:
    seq: int
    delivery_id: str
    kind: str  # "webhook" or "sns"
    target: str  # the full URL (never logged) or the topic ARN
    stream_id: str
    event: str
    incident_id: str
    title: str
    defect_ids: tuple[str, ...]
    body: bytes


@dataclass(eq=False)
class _Lane:
    """The messages for one target, sent in order by one task."""

    key: tuple[str, str]  # (kind, target)
    queue: deque[_Delivery] = field(default_factory=deque)
    current: _Delivery | None = None  # being attempted (or waiting for its next attempt)
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class _Result:
    status: int | None
    error: str | None
    retryable: bool
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


# ------------------------------------------------------------------ the notifier


class Notifier:
    """Turns written defect records into notifications (see the module docstring).

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
        self.sns, self._http, self._owns_http = sns, http, http is None
        self.record, self.url_check = record, url_check
        self.group_window_s, self.coalesce_s, self.min_gap_s = group_window_s, coalesce_s, min_gap_s
        self.max_queue, self.max_attempts = max(1, max_queue), max(1, max_attempts)
        self.backoff_s, self.backoff_max_s, self.timeout_s = backoff_s, backoff_max_s, timeout_s
        self.clock = clock
        self._warned_unsigned = False  # said once, when a webhook is first due
        # Counters (for metrics).
        self.acknowledged = 0  # episodes silenced by an acknowledgement
        self.events = 0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.folded = 0
        # Defect ids are unique within a stream only: state is keyed by (stream_id, defect_id).
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._targets: dict[str, Targets] = {}
        self._chain_of: dict[tuple[str, str], _Chain] = {}
        self._held: dict[tuple[str, str], list[_Chain]] = {}
        self._incidents: dict[str, deque[_Incident]] = {}
        self._outbox: dict[tuple[str, str, str], _Batch] = {}  # (stream, incident, event)
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._queued = 0
        self._seq = 0
        self._wake = asyncio.Event()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
        did = defect.defect_id
        if self._first_time(defect.stream_id, did, OPENED):
            opened = (
                defect if defect.end_s is None else defect.model_copy(update={"end_s": None, "end_at": None})
            )
            self._on_open(opened)
        if defect.end_s is not None and self._first_time(defect.stream_id, did, CLOSED):
            self._on_close(defect)
        self._wake.set()

    def end_stream(self, stream_id: str) -> None:
        """The stream's session is over and its records are written: send its held closes now
        (nothing can re-open them) instead of after ``min_gap_s``."""
        for chains in list(self._held.values()):
            for chain in list(chains):
                if chain.first.stream_id == stream_id:
                    self._release_close(chain)
        incidents = self._incidents.get(stream_id)
        if incidents is not None and all(c.released for inc in incidents for c in inc.chains):
            del self._incidents[stream_id]
        self._wake.set()

    def _first_time(self, stream_id: str, defect_id: str, event: str) -> bool:
        key = (stream_id, defect_id, event)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def _on_open(self, defect: Defect) -> None:
        key = (defect.stream_id, defect.type.value)
        held = self._held.get(key)
        if held:
            chain = max(held, key=lambda c: c.end_s or 0.0)
            if defect.start_s - (chain.end_s or 0.0) < self.min_gap_s:
                # The same trouble again before it was declared over: fold, say nothing yet.
                held.remove(chain)
                if not held:
                    del self._held[key]
                chain.held_until = None
                chain.members.append(defect.defect_id)
                chain.open_members.add(defect.defect_id)
                self._chain_of[(defect.stream_id, defect.defect_id)] = chain
                self.folded += 1
                log.info(
                    "%s %s re-opened %.1f s after %s closed: folded",
                    defect.stream_id,
                    defect.defect_id,
                    defect.start_s - (chain.end_s or 0.0),
                    chain.first.defect_id,
                )
                return
            for earlier in list(held):  # a separate occurrence: the earlier episodes are over
                self._release_close(earlier)
        incident = self._incident_for(defect)
        chain = _Chain(
            first=defect,
            incident=incident,
            members=[defect.defect_id],
            open_members={defect.defect_id},
        )
        incident.chains.append(chain)
        self._chain_of[(defect.stream_id, defect.defect_id)] = chain
        self._add_event(chain, OPENED, defect)

    def _incident_for(self, defect: Defect) -> _Incident:
        incidents = self._incidents.setdefault(defect.stream_id, deque(maxlen=_INCIDENTS_PER_STREAM))
        for incident in reversed(incidents):
            if abs(defect.start_s - incident.anchor_s) <= self.group_window_s:
                return incident
        incident = _Incident(f"inc-{defect.defect_id}", defect.stream_id, defect.start_s)
        incidents.append(incident)
        return incident

    def _on_close(self, defect: Defect) -> None:
        chain = self._chain_of.get((defect.stream_id, defect.defect_id))
        if chain is None:  # only if its open fell out of the dedupe memory long ago
            log.warning("close of unknown defect %s/%s ignored", defect.stream_id, defect.defect_id)
            return
        chain.open_members.discard(defect.defect_id)
        if defect.defect_id == chain.first.defect_id:
            chain.own_close = defect
        if chain.last_close is None or (defect.end_s or 0.0) >= (chain.last_close.end_s or 0.0):
            chain.last_close = defect
        if chain.open_members:
            return
        if self.min_gap_s <= 0:
            self._release_close(chain)
        else:
            chain.held_until = self.clock() + self.min_gap_s
            self._held.setdefault(chain.key, []).append(chain)

    def _release_close(self, chain: _Chain) -> None:
        held = self._held.get(chain.key)
        if held is not None and chain in held:
            held.remove(chain)
            if not held:
                del self._held[chain.key]
        chain.held_until = None
        chain.released = True
        for member in chain.members:
            self._chain_of.pop((chain.first.stream_id, member), None)
        last = chain.last_close
        record = chain.own_close or last
        if record is None:  # not reachable: a chain is released only once all members closed
            return
        if last is not None and last is not record:
            record = record.model_copy(update={"end_s": last.end_s, "end_at": last.end_at})
        self._add_event(chain, CLOSED, record)

    def acknowledge(self, stream_id: str, defect_ids: Iterable[str]) -> None:
        """Operators acknowledged these defects (the API records who and when): their episodes
        send nothing more, their close and any re-occurrence folded into them included."""
        for defect_id in defect_ids:
            chain = self._chain_of.get((stream_id, defect_id))
            if chain is not None and not chain.acknowledged:
                chain.acknowledged = True
                self.acknowledged += 1

    def _add_event(self, chain: _Chain, event: str, defect: Defect) -> None:
        if chain.acknowledged:
            return
        self.events += 1
        incident = chain.incident
        key = (incident.stream_id, incident.incident_id, event)
        batch = self._outbox.get(key)
        if batch is None:
            self._seq += 1
            batch = _Batch(incident, event, due=self.clock() + self.coalesce_s, seq=self._seq)
            self._outbox[key] = batch
        batch.events.append(
            {
                "event_id": f"{chain.first.defect_id}/{event}",
                "event": event,
                "incident_id": incident.incident_id,
                "defect": defect.model_dump(mode="json"),
                "flaps": len(chain.members) - 1 if event == CLOSED else 0,
                "folded_defect_ids": chain.members[1:] if event == CLOSED else [],
            }
        )
        self._wake.set()

    # -------------------------------------------------------------- timing

    def _release_due(self, *, everything: bool = False) -> None:
        now = self.clock()
        for chains in list(self._held.values()):
            for chain in list(chains):
                if everything or (chain.held_until is not None and chain.held_until <= now):
                    self._release_close(chain)
        for batch in sorted(self._outbox.values(), key=lambda b: b.seq):
            if everything or batch.due <= now:
                del self._outbox[(batch.incident.stream_id, batch.incident.incident_id, batch.event)]
                self._dispatch(batch)

    def _next_deadline(self) -> float | None:
        times = [b.due for b in self._outbox.values()]
        times += [c.held_until for cs in self._held.values() for c in cs if c.held_until is not None]
        return min(times, default=None)

    async def run(self, stopping: asyncio.Event) -> None:
        """Release coalesced and held events when due, until ``stopping`` is set. Deliveries
        run in their own tasks; after ``stopping``, :meth:`drain` sends what is left."""
        while not stopping.is_set():
            self._wake.clear()
            self._release_due()
            deadline = self._next_deadline()
            # Wake for new events, due batches, and at least 4×/s to notice ``stopping``.
            timeout = 0.25 if deadline is None else min(0.25, max(0.0, deadline - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def drain(self, timeout_s: float) -> bool:
        """Send everything now (held closes and coalescing batches included) and wait up to
        ``timeout_s`` for the deliveries to finish. True when nothing is left."""
        self._release_due(everything=True)
        deadline = self.clock() + timeout_s
        while True:
            tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
            left = deadline - self.clock()
            if not tasks or left <= 0:
                break
            await asyncio.wait(tasks, timeout=left)
        if self._side_tasks:
            await asyncio.wait(list(self._side_tasks), timeout=max(0.05, deadline - self.clock()))
        return self.pending == 0

    @property
    def pending(self) -> int:
        """Messages waiting or being delivered, and events not yet formed into messages."""
        busy = sum(1 for lane in self._lanes.values() if lane.task is not None)
        return self._queued + busy + len(self._outbox) + sum(len(c) for c in self._held.values())

    async def aclose(self) -> None:
        """Stop delivering (what is still queued is dropped and counted) and close the session."""
        self._closed = True
        for lane in self._lanes.values():
            while lane.queue:
                self._queued -= 1
                self._drop(lane.queue.popleft(), "stopped")
            if lane.task is not None:
                lane.task.cancel()
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._side_tasks:
            await asyncio.gather(*self._side_tasks, return_exceptions=True)
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    # -------------------------------------------------------------- delivery

    def _dispatch(self, batch: _Batch) -> None:
        incident = batch.incident
        snapshot = incident.snapshot()
        self._send(
            self._targets.get(incident.stream_id, Targets()),
            {"incident": snapshot, "events": batch.events},
            stream_id=incident.stream_id,
            event=batch.event,
            incident_id=incident.incident_id,
            title=str(snapshot["title"]),
            defect_ids=tuple(e["defect"]["defect_id"] for e in batch.events),
        )

    def submit_cue(self, event: Event, targets: Targets) -> None:
        """A written cue event (SCTE-35, worker/cue_events.py): one message to every target.
        Event-loop only, like :meth:`submit`; the sink writes each event once (its id is stable)."""
        self._send(
            targets,
            {"cue": event.model_dump(mode="json")},
            stream_id=event.stream_id,
            event=CUE,
            incident_id=event.event_id,
            title=f"{event.type} {event.kind or ''}".strip(),
            defect_ids=(),
        )

    def _send(
        self,
        targets: Targets,
        content: dict[str, Any],
        *,
        stream_id: str,
        event: str,
        incident_id: str,
        title: str,
        defect_ids: tuple[str, ...],
    ) -> None:
        """One message (the common head, then ``content``) queued for every target."""
        head = {"version": BODY_VERSION, "event": event, "stream_id": stream_id, "created_at": utc_now_iso()}
        body = json.dumps({**head, **content}, separators=(",", ":")).encode()
        kinds = [("webhook", url) for url in targets.webhook_urls]
        if targets.sns_topic_arn:
            if self.sns is None:
                log.error("SNS topic set for %s but no SNS client given: not published", stream_id)
            else:
                kinds.append(("sns", targets.sns_topic_arn))
        for kind, target in kinds:
            self._seq += 1
            self._enqueue(
                _Delivery(
                    seq=self._seq,
                    delivery_id=uuid.uuid4().hex,
                    kind=kind,
                    target=target,
                    stream_id=stream_id,
                    event=event,
                    incident_id=incident_id,
                    title=title,
                    defect_ids=defect_ids,
                    body=body,
                )
            )

    def _enqueue(self, delivery: _Delivery) -> None:
        if self._closed:
            self._drop(delivery, "stopped")
            return
        key = (delivery.kind, delivery.target)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
        lane.queue.append(delivery)
        self._queued += 1
        if self._queued > self.max_queue:
            oldest = min(
                (lane for lane in self._lanes.values() if lane.queue), key=lambda ln: ln.queue[0].seq
            )
            self._queued -= 1
            self._drop(oldest.queue.popleft(), "queue full")
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._run_lane(lane))

    def _drop(self, delivery: _Delivery, why: str) -> None:
        self.dropped += 1
        log.warning(
            "notification dropped (%s; %d so far): %s %s of %s to %s",
            why,
            self.dropped,
            delivery.event,
            delivery.incident_id,
            delivery.stream_id,
            redact_target(delivery.target),
        )
        self._spawn(self._record(delivery, 0, Outcome.DROPPED, _Result(None, why, False), None))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a side job (a delivery-log write for a drop) without making the caller wait."""
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop: nowhere to record into
            coro.close()
            return
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            while lane.queue:
                lane.current = lane.queue.popleft()
                self._queued -= 1
                await self._deliver(lane.current)
                lane.current = None
        finally:
            if lane.current is not None:  # cancelled by aclose() mid-delivery
                self._drop(lane.current, "stopped")
                lane.current = None
            lane.task = None
            if not lane.queue and self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]  # per-stream webhooks come and go: do not keep idle lanes

    async def _deliver(self, delivery: _Delivery) -> None:
        for attempt in range(1, self.max_attempts + 1):
            started = self.clock()
            if delivery.kind == "sns":
                result = await self._publish(delivery)
            else:
                result = await self._post(delivery)
            final = result.ok or not result.retryable or attempt == self.max_attempts
            outcome = Outcome.DELIVERED if result.ok else Outcome.FAILED if final else Outcome.RETRYING
            await self._record(delivery, attempt, outcome, result, (self.clock() - started) * 1000.0)
            if result.ok:
                self.delivered += 1
                return
            if final:
                self.failed += 1
                log.warning(
                    "notification %s %s of %s to %s failed after %d attempt(s): %s",
                    delivery.event,
                    delivery.incident_id,
                    delivery.stream_id,
                    redact_target(delivery.target),
                    attempt,
                    result.error or result.status,
                )
                return
            # Capped exponential backoff with jitter (half to full), so that a receiver coming
            # back is not hit by every worker at once; Retry-After when the receiver says.
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
            delay = random.uniform(delay / 2, delay)
            if result.retry_after is not None:
                delay = min(self.backoff_max_s, max(delay, result.retry_after))
            await asyncio.sleep(delay)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._http

    async def _post(self, delivery: _Delivery) -> _Result:
        if self.url_check is not None:
            try:
                await asyncio.to_thread(self.url_check, delivery.target)
            except ValueError as exc:
                return _Result(None, f"refused: {exc}", retryable=False)
            except OSError as exc:
                return _Result(None, f"{type(exc).__name__}: {exc}", retryable=True)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Avmon-Event": delivery.event,
            "X-Avmon-Delivery": delivery.delivery_id,
            "X-Avmon-Timestamp": timestamp,
        }
        if self.secret:
            headers["X-Avmon-Signature"] = sign(self.secret, timestamp, delivery.body)
        try:
            async with self._session().post(
                delivery.target,
                data=delivery.body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except aiohttp.InvalidURL as exc:
            return _Result(None, f"invalid URL: {exc}", retryable=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _Result(None, f"{type(exc).__name__}: {exc}"[:300], retryable=True)
        retryable = status == 429 or status >= 500
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return _Result(status, error, retryable, retry_after if retryable else None)

    async def _publish(self, delivery: _Delivery) -> _Result:
        attributes = {
            "event": delivery.event,
            "stream_id": delivery.stream_id,
            "incident_id": delivery.incident_id,
            "title": delivery.title,
        }
        # Email subscribers see the subject: ASCII, no line breaks, under 100 characters.
        subject = f"avmon {delivery.stream_id}: {delivery.title} {delivery.event.split('.')[-1]}"
        subject = subject.encode("ascii", "replace").decode()[:99]
        if self.sns is None:  # _dispatch does not queue SNS deliveries without a client
            return _Result(None, "no SNS client", retryable=False)
        try:
            await self.sns.publish(
                TopicArn=delivery.target,
                Message=delivery.body.decode(),
                Subject=subject,
                MessageAttributes={
                    k: {"DataType": "String", "StringValue": v} for k, v in attributes.items() if v
                },
            )
        except Exception as exc:  # every botocore failure is mapped; the lane must go on
            err = aws.map_error(exc)
            return _Result(None, f"{type(err).__name__}: {err}"[:300], isinstance(err, aws.RetryableError))
        return _Result(200, None, False)

    async def _record(
        self,
        delivery: _Delivery,
        attempt: int,
        outcome: Outcome,
        result: _Result,
        duration_ms: float | None,
    ) -> None:
        if self.record is None:
            return
        entry = DeliveryRecord(
            delivery_id=delivery.delivery_id,
            stream_id=delivery.stream_id,
            target=redact_target(delivery.target),
            kind=delivery.kind,
            event=delivery.event,
            incident_id=delivery.incident_id,
            defect_ids=delivery.defect_ids,
            attempt=attempt,
            outcome=outcome,
            status=result.status,
            error=result.error,
            duration_ms=duration_ms,
        )
        try:
            await self.record(entry)
        except Exception:  # the log is a convenience; delivery must not fail because of it
            log.exception("delivery log write failed for %s", delivery.delivery_id)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only; dates are rare here)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
