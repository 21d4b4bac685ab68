"""The API's foundation (DESIGN.md §5): the resolver, its collaborators, errors and JSON answers,
and the request reading every route shares (body limits, validation details, page tokens)."""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import pydantic
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from pydantic import ValidationError

from router import web
from shared import aws, store
from shared.models import Assignment, is_stream_id
from shared.settings import RouterSettings

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


def _html(status: int, html: str, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        content_type="text/html; charset=utf-8",
        body=html,
        headers={**web.PAGE_HEADERS, **(headers or {})},
    )


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


Model = TypeVar("Model", bound=pydantic.BaseModel)


def _parsed_body(model: type[Model], invalid: str, *, strict: bool | None = None) -> Model:
    """The JSON body as a ``model``: a 400 if it is not JSON, a 422 (``invalid``) if it is not one."""
    try:
        return model.model_validate_json(_json_body() or "null", strict=strict)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ApiError(400, "the body is not valid JSON") from None
        raise ApiError(422, invalid, _validation_detail(exc)) from None


def _jpeg(b64: str, cache_control: str) -> Response[bytes]:
    return Response(
        status_code=200,
        content_type="image/jpeg",
        body=base64.b64decode(b64),
        headers={"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"},
    )


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

