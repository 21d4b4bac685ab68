"""`avmon up` and `avmon worker` as the README runs them: the local policy they share, and a
shutdown that lets the workers release their leases before the emulator goes."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from avmon.stack import is_local_endpoint, local_policy
from infra import local
from tests.conftest import Api, WorkerFactory
from tests.media import make_testsrc
from tests.support import avmon_up, wait_for

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AVMON_"))}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def loopback_http(root: Path) -> Iterator[str]:
    """Files of ``root`` over HTTP on 127.0.0.1: a source on a loopback host."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def start_up(workers: int, port: int, aws_port: int) -> subprocess.Popen[bytes]:
    """`avmon up` in its own process group, as a terminal runs a foreground job."""
    return subprocess.Popen(
        avmon_up(port, aws_port, workers),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=CLEAN_ENV,
        start_new_session=True,
    )


def wait_ready(api: Api) -> None:
    def ready() -> bool:
        try:
            return api.call("GET", "/streams")[0] == 200
        except OSError:
            return False

    wait_for(ready, 60, what="avmon up to answer")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, group: bool = False) -> str:
    if process.poll() is None:
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
    return (out or b"").decode(errors="replace")


def test_local_policy_defaults_to_files_and_private_hosts_unless_set() -> None:
    assert local_policy({}) == {
        "AVMON_ALLOWED_SCHEMES": "http,https,udp,srt,rtmp,rtsp,file",
        "AVMON_ALLOW_PRIVATE_HOSTS": "true",
    }
    assert local_policy({"AVMON_ALLOW_PRIVATE_HOSTS": "false"})["AVMON_ALLOW_PRIVATE_HOSTS"] == "false"


@pytest.mark.parametrize(
    ("endpoint", "local_"),
    [
        ("http://127.0.0.1:4566", True),
        ("http://localhost:4566", True),
        ("http://[::1]:4566", True),
        ("https://dynamodb.us-east-1.amazonaws.com", False),
        ("http://10.0.0.5:4566", False),
        (None, False),
    ],
)
def test_only_a_loopback_endpoint_is_a_local_stack(endpoint: str | None, local_: bool) -> None:
    assert is_local_endpoint(endpoint) is local_


def test_readme_worker_joining_up_monitors_a_loopback_source(tmp_path: Path) -> None:
    clip = tmp_path / "loop.ts"
    make_testsrc(clip, duration_s=4.0, script="black@1+2", seed=7, width=320, height=180)
    port, aws_port = local.free_port(), local.free_port()
    up = start_up(0, port, aws_port)
    worker: subprocess.Popen[bytes] | None = None
    try:
        api = Api(f"http://127.0.0.1:{port}")
        wait_ready(api)
        # Exactly the README's command: nothing but the endpoint.
        worker = subprocess.Popen(
            [sys.executable, "-m", "avmon", "worker"],
            env={
                **CLEAN_ENV,
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{aws_port}",
                "AVMON_HEALTH_FILE": str(tmp_path / "health"),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        with loopback_http(tmp_path) as base:
            status, stream = api.call("POST", "/streams", {"url": f"{base}/loop.ts"})
            assert status == 201, stream
            sid = stream["stream_id"]
            # Progressive TS over HTTP has no duration: it is a live source (read again when it
            # ends), so "monitored" is its defect found, not a completion.
            defects = wait_for(
                lambda: api.call("GET", f"/streams/{sid}/defects?type=black")[1]["defects"],
                60,
                what="the black defect of the loopback source",
            )
        assert defects[0]["start_s"] == pytest.approx(1.0, abs=0.2)
        assert api.call("GET", f"/streams/{sid}")[1]["status"] != "REFUSED"
    finally:
        log = stop(worker) if worker is not None else ""
        stop(up)
    assert "refused s-" not in log, log


def test_a_refusing_worker_logs_the_refusal_not_monitoring(
    router: Api, workers: WorkerFactory, tmp_path: Path
) -> None:
    workers("strict", AVMON_ALLOW_PRIVATE_HOSTS="false", AVMON_LOG_LEVEL="INFO")
    status, stream = router.call("POST", "/streams", {"url": "http://127.0.0.1:9/never.ts"})
    assert status == 201, stream  # this router allows private hosts; the worker does not
    sid = stream["stream_id"]
    final = wait_for(
        lambda: (s := router.call("GET", f"/streams/{sid}")[1])["status"] == "REFUSED" and s,
        30,
        what="the refusal",
    )
    assert "internal hosts are not allowed" in final["reason"]
    log = wait_for(
        lambda: (text := (tmp_path / "strict.log").read_text()) and f"refused {sid}" in text and text,
        10,
        what="the refusal in the worker's log",
    )
    assert f"monitoring {sid}" not in log


def test_ctrl_c_stops_workers_before_the_emulator(tmp_path: Path) -> None:
    clip = tmp_path / "long.ts"
    make_testsrc(clip, duration_s=15.0, seed=2, width=160, height=90)
    port, aws_port = local.free_port(), local.free_port()
    up = start_up(1, port, aws_port)
    try:
        api = Api(f"http://127.0.0.1:{port}")
        wait_ready(api)
        status, stream = api.call("POST", "/streams", {"url": clip.as_uri(), "realtime": True})
        assert status == 201, stream
        sid = stream["stream_id"]
        wait_for(
            lambda: api.call("GET", f"/streams/{sid}")[1]["frames_analysed"] > 0, 60, what="a held stream"
        )
    finally:
        # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
        out = stop(up, signal.SIGINT, group=True)
    assert up.returncode == 0, out
    assert "could not release" not in out and "Traceback" not in out, out
    assert not local._port_open("127.0.0.1", aws_port) and not local._port_open("127.0.0.1", port)
