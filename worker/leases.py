"""Stream leases in DynamoDB (DESIGN.md §2), after the Kinesis Client Library's model.

A claim is a conditional write that bumps ``lease_counter``; that value is the owner's fencing
token, checked by every renewal and every defect write. A renewal whose condition fails means
the lease was taken: the caller stops the stream at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared import aws, store
from shared.models import Desired, StreamStatus


@dataclass
class Lease:
    stream_id: str
    generation: int
    counter: int  # the fencing token
    url: str
    realtime: bool
    expires_at: float


class Renewal(StrEnum):
    HELD = "HELD"
    STOPPED = "STOPPED"  # desired=STOPPED: the user deleted the stream
    LOST = "LOST"  # someone else holds it now


async def call(fn: Any, **kwargs: Any) -> Any:
    try:
        return await fn(**kwargs)
    except Exception as exc:
        raise aws.map_error(exc) from exc


class LeaseTable:
    def __init__(self, ddb: Any, tables: store.Tables, worker_id: str, period_s: float) -> None:
        self.ddb, self.tables, self.worker_id, self.period_s = ddb, tables, worker_id, period_s

    async def claim(self, stream_id: str, generation: int) -> Lease | None:
        """The lease, or None when the stream is not ours to take (stale, duplicate, held)."""
        now = time.time()
        request = store.claim_lease(
            self.tables, stream_id, generation, worker_id=self.worker_id, now=now, period_s=self.period_s
        )
        try:
            item = store.unmarshal((await call(self.ddb.update_item, **request))["Attributes"])
        except aws.ConflictError:
            return None
        return Lease(
            stream_id=stream_id,
            generation=generation,
            counter=int(item["lease_counter"]),
            url=str(item["url"]),
            realtime=bool(item.get("realtime", False)),
            expires_at=now + self.period_s,
        )

    async def renew(
        self, lease: Lease, status: StreamStatus, figures: dict[str, float | int | None], reason: str | None
    ) -> Renewal:
        now = time.time()
        request = store.renew_lease(
            self.tables,
            lease.stream_id,
            worker_id=self.worker_id,
            counter=lease.counter,
            now=now,
            period_s=self.period_s,
            status=status,
            figures=figures,
            reason=reason,
        )
        try:
            item = store.unmarshal((await call(self.ddb.update_item, **request))["Attributes"])
        except aws.ConflictError:
            return Renewal.LOST
        lease.expires_at = now + self.period_s
        if item.get("desired") != Desired.RUNNING or int(item.get("generation", 0)) != lease.generation:
            return Renewal.STOPPED
        return Renewal.HELD

    async def release(
        self, lease: Lease, status: StreamStatus, *, finished: bool = False, reason: str | None = None
    ) -> bool:
        """Give the lease up; False if it was no longer ours."""
        request = store.release_lease(
            self.tables,
            lease.stream_id,
            worker_id=self.worker_id,
            counter=lease.counter,
            now=time.time(),
            status=status,
            finished=finished,
            reason=reason,
        )
        try:
            await call(self.ddb.update_item, **request)
        except aws.ConflictError:
            return False
        return True

    async def orphans(self, limit: int) -> list[tuple[str, int]]:
        """Streams that should run and whose lease lapsed: (stream_id, generation), at most ``limit``."""
        found: list[tuple[str, int]] = []
        start: store.Item | None = None
        while len(found) < limit:
            page = await call(
                self.ddb.scan, **store.scan_orphans(self.tables, now=time.time(), start_key=start)
            )
            for raw in page["Items"]:
                item = store.unmarshal(raw)
                found.append((str(item["stream_id"]), int(item["generation"])))
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        return found[:limit]
