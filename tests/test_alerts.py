"""Notifications from the running system: signed webhooks, incidents, retries, the delivery log."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, WorkerFactory
from tests.media import make_testsrc
from tests.support import wait_for
from worker.notify import verify_signature

SECRET = "s3cret-for-tests"


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on loopback that fails its first request with a 500."""

    daemon_threads = True

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 1
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler) -> None:
                body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
                with self.lock:
                    failing = self.fail_first > 0
                    self.fail_first -= 1
                    if not failing:
                        self.received.append((dict(handler.headers.items()), body))
                handler.send_response(500 if failing else 204)
                handler.send_header("Content-Length", "0")
                handler.end_headers()

            def log_message(handler, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_every_defect_is_notified_once_opened_and_once_closed_signed_and_grouped(
    router: Api, workers: WorkerFactory, receiver: Receiver, tmp_path: Path
) -> None:
    clip = tmp_path / "feed.ts"
    truth = make_testsrc(
        clip,
        duration_s=14.0,
        width=320,
        height=180,
        script="black@2+3,silence@2+3,freeze@9+3",
    )
    workers("a1", AVMON_WEBHOOK_SECRET=SECRET, AVMON_NOTIFY_MIN_GAP_S="1")
    status, stream = router.call("POST", "/streams", {"url": clip.as_uri(), "webhook_url": receiver.url})
    assert status == 201
    sid = stream["stream_id"]
    wait_for(lambda: router.call("GET", f"/streams/{sid}")[1]["status"] == "COMPLETED", 60, what="completion")

    def events() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        with receiver.lock:
            got = list(receiver.received)
        out = []
        for headers, body in got:
            lower = {k.lower(): v for k, v in headers.items()}
            assert verify_signature(
                SECRET.encode(), lower["x-avmon-timestamp"], body, lower["x-avmon-signature"]
            )
            message = json.loads(body)
            out += [(e["event"], e["defect"], message["incident"]) for e in message["events"]]
        return out

    wait_for(lambda: len(events()) >= 2 * len(truth.defects), 30, what="every open and close notification")
    got = events()
    pairs = sorted((event, d["type"]) for event, d, _ in got)
    expected = sorted(
        (event, d["type"]) for d in truth.defects for event in ("defect.opened", "defect.closed")
    )
    assert pairs == expected
    incidents = {d["type"]: incident for _, d, incident in got}
    assert incidents["black"]["incident_id"] == incidents["silence"]["incident_id"]
    assert incidents["black"]["title"] == "feed lost"
    assert incidents["freeze"]["incident_id"] != incidents["black"]["incident_id"]
    # The first attempt was answered 500: the delivery log shows the retry.
    _, log = router.call("GET", f"/streams/{sid}/notifications")
    outcomes = [d["outcome"] for d in log["deliveries"]]
    assert "retrying" in outcomes and outcomes.count("delivered") == len(receiver.received)


def test_webhook_url_on_a_refused_host_is_a_422(router: Api) -> None:
    status, body = router.call(
        "POST", "/streams", {"url": "udp://@:5000", "webhook_url": "http://169.254.169.254/latest"}
    )
    assert status == 422 and body["error"] == "webhook_url refused"
