"""The operator's pages as routes: a stream's page, the add form and their POST actions.

Each action runs the JSON API's own route on the form's values (the same validation, the same
answer), after :func:`_same_origin`: the form's token must match the page's ``SameSite=Strict``
cookie, and the browser's ``Origin`` and ``Sec-Fetch-Site`` must name this site when sent. No
route here changes anything on a GET. Rendering is ``router/web.py``'s; the wall (``/``) and the
acknowledge route are in ``router/api/``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

from router import web
from router.api.core import ApiError, _body, _html, app, call, deps
from router.api.defects import _evidence, acknowledge_defect
from router.api.streams import _stream_item, create_stream, delete_stream
from router.api.wall import _live_pictures, _recent_defects
from shared import aws, store


def _cookies() -> dict[str, str]:
    """Request cookies: the function-URL event's ``cookies`` list, or a Cookie header."""
    event = app.current_event
    raw = list(event.get("cookies") or [])
    header = (event.headers or {}).get("cookie")
    if header:
        raw.extend(header.split(";"))
    out: dict[str, str] = {}
    for part in raw:
        name, _, value = part.strip().partition("=")
        if name and name not in out:
            out[name] = value
    return out


def _csrf_token() -> tuple[str, dict[str, str]]:
    """The page's form token and, when it is new, the cookie that carries it."""
    token = _cookies().get(web.CSRF_COOKIE, "")
    if re.fullmatch(r"[A-Za-z0-9_-]{32}", token):
        return token, {}
    token = secrets.token_urlsafe(24)
    host = (app.current_event.headers or {}).get("host", "").rsplit(":", 1)[0]
    secure = "" if host in ("127.0.0.1", "localhost", "[::1]") else "; Secure"
    return token, {"Set-Cookie": f"{web.CSRF_COOKIE}={token}; Path=/ui; SameSite=Strict; HttpOnly{secure}"}


def _form() -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in parse_qsl(_body(), keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


def _same_origin(form: dict[str, str]) -> None:
    """Refuse a cross-site form post: the token must match the cookie (which a SameSite=Strict
    cookie never brings from another site), and the browser's own Origin and Sec-Fetch-Site
    must say this site when it sends them."""
    headers = app.current_event.headers or {}
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != headers.get("host", ""):
        raise ApiError(403, "cross-site request refused", "Origin")
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise ApiError(403, "cross-site request refused", "Sec-Fetch-Site")
    cookie, sent = _cookies().get(web.CSRF_COOKIE, ""), form.get("csrf", "")
    if not cookie or not secrets.compare_digest(cookie.encode(), sent.encode()):
        raise ApiError(403, "cross-site request refused", "the form's token does not match (reload the page)")


def _as_api(route: Any, body: Any, *args: str) -> tuple[int, Any]:
    """Run a JSON API route on ``body`` as if it had been sent to it: same validation, same
    answer. (status, JSON body)."""
    outer = BaseRouter.current_event
    raw = dict(outer.raw_event)
    raw["headers"] = {**(raw.get("headers") or {}), "content-type": "application/json"}
    raw["body"], raw["isBase64Encoded"] = json.dumps(body), False
    BaseRouter.current_event = app._to_proxy_event(raw)
    try:
        response = route(*args)
        return response.status_code, json.loads(response.body or "null")
    except ApiError as exc:
        return exc.status, {"error": exc.error, "detail": exc.detail}
    except aws.ConflictError as exc:
        return 409, {"error": "conflict", "detail": str(exc)}
    except aws.RetryableError as exc:
        return 503, {"error": "the store is unavailable, retry", "detail": str(exc)}
    finally:
        BaseRouter.current_event = outer


def _error_text(answer: Any) -> str:
    if not isinstance(answer, dict):
        return str(answer)
    detail = answer.get("detail")
    if isinstance(detail, list):
        detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in detail)
    return f"{answer.get('error')}" + (f": {detail}" if detail else "")


def _see_other(location: str) -> Response[str]:
    return Response(status_code=303, content_type="text/plain", body="", headers={"Location": location})


def _refused(exc: ApiError) -> Response[str]:
    return _html(
        exc.status, web.render_message("refused", _error_text({"error": exc.error, "detail": exc.detail}))
    )


def _stream_page(stream_id: str, *, error: str | None = None, status: int = 200) -> Response[str]:
    d = deps()
    item = _stream_item(d, stream_id)
    now = time.time()
    stream = store.stream_from_item(item, now)
    acks = store.acks_of(item)
    records = _recent_defects(d, stream_id, now, web.PAGE_DEFECTS)
    views = []
    for record in records:
        evidence = None
        if record.get("evidence_url"):
            try:
                evidence = _evidence(d, stream_id, str(record["defect_id"]))
            except ApiError:
                evidence = None
        views.append(web.DefectView(record, evidence, acks.get(str(record["defect_id"]))))
    deliveries = call(
        d.ddb.query, **store.query_deliveries(d.tables, stream_id, now=now, limit=20, start_key=None)
    )["Items"]
    token, cookie = _csrf_token()
    page = web.StreamPage(
        stream=stream,
        defects=views,
        deliveries=[store.unmarshal(r) for r in deliveries],
        live=_live_pictures(d, [stream_id], now).get(stream_id),
        csrf=token,
        error=error,
    )
    return _html(status, web.render_stream_page(page, now), cookie)


@app.get("/ui/streams/<stream_id>")
def ui_stream(stream_id: str) -> Response[str]:
    """A stream's page: timeline, defects with pictures and traces, notifications, actions."""
    try:
        return _stream_page(stream_id)
    except ApiError as exc:
        return _refused(exc)


@app.get("/ui/add")
def ui_add() -> Response[str]:
    token, cookie = _csrf_token()
    return _html(200, web.render_add_page(token), cookie)


@app.post("/ui/streams")
def ui_create() -> Response[str]:
    try:
        form = _form()
        _same_origin(form)
    except ApiError as exc:
        return _refused(exc)
    body: dict[str, Any] = {"url": form.get("url", ""), "realtime": bool(form.get("realtime"))}
    for optional in ("name", "webhook_url"):
        if form.get(optional, "").strip():
            body[optional] = form[optional].strip()
    status, answer = _as_api(create_stream, body)
    if status in (200, 201):
        return _see_other(web.stream_page_path(str(answer["stream_id"])))
    token, _ = _csrf_token()
    return _html(status, web.render_add_page(token, error=_error_text(answer), values=form))


@app.post("/ui/streams/<stream_id>/stop")
def ui_stop(stream_id: str) -> Response[str]:
    try:
        _same_origin(_form())
    except ApiError as exc:
        return _refused(exc)
    status, answer = _as_api(delete_stream, None, stream_id)
    if status == 200:
        return _see_other(web.stream_page_path(stream_id))
    return _html(status, web.render_message("not stopped", _error_text(answer)))


@app.post("/ui/streams/<stream_id>/defects/<defect_id>/acknowledge")
def ui_acknowledge(stream_id: str, defect_id: str) -> Response[str]:
    try:
        form = _form()
        _same_origin(form)
    except ApiError as exc:
        return _refused(exc)
    status, answer = _as_api(acknowledge_defect, {"by": form.get("by", "")}, stream_id, defect_id)
    if status == 200:
        return _see_other(f"{web.stream_page_path(stream_id)}#d-{quote(defect_id, safe='')}")
    try:
        return _stream_page(stream_id, error=_error_text(answer), status=status)
    except ApiError as exc:
        return _refused(exc)
