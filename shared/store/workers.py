"""The worker registry: heartbeats that count idle workers toward the fair share."""

from __future__ import annotations

from shared.store.codec import Item, Request, _values, marshal
from shared.store.tables import Tables


def worker_heartbeat(
    t: Tables, worker_id: str, *, capacity: int, held: int, now: float, ttl_s: float
) -> Request:
    """A worker says it is alive (and how full): idle workers count toward the fair share."""
    item = {
        "worker_id": worker_id,
        "capacity": capacity,
        "held": held,
        "seen_at": now,
        "expires_at": now + ttl_s,
    }
    return {"TableName": t.workers, "Item": marshal(item)}


def worker_goodbye(t: Tables, worker_id: str) -> Request:
    return {"TableName": t.workers, "Key": marshal({"worker_id": worker_id})}


def scan_workers(t: Tables, *, now: float, start_key: Item | None = None) -> Request:
    """Workers whose heartbeat has not lapsed (TTL deletes lazily: filter on it)."""
    req: Request = {
        "TableName": t.workers,
        "FilterExpression": "expires_at > :now",
        "ExpressionAttributeValues": _values(now=now),
        "ProjectionExpression": "worker_id",
    }
    if start_key:
        req["ExclusiveStartKey"] = start_key
    return req
