"""Simulate the lease protocol at scale (no media, no AWS): 10,000 streams, 1,000 workers, crashes.

The table is an in-memory model of the streams table's conditional writes (the conditions of
``shared.store.claim_lease``, ``renew_lease``, ``steal_lease`` and ``fenced_defect_writes``),
and each worker follows the worker's rules: renew every period/3, adopt lapsed leases and
rebalance with the worker's own :func:`worker.leases.plan_rebalance` when it has spare capacity.
Workers crash at random (SIGKILL: no release) and ECS replaces them after a delay.

    python -m bench.ownership                       # 10,000 streams, 1,000 workers, 10 minutes
    python -m bench.ownership --streams 500 --workers 50 --seconds 300

It checks the invariants that matter and prints the figures BENCHMARKS.md quotes:
* fencing: a defect write is accepted only from the lease's current holder (never violated);
* failover: how long a crashed worker's streams go unmonitored (target: 30 s);
* balance: the largest holding against the fair share after rebalancing;
* requests per stream-hour of the lease protocol.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass, field

from worker.leases import LeaseView, adoption_limit, plan_rebalance


@dataclass
class Row:
    generation: int = 1
    owner: str | None = None
    expires: float = 0.0
    counter: int = 0


@dataclass
class SimWorker:
    worker_id: str
    capacity: int
    next_renew: float
    next_scan: float
    held: dict[str, int] = field(default_factory=dict)  # stream → fencing token it believes it holds


@dataclass
class Figures:
    streams: int
    workers: int
    seconds: float
    crashes: int = 0
    requests: float = 0
    fenced_writes_rejected: int = 0
    writes_accepted_from_non_holders: int = 0
    unmonitored_stream_seconds: float = 0.0
    failover_s: list[float] = field(default_factory=list)
    max_over_share_after_settle: int = 0

    def summary(self) -> dict[str, float | int]:
        fo = sorted(self.failover_s) or [0.0]
        hours = self.streams * self.seconds / 3600
        return {
            "streams": self.streams,
            "workers": self.workers,
            "simulated_s": self.seconds,
            "crashes": self.crashes,
            "failover_p50_s": round(fo[len(fo) // 2], 1),
            "failover_p99_s": round(fo[min(len(fo) - 1, int(len(fo) * 0.99))], 1),
            "failover_max_s": round(fo[-1], 1),
            "unmonitored_fraction": round(self.unmonitored_stream_seconds / (self.streams * self.seconds), 5),
            "writes_accepted_from_non_holders": self.writes_accepted_from_non_holders,
            "stale_writes_fenced_out": self.fenced_writes_rejected,
            "max_above_fair_share": self.max_over_share_after_settle,
            "lease_requests_per_stream_hour": round(self.requests / hours, 1),
        }


class Table:
    """The streams table's conditional writes, as the store's condition expressions state them."""

    def __init__(self, streams: int) -> None:
        self.rows = {f"s{n:05d}": Row() for n in range(streams)}
        self.requests = 0.0

    def claim(self, sid: str, me: str, now: float, period: float) -> int | None:
        self.requests += 1
        row = self.rows[sid]
        if row.owner is not None and row.expires >= now:
            return None
        row.owner, row.expires, row.counter = me, now + period, row.counter + 1
        return row.counter

    def steal(self, sid: str, me: str, victim: str, held: int, now: float, period: float) -> int | None:
        self.requests += 1
        row = self.rows[sid]
        if row.owner != victim or row.counter != held:
            return None
        row.owner, row.expires, row.counter = me, now + period, row.counter + 1
        return row.counter

    def renew(self, sid: str, me: str, held: int, now: float, period: float) -> bool:
        self.requests += 1
        row = self.rows[sid]
        if row.owner != me or row.counter != held:
            return False
        row.expires = now + period
        return True

    def fenced_write(self, sid: str, me: str, held: int) -> bool:
        row = self.rows[sid]
        return row.owner == me and row.counter == held

    def views(self, now: float) -> list[LeaseView]:
        self.requests += 1  # one scan (paginated in reality: ~1 MB pages)
        return [
            LeaseView(
                sid, r.generation, r.owner if r.owner is not None and r.expires > now else None, r.counter
            )
            for sid, r in self.rows.items()
        ]


def simulate(
    streams: int = 10_000,
    workers: int = 1_000,
    seconds: float = 600.0,
    *,
    capacity: int = 16,
    period: float = 15.0,
    scan_every: float = 10.0,
    crashes_per_minute: float = 6.0,
    replace_after_s: float = 30.0,
    seed: int = 1,
) -> Figures:
    rng = random.Random(seed)
    table = Table(streams)
    figures = Figures(streams=streams, workers=workers, seconds=seconds)
    pool: dict[str, SimWorker] = {}
    serial = 0

    def spawn(now: float) -> None:
        nonlocal serial
        serial += 1
        wid = f"w{serial:05d}"
        pool[wid] = SimWorker(
            wid, capacity, now + rng.uniform(0, period / 3), now + rng.uniform(0, scan_every)
        )

    for _ in range(workers):
        spawn(0.0)
    replacements: list[float] = []
    orphaned_at: dict[str, float] = {}  # stream → when its holder died
    settle_after = seconds * 0.8
    now, tick = 0.0, 1.0
    while now < seconds:
        now += tick
        # Crashes (SIGKILL: the leases just stop being renewed) and ECS replacing the task.
        crashing = now < settle_after  # the last fifth is quiet: balance is judged there
        for _ in range(
            crashing * sum(rng.random() < crashes_per_minute * tick / 60 / workers for _ in range(workers))
        ):
            victim = rng.choice(sorted(pool))
            for sid in pool.pop(victim).held:
                orphaned_at.setdefault(sid, now)
            figures.crashes += 1
            replacements.append(now + replace_after_s)
        while replacements and replacements[0] <= now:
            replacements.pop(0)
            spawn(now)
        # One view of the table per tick, shared by the workers that scan in it: like real
        # concurrent scans, they may act on a slightly stale picture; the conditions decide.
        snapshot = table.views(now)
        table.requests -= 1
        holdings: dict[str, int] = {}
        for view in snapshot:
            if view.owner is not None:
                holdings[view.owner] = holdings.get(view.owner, 0) + 1
        live = set(pool)  # the registry: one heartbeat per worker per lease period
        share = -(-sum(holdings.values()) // max(1, len(live | set(holdings))))
        orphans = [v for v in snapshot if v.owner is None]
        for w in list(pool.values()):
            if now >= w.next_renew:
                w.next_renew = now + period / 3
                table.requests += 1 / 3  # the registry heartbeat, once a lease period
                for sid, held in list(w.held.items()):
                    if not table.renew(sid, w.worker_id, held, now, period):
                        del w.held[sid]  # lost: stop at once
            # Every held stream writes now and then; the fence decides.
            for sid, held in w.held.items():
                if rng.random() < 0.01:
                    if table.fenced_write(sid, w.worker_id, held):
                        if table.rows[sid].owner != w.worker_id:
                            figures.writes_accepted_from_non_holders += 1
                    else:
                        figures.fenced_writes_rejected += 1
            if now < w.next_scan:
                continue
            w.next_scan = now + scan_every
            if len(w.held) >= w.capacity:
                continue  # a full worker never scans
            # The scan of the streams, and of the registry only when it can matter
            # (worker.leases.needs_registry, from the same holdings).
            mine = len(w.held)
            table.requests += 1 + (bool(orphans) or max(holdings.values(), default=0) - mine >= 2)
            if orphans:
                limit, adopted = adoption_limit(snapshot, w.worker_id, live), 0
                for view in orphans:
                    if len(w.held) >= w.capacity or adopted >= limit:
                        break
                    if view.stream_id in w.held:
                        continue
                    token = table.claim(view.stream_id, w.worker_id, now, period)
                    if token is not None:
                        w.held[view.stream_id] = token
                        adopted += 1
                        since = orphaned_at.pop(view.stream_id, None)
                        if since is not None:
                            figures.failover_s.append(now - since)
            # plan_rebalance steals only below the share: skip the O(streams) call above it.
            if len(w.held) < min(share, w.capacity):
                target = plan_rebalance(snapshot, w.worker_id, live)
                if target is not None and target.owner is not None:
                    token = table.steal(
                        target.stream_id, w.worker_id, target.owner, target.counter, now, period
                    )
                    if token is not None:
                        w.held[target.stream_id] = token
        figures.unmonitored_stream_seconds += tick * sum(
            1 for r in table.rows.values() if r.owner is None or r.expires <= now
        )
        if now >= settle_after + 2 * scan_every and now % 10 < tick:
            loads = [len(w.held) for w in pool.values()]
            share = math.ceil(sum(loads) / max(1, len(loads)))
            figures.max_over_share_after_settle = max(figures.max_over_share_after_settle, max(loads) - share)
    figures.requests = table.requests
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--crashes-per-minute", type=float, default=6.0)
    args = parser.parse_args(argv)
    figures = simulate(args.streams, args.workers, args.seconds, crashes_per_minute=args.crashes_per_minute)
    print(json.dumps(figures.summary(), indent=2))
    return 0 if figures.writes_accepted_from_non_holders == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
