"""Live capacity on the real worker (admission by measured cost: real `avmon worker` processes,
the router's API), and the timeline a taken-over stream continues; live MPEG-TS over loopback UDP."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from avmon import testsrc
from avmon.livesrc import LiveSource
from bench import live as live_bench
from infra import local
from shared.models import Defect
from tests.conftest import Api, WorkerFactory
from tests.support import wait_for
from worker.session import SessionConfig, StreamSession
from worker.timeline import Timeline


def _stream(api: Api, sid: str) -> dict[str, object]:
    body: dict[str, object] = api.call("GET", f"/streams/{sid}")[1]
    return body


def _submit_udp(api: Api, port: int) -> str:
    status, body = api.call("POST", "/streams", {"url": f"udp://@:{port}"})
    assert status == 201, body
    return str(body["stream_id"])


def test_a_worker_takes_streams_by_measured_cost_and_leaves_the_rest_for_another(
    router: Api, workers: WorkerFactory
) -> None:
    # A CPU target of 6% of this machine's cores (0.12 of 2): room for the first stream (an empty
    # worker always takes one) and, once it is measured, for at most one more of its kind. No
    # capacity is set: the measured cost holds the others back.
    workers("c1", AVMON_CPU_TARGET="0.06")
    ports = [local.free_port() for _ in range(4)]
    with ExitStack() as senders:
        for i, port in enumerate(ports):
            senders.enter_context(
                LiveSource.start("udp", port=port, duration_s=75.0, seed=i, width=640, height=360)
            )
        ids = [_submit_udp(router, port) for port in ports]
        wait_for(lambda: any(_stream(router, s)["owner"] for s in ids), 20, what="one stream taken")
        time.sleep(20.0)  # past the first stream's warm-up: its cost is measured by now
        owners = [_stream(router, s)["owner"] for s in ids]
        assert 1 <= owners.count("c1") <= 2 and owners.count(None) == 4 - owners.count("c1"), owners
        held = owners.count("c1")
        # A second worker takes what the first had no room for.
        workers("c2")
        wait_for(lambda: all(_stream(router, s)["owner"] for s in ids), 60, what="every stream owned")
        owners = [_stream(router, s)["owner"] for s in ids]
        assert owners.count("c1") == held and owners.count("c2") == 4 - held, owners


def test_a_session_given_the_published_timeline_continues_it() -> None:
    """What a worker that takes a stream over does with the timeline its last owner published
    with the lease (worker.timeline.Timeline): the same media time for the same moment."""
    port = local.free_port()
    found: list[Defect] = []

    def session(resume: Timeline | None) -> tuple[StreamSession, threading.Event, threading.Thread]:
        stop = threading.Event()
        config = SessionConfig(url=f"udp://@:{port}", read_timeout_s=2.0, decode_threads=1, resume=resume)
        s = StreamSession("s", config, lambda d, _: found.append(d), stop=stop)
        thread = threading.Thread(target=s.run)
        thread.start()
        return s, stop, thread

    first, stop_first, thread_first = session(None)
    time.sleep(1.0)
    script = testsrc.parse_script("black@3+2,black@14+2")
    with LiveSource.start("udp", port=port, duration_s=20.0, defects=script, width=320, height=180):
        time.sleep(7.0)
        timeline = first.timeline()
        stop_first.set()
        thread_first.join()
        assert timeline is not None
        time.sleep(3.0)  # the handover: nobody reads meanwhile
        _, stop_second, thread_second = session(timeline)
        time.sleep(11.0)
    stop_second.set()
    thread_second.join()
    closed = [(d.type, d.start_s, d.end_s) for d in found if d.end_s is not None]
    assert closed == [("black", 3.0, 5.0), ("black", 14.0, 16.0)]


def test_a_stream_taken_over_after_a_sigkill_keeps_its_timeline(router: Api, workers: WorkerFactory) -> None:
    first = workers("f1")
    port = local.free_port()
    sid = _submit_udp(router, port)
    wait_for(lambda: _stream(router, sid)["owner"] == "f1", 20, what="f1 to take the stream")
    time.sleep(1.0)  # f1 binds the port as it opens the source: the stream starts after that
    script = testsrc.parse_script("black@5+3,black@30+3")
    with LiveSource.start("udp", port=port, duration_s=38.0, defects=script, width=320, height=180):

        def defects() -> list[dict[str, object]]:
            found: list[dict[str, object]]
            found = router.call("GET", f"/streams/{sid}/defects?type=black")[1]["defects"]
            return found

        wait_for(lambda: any(d["end_s"] for d in defects()), 20, what="the first black to end")
        workers("f2")
        time.sleep(2.0)  # f2 has registered; the stream is f1's until its lease lapses
        first.send_signal(signal.SIGKILL)
        wait_for(lambda: _stream(router, sid)["owner"] == "f2", 30, what="f2 to take over")
        wait_for(lambda: len(defects()) == 2 and all(d["end_s"] for d in defects()), 40, what="f2's black")
    a, b = sorted(defects(), key=lambda d: float(str(d["start_s"])))
    assert a["worker_id"] == "f1" and b["worker_id"] == "f2"
    # One timeline: the second black is 25 s after the first, as the source put them (media time
    # counts from the first packet the first worker read).
    gap = float(str(b["start_s"])) - float(str(a["start_s"]))
    assert abs(gap - 25.0) <= 0.2, (a, b)


CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")  # cgroup v1's cpu controller, as on this project's machines


@pytest.fixture
def cpu_quota() -> Iterator[Callable[[int, float], None]]:
    """A CPU cgroup of our own: ``limit(pid, cores)`` puts a process in it (first call) and sets
    its quota, as ECS caps a task's CPU."""
    if not os.access(CPU_CGROUPS, os.W_OK):
        pytest.skip("needs a writable cgroup v1 cpu controller (root on this project's machines)")
    group = CPU_CGROUPS / f"avmon-test-{os.getpid()}"
    group.mkdir()

    def limit(pid: int, cores: float) -> None:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(int(cores * 100_000)))
        if str(pid) not in (group / "cgroup.procs").read_text().split():
            (group / "cgroup.procs").write_text(str(pid))

    yield limit
    for pid in (group / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):
            (CPU_CGROUPS / "cgroup.procs").write_text(pid)
    group.rmdir()


def test_a_worker_that_loses_cpu_hands_back_one_stream_at_a_time_and_keeps_the_rest(
    router: Api, workers: WorkerFactory, cpu_quota: Callable[[int, float], None]
) -> None:
    # The worker's task is capped at 0.6 of a core and fills it with live 720p streams; then the
    # cap drops to 0.3 (costlier content, or a smaller share of the host: the same to the
    # worker). It must shed only the excess, one stream per recovery period, and keep the rest.
    clip = live_bench.ensure_clip(100, preset="ultrafast")
    limits = {"AVMON_CPU_TARGET": "1.0", "AVMON_WORKER_CAPACITY": "8"}
    worker = workers("o1", **limits, AVMON_SHED_LAG_S="2", AVMON_SHED_RECOVER_S="8")
    cpu_quota(worker.pid, 0.6)  # before the worker starts its threads: they are in it too
    ports = [local.free_port() for _ in range(8)]
    ids = [_submit_udp(router, port) for port in ports]
    sender = subprocess.Popen(
        [sys.executable, "-m", "bench.live", "--send", str(clip), "--seconds", "95",
         "--ports", ",".join(map(str, ports))],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(35.0)  # admission fills the 0.6 core: its streams are measured by now
        before = {sid for sid in ids if _stream(router, sid)["owner"] == "o1"}
        assert len(before) >= 3, [_stream(router, s)["owner"] for s in ids]
        cpu_quota(worker.pid, 0.3)
        lost_at: dict[str, float] = {}
        start = time.monotonic()
        while time.monotonic() - start < 45.0:
            for sid in before:
                if sid not in lost_at and _stream(router, sid)["owner"] != "o1":
                    lost_at[sid] = time.monotonic() - start
            time.sleep(0.5)
        final = {sid: _stream(router, sid) for sid in ids}
    finally:
        sender.kill()
        sender.wait()
    kept = {sid for sid in before if final[sid]["owner"] == "o1"}
    assert lost_at, ("nothing was handed back", {s: final[s]["lag_s"] for s in before})
    assert kept and kept == before - set(lost_at), (lost_at, final)
    times = sorted(lost_at.values())
    # One at a time: each hand-back a recovery period after the one before (sampling slack).
    assert all(b - a >= 6.0 for a, b in itertools.pairwise(times)), times
    # Handed back, not re-taken: a shed stream waits for another worker.
    assert all(final[sid]["owner"] is None and final[sid]["status"] == "PENDING" for sid in lost_at), final


def test_metrics_show_the_cost_the_capacity_and_the_transport_of_a_udp_stream(
    router: Api, workers: WorkerFactory
) -> None:
    metrics_port = local.free_port()
    workers("p1", AVMON_METRICS_PORT=str(metrics_port))
    port = local.free_port()
    sid = _submit_udp(router, port)
    wait_for(lambda: _stream(router, sid)["owner"] == "p1", 20, what="p1 to take the stream")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    with LiveSource.start("udp", port=port, duration_s=25.0, width=320, height=180):
        text = wait_for(
            lambda: (t := scrape()) and "avmon_stream_cpu_cores{" in t and t, 30, what="a measured cost"
        )
    label = f'stream_id="{sid}"'
    assert f'avmon_ts_packets_total{{{label}}}' in text
    # prometheus_client writes labels in name order
    assert f'avmon_stream_dropped_datagrams_total{{{label},worker_id="p1"}} 0' in text
    assert 'avmon_worker_cpu_target{worker_id="p1"} 0.75' in text
    committed = float(text.split('avmon_worker_committed_cores{worker_id="p1"} ')[1].split()[0])
    assert 0 < committed < 2
