"""Live inputs into the running system: MPEG-TS over UDP and HLS over local HTTP, paced in real time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from avmon import testsrc
from avmon.livesrc import LiveSource
from infra import local
from tests.conftest import Api, WorkerFactory
from tests.media import generated
from tests.support import wait_for

TOLERANCE_S = 0.5
MIN_DURATION_S = {"black": 2.0, "freeze": 2.0, "silence": 2.0}
LATENCY_BOUND_S = 5.0
LIVE = {"AVMON_READ_TIMEOUT_S": "2", "AVMON_SIGNAL_LOSS_AFTER_S": "1", "AVMON_RECONNECT_MAX_S": "2"}


def _watch(
    api: Api, sid: str, until: float, expected: int, closed: str | None = None
) -> dict[str, tuple[float, dict[str, Any]]]:
    """Poll the defects every 0.1 s until ``expected`` are closed (or one of type ``closed`` is):
    when each was first seen, and its latest record."""
    seen: dict[str, tuple[float, dict[str, Any]]] = {}
    while time.monotonic() < until:
        for d in api.call("GET", f"/streams/{sid}/defects")[1]["defects"]:
            first = seen.get(d["defect_id"], (time.time(), d))[0]
            seen[d["defect_id"]] = (first, d)
        done = [d for _, d in seen.values() if d["end_s"] is not None]
        if closed is not None and any(d["type"] == closed for d in done):
            break
        if closed is None and len(seen) >= expected and len(done) == len(seen):
            break
        time.sleep(0.1)
    return seen


def _check(
    seen: dict[str, tuple[float, dict[str, Any]]], truth: testsrc.GroundTruth, t0: float
) -> list[float]:
    """Every injected defect found within the tolerance; returns each one's latency (s)."""
    got = sorted((d["type"], d["start_s"], d["end_s"], first) for first, d in seen.values())
    expected = sorted((d["type"], d["start_s"], d["end_s"]) for d in truth.defects)
    assert [g[0] for g in got] == [e[0] for e in expected], (got, expected)
    latencies = []
    for (kind, start, end, first), (_, t_start, t_end) in zip(got, expected, strict=True):
        assert abs(start - t_start) <= TOLERANCE_S and abs(end - t_end) <= TOLERANCE_S, (got, expected)
        # The moment the defect became reportable: its start plus the detector's minimum duration.
        latencies.append(first - (t0 + t_start + MIN_DURATION_S[kind]))
    return latencies


def _record_latency(name: str, latencies: list[float]) -> None:
    out = Path(os.environ.get("AVMON_BENCH_OUT", "bench/out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"latency-{name}.json").write_text(json.dumps({"latencies_s": latencies}))


def test_live_udp_stream_defects_found_in_time(router: Api, workers: WorkerFactory) -> None:
    workers("l1", **LIVE)
    port = local.free_port()
    status, stream = router.call("POST", "/streams", {"url": f"udp://127.0.0.1:{port}", "name": "udp"})
    assert status == 201
    sid = stream["stream_id"]
    wait_for(lambda: router.call("GET", f"/streams/{sid}")[1]["owner"] == "l1", 20, what="l1 to listen")
    time.sleep(1.0)  # the worker binds the port as it opens the source
    script = testsrc.parse_script("black@3+3,silence@8+3")
    with LiveSource.start("udp", port=port, duration_s=14.0, defects=script, width=320, height=180) as source:
        t0 = time.time()
        seen = _watch(router, sid, time.monotonic() + 30, expected=2)
        latencies = _check(seen, source.truth, t0)
    _record_latency("udp", latencies)
    assert max(latencies) <= LATENCY_BOUND_S, latencies
    stream = router.call("GET", f"/streams/{sid}")[1]
    assert stream["frames_analysed"] > 0 and stream["lag_s"] is not None


def test_live_hls_stream_defects_found_in_time(router: Api, workers: WorkerFactory) -> None:
    workers("h1", **LIVE)
    script = testsrc.parse_script("freeze@4+3,silence@9+3")
    with LiveSource.start("hls", duration_s=16.0, defects=script, width=320, height=180, gop_s=1.0) as source:
        t0 = time.time()
        status, stream = router.call("POST", "/streams", {"url": source.url, "name": "hls"})
        assert status == 201
        seen = _watch(router, stream["stream_id"], time.monotonic() + 40, expected=2)
        latencies = _check(seen, source.truth, t0)
    _record_latency("hls", latencies)
    # HLS is delivered a segment at a time: a defect can be seen only once its segment is out.
    assert max(latencies) <= LATENCY_BOUND_S + 1.0, latencies


def test_source_lost_for_10_s_is_one_signal_loss_and_recovers(router: Api, workers: WorkerFactory) -> None:
    workers("r1", **LIVE)
    port = local.free_port()
    _, stream = router.call("POST", "/streams", {"url": f"udp://127.0.0.1:{port}"})
    sid = stream["stream_id"]
    wait_for(lambda: router.call("GET", f"/streams/{sid}")[1]["owner"] == "r1", 20, what="r1 to listen")
    time.sleep(1.0)
    script = testsrc.parse_script("signal_loss@3+10,black@15+3")
    with LiveSource.start("udp", port=port, duration_s=30.0, defects=script, width=320, height=180):
        seen = _watch(router, sid, time.monotonic() + 40, expected=2, closed="black")
        assert router.call("GET", f"/streams/{sid}")[1]["status"] == "MONITORING"  # recovered by itself
    records = sorted((d["type"], d["start_s"], d["end_s"]) for _, d in seen.values())
    losses = [r for r in records if r[0] == "signal_loss"]
    assert len(losses) == 1, records
    _, loss_start, loss_end = losses[0]
    assert abs(loss_start - 3.0) <= TOLERANCE_S and abs(loss_end - 13.0) <= TOLERANCE_S, records
    # The timeline went on through the outage: the black after it is at its own time.
    blacks = [(r[1], r[2]) for r in records if r[0] == "black"]
    assert len(blacks) == 1 and abs(blacks[0][0] - 15.0) <= TOLERANCE_S, records
    assert blacks[0][1] is not None and abs(blacks[0][1] - 18.0) <= TOLERANCE_S, records
    # The frame cut short by the outage may be reported as undecodable, at the cut, nothing else.
    assert {r[0] for r in records} <= {"signal_loss", "black", "decode_error"}
    assert all(abs(r[1] - loss_start) <= TOLERANCE_S for r in records if r[0] == "decode_error"), records


def test_source_that_never_comes_back_stays_reported_and_others_carry_on(
    router: Api, workers: WorkerFactory
) -> None:
    workers("n1", **LIVE)
    _, dead = router.call("POST", "/streams", {"url": f"udp://127.0.0.1:{local.free_port()}"})
    clip, truth = generated("ok.ts", duration_s=6.0, width=320, height=180, script="black@1+2.5")
    _, ok = router.call("POST", "/streams", {"url": clip.as_uri()})
    wait_for(lambda: router.call("GET", f"/streams/{ok['stream_id']}")[1]["status"] == "COMPLETED", 60)
    found = router.call("GET", f"/streams/{ok['stream_id']}/defects")[1]["defects"]
    assert [(d["type"], d["start_s"]) for d in found] == [(d["type"], d["start_s"]) for d in truth.defects]

    def reported() -> bool:
        state = router.call("GET", f"/streams/{dead['stream_id']}")[1]
        defects = router.call("GET", f"/streams/{dead['stream_id']}/defects")[1]["defects"]
        return state["status"] == "RECONNECTING" and [(d["type"], d["end_s"]) for d in defects] == [
            ("signal_loss", None)
        ]

    wait_for(reported, 30, what="the dead source reported as an open signal_loss")


@pytest.fixture(autouse=True)
def _bench_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "AVMON_BENCH_OUT" not in os.environ:
        monkeypatch.setenv("AVMON_BENCH_OUT", str(tmp_path))
