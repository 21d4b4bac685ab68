"""The defects table: stored records with inline evidence, fenced writes and listings.

Defects table item (key ``stream_id`` + ``defect_id``): the fields of :class:`shared.models.Defect`
plus ``expires_at`` (epoch s, the table's TTL attribute).
"""

from __future__ import annotations

from typing import Any

from shared.models import Defect
from shared.store.codec import Item, Request, _values, marshal
from shared.store.events import NOT_DEFECTS
from shared.store.leases import _held
from shared.store.tables import Tables


def defect_item(
    defect: Defect, *, ttl_days: int, now: float, evidence: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The stored record; evidence (thumbnails and trace, bounded at 32 KB) rides inline."""
    item = defect.model_dump(mode="json")
    item["expires_at"] = int(now + ttl_days * 86400)
    if evidence is not None:
        item["evidence"] = evidence
        item["has_evidence"] = True
    return item


DEFECT_FIELDS = (
    "stream_id, defect_id, #type, start_s, end_s, start_at, end_at, severity, #metrics, worker_id, "
    "expires_at, has_evidence, monitor_overloaded"
)


def get_evidence(t: Tables, stream_id: str, defect_id: str) -> Request:
    return {
        "TableName": t.defects,
        "Key": marshal({"stream_id": stream_id, "defect_id": defect_id}),
        "ProjectionExpression": "evidence, expires_at",
    }


def fenced_defect_writes(
    t: Tables, stream_id: str, *, worker_id: str, counter: int, items: list[dict[str, Any]]
) -> Request:
    """One ``TransactWriteItems``: the defects, and a check that the writer still holds the lease.

    A worker that lost its lease (it paused, the lease was taken) cannot write for the stream.
    """
    if not 1 <= len(items) <= 99:
        raise ValueError("a fenced write carries 1 to 99 defects")
    cond, held = _held(worker_id, counter)
    check = {
        "ConditionCheck": {
            "TableName": t.streams,
            "Key": marshal({"stream_id": stream_id}),
            "ConditionExpression": cond,
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": _values(**held),
        }
    }
    puts = [{"Put": {"TableName": t.defects, "Item": marshal(item)}} for item in items]
    return {"TransactItems": [check, *puts]}


def query_defects(
    t: Tables,
    stream_id: str,
    *,
    now: float,
    limit: int,
    start_key: Item | None,
    defect_type: str | None = None,
    since_s: float | None = None,
    since_at: str | None = None,
    newest_first: bool = False,
) -> Request:
    """Defects of a stream in media-time order (``newest_first``: the latest first), optionally
    of one type, starting at or after ``since_s`` (media seconds) or ``since_at`` (ISO 8601 wall
    clock), hiding expired ones (DynamoDB's TTL deletes lazily, and emulators never do). ``limit``
    counts the items read, before that filter: a page may hold fewer."""
    # Listing leaves the evidence out (it has its own route); both names are reserved words.
    names: dict[str, str] = {"#type": "type", "#metrics": "metrics"}
    filters = ["(attribute_not_exists(expires_at) OR expires_at > :now_epoch)"]
    values: dict[str, Any] = {"sid": stream_id, "now_epoch": int(now)}
    if defect_type:
        filters.append("#type = :type")
        values["type"] = defect_type
    if since_s is not None:
        filters.append("start_s >= :since_s")
        values["since_s"] = since_s
    if since_at is not None:
        filters.append("(start_at >= :since_at OR end_at >= :since_at OR attribute_not_exists(end_at))")
        values["since_at"] = since_at
    values["not_defects"] = NOT_DEFECTS  # events and the live picture share the partition
    req: Request = {
        "TableName": t.defects,
        "KeyConditionExpression": "stream_id = :sid AND defect_id < :not_defects",
        "FilterExpression": " AND ".join(filters),
        "ExpressionAttributeValues": _values(**values),
        "ExpressionAttributeNames": names,
        "ProjectionExpression": DEFECT_FIELDS,
        "Limit": limit,
    }
    if newest_first:
        req["ScanIndexForward"] = False  # the sort key starts with the media time
    if start_key:
        req["ExclusiveStartKey"] = start_key
    return req


def get_defect_exists(t: Tables, stream_id: str, defect_id: str) -> Request:
    return {
        "TableName": t.defects,
        "Key": marshal({"stream_id": stream_id, "defect_id": defect_id}),
        "ProjectionExpression": "defect_id, expires_at",
    }
