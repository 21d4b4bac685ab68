"""The `avmon` command's contracts (DESIGN.md §5) from outside, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from infra import local
from tests.conftest import Api
from tests.media import make_testsrc
from tests.support import avmon_up, wait_for


def test_up_runs_the_whole_system_and_stops_everything(tmp_path: Path) -> None:
    clip = tmp_path / "clip.ts"
    truth = make_testsrc(clip, duration_s=8.0, script="black@2+3", seed=3)
    port, aws_port = local.free_port(), local.free_port()
    up = subprocess.Popen(
        avmon_up(port, aws_port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AVMON_"))},
    )
    try:
        api = Api(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            try:
                return api.call("GET", "/streams")[0] == 200
            except OSError:
                return False

        wait_for(ready, 60, what="avmon up to answer")
        status, stream = api.call("POST", "/streams", {"url": clip.as_uri()})
        assert status == 201
        sid = stream["stream_id"]
        wait_for(
            lambda: api.call("GET", f"/streams/{sid}")[1]["status"] == "COMPLETED", 60, what="completion"
        )
        _, body = api.call("GET", f"/streams/{sid}/defects")
        assert [(d["type"], d["start_s"], d["end_s"]) for d in body["defects"]] == [
            (d["type"], d["start_s"], d["end_s"]) for d in truth.defects
        ]
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out.decode()
    assert not local._port_open("127.0.0.1", aws_port) and not local._port_open("127.0.0.1", port)


def test_health_fails_without_a_running_worker(tmp_path: Path) -> None:
    env = {**os.environ, "AVMON_HEALTH_FILE": str(tmp_path / "none")}
    assert subprocess.run([sys.executable, "-m", "avmon", "health"], env=env).returncode == 1


def test_health_passes_while_a_worker_runs(workers: object, tmp_path: Path) -> None:
    assert callable(workers)
    workers("hw")
    env = {**os.environ, "AVMON_HEALTH_FILE": str(tmp_path / "hw.health")}
    wait_for(
        lambda: subprocess.run([sys.executable, "-m", "avmon", "health"], env=env).returncode == 0,
        20,
        what="a healthy heartbeat",
    )


def test_status_line_summarises_streams_lag_and_open_defects() -> None:
    from avmon.cli import status_line

    streams = [
        {"status": "MONITORING", "owner": "w1", "lag_s": 0.4},
        {"status": "MONITORING", "owner": "w2", "lag_s": 1.25},
        {"status": "RECONNECTING", "owner": "w1", "lag_s": None},
    ]
    line = status_line(streams, 2)
    assert line == "2 monitoring, 1 reconnecting | 2 worker(s) | max lag 1.2 s | 2 defect(s) open"
