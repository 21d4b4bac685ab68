"""The operator's pages (the wall at `/`, a stream's page, the add form) and their actions, over
HTTP through the local router. In a real browser: tests/test_wall_browser.py."""

from __future__ import annotations

import base64
import html
import http.client
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from router import web
from router.handler import lambda_handler
from router.local import LambdaContext
from shared import store
from shared.models import DefectType
from tests.conftest import Api, Stack, load_event
from tests.support import make_defect
from worker.evidence import Evidence, Thumbnail, encode_jpeg

CHROMIUM = Path("/usr/bin/chromium")
WINDOW_W, WINDOW_H = 1280, 900


@dataclass
class Page:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def fetch(api: Api, path: str) -> Page:
    try:
        with urllib.request.urlopen(api.base + path, timeout=15) as resp:
            return Page(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Page(exc.code, exc.headers, exc.read())


def submit(api: Api, name: str, url: str) -> str:
    status, body = api.call("POST", "/streams", {"url": url, "name": name})
    assert status == 201, body
    return str(body["stream_id"])


def put_defect(
    stack: Stack,
    ddb: Any,
    stream_id: str,
    start_s: float,
    *,
    end_s: float | None,
    gray: int | None,
    now: float | None = None,
    trace: bool = False,
) -> str:
    """A defect record as the worker writes it; with a ``gray`` start thumbnail when given."""
    defect = make_defect(DefectType.BLACK, start_s, end_s, stream_id=stream_id)
    evidence = None
    if gray is not None:
        jpeg = encode_jpeg(np.full((90, 160), gray, np.uint8))
        thumbs = (Thumbnail(role="start", t=start_s, width=160, height=90, jpeg=jpeg),)
        evidence = Evidence(
            stream_id=stream_id,
            defect_id=defect.defect_id,
            type="black",
            start_s=start_s,
            end_s=end_s,
            window=(start_s - 3, start_s + 3),
            thumbnails=thumbs,
            trace=(
                {
                    "luma_mean": tuple(
                        (start_s - 3 + k * 0.1, 16.0 if k >= 30 else 120.0) for k in range(61)
                    ),
                    "luma_diff": tuple((start_s - 3 + k * 0.1, 0.0 if k >= 30 else 8.0) for k in range(61)),
                    "audio_rms_dbfs": tuple((start_s - 3 + k * 0.1, -20.0) for k in range(61)),
                }
                if trace
                else {}
            ),
        ).to_item()
    item = store.defect_item(defect, ttl_days=1, now=time.time() if now is None else now, evidence=evidence)
    ddb.put_item(TableName=f"{stack.prefix}-defects", Item=store.marshal(item))
    return defect.defect_id


def decode_jpeg(data: bytes) -> npt.NDArray[np.uint8]:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert img is not None, "not a JPEG"
    return np.asarray(img, dtype=np.uint8)


# ------------------------------------------------------------------ over HTTP


def post_form(
    api: Api,
    path: str,
    fields: dict[str, str],
    *,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
) -> Page:
    """A browser's form POST (redirects not followed)."""
    host = api.base.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=15)
    try:
        sent = {"Content-Type": "application/x-www-form-urlencoded", "Origin": api.base, **(headers or {})}
        if cookie is not None:
            sent["Cookie"] = f"{web.CSRF_COOKIE}={cookie}"
        conn.request("POST", path, body=urlencode(fields), headers=sent)
        resp = conn.getresponse()
        return Page(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def form_token(api: Api, path: str = "/ui/add") -> str:
    """The token a page puts in its forms, which its cookie repeats."""
    page = fetch(api, path)
    cookie = page.headers["Set-Cookie"]
    token = re.search(rf"{web.CSRF_COOKIE}=([A-Za-z0-9_-]+)", cookie)
    assert token is not None and "SameSite=Strict" in cookie and "HttpOnly" in cookie
    assert f'name="csrf" value="{token.group(1)}"' in page.text
    return token.group(1)


def put_live(stack: Stack, ddb: Any, stream_id: str, bgr: tuple[int, int, int], levels: list[float]) -> None:
    jpeg = encode_jpeg(np.full((90, 160, 3), bgr, np.uint8))
    picture = {
        "t": 1.0,
        "taken_at": time.time(),
        "width": 160,
        "height": 90,
        "jpeg_b64": base64.b64encode(jpeg).decode(),
        "levels_dbfs": levels,
    }
    tables = store.Tables(streams=f"{stack.prefix}-streams", defects=f"{stack.prefix}-defects")
    ddb.put_item(**store.put_live_picture(tables, stream_id, picture, now=time.time()))


def tile(page: str, stream_id: str) -> str:
    return page.split(f'id="{stream_id}"', 1)[1].split("</a>", 1)[0]


def tile_state(page: str, stream_id: str) -> str:
    found = re.search(rf'<a class="tile state-(\w+)" id="{stream_id}"', page)
    assert found is not None, page
    return found.group(1)


def test_wall_has_a_tile_per_stream_linking_to_its_page(router: Api) -> None:
    first = submit(router, "studio feed", "https://example.com/studio.m3u8")
    second = submit(router, "lobby cam", "udp://@:5000")
    page = fetch(router, "/")
    assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    for stream_id, name in ((first, "studio feed"), (second, "lobby cam")):
        assert tile_state(page.text, stream_id) == "warn"  # pending: nobody monitors it yet
        assert f'href="/ui/streams/{stream_id}"' in page.text
        assert f'<div class="name">{name}</div>' in tile(page.text, stream_id)
    assert '<meta http-equiv="refresh" content="5">' in page.text


def test_stream_name_and_url_are_escaped(router: Api) -> None:
    stream_id = submit(
        router, "<script>alert(1)</script>", 'https://example.com/a.m3u8?q="><img/src=x/onerror=alert(2)>'
    )
    for path in ("/", f"/ui/streams/{stream_id}"):
        page = fetch(router, path)
        assert "<script" not in page.text and "<img/src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "q=&quot;&gt;&lt;img/src=x/onerror=alert(2)&gt;" in fetch(router, f"/ui/streams/{stream_id}").text


@pytest.mark.parametrize("path", ["/", "/ui/add", "stream"])
def test_pages_allow_only_their_own_style_and_images_and_no_script(router: Api, path: str) -> None:
    if path == "stream":
        path = f"/ui/streams/{submit(router, 'feed', 'https://example.com/feed.m3u8')}"
    page = fetch(router, path)
    csp = {d.split()[0]: d.split()[1:] for d in page.headers["Content-Security-Policy"].split("; ")}
    assert csp["default-src"] == ["'none'"] and csp["img-src"] == ["'self'", "data:"]
    assert csp["style-src"] == ["'self'"] and csp["form-action"] == ["'self'"]
    assert "script-src" not in csp  # falls back to 'none'
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script" not in page.text and "<style" not in page.text and " style=" not in page.text
    assert re.findall(r'(?:href|src)="(https?:)?//', page.text) == []  # nothing from elsewhere
    css = fetch(router, "/static/avmon.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css") and ".tile" in css.text
    assert fetch(router, "/static/..%2Fapi.py").status == 404


def test_tile_is_red_while_a_critical_defect_is_open(router: Api, stack: Stack, ddb_client: Any) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    put_defect(stack, ddb_client, stream_id, 4.0, end_s=None, gray=None)
    page = fetch(router, "/").text
    assert tile_state(page, stream_id) == "alert"
    assert '<span class="chip critical">black</span>' in tile(page, stream_id)
    put_defect(stack, ddb_client, stream_id, 4.0, end_s=7.0, gray=None)  # it closed
    page = fetch(router, "/").text
    assert tile_state(page, stream_id) == "warn" and "chip" not in tile(page, stream_id).split("chips", 1)[1]


def test_tile_shows_the_live_picture_in_colour_and_a_bar_per_channel(
    router: Api, stack: Stack, ddb_client: Any
) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    put_live(stack, ddb_client, stream_id, (0, 160, 0), [-20.0, -6.0])
    html = tile(fetch(router, "/").text, stream_id)
    found = re.search(r'<img class="live" src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', html)
    assert found is not None, html
    picture = cv2.imdecode(np.frombuffer(base64.b64decode(found.group(1)), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(picture.reshape(-1, 3).mean(axis=0) - (0, 160, 0)).max() < 6
    bars = re.findall(r'<rect class="level" x="0" y="\d+" width="(\d+)"', html)
    assert bars == ["107", "144"]  # -20 and -6 dBFS on a -60..0 dBFS scale of 160 px
    got = fetch(router, f"/streams/{stream_id}/live.jpg")
    assert got.status == 200 and got.headers["Content-Type"] == "image/jpeg"


def test_the_live_picture_is_not_a_defect(router: Api, stack: Stack, ddb_client: Any) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    put_defect(stack, ddb_client, stream_id, 4.0, end_s=7.0, gray=None)
    put_live(stack, ddb_client, stream_id, (10, 10, 10), [])
    status, body = router.call("GET", f"/streams/{stream_id}/defects")
    assert status == 200 and [d["defect_id"] for d in body["defects"]] == ["000000004.000-black"]
    shown = re.findall(r'data-defect-id="([^"]+)"', fetch(router, f"/ui/streams/{stream_id}").text)
    assert shown == ["000000004.000-black"]


def test_stream_page_draws_each_series_of_the_trace_and_the_timeline(
    router: Api, stack: Stack, ddb_client: Any
) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    defect_id = put_defect(stack, ddb_client, stream_id, 4.0, end_s=7.0, gray=30, trace=True)
    page = fetch(router, f"/ui/streams/{stream_id}").text
    block = page.split(f'data-defect-id="{defect_id}"', 1)[1].split("</section>", 1)[0]
    series = dict(re.findall(r'<polyline class="series" data-series="(\w+)" points="([^"]+)"', block))
    assert sorted(series) == ["audio_rms_dbfs", "luma_diff", "luma_mean"]
    xs = [float(pt.split(",")[0]) for pt in series["luma_mean"].split()]
    assert len(xs) == 61 and xs == sorted(xs)  # one point per sample, in time order
    assert '<rect class="defect-span"' in block and "data:image/jpeg;base64," in block
    assert re.search(r'<svg class="timeline"[^>]*>.*<text x="0" y="16">black</text>', page, re.S)


def test_thumbnail_is_the_defects_start_picture_as_a_jpeg(router: Api, stack: Stack, ddb_client: Any) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    defect_id = put_defect(stack, ddb_client, stream_id, 4.0, end_s=7.0, gray=200)
    got = fetch(router, f"/streams/{stream_id}/defects/{defect_id}/thumbnail.jpg")
    assert got.status == 200 and got.headers["Content-Type"] == "image/jpeg"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    picture = decode_jpeg(got.body)
    assert picture.shape == (90, 160) and abs(float(picture.mean()) - 200) < 3


def test_thumbnail_is_base64_encoded_in_the_lambda_response(stack: Stack, ddb_client: Any) -> None:
    event = load_event(
        "function_url_post_streams.json", body=json.dumps({"url": "https://example.com/a.m3u8"})
    )
    stream_id = json.loads(lambda_handler(event, LambdaContext())["body"])["stream_id"]
    defect_id = put_defect(stack, ddb_client, stream_id, 4.0, end_s=7.0, gray=50)
    path = f"/streams/{stream_id}/defects/{defect_id}/thumbnail.jpg"
    event = load_event("function_url_get_streams.json", rawPath=path)
    event["requestContext"]["http"]["path"] = path
    result = lambda_handler(event, LambdaContext())
    assert result["statusCode"] == 200 and result["isBase64Encoded"] is True
    assert decode_jpeg(base64.b64decode(result["body"])).shape == (90, 160)


def test_thumbnail_of_a_defect_without_evidence_is_a_json_404(
    router: Api, stack: Stack, ddb_client: Any
) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    defect_id = put_defect(stack, ddb_client, stream_id, 4.0, end_s=None, gray=None)
    status, body = router.call("GET", f"/streams/{stream_id}/defects/{defect_id}/thumbnail.jpg")
    assert status == 404 and body["error"] == "no evidence for this defect"
    status, body = router.call(
        "GET", "/streams/s-0123456789abcdef01234567/defects/000000004.000-black/thumbnail.jpg"
    )
    assert status == 404 and body["error"] == "no evidence for this defect"


# ------------------------------------------------------------------ actions


def test_add_form_creates_the_stream_and_shows_its_page(router: Api) -> None:
    token = form_token(router)
    got = post_form(
        router, "/ui/streams", {"csrf": token, "url": "udp://@:5004", "name": "from the page"}, cookie=token
    )
    assert got.status == 303
    stream_id = got.headers["Location"].rsplit("/", 1)[1]
    status, stream = router.call("GET", f"/streams/{stream_id}")
    assert status == 200 and (stream["url"], stream["name"], stream["desired"]) == (
        "udp://@:5004",
        "from the page",
        "RUNNING",
    )


def test_add_form_is_validated_as_the_api_validates(router: Api) -> None:
    token = form_token(router)
    got = post_form(router, "/ui/streams", {"csrf": token, "url": "ftp://example.com/a.ts"}, cookie=token)
    api_status, api_body = router.call("POST", "/streams", {"url": "ftp://example.com/a.ts"})
    assert got.status == api_status == 422
    assert f"{api_body['error']}: {api_body['detail']}" in html.unescape(got.text)
    assert 'value="ftp://example.com/a.ts"' in got.text  # the form keeps what was typed
    assert router.call("GET", "/streams")[1]["streams"] == []


def test_form_posts_from_another_site_change_nothing(router: Api) -> None:
    token = form_token(router)
    with_token = {"csrf": token, "url": "udp://@:5005"}
    for fields, cookie, headers in (
        ({"url": "udp://@:5005"}, token, {}),  # no token in the form
        (with_token, None, {}),  # a token but no cookie (another site cannot send ours)
        (with_token, "x" * 32, {}),  # a cookie that is not the form's
        (with_token, token, {"Origin": "http://evil.example"}),
        (with_token, token, {"Sec-Fetch-Site": "cross-site"}),
    ):
        got = post_form(router, "/ui/streams", fields, cookie=cookie, headers=headers)
        assert got.status == 403 and "cross-site request refused" in got.text, (fields, cookie, headers)
    assert router.call("GET", "/streams")[1]["streams"] == []


def test_get_never_changes_state(router: Api) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    assert fetch(router, f"/ui/streams/{stream_id}/stop").status == 404
    assert router.call("GET", f"/streams/{stream_id}")[1]["desired"] == "RUNNING"


def test_stop_from_the_page(router: Api) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    token = form_token(router, f"/ui/streams/{stream_id}")
    got = post_form(router, f"/ui/streams/{stream_id}/stop", {"csrf": token}, cookie=token)
    assert got.status == 303 and got.headers["Location"] == f"/ui/streams/{stream_id}"
    assert router.call("GET", f"/streams/{stream_id}")[1]["desired"] == "STOPPED"
    assert "stop monitoring" not in fetch(router, f"/ui/streams/{stream_id}").text


def test_acknowledging_a_defect_records_who_and_when_once(router: Api, stack: Stack, ddb_client: Any) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    defect_id = put_defect(stack, ddb_client, stream_id, 4.0, end_s=None, gray=None)
    path = f"/streams/{stream_id}/defects/{defect_id}/acknowledge"
    status, ack = router.call("POST", path, {"by": "ana"})
    assert status == 200 and ack["acknowledged_by"] == "ana" and ack["acknowledged_at"].endswith("Z")
    status, again = router.call("POST", path, {"by": "bo"})
    assert status == 200 and again == ack  # the first stands
    _, body = router.call("GET", f"/streams/{stream_id}/defects")
    assert body["defects"][0]["acknowledged"] == {"by": "ana", "at": ack["acknowledged_at"]}
    put_defect(stack, ddb_client, stream_id, 4.0, end_s=7.0, gray=None)  # the worker's close write
    _, body = router.call("GET", f"/streams/{stream_id}/defects")
    assert body["defects"][0]["acknowledged"]["by"] == "ana"
    assert "acknowledged by ana" in fetch(router, f"/ui/streams/{stream_id}").text


def test_acknowledge_is_validated(router: Api, stack: Stack, ddb_client: Any) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    defect_id = put_defect(stack, ddb_client, stream_id, 4.0, end_s=None, gray=None)
    path = f"/streams/{stream_id}/defects/{defect_id}/acknowledge"
    assert router.call("POST", path, {"by": ""})[0] == 422
    assert router.call("POST", path, {"by": "x" * 81})[0] == 422
    assert (
        router.call("POST", f"/streams/{stream_id}/defects/000000009.000-black/acknowledge", {"by": "a"})[0]
        == 404
    )
    as_form = post_form(router, path, {"by": "a"})  # a cross-site form can only send a form's types
    assert as_form.status == 415


def test_acknowledge_from_the_page(router: Api, stack: Stack, ddb_client: Any) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    defect_id = put_defect(stack, ddb_client, stream_id, 4.0, end_s=None, gray=None)
    token = form_token(router, f"/ui/streams/{stream_id}")
    got = post_form(
        router,
        f"/ui/streams/{stream_id}/defects/{defect_id}/acknowledge",
        {"csrf": token, "by": "night shift"},
        cookie=token,
    )
    assert got.status == 303
    assert "acknowledged by night shift" in fetch(router, f"/ui/streams/{stream_id}").text
