"""The live picture of each stream (the wall), kept in the defects table beside its defects."""

from __future__ import annotations

from typing import Any

from shared.store.codec import Item, Request, marshal
from shared.store.tables import Tables

# The live picture of a stream lives in the defects table under this sort key: read and served
# like evidence, expiring with the table's TTL. Defect ids start with a digit; "~" sorts after
# them all, so a media-time listing meets it last and readers skip it (:func:`is_live_item`).
LIVE_PICTURE_ID = "~live"
LIVE_PICTURE_TTL_S = 3600  # a stream that stops leaves its last picture this long


def put_live_picture(t: Tables, stream_id: str, picture: dict[str, Any], *, now: float) -> Request:
    """The stream's current picture (``worker/picture.py``: JPEG, levels), replacing the last.

    Unfenced: a worker that lost the lease stops within a renewal period, and its last picture
    would be as true as the new owner's first.
    """
    item = {
        "stream_id": stream_id,
        "defect_id": LIVE_PICTURE_ID,
        "live": picture,
        "expires_at": int(now + LIVE_PICTURE_TTL_S),
    }
    return {"TableName": t.defects, "Item": marshal(item)}


def get_live_pictures(t: Tables, stream_ids: list[str]) -> Request:
    """One ``BatchGetItem`` for the live pictures of up to 100 streams (a page of the wall)."""
    if not 1 <= len(stream_ids) <= 100:
        raise ValueError("a batch reads 1 to 100 live pictures")
    keys = [marshal({"stream_id": sid, "defect_id": LIVE_PICTURE_ID}) for sid in dict.fromkeys(stream_ids)]
    return {
        "RequestItems": {t.defects: {"Keys": keys, "ProjectionExpression": "stream_id, live, expires_at"}}
    }


def get_live_picture(t: Tables, stream_id: str) -> Request:
    return {
        "TableName": t.defects,
        "Key": marshal({"stream_id": stream_id, "defect_id": LIVE_PICTURE_ID}),
        "ProjectionExpression": "live, expires_at",
    }


def is_live_item(raw: Item) -> bool:
    """Whether a defects-table item (as DynamoDB returns it) is a live picture, not a defect."""
    return bool(raw.get("defect_id", {}).get("S") == LIVE_PICTURE_ID)
