"""The HTTP API (DESIGN.md §5) as small routes on Powertools' function-URL resolver."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any
from urllib.parse import urlsplit

import pydantic
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from pydantic import ValidationError

from router import web
from shared import aws, store
from shared.models import Assignment, DefectType, StreamSpec, is_stream_id, iso_from_epoch
from shared.settings import RouterSettings
from shared.urlpolicy import HostUnresolvable, UrlRefused, check_url

log = logging.getLogger("avmon.router")
MAX_BODY_BYTES = 16 * 1024
DEFECT_ID = re.compile(r"^[0-9]{9}\.[0-9]{3}-[a-z_]+(-[A-Za-z0-9_]+)?$")
DEFAULT_PAGE = 50


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


@dataclass
class Deps:
    """The router's collaborators, built once per Lambda container (module-level singleton)."""

    settings: RouterSettings
    tables: store.Tables
    ddb: Any
    sqs: Any
    _queue_url: str | None = None

    def queue_url(self) -> str:
        if self._queue_url is None:
            self._queue_url = self.sqs.get_queue_url(QueueName=self.settings.assignment_queue)["QueueUrl"]
        return self._queue_url


@cache
def deps() -> Deps:
    settings = RouterSettings()
    return Deps(
        settings=settings,
        tables=store.Tables.from_settings(settings),
        ddb=aws.client("dynamodb"),
        sqs=aws.client("sqs"),
    )


def call(fn: Any, **kwargs: Any) -> Any:
    """One AWS call, its errors mapped to ours."""
    try:
        return fn(**kwargs)
    except Exception as exc:
        raise aws.map_error(exc) from exc


def send_assignment(d: Deps, stream_id: str, generation: int) -> None:
    body = Assignment(stream_id=stream_id, generation=generation).model_dump_json()
    call(d.sqs.send_message, QueueUrl=d.queue_url(), MessageBody=body)


app = LambdaFunctionUrlResolver()


# Every JSON answer: never sniffed as HTML by a browser, never kept by a cache (streams carry
# their owners' URLs, and lease and status figures that go stale in seconds).
JSON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _json(status: int, body: Any) -> Response[str]:
    return Response(
        status_code=status, content_type="application/json", body=json.dumps(body), headers=dict(JSON_HEADERS)
    )


def _error(status: int, error: str, detail: Any = None) -> Response[str]:
    return _json(status, {"error": error, "detail": detail})


@app.exception_handler(ApiError)
def _api_error(exc: ApiError) -> Response[str]:
    return _error(exc.status, exc.error, exc.detail)


@app.exception_handler(aws.ConflictError)
def _conflict(exc: aws.ConflictError) -> Response[str]:
    return _error(409, "conflict", str(exc))


@app.exception_handler(aws.RetryableError)
def _unavailable(exc: aws.RetryableError) -> Response[str]:
    return _error(503, "the store is unavailable, retry", str(exc))


@app.exception_handler(aws.AvmonError)
def _internal(exc: aws.AvmonError) -> Response[str]:
    log.error("%s %s failed: %s", app.current_event.http_method, app.current_event.path, exc)
    return _error(500, "internal error", type(exc).__name__)


@app.not_found
def _not_found(exc: RouteNotFound) -> Response[str]:
    return _error(404, "no such route", f"{app.current_event.http_method} {app.current_event.path}")


def _body() -> Any:
    try:
        raw = app.current_event.decoded_body or ""
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the body is not valid UTF-8 JSON") from None
    if len(raw.encode()) > MAX_BODY_BYTES:
        raise ApiError(413, "request body too large", {"max_bytes": MAX_BODY_BYTES})
    return raw


def _json_body() -> Any:
    """The body of a request that changes state, refused (415) unless sent as application/json:
    a cross-site form, or a fetch that skips CORS's preflight, can only send text/plain, form or
    multipart bodies. The operator's pages post forms to /ui/, with their own token check."""
    content_type = (app.current_event.headers or {}).get("content-type") or ""
    if content_type.split(";")[0].strip().lower() != "application/json":
        got = f"got {content_type[:100]!r}" if content_type else "no Content-Type was sent"
        raise ApiError(415, "send the body as application/json", got)
    return _body()


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _page_args(
    max_size: int,
    default: int = DEFAULT_PAGE,
    *,
    keys: tuple[str, ...] = ("stream_id",),
    stream_id: str | None = None,
    sort_key: re.Pattern[str] = DEFECT_ID,
) -> tuple[int, store.Item | None]:
    """``limit`` and the ``next_token`` as an ExclusiveStartKey of the table whose key attributes
    are ``keys`` (of the partition ``stream_id``, for a Query): a token of another table, another
    stream or another shape is a 400 here, not an error from the store."""
    q = app.current_event.query_string_parameters or {}
    try:
        limit = int(q.get("limit", default))
    except ValueError:
        raise ApiError(400, "limit must be an integer") from None
    if not 1 <= limit <= max_size:
        raise ApiError(400, f"limit must be between 1 and {max_size}")
    token = q.get("next_token")
    if not token:
        return limit, None
    try:
        start = store.decode_page_token(token)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    fields = {k: v["S"] for k, v in start.items()}
    if (
        set(fields) != set(keys)
        or not is_stream_id(fields["stream_id"])
        or (stream_id is not None and fields["stream_id"] != stream_id)
        or ("defect_id" in fields and not sort_key.match(fields["defect_id"]))
        or any(len(v) > 512 for v in fields.values())
    ):
        raise ApiError(400, "next_token is not valid for this listing")
    return limit, start


def _webhook_shown(url: str | None) -> str | None:
    """A stream's ``webhook_url`` as the API shows it: scheme and host only. User info holds
    credentials, and the path or query of many webhook services holds the secret itself."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"


def _shown(stream: Any) -> dict[str, Any]:
    """A :class:`shared.models.Stream` as the API answers it."""
    body: dict[str, Any] = stream.model_dump(mode="json")
    body["webhook_url"] = _webhook_shown(body.get("webhook_url"))
    return body


def _stream_item(d: Deps, stream_id: str) -> dict[str, Any]:
    if not is_stream_id(stream_id):
        raise ApiError(404, "no such stream", stream_id[:80])
    got = call(d.ddb.get_item, **store.get_stream(d.tables, stream_id)).get("Item")
    if not got:
        raise ApiError(404, "no such stream", stream_id)
    return store.unmarshal(got)


@app.post("/streams")
def create_stream() -> Response[str]:
    d = deps()
    try:
        # Strict: "realtime": "yes" (or 1) is a 422, not true.
        spec = StreamSpec.model_validate_json(_json_body() or "null", strict=True)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ApiError(400, "the body is not valid JSON") from None
        raise ApiError(422, "invalid stream", _validation_detail(exc)) from None
    try:
        check_url(spec.url, schemes=d.settings.schemes, allow_private=d.settings.allow_private_hosts)
    except UrlRefused as exc:
        raise ApiError(422, "url refused", str(exc)) from None
    except HostUnresolvable:
        pass  # not resolvable now; the worker checks again when it opens the source
    if spec.webhook_url is not None:
        try:
            check_url(
                spec.webhook_url,
                schemes=frozenset({"http", "https"}),
                allow_private=d.settings.allow_private_hosts,
            )
        except UrlRefused as exc:
            raise ApiError(422, "webhook_url refused", str(exc)) from None
        except HostUnresolvable:
            pass
    if spec.client_token:
        # The token decides the id, so a retried POST hits the same item's condition.
        digest = hashlib.sha256(spec.client_token.encode()).hexdigest()[:24]
        stream_id = f"s-{digest}"
    else:
        stream_id = f"s-{secrets.token_hex(12)}"
    now = time.time()
    request = store.put_new_stream(
        d.tables,
        stream_id=stream_id,
        url=spec.url,
        name=spec.name,
        realtime=spec.realtime,
        client_token=spec.client_token,
        loudness_profile=spec.loudness_profile,
        profile=spec.profile,
        detectors=spec.detectors,
        detector_options=spec.detector_options,
        now=now,
        webhook_url=spec.webhook_url,
    )
    try:
        call(d.ddb.put_item, **request)
    except aws.ConflictError:
        existing = _stream_item(d, stream_id)
        if existing.get("url") != spec.url:
            raise ApiError(409, "client_token already used for another url") from None
        return _json(200, _shown(store.stream_from_item(existing, now)))
    send_assignment(d, stream_id, 1)
    item = store.unmarshal(request["Item"])
    return _json(201, _shown(store.stream_from_item(item, now)))


@app.get("/streams")
def list_streams() -> Response[str]:
    d = deps()
    limit, start = _page_args(d.settings.max_page_size)
    page = call(d.ddb.scan, **store.scan_streams(d.tables, limit=limit, start_key=start))
    now = time.time()
    streams = [_shown(store.stream_from_item(store.unmarshal(i), now)) for i in page["Items"]]
    streams.sort(key=lambda s: s["created_at"])
    return _json(
        200, {"streams": streams, "next_token": store.encode_page_token(page.get("LastEvaluatedKey"))}
    )


@app.get("/streams/<stream_id>")
def get_stream(stream_id: str) -> Response[str]:
    d = deps()
    return _json(200, _shown(store.stream_from_item(_stream_item(d, stream_id), time.time())))


@app.delete("/streams/<stream_id>")
def delete_stream(stream_id: str) -> Response[str]:
    d = deps()
    _stream_item(d, stream_id)
    got = call(d.ddb.update_item, **store.stop_stream(d.tables, stream_id, time.time()))
    stream = store.stream_from_item(store.unmarshal(got["Attributes"]), time.time())
    return _json(200, _shown(stream))


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


@app.get("/streams/<stream_id>/defects")
def list_defects(stream_id: str) -> Response[str]:
    d = deps()
    acks = store.acks_of(_stream_item(d, stream_id))
    limit, start = _page_args(d.settings.max_page_size, keys=("stream_id", "defect_id"), stream_id=stream_id)
    defect_type = (app.current_event.query_string_parameters or {}).get("type")
    if defect_type is not None and defect_type not in set(DefectType):
        raise ApiError(400, f"unknown defect type {defect_type!r}", sorted(DefectType))
    since_s, since_at = _since()
    defects: list[dict[str, Any]] = []
    # A filtered Query may return short pages: keep reading until the page is full or done.
    while True:
        request = store.query_defects(
            d.tables,
            stream_id,
            now=time.time(),
            limit=limit - len(defects),
            start_key=start,
            defect_type=defect_type,
            since_s=since_s,
            since_at=since_at,
        )
        page = call(d.ddb.query, **request)
        defects.extend(_defect_record(stream_id, raw) for raw in page["Items"] if not store.is_live_item(raw))
        start = page.get("LastEvaluatedKey")
        if not start or len(defects) >= limit:
            break
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
    limit, start = _page_args(d.settings.max_page_size, keys=("stream_id", "defect_id"), stream_id=stream_id,
                              sort_key=EVENT_KEY)
    event_type = (app.current_event.query_string_parameters or {}).get("type")
    if event_type is not None and not EVENT_TYPE.match(event_type):
        raise ApiError(400, "type must be an event type such as splice_insert or time_signal")
    since_s, since_at = _since()
    events: list[dict[str, Any]] = []
    while True:  # a filtered Query may return short pages
        request = store.query_events(
            d.tables, stream_id, now=time.time(), limit=limit - len(events), start_key=start,
            event_type=event_type, since_s=since_s, since_at=since_at,
        )
        page = call(d.ddb.query, **request)
        events.extend(store.event_from_item(store.unmarshal(raw)) for raw in page["Items"])
        start = page.get("LastEvaluatedKey")
        if not start or len(events) >= limit:
            break
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
    return Response(
        status_code=200,
        content_type="image/jpeg",
        body=base64.b64decode(start["jpeg_b64"]),
        # Rewritten at most once (when the defect closes): a page refreshing every few seconds
        # need not fetch it again each time.
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@app.get("/")
def web_page() -> Response[str]:
    """The live wall: a page of streams, each with its picture, state, open defects and levels."""
    d = deps()
    limit, start = _page_args(d.settings.max_page_size, default=web.STREAMS_PER_PAGE)
    page = call(d.ddb.scan, **store.scan_streams(d.tables, limit=limit, start_key=start))
    now = time.time()
    streams = sorted(
        (store.stream_from_item(store.unmarshal(i), now) for i in page["Items"]), key=lambda s: s.created_at
    )
    live = _live_pictures(d, [s.stream_id for s in streams], now)
    views = [web.StreamView(s, _recent_defects(d, s.stream_id, now), live.get(s.stream_id)) for s in streams]
    html = web.render_page(
        views,
        next_token=store.encode_page_token(page.get("LastEvaluatedKey")),
        updated_at=iso_from_epoch(now),
        now=now,
    )
    return _html(200, html)


def _recent_defects(
    d: Deps, stream_id: str, now: float, count: int = web.RECENT_DEFECTS
) -> list[dict[str, Any]]:
    """At most ``count`` defects, newest first, in one Query. It reads a few times as many:
    Limit applies before the filter that hides expired defects (and the live picture is one)."""
    request = store.query_defects(
        d.tables, stream_id, now=now, limit=4 * count, start_key=None, newest_first=True
    )
    items = [raw for raw in call(d.ddb.query, **request)["Items"] if not store.is_live_item(raw)]
    return [_defect_record(stream_id, raw) for raw in items[:count]]


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


# ================================================================ acknowledgements, the live picture
# Acknowledging a defect (JSON: POST .../acknowledge {"by": "..."}), the live picture, the style
# sheet, and what the wall and the stream pages (router/ui.py) read.

MAX_BY_CHARS = 80


def _html(status: int, html: str, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        content_type="text/html; charset=utf-8",
        body=html,
        headers={**web.PAGE_HEADERS, **(headers or {})},
    )


def _live_pictures(d: Deps, stream_ids: list[str], now: float) -> dict[str, dict[str, Any]]:
    """stream id → its live picture item (``worker/picture.py``), in one BatchGetItem."""
    if not stream_ids:
        return {}
    request = store.get_live_pictures(d.tables, stream_ids[:100])
    got = call(d.ddb.batch_get_item, **request)
    out: dict[str, dict[str, Any]] = {}
    for raw in got.get("Responses", {}).get(d.tables.defects, []):
        item = store.unmarshal(raw)
        if float(item.get("expires_at", now + 1)) > now and isinstance(item.get("live"), dict):
            out[str(item["stream_id"])] = item["live"]
    return out  # UnprocessedKeys (throttling) only cost a tile its picture until the next refresh


@app.get("/streams/<stream_id>/live.jpg")
def get_live_picture(stream_id: str) -> Response[bytes]:
    """The stream's current picture, as the worker last wrote it (a JPEG, refreshed every few s)."""
    if not is_stream_id(stream_id):
        raise ApiError(404, "no such stream", stream_id[:80])
    d = deps()
    got = call(d.ddb.get_item, **store.get_live_picture(d.tables, stream_id)).get("Item")
    item = store.unmarshal(got) if got else {}
    live = item.get("live")
    if not isinstance(live, dict) or float(item.get("expires_at", 0)) <= time.time():
        raise ApiError(404, "no live picture for this stream", stream_id)
    return Response(
        status_code=200,
        content_type="image/jpeg",
        body=base64.b64decode(live["jpeg_b64"]),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


@app.get("/static/<name>")
def get_static(name: str) -> Response[str]:
    body = _static_file(name)
    if body is None:
        raise ApiError(404, "no such file", name[:80])
    return Response(
        status_code=200,
        content_type="text/css; charset=utf-8",
        body=body,
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@cache
def _static_file(name: str) -> str | None:
    """A style sheet of router/static (nothing else is served: no path reaches outside it)."""
    if not re.fullmatch(r"[a-z0-9_-]+\.css", name):
        return None
    path = web.STATIC_DIR / name
    return path.read_text() if path.is_file() else None


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
    try:
        ack = _Ack.model_validate_json(_json_body() or "null")
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ApiError(400, "the body is not valid JSON") from None
        raise ApiError(422, "invalid acknowledgement", _validation_detail(exc)) from None
    return _json(200, _acknowledge(deps(), stream_id, defect_id, ack.by))


# The operator's pages and their form actions live in router/ui.py; importing it registers them.
from router import ui  # noqa: E402, F401
