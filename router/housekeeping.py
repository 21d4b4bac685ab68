"""Scheduled housekeeping: re-enqueue streams that should run but that nobody holds.

Workers with spare capacity also take over lapsed leases themselves; this is the backstop for
when none has looked (or none had room), and it is what EventBridge invokes every minute in the
cloud and ``avmon up`` every few seconds locally.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from router.api import Deps, call, send_assignment
from shared import aws, store

log = logging.getLogger("avmon.router.housekeeping")


def run(d: Deps, now: float | None = None) -> dict[str, int]:
    """One pass over the streams table. Returns counts: ``scanned`` orphans, ``requeued``."""
    now = time.time() if now is None else now
    not_since = now - d.settings.reenqueue_after_s
    scanned = requeued = 0
    start: store.Item | None = None
    while True:
        page = call(d.ddb.scan, **store.scan_orphans(d.tables, now=now, start_key=start))
        for raw in page["Items"]:
            item: dict[str, Any] = store.unmarshal(raw)
            scanned += 1
            if float(item.get("enqueued_at", 0)) >= not_since:
                continue  # an assignment is recent enough: give the workers time to take it
            request = store.mark_enqueued(
                d.tables, item["stream_id"], int(item["generation"]), now=now, not_since=not_since
            )
            try:
                call(d.ddb.update_item, **request)
            except aws.ConflictError:
                continue  # claimed or re-sent meanwhile
            send_assignment(d, item["stream_id"], int(item["generation"]))
            requeued += 1
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    if requeued:
        log.info("housekeeping re-enqueued %d of %d orphaned streams", requeued, scanned)
    return {"scanned": scanned, "requeued": requeued}
