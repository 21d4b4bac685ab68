"""The streams table's desired state: create, read, list, stop, and what housekeeping re-sends.

Streams table item (key ``stream_id``)::

    url, name, realtime, desired (RUNNING|STOPPED), status, generation (bumped by every start),
    owner (absent when nobody holds the lease), lease_expires_at (epoch s), lease_counter (the
    fencing token: bumped by every claim), enqueued_at (epoch s of the last assignment message),
    created_at, updated_at, reason, lag_s, frames_analysed, media_time_s, client_token,
    loudness_profile, profile (the detector profile), detectors (the stream's own list, absent:
    the profile's), detector_options (the stream's own, over the deployment's)
"""

from __future__ import annotations

from typing import Any

from shared.models import (
    DEFAULT_DETECTOR_PROFILE,
    Desired,
    Stream,
    StreamStatus,
    detectors_of,
    iso_from_epoch,
)
from shared.store.codec import Item, Request, _values, marshal
from shared.store.tables import Tables


def stream_from_item(item: dict[str, Any], now: float) -> Stream:
    """An unmarshalled streams item as the API shows it (a lapsed lease shows no owner)."""
    expires = item.get("lease_expires_at")
    live = item.get("owner") is not None and expires is not None and float(expires) > now
    return Stream(
        stream_id=item["stream_id"],
        url=item["url"],
        name=item.get("name"),
        realtime=bool(item.get("realtime", False)),
        webhook_url=item.get("webhook_url"),
        loudness_profile=item.get("loudness_profile", "ebu_r128"),
        profile=item.get("profile", DEFAULT_DETECTOR_PROFILE),
        detectors=detectors_of(item.get("profile", DEFAULT_DETECTOR_PROFILE), item.get("detectors")),
        detector_options=item.get("detector_options") or {},
        desired=Desired(item["desired"]),
        status=StreamStatus(item.get("status", StreamStatus.PENDING)),
        generation=int(item["generation"]),
        owner=item.get("owner") if live else None,
        lease_expires_at=iso_from_epoch(float(expires)) if live and expires is not None else None,
        lease_counter=int(item.get("lease_counter", 0)),
        created_at=iso_from_epoch(float(item["created_at"])),
        updated_at=iso_from_epoch(float(item.get("updated_at", item["created_at"]))),
        reason=item.get("reason"),
        lag_s=item.get("lag_s"),
        frames_analysed=int(item.get("frames_analysed", 0)),
        media_time_s=item.get("media_time_s"),
        dropped_datagrams=int(item.get("dropped_datagrams", 0)),
        av_sync_offset_ms=item.get("av_sync_offset_ms"),
        av_sync_confidence=item.get("av_sync_confidence"),
        captions=item.get("captions"),
    )


def put_new_stream(
    t: Tables,
    *,
    stream_id: str,
    url: str,
    name: str | None,
    realtime: bool,
    client_token: str | None,
    now: float,
    webhook_url: str | None = None,
    loudness_profile: str = "ebu_r128",
    profile: str = DEFAULT_DETECTOR_PROFILE,
    detectors: list[str] | None = None,
    detector_options: dict[str, dict[str, Any]] | None = None,
) -> Request:
    item = {
        "stream_id": stream_id,
        "url": url,
        "name": name,
        "realtime": realtime,
        "webhook_url": webhook_url,
        "loudness_profile": loudness_profile,
        "profile": profile,
        "detectors": detectors,  # None: the profile's
        "detector_options": detector_options or None,  # the stream's own, over the deployment's
        "desired": Desired.RUNNING.value,
        "status": StreamStatus.PENDING.value,
        "generation": 1,
        "lease_counter": 0,
        "lease_expires_at": 0,
        "enqueued_at": now,
        "created_at": now,
        "updated_at": now,
        "client_token": client_token,
    }
    return {
        "TableName": t.streams,
        "Item": marshal(item),
        "ConditionExpression": "attribute_not_exists(stream_id)",
    }


def get_stream(t: Tables, stream_id: str) -> Request:
    return {"TableName": t.streams, "Key": marshal({"stream_id": stream_id}), "ConsistentRead": True}


def scan_streams(t: Tables, *, limit: int, start_key: Item | None) -> Request:
    req: Request = {"TableName": t.streams, "Limit": limit}
    if start_key:
        req["ExclusiveStartKey"] = start_key
    return req


def stop_stream(t: Tables, stream_id: str, now: float) -> Request:
    """``DELETE``: the owner sees ``desired=STOPPED`` at its next renewal and lets go."""
    return {
        "TableName": t.streams,
        "Key": marshal({"stream_id": stream_id}),
        "UpdateExpression": "SET desired = :stopped, #st = :st_stopped, updated_at = :now",
        "ConditionExpression": "attribute_exists(stream_id)",
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": _values(
            stopped=Desired.STOPPED.value, st_stopped=StreamStatus.STOPPED.value, now=now
        ),
        "ReturnValues": "ALL_NEW",
    }


def scan_orphans(t: Tables, *, now: float, start_key: Item | None = None) -> Request:
    """Streams that should run but whose lease is missing or lapsed."""
    req: Request = {
        "TableName": t.streams,
        "FilterExpression": (
            "desired = :running AND (attribute_not_exists(#owner) OR lease_expires_at < :now)"
        ),
        "ExpressionAttributeNames": {"#owner": "owner"},
        "ExpressionAttributeValues": _values(running=Desired.RUNNING.value, now=now),
        "ProjectionExpression": "stream_id, generation, enqueued_at, lease_expires_at",
    }
    if start_key:
        req["ExclusiveStartKey"] = start_key
    return req


def scan_running(t: Tables, *, start_key: Item | None = None) -> Request:
    """Every stream that should run, with its lease: the view a worker balances from."""
    req: Request = {
        "TableName": t.streams,
        "FilterExpression": "desired = :running",
        "ExpressionAttributeNames": {"#owner": "owner"},
        "ExpressionAttributeValues": _values(running=Desired.RUNNING.value),
        "ProjectionExpression": "stream_id, generation, #owner, lease_expires_at, lease_counter",
    }
    if start_key:
        req["ExclusiveStartKey"] = start_key
    return req


def mark_enqueued(t: Tables, stream_id: str, generation: int, *, now: float, not_since: float) -> Request:
    """Housekeeping's claim on re-sending an assignment, so two runs do not both send one."""
    return {
        "TableName": t.streams,
        "Key": marshal({"stream_id": stream_id}),
        "UpdateExpression": "SET enqueued_at = :now",
        "ConditionExpression": (
            "desired = :running AND generation = :gen AND "
            "(attribute_not_exists(#owner) OR lease_expires_at < :now) AND "
            "(attribute_not_exists(enqueued_at) OR enqueued_at < :not_since)"
        ),
        "ExpressionAttributeNames": {"#owner": "owner"},
        "ExpressionAttributeValues": _values(
            running=Desired.RUNNING.value, gen=generation, now=now, not_since=not_since
        ),
    }
