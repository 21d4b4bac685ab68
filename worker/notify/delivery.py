"""Delivering one message to one target: the webhook POST, retries, and the delivery log.

Delivery: a timeout per attempt (``timeout_s``); retries on connection errors, timeouts, 5xx and
429, with capped exponential backoff and jitter (``Retry-After`` honoured up to the cap:
``shared/retry.py``), at most ``max_attempts`` attempts; no retry on any other status (a 4xx will
not change by asking again; redirects are not followed, so a receiver cannot bounce the worker
elsewhere). The SNS transport is :mod:`worker.notify.sns`; the caller says which one a delivery
takes.

Delivery log: every attempt, and every drop, is reported as a :class:`DeliveryRecord` to the
injected async ``record`` callback (awaited on the target's lane: keep it quick).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shared.models import utc_now_iso
from shared.retry import backoff_delay
from worker.notify.messages import Message
from worker.notify.signing import USER_AGENT, webhook_headers

log = logging.getLogger("avmon.worker.notify")


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"  # this attempt failed; another will follow
    FAILED = "failed"  # the last attempt, or one not worth repeating, failed
    DROPPED = "dropped"  # never attempted (or abandoned): the queue was full, or the worker stopped


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


@dataclass(eq=False)
class Delivery:
    """One message to one target."""

    seq: int  # order of queueing, over all targets
    delivery_id: str  # X-Avmon-Delivery: the same on every attempt
    kind: str  # "webhook" or "sns"
    target: str  # the full URL (never logged) or the topic ARN
    message: Message


@dataclass(frozen=True, slots=True)
class Result:
    """What one attempt came to."""

    status: int | None
    error: str | None
    retryable: bool
    retry_after: float | None = None  # seconds the receiver asked to wait

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


Transport = Callable[[Delivery], Awaitable[Result]]


class Deliverer:
    """Attempts deliveries until one succeeds or retrying cannot help, logging every attempt.

    ``http`` an aiohttp session (made and owned here when not given: call :meth:`aclose`).
    ``url_check`` is called (in a thread: it may resolve DNS) before each webhook attempt; a
    ``ValueError`` refuses the URL for good, an ``OSError`` counts as a connection failure.
    """

    def __init__(
        self,
        *,
        secret: bytes,
        http: aiohttp.ClientSession | None,
        record: RecordCallback | None,
        url_check: Callable[[str], None] | None,
        max_attempts: int,
        backoff_s: float,
        backoff_max_s: float,
        timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.secret = secret
        self._http, self._owns_http = http, http is None
        self.record, self.url_check = record, url_check
        self.max_attempts = max(1, max_attempts)
        self.backoff_s, self.backoff_max_s, self.timeout_s = backoff_s, backoff_max_s, timeout_s
        self.clock = clock
        self.delivered = 0
        self.failed = 0

    async def deliver(self, delivery: Delivery, send: Transport) -> None:
        """Attempt ``delivery`` with ``send`` (:meth:`post` or an SNS publish) and its retries."""
        message = delivery.message
        for attempt in range(1, self.max_attempts + 1):
            started = self.clock()
            result = await send(delivery)
            final = result.ok or not result.retryable or attempt == self.max_attempts
            outcome = Outcome.DELIVERED if result.ok else Outcome.FAILED if final else Outcome.RETRYING
            await self.report(delivery, attempt, outcome, result, (self.clock() - started) * 1000.0)
            if result.ok:
                self.delivered += 1
                return
            if final:
                self.failed += 1
                log.warning(
                    "notification %s %s of %s to %s failed after %d attempt(s): %s",
                    message.event,
                    message.incident_id,
                    message.stream_id,
                    redact_target(delivery.target),
                    attempt,
                    result.error or result.status,
                )
                return
            # Jittered so that a receiver coming back is not hit by every worker at once.
            await asyncio.sleep(
                backoff_delay(attempt, self.backoff_s, self.backoff_max_s, retry_after_s=result.retry_after)
            )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._http

    async def post(self, delivery: Delivery) -> Result:
        """One webhook attempt."""
        if self.url_check is not None:
            try:
                await asyncio.to_thread(self.url_check, delivery.target)
            except ValueError as exc:
                return Result(None, f"refused: {exc}", retryable=False)
            except OSError as exc:
                return Result(None, f"{type(exc).__name__}: {exc}", retryable=True)
        body = delivery.message.body
        headers = webhook_headers(
            event=delivery.message.event,
            delivery_id=delivery.delivery_id,
            body=body,
            secret=self.secret,
            timestamp=str(int(time.time())),
        )
        try:
            async with self._session().post(
                delivery.target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except aiohttp.InvalidURL as exc:
            return Result(None, f"invalid URL: {exc}", retryable=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Result(None, f"{type(exc).__name__}: {exc}"[:300], retryable=True)
        retryable = status == 429 or status >= 500
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return Result(status, error, retryable, retry_after if retryable else None)

    async def report(
        self,
        delivery: Delivery,
        attempt: int,
        outcome: Outcome,
        result: Result,
        duration_ms: float | None,
    ) -> None:
        """Report one attempt (or a drop: attempt 0) to the delivery log, if there is one."""
        if self.record is None:
            return
        message = delivery.message
        entry = DeliveryRecord(
            delivery_id=delivery.delivery_id,
            stream_id=message.stream_id,
            target=redact_target(delivery.target),
            kind=delivery.kind,
            event=message.event,
            incident_id=message.incident_id,
            defect_ids=message.defect_ids,
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

    async def aclose(self) -> None:
        """Close the HTTP session if it was made here."""
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only; dates are rare here)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
