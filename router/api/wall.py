"""The live wall (``/``) and what it and the stream pages (router/ui.py) read: the recent
defects, the live pictures (and ``live.jpg``), the style sheets."""

from __future__ import annotations

import re
import time
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import Response

from router import web
from router.api.core import ApiError, Deps, _html, _jpeg, _page_args, app, call, deps
from router.api.defects import _defect_record
from shared import store
from shared.models import is_stream_id, iso_from_epoch


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
    return _jpeg(live["jpeg_b64"], "no-store")


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

