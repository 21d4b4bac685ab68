"""The tables: item shapes and every DynamoDB request the system makes, as pure functions.

Each function returns the keyword arguments of one low-level client call, so the router (boto3)
and the worker (aioboto3) send exactly the same requests and this module needs no AWS to test.

Streams table item (key ``stream_id``)::

    url, name, realtime, desired (RUNNING|STOPPED), status, generation (bumped by every start),
    owner (absent when nobody holds the lease), lease_expires_at (epoch s), lease_counter (the
    fencing token: bumped by every claim), enqueued_at (epoch s of the last assignment message),
    created_at, updated_at, reason, lag_s, frames_analysed, media_time_s, client_token

Defects table item (key ``stream_id`` + ``defect_id``): the fields of :class:`shared.models.Defect`
plus ``expires_at`` (epoch s, the table's TTL attribute). The same partition holds the stream's
events (``defect_id`` = ``~ev#`` + the event's id, :func:`event_item`) and its live picture
(``~live``): both sort after every defect id (those start with a digit).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from shared.models import (
    DEFAULT_DETECTOR_PROFILE,
    Defect,
    Desired,
    Event,
    Stream,
    StreamStatus,
    detectors_of,
    iso_from_epoch,
)
from shared.settings import DEFAULT_PREFIX, CommonSettings

_SER = TypeSerializer()
_DESER = TypeDeserializer()

Request = dict[str, Any]
Item = dict[str, Any]


@dataclass(frozen=True)
class Tables:
    streams: str
    defects: str
    workers: str = f"{DEFAULT_PREFIX}-workers"
    deliveries: str = f"{DEFAULT_PREFIX}-deliveries"

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Tables:
        return cls(
            streams=settings.streams_table,
            defects=settings.defects_table,
            workers=settings.workers_table,
            deliveries=settings.deliveries_table,
        )


# ---------------------------------------------------------------- marshalling


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def marshal(item: dict[str, Any]) -> Item:
    """Plain dict → DynamoDB attribute map (floats as numbers, ``None`` values dropped)."""
    return {k: _SER.serialize(_to_dynamo(v)) for k, v in item.items() if v is not None}


def unmarshal(item: Item) -> dict[str, Any]:
    return {k: _from_dynamo(_DESER.deserialize(v)) for k, v in item.items()}


def _values(**values: Any) -> Item:
    return {f":{k}": _SER.serialize(_to_dynamo(v)) for k, v in values.items()}


def encode_page_token(key: Item | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(unmarshal(key), sort_keys=True).encode()).decode()


def decode_page_token(token: str) -> Item:
    """The opaque ``next_token`` of a listing back to an ExclusiveStartKey (ValueError if forged)."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("next_token is not valid") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError("next_token is not valid")
    return marshal(raw)


# ---------------------------------------------------------------- streams


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


# ---------------------------------------------------------------- leases


def claim_lease(
    t: Tables, stream_id: str, generation: int, *, worker_id: str, now: float, period_s: float
) -> Request:
    """Take the stream if it should run at this generation and nobody holds a live lease.

    Bumps ``lease_counter``: the new value is this owner's fencing token.
    """
    return {
        "TableName": t.streams,
        "Key": marshal({"stream_id": stream_id}),
        "UpdateExpression": (
            "SET #owner = :me, lease_expires_at = :exp, #st = :monitoring, updated_at = :now, "
            "lease_counter = if_not_exists(lease_counter, :zero) + :one REMOVE reason"
        ),
        "ConditionExpression": (
            "desired = :running AND generation = :gen AND "
            "(attribute_not_exists(#owner) OR lease_expires_at < :now)"
        ),
        "ExpressionAttributeNames": {"#owner": "owner", "#st": "status"},
        "ExpressionAttributeValues": _values(
            me=worker_id,
            exp=now + period_s,
            now=now,
            monitoring=StreamStatus.MONITORING.value,
            zero=0,
            one=1,
            running=Desired.RUNNING.value,
            gen=generation,
        ),
        "ReturnValues": "ALL_NEW",
    }


def steal_lease(
    t: Tables,
    stream_id: str,
    generation: int,
    *,
    worker_id: str,
    victim: str,
    victim_counter: int,
    now: float,
    period_s: float,
) -> Request:
    """Rebalance: take a live lease from a worker holding more than its share (as KCL does).

    The victim's next renewal fails its condition (the counter moved) and it stops the stream;
    until then its defect writes are already fenced out.
    """
    request = claim_lease(t, stream_id, generation, worker_id=worker_id, now=now, period_s=period_s)
    request["ConditionExpression"] = (
        "desired = :running AND generation = :gen AND #owner = :victim AND lease_counter = :held"
    )
    values = request["ExpressionAttributeValues"]
    values.update(_values(victim=victim, held=victim_counter))
    del values[":now"]
    request["UpdateExpression"] = request["UpdateExpression"].replace("updated_at = :now", "updated_at = :at")
    values.update(_values(at=now))
    return request


def _held(worker_id: str, counter: int) -> tuple[str, dict[str, Any]]:
    return "#owner = :me AND lease_counter = :held", {"me": worker_id, "held": counter}


def renew_lease(
    t: Tables,
    stream_id: str,
    *,
    worker_id: str,
    counter: int,
    now: float,
    period_s: float,
    status: StreamStatus,
    figures: dict[str, float | int | str | None],
    reason: str | None = None,
) -> Request:
    """Extend a held lease and publish the live figures in the same write (no extra requests).

    Fails its condition if the lease was taken (the counter moved): the caller must stop at once.
    ``ReturnValues`` carries ``desired`` back, so a ``DELETE`` is seen within a renewal period.
    """
    cond, held = _held(worker_id, counter)
    sets = ["lease_expires_at = :exp", "updated_at = :now", "#st = :status"]
    values: dict[str, Any] = {"exp": now + period_s, "now": now, "status": status.value, **held}
    for name, value in figures.items():
        if value is not None:
            sets.append(f"{name} = :{name}")
            values[name] = value
    if reason is not None:
        sets.append("reason = :reason")
        values["reason"] = reason[:500]
    return {
        "TableName": t.streams,
        "Key": marshal({"stream_id": stream_id}),
        "UpdateExpression": "SET " + ", ".join(sets),
        "ConditionExpression": cond,
        "ExpressionAttributeNames": {"#owner": "owner", "#st": "status"},
        "ExpressionAttributeValues": _values(**values),
        "ReturnValues": "ALL_NEW",
    }


def release_lease(
    t: Tables,
    stream_id: str,
    *,
    worker_id: str,
    counter: int,
    now: float,
    status: StreamStatus,
    finished: bool = False,
    reason: str | None = None,
    figures: dict[str, float | int | str | None] | None = None,
) -> Request:
    """Let go of a held lease, publishing the session's last figures. ``finished`` also sets
    ``desired=STOPPED`` (a file read to its end, or a source refused by policy), so nobody takes
    the stream again."""
    cond, held = _held(worker_id, counter)
    sets = ["lease_expires_at = :zero", "updated_at = :now", "#st = :status"]
    values: dict[str, Any] = {"zero": 0, "now": now, "status": status.value, **held}
    for name, value in (figures or {}).items():
        if value is not None:
            sets.append(f"{name} = :{name}")
            values[name] = value
    if finished:
        sets.append("desired = :stopped")
        values["stopped"] = Desired.STOPPED.value
    if reason is not None:
        sets.append("reason = :reason")
        values["reason"] = reason[:500]
    return {
        "TableName": t.streams,
        "Key": marshal({"stream_id": stream_id}),
        "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE #owner",
        "ConditionExpression": cond,
        "ExpressionAttributeNames": {"#owner": "owner", "#st": "status"},
        "ExpressionAttributeValues": _values(**values),
    }


# ---------------------------------------------------------------- the worker registry


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


# ---------------------------------------------------------------- the delivery log


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


# ---------------------------------------------------------------- defects


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


# ---------------------------------------------------------------- the live picture (the wall)

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


# ---------------------------------------------------------------- acknowledgements

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


def get_defect_exists(t: Tables, stream_id: str, defect_id: str) -> Request:
    return {
        "TableName": t.defects,
        "Key": marshal({"stream_id": stream_id, "defect_id": defect_id}),
        "ProjectionExpression": "defect_id, expires_at",
    }


# ---------------------------------------------------------------- events (SCTE-35 cues)

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
