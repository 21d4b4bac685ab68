"""The defect routes: listings of defects, events and deliveries, evidence, thumbnails and
acknowledgements (JSON: POST .../acknowledge {"by": "..."})."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any

import pydantic
from aws_lambda_powertools.event_handler import Response

from router.api.core import DEFECT_ID, ApiError, Deps, _jpeg, _json, _page_args, _parsed_body, app, call, deps
from router.api.streams import _stream_item
from shared import store
from shared.models import DefectType, is_stream_id, iso_from_epoch

MAX_BY_CHARS = 80


def _since() -> tuple[float | None, str | None]:
    since = (app.current_event.query_string_parameters or {}).get("since")
    if not since:
        return None, None
    try:
        seconds = float(since)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ApiError(400, "since must be a finite number of media seconds")
        return seconds, None
    try:
        parsed = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "since must be media seconds (e.g. 12.5) or an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ApiError(400, "since as a time must carry its UTC offset (e.g. 2026-01-01T00:00:00Z)")
    return None, iso_from_epoch(parsed.timestamp())


def _defect_record(stream_id: str, raw: store.Item) -> dict[str, Any]:
    """A defects-table item as the API shows it: no TTL, explicit nulls, a link to its evidence."""
    item = store.unmarshal(raw)
    item.pop("expires_at", None)
    item.setdefault("end_s", None)
    item.setdefault("end_at", None)
    if item.pop("has_evidence", False):
        item["evidence_url"] = f"/streams/{stream_id}/defects/{item['defect_id']}/evidence"
    return item


def _full_page(
    d: Deps,
    stream_id: str,
    query: Callable[..., store.Request],
    record: Callable[[store.Item], dict[str, Any] | None],
    *,
    limit: int,
    start: store.Item | None,
    **filters: str | None,
) -> tuple[list[dict[str, Any]], store.Item | None]:
    """Up to ``limit`` records (``record`` of each item read; None skips it) of a listing Query
    (``query``: ``store.query_defects`` or ``store.query_events``, with ``filters`` and the
    request's ``since``), and the key to go on from. A filtered Query may return short pages:
    keep reading until the page is full or done."""
    since_s, since_at = _since()
    records: list[dict[str, Any]] = []
    while True:
        request = query(
            d.tables, stream_id, now=time.time(), limit=limit - len(records), start_key=start,
            since_s=since_s, since_at=since_at, **filters,
        )
        page = call(d.ddb.query, **request)
        records.extend(r for r in map(record, page["Items"]) if r is not None)
        start = page.get("LastEvaluatedKey")
        if not start or len(records) >= limit:
            return records, start


def _listed_defect(stream_id: str, raw: store.Item) -> dict[str, Any] | None:
    return None if store.is_live_item(raw) else _defect_record(stream_id, raw)


def _listed_event(raw: store.Item) -> dict[str, Any]:
    return store.event_from_item(store.unmarshal(raw))


@app.get("/streams/<stream_id>/defects")
def list_defects(stream_id: str) -> Response[str]:
    d = deps()
    acks = store.acks_of(_stream_item(d, stream_id))
    limit, start = _page_args(d.settings.max_page_size, keys=("stream_id", "defect_id"), stream_id=stream_id)
    defect_type = (app.current_event.query_string_parameters or {}).get("type")
    if defect_type is not None and defect_type not in set(DefectType):
        raise ApiError(400, f"unknown defect type {defect_type!r}", sorted(DefectType))
    shown = partial(_listed_defect, stream_id)
    defects, start = _full_page(
        d, stream_id, store.query_defects, shown, limit=limit, start=start, defect_type=defect_type
    )
    for record in defects:
        if record["defect_id"] in acks:  # POST .../acknowledge: who took it on, and when
            record["acknowledged"] = acks[record["defect_id"]]
    return _json(200, {"defects": defects, "next_token": store.encode_page_token(start)})


EVENT_KEY = re.compile("^" + re.escape(store.EVENT_PREFIX) + DEFECT_ID.pattern.lstrip("^"))
EVENT_TYPE = re.compile(r"^[a-z_]{1,40}$")


@app.get("/streams/<stream_id>/events")
def list_events(stream_id: str) -> Response[str]:
    """SCTE-35 cues (and HLS cue tags) as events, in media-time order: paginated and filtered
    (``since``, ``type``) as defects are."""
    d = deps()
    _stream_item(d, stream_id)
    limit, start = _page_args(
        d.settings.max_page_size, keys=("stream_id", "defect_id"), stream_id=stream_id, sort_key=EVENT_KEY
    )
    event_type = (app.current_event.query_string_parameters or {}).get("type")
    if event_type is not None and not EVENT_TYPE.match(event_type):
        raise ApiError(400, "type must be an event type such as splice_insert or time_signal")
    events, start = _full_page(
        d, stream_id, store.query_events, _listed_event, limit=limit, start=start, event_type=event_type
    )
    return _json(200, {"events": events, "next_token": store.encode_page_token(start)})


@app.get("/streams/<stream_id>/defects/<defect_id>/evidence")
def get_evidence(stream_id: str, defect_id: str) -> Response[str]:
    """The defect's thumbnails (base64 JPEG) and measurement trace."""
    d = deps()
    _stream_item(d, stream_id)
    return _json(200, _evidence(d, stream_id, defect_id))


def _evidence(d: Deps, stream_id: str, defect_id: str) -> dict[str, Any]:
    if not DEFECT_ID.match(defect_id):
        raise ApiError(404, "no such defect", defect_id[:80])
    got = call(d.ddb.get_item, **store.get_evidence(d.tables, stream_id, defect_id)).get("Item")
    item = store.unmarshal(got) if got else {}
    if "evidence" not in item or float(item.get("expires_at", time.time() + 1)) <= time.time():
        raise ApiError(404, "no evidence for this defect", defect_id)
    evidence: dict[str, Any] = item["evidence"]
    return evidence


@app.get("/streams/<stream_id>/defects/<defect_id>/thumbnail.jpg")
def get_thumbnail(stream_id: str, defect_id: str) -> Response[bytes]:
    """The picture at the defect's start, as a JPEG (what the web page shows)."""
    if not is_stream_id(stream_id):
        raise ApiError(404, "no such stream", stream_id[:80])
    # One read: an unknown stream has no defect items, so it is a 404 all the same.
    evidence = _evidence(deps(), stream_id, defect_id)
    start = next((th for th in evidence.get("thumbnails", []) if th.get("role") == "start"), None)
    if start is None:
        raise ApiError(404, "no thumbnail for this defect", defect_id)
    # Rewritten at most once (when the defect closes): a page refreshing every few seconds need
    # not fetch it again each time.
    return _jpeg(start["jpeg_b64"], "private, max-age=300")


@app.get("/streams/<stream_id>/notifications")
def list_deliveries(stream_id: str) -> Response[str]:
    """The delivery log: every notification attempt for the stream, newest first."""
    d = deps()
    _stream_item(d, stream_id)
    limit, start = _page_args(
        d.settings.max_page_size, keys=("stream_id", "delivery_key"), stream_id=stream_id
    )
    request = store.query_deliveries(d.tables, stream_id, now=time.time(), limit=limit, start_key=start)
    page = call(d.ddb.query, **request)
    deliveries = []
    for raw in page["Items"]:
        item = store.unmarshal(raw)
        for private in ("delivery_key", "expires_at"):
            item.pop(private, None)
        deliveries.append(item)
    return _json(
        200, {"deliveries": deliveries, "next_token": store.encode_page_token(page.get("LastEvaluatedKey"))}
    )




class _Ack(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    by: Annotated[
        str, pydantic.StringConstraints(min_length=1, max_length=MAX_BY_CHARS, strip_whitespace=True)
    ]


def _acknowledge(d: Deps, stream_id: str, defect_id: str, by: str) -> dict[str, Any]:
    item = _stream_item(d, stream_id)
    if not DEFECT_ID.match(defect_id):
        raise ApiError(404, "no such defect", defect_id[:80])
    got = call(d.ddb.get_item, **store.get_defect_exists(d.tables, stream_id, defect_id)).get("Item")
    if not got or float(store.unmarshal(got).get("expires_at", time.time() + 1)) <= time.time():
        raise ApiError(404, "no such defect", defect_id)
    acks = store.acks_of(item)
    existing = acks.get(defect_id)
    if existing is not None:  # the first acknowledgement stands: it says who took it on
        return {"defect_id": defect_id, "acknowledged_by": existing["by"], "acknowledged_at": existing["at"]}
    oldest = sorted((a for a in acks if a != defect_id), key=lambda a: str(acks[a].get("at")))
    drop = oldest[: max(0, len(oldest) + 1 - store.MAX_ACKS)]
    now = time.time()
    call(
        d.ddb.update_item,
        **store.acknowledge_defect(d.tables, stream_id, defect_id, by=by, now=now, drop=drop),
    )
    return {"defect_id": defect_id, "acknowledged_by": by, "acknowledged_at": iso_from_epoch(now)}


@app.post("/streams/<stream_id>/defects/<defect_id>/acknowledge")
def acknowledge_defect(stream_id: str, defect_id: str) -> Response[str]:
    """Record who acknowledged a defect and when (the first acknowledgement stands)."""
    ack = _parsed_body(_Ack, "invalid acknowledgement")
    return _json(200, _acknowledge(deps(), stream_id, defect_id, ack.by))

