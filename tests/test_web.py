"""The read-only web page at the router's `/`: over HTTP through the local router, and in a real
headless Chromium against the whole system (emulator, router, a worker, a generated stream)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from avmon import testsrc
from router import web
from router.handler import lambda_handler
from router.local import LambdaContext
from shared import store
from shared.models import Defect, DefectType
from tests.conftest import Api, Stack, WorkerFactory, load_event, wait_for
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
) -> str:
    """A defect record as the worker writes it; with a ``gray`` start thumbnail when given."""
    defect = Defect(
        stream_id=stream_id,
        defect_id=f"{start_s:013.3f}-black",
        type=DefectType.BLACK,
        start_s=start_s,
        end_s=end_s,
        start_at="2026-01-01T00:00:00.000Z",
        end_at=None if end_s is None else "2026-01-01T00:00:03.000Z",
        severity="critical",
        worker_id="w1",
    )
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
        ).to_item()
    item = store.defect_item(defect, ttl_days=1, now=time.time() if now is None else now, evidence=evidence)
    ddb.put_item(TableName=f"{stack.prefix}-defects", Item=store.marshal(item))
    return defect.defect_id


def decode_jpeg(data: bytes) -> npt.NDArray[np.uint8]:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert img is not None, "not a JPEG"
    return np.asarray(img, dtype=np.uint8)


# ------------------------------------------------------------------ over HTTP


def test_page_lists_every_stream_with_its_state(router: Api) -> None:
    first = submit(router, "studio feed", "https://example.com/studio.m3u8")
    second = submit(router, "lobby cam", "udp://@:5000")
    page = fetch(router, "/")
    assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    for stream_id, name, url in (
        (first, "studio feed", "https://example.com/studio.m3u8"),
        (second, "lobby cam", "udp://@:5000"),
    ):
        assert f'<section class="stream" id="{stream_id}">' in page.text
        assert f"<h2>{name}</h2>" in page.text and url in page.text
    assert page.text.count("RUNNING / PENDING") == 2 and page.text.count("no defects") == 2
    assert '<meta http-equiv="refresh" content="5">' in page.text


def test_stream_name_and_url_are_escaped(router: Api) -> None:
    submit(router, "<script>alert(1)</script>", 'https://example.com/a.m3u8?q="><img/src=x/onerror=alert(2)>')
    page = fetch(router, "/")
    assert "<script>alert(1)</script>" not in page.text and "<script" not in page.text
    assert "<h2>&lt;script&gt;alert(1)&lt;/script&gt;</h2>" in page.text
    assert "<img/src=x" not in page.text
    assert "q=&quot;&gt;&lt;img/src=x/onerror=alert(2)&gt;" in page.text


def test_page_allows_only_its_own_style_and_images(router: Api) -> None:
    page = fetch(router, "/")
    csp = {d.split()[0]: d.split()[1:] for d in page.headers["Content-Security-Policy"].split("; ")}
    assert csp["default-src"] == ["'none'"] and csp["img-src"] == ["'self'"]
    assert "script-src" not in csp  # falls back to 'none'
    style = re.search(r"<style>(.*?)</style>", page.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert csp["style-src"] == [f"'sha256-{digest}'"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert " style=" not in page.text  # inline style attributes would need 'unsafe-inline'


def test_page_shows_the_newest_defects_first_and_links_their_thumbnails(
    router: Api, stack: Stack, ddb_client: Any
) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    for n in range(7):
        put_defect(stack, ddb_client, stream_id, 10.0 * n, end_s=10.0 * n + 3, gray=100)
    put_defect(stack, ddb_client, stream_id, 70.0, end_s=None, gray=None)
    page = fetch(router, "/").text
    shown = re.findall(r'<tr class="defect" data-defect-id="([^"]+)">', page)
    assert shown == [f"{s:013.3f}-black" for s in (70.0, 60.0, 50.0, 40.0, 30.0)]
    assert page.count('<img class="thumb" src="') == 4  # the newest has no evidence
    assert f'src="/streams/{stream_id}/defects/000000060.000-black/thumbnail.jpg"' in page
    assert '70.00 s – <span class="ongoing">ongoing</span>' in page
    assert "60.00 s – 63.00 s" in page


def test_expired_defects_do_not_shorten_the_list_of_the_newest(
    router: Api, stack: Stack, ddb_client: Any
) -> None:
    stream_id = submit(router, "feed", "https://example.com/feed.m3u8")
    for n in range(5):
        put_defect(stack, ddb_client, stream_id, 10.0 * n, end_s=10.0 * n + 3, gray=None)
    for n in range(5, 9):  # newer, but past their time to live: DynamoDB deletes them lazily
        put_defect(stack, ddb_client, stream_id, 10.0 * n, end_s=10.0 * n + 3, gray=None, now=0.0)
    page = fetch(router, "/").text
    shown = re.findall(r'<tr class="defect" data-defect-id="([^"]+)">', page)
    assert shown == [f"{s:013.3f}-black" for s in (40.0, 30.0, 20.0, 10.0, 0.0)]


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


# ------------------------------------------------------------------ in a real browser


def chromium(url: str, profile: Path, *args: str, timeout_s: float = 60) -> str:
    """Run headless Chromium once with its own empty profile; its stdout. The whole process
    group is killed at the end, whatever happened."""
    proc = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW_W},{WINDOW_H}",
            *args,
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(profile)},
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out.decode(errors="replace")


def dark_boxes(png: npt.NDArray[np.uint8], w: int, h: int) -> list[tuple[int, int]]:
    """Top-left corners of solid near-black rectangles of about ``w`` x ``h`` px."""
    gray = cv2.cvtColor(png, cv2.COLOR_BGR2GRAY)
    n, _, stats, _ = cv2.connectedComponentsWithStats((gray < 40).astype(np.uint8))
    return [
        (int(x), int(y))
        for x, y, bw, bh, area in stats[1:n]
        if abs(bw - w) <= 3 and abs(bh - h) <= 3 and area >= 0.95 * bw * bh
    ]


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium (CI installs it: apt-get install chromium)"
)
def test_headless_chromium_renders_the_streams_and_a_black_defect_thumbnail(
    router: Api, workers: WorkerFactory, tmp_path: Path
) -> None:
    clip = tmp_path / "web-black.ts"
    testsrc.generate(
        clip, duration_s=7.0, defects=testsrc.parse_script("black@2+3"), seed=5, width=320, height=180
    )
    workers("w1")
    stream_id = submit(router, "lobby <cam> & black", clip.resolve().as_uri())

    def black_found() -> bool:
        status, body = router.call("GET", f"/streams/{stream_id}/defects?type=black")
        return status == 200 and any("evidence_url" in d for d in body["defects"])

    wait_for(black_found, 60, what="the black defect and its evidence")

    dom = chromium(f"{router.base}/", tmp_path / "profile-dom", "--dump-dom", "--virtual-time-budget=2000")
    section = dom.split(f'id="{stream_id}"', 1)[1].split("</section>", 1)[0]
    assert "<h2>lobby &lt;cam&gt; &amp; black</h2>" in section
    assert re.search(r'<tr class="defect" data-defect-id="\d{9}\.\d{3}-black">', section)
    assert "/thumbnail.jpg" in section

    shot = tmp_path / "page.png"
    chromium(f"{router.base}/", tmp_path / "profile-shot", f"--screenshot={shot}")
    png = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert png is not None and png.shape == (WINDOW_H, WINDOW_W, 3)
    # The page draws thumbnails 160x90 on a light box: only a thumbnail that loaded and decoded
    # (a black frame) makes a solid dark rectangle of that size.
    boxes = dark_boxes(np.asarray(png, dtype=np.uint8), web.THUMB_W, web.THUMB_H)
    assert len(boxes) == 1, f"expected one black thumbnail in the screenshot, found {boxes}"
