"""Headless Chromium driven over the DevTools protocol (a WebSocket, with aiohttp): load pages,
click, fill forms, take screenshots, and record every request a page makes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import numpy.typing as npt

CHROMIUM = Path("/usr/bin/chromium")


class Browser:
    """One headless Chromium with one page. ``requests`` holds every URL the page asked for."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        self.profile, self.width, self.height = profile, width, height
        self.requests: list[str] = []
        self.documents: list[dict[str, Any]] = []  # the pages' own responses: url, status, headers
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._drainer: threading.Thread | None = None

    async def __aenter__(self) -> Browser:
        self._proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once: it is a daemon we talk to)
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
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(self.profile)},
            start_new_session=True,
        )
        port = await asyncio.wait_for(asyncio.to_thread(self._devtools_port), 30)
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Network", "Runtime"):
            await self.send(f"{domain}.enable")
        return self

    def _devtools_port(self) -> int:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            found = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", raw)
            if found:
                # Keep draining stderr, or Chromium blocks once the pipe is full.
                self._drainer = threading.Thread(target=self._proc.stderr.read, daemon=True)
                self._drainer.start()
                return int(found.group(1))
        raise RuntimeError("chromium exited before its DevTools server started")

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            if self._drainer is not None:
                self._drainer.join(timeout=10)  # it reads until the pipe's end: the process is gone
            if self._proc.stderr is not None:
                self._proc.stderr.close()

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            data = json.loads(msg.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(str(data["error"])))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Network.responseReceived" and params.get("type") == "Document":
                r = params["response"]
                headers = {k.lower(): v for k, v in r.get("headers", {}).items()}
                self.documents.append({"url": r["url"], "status": r["status"], "headers": headers})
            self._events.put_nowait(data)

    async def send(self, method: str, **params: Any) -> Any:
        assert self._ws is not None
        n = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[n] = future
        await self._ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
        return await asyncio.wait_for(future, 30)

    async def _loaded(self) -> None:
        while True:
            event = await asyncio.wait_for(self._events.get(), 30)
            if event.get("method") == "Page.loadEventFired":
                return

    def _drain(self) -> None:
        while not self._events.empty():
            self._events.get_nowait()

    async def goto(self, url: str) -> None:
        self._drain()
        await self.send("Page.navigate", url=url)
        await self._loaded()

    async def submit(self, expression: str) -> None:
        """Run ``expression`` (which submits a form or clicks a button) and wait for the next page."""
        self._drain()
        await self.eval(expression)
        await self._loaded()

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(str(result["exceptionDetails"]))
        return result["result"].get("value")

    async def screenshot(self) -> npt.NDArray[np.uint8]:
        """The viewport as a (height, width, 3) BGR array."""
        shot = await self.send("Page.captureScreenshot", format="png")
        img = cv2.imdecode(np.frombuffer(base64.b64decode(shot["data"]), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        return np.asarray(img, dtype=np.uint8)

    async def box(self, selector: str) -> tuple[int, int, int, int]:
        """(x, y, width, height) in CSS px of the first element matching ``selector``."""
        rect = await self.eval(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x, r.y, r.width, r.height]; })()"
        )
        x, y, w, h = (round(float(v)) for v in rect)
        return x, y, w, h


def crop(img: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
    x, y, w, h = box
    return img[y : y + h, x : x + w]


def saturation(img: npt.NDArray[np.uint8]) -> float:
    """Mean HSV saturation (0-255): gray pictures are near 0, colour pictures well above."""
    return float(cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 1].mean())
