"""One balance round of a worker with room to spare (DESIGN.md §2, failover and scale-out).

Adopt streams whose owner stopped renewing, up to the fair share plus one (worker/leases.py's
:func:`adoption_limit`), then take one lease from a worker above its fair share
(:func:`plan_rebalance`). The rules are worker/leases.py's; this is their order against the table.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from worker.leases import Lease, LeaseTable, adoption_limit, needs_registry, plan_rebalance

log = logging.getLogger("avmon.worker")


async def balance_round(
    leases: LeaseTable,
    *,
    room: Callable[[], int],
    skip: Callable[[str], bool],
    take: Callable[[str, int], Awaitable[bool]],
    start: Callable[[Lease], None],
) -> None:
    """``room``: streams the worker can take now; ``skip``: a stream it holds or handed back
    lately; ``take``: claim a stream at a generation (True: taken); ``start``: run a stolen lease.
    Raises :class:`shared.aws.AvmonError` when the table cannot be read."""
    me = leases.worker_id
    views = await leases.survey()
    live = await leases.live_workers() if needs_registry(views, me) else set()
    taken: set[str] = set()
    limit = adoption_limit(views, me, live)
    for view in views:
        if room() <= 0 or len(taken) >= limit:
            break
        if view.owner is None and not skip(view.stream_id) and await take(view.stream_id, view.generation):
            log.info("took over %s", view.stream_id)
            taken.add(view.stream_id)
    views = [replace(v, owner=me) if v.stream_id in taken else v for v in views]
    target = plan_rebalance(views, me, live) if room() > 0 else None
    if target is not None and target.owner is not None:
        lease = await leases.steal(target.stream_id, target.generation, target.owner, target.counter)
        if lease is not None:
            log.info("rebalanced %s from %s", target.stream_id, target.owner)
            start(lease)
