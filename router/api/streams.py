"""The stream routes: create (validated, idempotent on ``client_token``), list, read, stop."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from aws_lambda_powertools.event_handler import Response

from router.api.core import ApiError, Deps, _json, _page_args, _parsed_body, app, call, deps, send_assignment
from shared import aws, store
from shared.models import StreamSpec, is_stream_id
from shared.targets import url_origin
from shared.urlpolicy import HostUnresolvable, UrlRefused, check_url


def _webhook_shown(url: str | None) -> str | None:
    """A stream's ``webhook_url`` as the API shows it: scheme and host only. User info holds
    credentials, and the path or query of many webhook services holds the secret itself."""
    return None if url is None else url_origin(url)


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


def _check_url(d: Deps, url: str, schemes: frozenset[str], refused: str) -> None:
    """A 422 (``refused``) for a URL the deployment does not accept (``shared/urlpolicy.py``)."""
    try:
        check_url(url, schemes=schemes, allow_private=d.settings.allow_private_hosts)
    except UrlRefused as exc:
        raise ApiError(422, refused, str(exc)) from None
    except HostUnresolvable:
        pass  # not resolvable now; the worker checks again when it opens the source


@app.post("/streams")
def create_stream() -> Response[str]:
    d = deps()
    # Strict: "realtime": "yes" (or 1) is a 422, not true.
    spec = _parsed_body(StreamSpec, "invalid stream", strict=True)
    _check_url(d, spec.url, d.settings.schemes, "url refused")
    if spec.webhook_url is not None:
        _check_url(d, spec.webhook_url, frozenset({"http", "https"}), "webhook_url refused")
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

