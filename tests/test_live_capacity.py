"""Live capacity on the real worker (admission by measured cost: real `avmon worker` processes,
the router's API), and the timeline a taken-over stream continues; live MPEG-TS over loopback UDP."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import ExitStack

from avmon import testsrc
from avmon.livesrc import LiveSource
from infra import local
from shared.models import Defect
from tests.conftest import Api, WorkerFactory, wait_for
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
    # A CPU target of 6% of this machine's cores: room for the first stream (an empty worker
    # always takes one), not for a second once the first is measured. No capacity is set.
    workers("c1", AVMON_CPU_TARGET="0.06")
    ports = [local.free_port() for _ in range(3)]
    with ExitStack() as senders:
        for i, port in enumerate(ports):
            senders.enter_context(
                LiveSource.start("udp", port=port, duration_s=75.0, seed=i, width=320, height=180)
            )
        ids = [_submit_udp(router, port) for port in ports]
        wait_for(lambda: any(_stream(router, s)["owner"] for s in ids), 20, what="one stream taken")
        time.sleep(20.0)  # past the first stream's warm-up: its cost is measured by now
        owners = [_stream(router, s)["owner"] for s in ids]
        assert owners.count("c1") == 1, owners
        assert owners.count(None) == 2, owners
        # A second worker takes what the first had no room for.
        workers("c2")
        wait_for(lambda: all(_stream(router, s)["owner"] for s in ids), 60, what="every stream owned")
        owners = [_stream(router, s)["owner"] for s in ids]
        assert owners.count("c1") == 1 and owners.count("c2") == 2, owners


def test_a_session_given_the_published_timeline_continues_it() -> None:
    """What a worker that takes a stream over does with the timeline its last owner published
    with the lease (worker.timeline.Timeline): the same media time for the same moment."""
    port = local.free_port()
    found: list[Defect] = []

    def session(resume: Timeline | None) -> tuple[StreamSession, threading.Event, threading.Thread]:
        stop = threading.Event()
        config = SessionConfig(url=f"udp://@:{port}", read_timeout_s=2.0, decode_threads=1, resume=resume)
        s = StreamSession("s", config, found.append, stop=stop)
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
