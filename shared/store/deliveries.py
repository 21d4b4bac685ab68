"""The delivery log: one record per notification attempt."""

from __future__ import annotations

from typing import Any

from shared.store.codec import Item, Request, _values, marshal
from shared.store.tables import Tables


def put_delivery(t: Tables, record: dict[str, Any], *, ttl_days: int, now: float) -> Request:
    """One notification attempt (key: stream, then time and delivery id, so it lists in order)."""
    item = dict(record)
    item["delivery_key"] = f"{record.get('at', '')}#{record['delivery_id']}#{record.get('attempt', 0)}"
    item["expires_at"] = int(now + ttl_days * 86400)
    return {"TableName": t.deliveries, "Item": marshal(item)}


def query_deliveries(t: Tables, stream_id: str, *, now: float, limit: int, start_key: Item | None) -> Request:
    req: Request = {
        "TableName": t.deliveries,
        "KeyConditionExpression": "stream_id = :sid",
        "FilterExpression": "attribute_not_exists(expires_at) OR expires_at > :now",
        "ExpressionAttributeValues": _values(sid=stream_id, now=int(now)),
        "ScanIndexForward": False,
        "Limit": limit,
    }
    if start_key:
        req["ExclusiveStartKey"] = start_key
    return req
