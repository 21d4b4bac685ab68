"""Events (SCTE-35 cues): things an operator reads that are not defects, in the defects table."""

from __future__ import annotations

from typing import Any

from shared.models import Event
from shared.store.codec import Item, Request, _values
from shared.store.tables import Tables

# Events live in the defects table, in the stream's partition, under this sort-key prefix: "~"
# sorts after the digits every defect id starts with, so defect listings stop before them
# (``defect_id < NOT_DEFECTS``) and an event listing is one prefix Query, in media-time order.
EVENT_PREFIX = "~ev#"
NOT_DEFECTS = "~"


def event_item(event: Event, *, ttl_days: int, now: float) -> dict[str, Any]:
    """The stored record of an event: its fields, its sort key, and the table's TTL."""
    item = event.model_dump(mode="json")
    item["defect_id"] = EVENT_PREFIX + event.event_id
    item["expires_at"] = int(now + ttl_days * 86400)
    return item


def event_from_item(item: dict[str, Any]) -> dict[str, Any]:
    """An unmarshalled event item as the API shows it: its own id, no key prefix or TTL."""
    out = dict(item)
    out["event_id"] = str(out.pop("defect_id", ""))[len(EVENT_PREFIX) :]
    out.pop("expires_at", None)
    return out


def query_events(
    t: Tables,
    stream_id: str,
    *,
    now: float,
    limit: int,
    start_key: Item | None,
    event_type: str | None = None,
    since_s: float | None = None,
    since_at: str | None = None,
) -> Request:
    """Events of a stream in media-time order, optionally of one type, starting at or after
    ``since_s`` (media seconds) or ``since_at`` (ISO 8601), expired ones hidden (``limit``
    counts the items read, before that filter: a page may hold fewer)."""
    filters = ["(attribute_not_exists(expires_at) OR expires_at > :now_epoch)"]
    values: dict[str, Any] = {"sid": stream_id, "prefix": EVENT_PREFIX, "now_epoch": int(now)}
    names: dict[str, str] = {}
    if event_type:
        filters.append("#type = :type")
        values["type"] = event_type
        names["#type"] = "type"
    if since_s is not None:
        filters.append("start_s >= :since_s")
        values["since_s"] = since_s
    if since_at is not None:
        filters.append("start_at >= :since_at")
        values["since_at"] = since_at
    req: Request = {
        "TableName": t.defects,
        "KeyConditionExpression": "stream_id = :sid AND begins_with(defect_id, :prefix)",
        "FilterExpression": " AND ".join(filters),
        "ExpressionAttributeValues": _values(**values),
        "Limit": limit,
    }
    if names:
        req["ExpressionAttributeNames"] = names
    if start_key:
        req["ExclusiveStartKey"] = start_key
    return req
