"""Stream leases in DynamoDB (DESIGN.md §2), after the Kinesis Client Library's model.

A claim is a conditional write that bumps ``lease_counter``; that value is the owner's fencing
token, checked by every renewal and every defect write. A renewal whose condition fails means
the lease was taken: the caller stops the stream at once.
"""

from __future__ import annotations

import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared import aws, store
from shared.models import Desired, StreamStatus, chosen_detectors
from worker.timeline import Timeline


@dataclass
class Lease:
    stream_id: str
    generation: int
    counter: int  # the fencing token
    url: str
    realtime: bool
    expires_at: float
    webhook_url: str | None = None
    timeline: Timeline | None = None  # where its last owner left the stream's timeline
    acknowledged: frozenset[str] = frozenset()  # defect ids operators acknowledged (renewals say)
    loudness_profile: str = "ebu_r128"  # ebu_r128 or atsc_a85 (StreamSpec.loudness_profile)
    detectors: frozenset[str] | None = None  # the stream's profile or list; None: all registered
    detector_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # the stream's own


@dataclass(frozen=True)
class LeaseView:
    """A stream as the balancer sees it: ``owner`` is None when nobody holds a live lease."""

    stream_id: str
    generation: int
    owner: str | None
    counter: int


def plan_rebalance(views: list[LeaseView], me: str, live: AbstractSet[str] = frozenset()) -> LeaseView | None:
    """The one lease worth stealing now, if this worker holds less than its fair share.

    Fair share is ``ceil(held streams / workers)`` over the live workers (the registry's, plus
    every lease owner, plus this one). One steal per round, from the most loaded worker, and only
    while that worker is above the share: holdings converge without two workers trading a
    stream back and forth.
    """
    held: dict[str, list[LeaseView]] = {}
    for view in views:
        if view.owner is not None:
            held.setdefault(view.owner, []).append(view)
    workers = set(held) | set(live) | {me}
    share = -(-sum(len(v) for v in held.values()) // len(workers))
    mine = len(held.get(me, []))
    if not held or mine >= share:
        return None
    victim = max((w for w in held if w != me), key=lambda w: (len(held[w]), w), default=None)
    if victim is None or len(held[victim]) <= share or len(held[victim]) - mine < 2:
        return None
    return sorted(held[victim], key=lambda v: v.stream_id)[-1]


def needs_registry(views: list[LeaseView], me: str) -> bool:
    """Whether a balance round must read the registry of live workers: there are lapsed leases
    to adopt (their cap depends on how many workers share them), or some worker holds at least
    two streams more than this one (without that :func:`plan_rebalance` steals nothing, whatever
    the registry says). A balanced cluster's rounds skip that Scan: half of their requests."""
    held: dict[str, int] = {}
    for view in views:
        if view.owner is None:
            return True
        held[view.owner] = held.get(view.owner, 0) + 1
    mine = held.get(me, 0)
    return any(count - mine >= 2 for owner, count in held.items() if owner != me)


def adoption_limit(views: list[LeaseView], me: str, live: AbstractSet[str] = frozenset()) -> int:
    """How many lapsed leases to adopt in one scan: up to the fair share plus one.

    Without the cap the first worker to scan after a crash would take every orphan up to its
    capacity and the rebalancer would then have to move them again, restarting each stream.
    """
    held: dict[str, int] = {}
    for view in views:
        if view.owner is not None:
            held[view.owner] = held.get(view.owner, 0) + 1
    share = -(-len(views) // len(set(held) | set(live) | {me}))
    return max(1, share + 1 - held.get(me, 0))


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

    async def _acquire(
        self, request: store.Request, stream_id: str, generation: int, now: float
    ) -> Lease | None:
        """Send a claim or a steal; the lease it grants, or None if its condition failed."""
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
            webhook_url=item.get("webhook_url"),
            timeline=Timeline.from_item(item),
            loudness_profile=str(item.get("loudness_profile", "ebu_r128")),
            detectors=chosen_detectors(str(item.get("profile", "full")), item.get("detectors")),
            detector_options=dict(item.get("detector_options") or {}),
        )

    async def claim(self, stream_id: str, generation: int) -> Lease | None:
        """The lease, or None when the stream is not ours to take (stale, duplicate, held)."""
        now = time.time()
        request = store.claim_lease(
            self.tables, stream_id, generation, worker_id=self.worker_id, now=now, period_s=self.period_s
        )
        return await self._acquire(request, stream_id, generation, now)

    async def renew(
        self,
        lease: Lease,
        status: StreamStatus,
        figures: dict[str, float | int | str | None],
        reason: str | None,
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
        lease.acknowledged = frozenset(store.acks_of(item))
        if item.get("desired") != Desired.RUNNING or int(item.get("generation", 0)) != lease.generation:
            return Renewal.STOPPED
        return Renewal.HELD

    async def release(
        self,
        lease: Lease,
        status: StreamStatus,
        *,
        finished: bool = False,
        reason: str | None = None,
        figures: dict[str, float | int | str | None] | None = None,
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
            figures=figures,
        )
        try:
            await call(self.ddb.update_item, **request)
        except aws.ConflictError:
            return False
        return True

    async def steal(self, stream_id: str, generation: int, victim: str, victim_counter: int) -> Lease | None:
        """Take a live lease from ``victim`` (rebalancing); None if it changed meanwhile."""
        now = time.time()
        request = store.steal_lease(
            self.tables,
            stream_id,
            generation,
            worker_id=self.worker_id,
            victim=victim,
            victim_counter=victim_counter,
            now=now,
            period_s=self.period_s,
        )
        return await self._acquire(request, stream_id, generation, now)

    async def heartbeat(self, capacity: int, held: int) -> None:
        request = store.worker_heartbeat(
            self.tables,
            self.worker_id,
            capacity=capacity,
            held=held,
            now=time.time(),
            ttl_s=2 * self.period_s,
        )
        await call(self.ddb.put_item, **request)

    async def goodbye(self) -> None:
        await call(self.ddb.delete_item, **store.worker_goodbye(self.tables, self.worker_id))

    async def live_workers(self) -> set[str]:
        found: set[str] = set()
        start: store.Item | None = None
        while True:
            page = await call(
                self.ddb.scan, **store.scan_workers(self.tables, now=time.time(), start_key=start)
            )
            found |= {str(store.unmarshal(i)["worker_id"]) for i in page["Items"]}
            start = page.get("LastEvaluatedKey")
            if not start:
                return found

    async def survey(self) -> list[LeaseView]:
        """Every stream that should run, with who holds it (one paginated scan)."""
        views: list[LeaseView] = []
        start: store.Item | None = None
        now = time.time()
        while True:
            page = await call(self.ddb.scan, **store.scan_running(self.tables, start_key=start))
            for raw in page["Items"]:
                item = store.unmarshal(raw)
                owner = item.get("owner")
                live = owner is not None and float(item.get("lease_expires_at", 0)) > now
                views.append(
                    LeaseView(
                        stream_id=str(item["stream_id"]),
                        generation=int(item["generation"]),
                        owner=str(owner) if live else None,
                        counter=int(item.get("lease_counter", 0)),
                    )
                )
            start = page.get("LastEvaluatedKey")
            if not start:
                return views
