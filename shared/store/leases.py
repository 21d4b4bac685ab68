"""Leases on the streams table: claim, steal (rebalance), renew and release, fenced by a counter."""

from __future__ import annotations

from typing import Any

from shared.models import Desired, StreamStatus
from shared.store.codec import Request, _values, marshal
from shared.store.tables import Tables


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
