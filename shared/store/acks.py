"""Acknowledgements of defects, kept on the stream's item."""

from __future__ import annotations

from typing import Any

from shared.models import iso_from_epoch
from shared.store.codec import Request, _values, marshal
from shared.store.tables import Tables

# Acknowledgements ride on the stream's item (``ack#<defect_id>`` → {by, at}): the worker's close
# write replaces the whole defect item and would wipe one kept there, and every lease renewal
# already returns the stream's item to its owner (who can stop notifying an acknowledged defect
# without another request). At most MAX_ACKS are kept, the oldest dropped.
ACK_PREFIX = "ack#"
MAX_ACKS = 20


def acks_of(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """defect_id → {"by", "at"} of an unmarshalled streams item."""
    return {
        k[len(ACK_PREFIX) :]: v for k, v in item.items() if k.startswith(ACK_PREFIX) and isinstance(v, dict)
    }


def acknowledge_defect(
    t: Tables,
    stream_id: str,
    defect_id: str,
    *,
    by: str,
    now: float,
    drop: list[str] | None = None,
) -> Request:
    """Record who acknowledged a defect and when; ``drop``: older acknowledgements to forget
    in the same write (keeps the stream's item small: it is read by every renewal)."""
    names = {"#ack": ACK_PREFIX + defect_id}
    removes = []
    for n, old in enumerate(drop or []):
        names[f"#old{n}"] = ACK_PREFIX + old
        removes.append(f"#old{n}")
    expression = "SET #ack = :ack" + (" REMOVE " + ", ".join(removes) if removes else "")
    return {
        "TableName": t.streams,
        "Key": marshal({"stream_id": stream_id}),
        "UpdateExpression": expression,
        "ConditionExpression": "attribute_exists(stream_id)",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": _values(ack={"by": by, "at": iso_from_epoch(now)}),
        "ReturnValues": "UPDATED_NEW",
    }
