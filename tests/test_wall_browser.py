"""The operator's wall in a real headless Chromium against `avmon up` with three generated
streams: colour pictures that change, a black defect that turns its tile red, the trace on the
stream's page, adding and stopping a stream from the pages; nothing loaded from elsewhere."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra import local
from tests.browser import CHROMIUM, Browser, crop, saturation
from tests.conftest import Api
from tests.media import make_testsrc
from tests.support import avmon_up, wait_for_async

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium (CI installs it: apt-get install chromium)"
)
RED_BGR = (37, 48, 217)  # the alert state's colour (#d93025)
TRACE_BGR = (232, 115, 26)  # the first series' line (#1a73e8)
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AVMON_"))}


def has_live_picture(base: str, stream_id: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/streams/{stream_id}/live.jpg", timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture
def up(tmp_path: Path) -> Any:
    port, aws_port = local.free_port(), local.free_port()
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        avmon_up(port, aws_port),
        env={**CLEAN_ENV, "AVMON_WORKER_CAPACITY": "4", "AVMON_LIVE_PICTURE_S": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    api = Api(f"http://127.0.0.1:{port}")
    try:
        yield api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


async def test_the_wall_in_chromium(up: Api, tmp_path: Path) -> None:
    clips = {}
    for n, (name, script) in enumerate(
        (("studio", ""), ("lobby", "black@7+10"), ("news", ""), ("added", ""))
    ):
        clips[name] = tmp_path / f"{name}.ts"
        make_testsrc(clips[name], duration_s=30.0, script=script, seed=n, width=320, height=180)

    async def answering() -> bool:
        try:
            return (await asyncio.to_thread(up.call, "GET", "/streams"))[0] == 200
        except OSError:
            return False

    await wait_for_async(answering, 60, interval_s=0.5, what="avmon up to answer")
    ids = {}
    for name in ("studio", "lobby", "news"):
        status, stream = up.call(
            "POST", "/streams", {"url": clips[name].as_uri(), "name": name, "realtime": True}
        )
        assert status == 201, stream
        ids[name] = stream["stream_id"]

    async def pictures() -> bool:
        return all([await asyncio.to_thread(has_live_picture, up.base, sid) for sid in ids.values()])

    await wait_for_async(pictures, 60, interval_s=0.5, what="a live picture of every stream")

    async with Browser(tmp_path / "profile") as browser:
        # The wall: three tiles, each with a colour picture.
        await browser.goto(f"{up.base}/")
        assert await browser.eval("document.querySelectorAll('a.tile img.live').length") == 3
        shot = await browser.screenshot()
        for name, sid in ids.items():
            picture = crop(shot, await browser.box(f'[id="{sid}"] img.live'))
            assert picture.shape[:2] == (90, 160) and saturation(picture) > 40, name
        first = await browser.eval("[...document.querySelectorAll('img.live')].map(i => i.src)")

        # ... that change over time (the worker refreshes them every 2 s here).
        async def changed() -> bool:
            await browser.goto(f"{up.base}/")
            now = await browser.eval("[...document.querySelectorAll('img.live')].map(i => i.src)")
            return len(now) == 3 and all(a != b for a, b in zip(first, now, strict=True))

        await wait_for_async(changed, 30, interval_s=0.5, what="every picture to change")

        # The black defect turns its tile red, and its picture black.
        def black_open() -> bool:
            status, body = up.call("GET", f"/streams/{ids['lobby']}/defects?type=black")
            return status == 200 and any(d["end_s"] is None for d in body["defects"])

        await wait_for_async(
            lambda: asyncio.to_thread(black_open), 60, interval_s=0.5, what="the black defect"
        )

        async def red() -> bool:
            await browser.goto(f"{up.base}/")
            return bool(
                await browser.eval(f"document.getElementById('{ids['lobby']}').dataset.state") == "alert"
            )

        await wait_for_async(red, 20, interval_s=0.5, what="the lobby tile to turn red")
        await asyncio.sleep(2.5)  # a picture taken inside the defect
        await browser.goto(f"{up.base}/")
        shot = await browser.screenshot()
        x, y, w, _ = await browser.box(f'[id="{ids["lobby"]}"]')
        border = crop(shot, (x + 8, y + 1, w - 16, 4)).reshape(-1, 3).mean(axis=0)
        assert np.abs(border - RED_BGR).max() < 25, border
        assert float(crop(shot, await browser.box(f'[id="{ids["lobby"]}"] img.live')).mean()) < 30
        for name in ("studio", "news"):
            x, y, w, _ = await browser.box(f'[id="{ids[name]}"]')
            assert (
                np.abs(crop(shot, (x + 8, y + 1, w - 16, 4)).reshape(-1, 3).mean(axis=0) - RED_BGR).max() > 60
            )

        # The stream's page draws the black defect's trace.
        await browser.submit(f"document.getElementById('{ids['lobby']}').click()")
        assert await browser.eval("location.pathname") == f"/ui/streams/{ids['lobby']}"
        series = await browser.eval(
            "[...document.querySelectorAll('section.defect svg.trace polyline')].map(p => p.dataset.series)"
        )
        assert {"luma_mean", "luma_diff", "audio_rms_dbfs"} <= set(series)
        shot = await browser.screenshot()
        trace = crop(shot, await browser.box("section.defect svg.trace"))
        near = np.abs(trace.astype(int) - TRACE_BGR).max(axis=2) < 40
        assert near.sum() > 100, "the luma line is drawn"

        # Add a stream from the page, then stop it from its page.
        await browser.goto(f"{up.base}/ui/add")
        await browser.submit(
            f"document.querySelector('input[name=url]').value = {json.dumps(clips['added'].as_uri())};"
            "document.querySelector('input[name=name]').value = 'added from the page';"
            "document.querySelector('form button').click()"
        )
        path = await browser.eval("location.pathname")
        assert path.startswith("/ui/streams/s-"), await browser.eval("document.body.innerText")
        added = path.rsplit("/", 1)[1]
        status, stream = up.call("GET", f"/streams/{added}")
        assert status == 200 and stream["name"] == "added from the page" and stream["desired"] == "RUNNING"
        await browser.submit(
            "[...document.querySelectorAll('form button')]"
            ".find(b => b.textContent == 'stop monitoring').click()"
        )
        assert up.call("GET", f"/streams/{added}")[1]["desired"] == "STOPPED"

    # Nothing came from anywhere but the router (and the pages' own data: pictures).
    foreign = [u for u in browser.requests if not u.startswith((up.base + "/", "data:", "about:"))]
    assert foreign == []
    pages = [d for d in browser.documents if d["url"].startswith(up.base)]
    assert pages and all("default-src 'none'" in d["headers"]["content-security-policy"] for d in pages)
