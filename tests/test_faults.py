"""Ownership under faults: workers killed, the store unreachable, workers added.

Each test runs the real system (emulator, router, several `avmon worker` processes) on
generated media read at real-time pace, and asserts what an operator cares about.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from avmon import testsrc
from infra import local
from tests.conftest import Api, Stack, WorkerFactory
from tests.media import make_testsrc
from tests.support import wait_for


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, testsrc.GroundTruth]:
    path = tmp_path_factory.mktemp("faults") / "long.ts"
    truth = make_testsrc(path, duration_s=40.0, script="black@12+3", seed=7, width=320, height=180)
    return path, truth


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, testsrc.GroundTruth]:
    path = tmp_path_factory.mktemp("faults") / "short.ts"
    truth = make_testsrc(path, duration_s=16.0, script="black@9+3", seed=8, width=320, height=180)
    return path, truth


def _submit(api: Api, path: Path) -> str:
    status, body = api.call("POST", "/streams", {"url": path.as_uri(), "realtime": True})
    assert status == 201, body
    return str(body["stream_id"])


def _owners(api: Api, ids: list[str]) -> dict[str, str | None]:
    return {sid: api.call("GET", f"/streams/{sid}")[1]["owner"] for sid in ids}


def test_sigkilled_workers_streams_are_monitored_again_within_30_s(
    router: Api, workers: WorkerFactory, short_clip: tuple[Path, testsrc.GroundTruth]
) -> None:
    procs = {w: workers(w, AVMON_WORKER_CAPACITY="6") for w in ("k1", "k2", "k3")}
    ids = [_submit(router, short_clip[0]) for _ in range(12)]
    wait_for(lambda: all(_owners(router, ids).values()), 30, what="all 12 streams owned")
    held = Counter(_owners(router, ids).values())
    victim = max(procs, key=lambda w: held.get(w, 0))
    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    def all_taken_over() -> bool:
        owners = _owners(router, ids).values()
        return all(o is not None and o != victim for o in owners)

    wait_for(all_taken_over, 30, what="every stream of the killed worker taken over")
    assert time.monotonic() - killed_at <= 30
    # Each stream is then read to its end by a survivor, black segment included.
    for sid in ids:
        wait_for(
            lambda s=sid: router.call("GET", f"/streams/{s}")[1]["status"] == "COMPLETED",
            60,
            what=f"{sid} to complete: {[router.call('GET', f'/streams/{i}')[1] for i in ids]}",
        )
        defects = router.call("GET", f"/streams/{sid}/defects")[1]["defects"]
        assert [d["type"] for d in defects] == ["black"]
        assert defects[0]["worker_id"] != victim


class PausableProxy:
    """A TCP proxy on loopback that can drop every connection and refuse new ones for a while:
    the store "unreachable", as far as the workers behind it can tell."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = local.free_port()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self.resume()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._listener is not listener:  # paused meanwhile
                    client.close()
                    return
                self._conns.append(client)
                try:
                    upstream = socket.create_connection(self.upstream)
                except OSError:
                    continue
                self._conns.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def pause(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def resume(self) -> None:
        listener = socket.socket()
        self._conns.append(listener)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()


@pytest.fixture
def proxy(stack: Stack) -> Iterator[PausableProxy]:
    host, port = stack.endpoint.removeprefix("http://").split(":")
    p = PausableProxy((host, int(port)))
    yield p
    p.pause()


def test_store_unreachable_for_20_s_loses_no_defect(
    router: Api,
    workers: WorkerFactory,
    proxy: PausableProxy,
    long_clip: tuple[Path, testsrc.GroundTruth],
) -> None:
    workers("p1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    sid = _submit(router, long_clip[0])
    wait_for(lambda: _owners(router, [sid])[sid] == "p1", 30, what="p1 to take the stream")
    proxy.pause()  # the black segment (12-15 s) happens while the store is away
    time.sleep(20)
    assert router.call("GET", f"/streams/{sid}/defects")[1]["defects"] == []
    proxy.resume()

    def black_written() -> list[Any]:
        return [d for d in router.call("GET", f"/streams/{sid}/defects")[1]["defects"] if d["end_s"]]

    found = wait_for(black_written, 20, what="the buffered defect to be written")
    truth = long_clip[1].defects[0]
    assert [(d["type"], d["worker_id"]) for d in found] == [("black", "p1")]
    assert (
        abs(found[0]["start_s"] - truth["start_s"]) <= 0.5 and abs(found[0]["end_s"] - truth["end_s"]) <= 0.5
    )
    # It kept monitoring throughout, and holds the lease again once its renewals get through.
    wait_for(lambda: _owners(router, [sid])[sid] == "p1", 5, what="p1's lease renewed")


def test_scale_out_spreads_streams_within_the_rebalance_period(
    router: Api, workers: WorkerFactory, long_clip: tuple[Path, testsrc.GroundTruth]
) -> None:
    workers("s1", AVMON_WORKER_CAPACITY="9")
    ids = [_submit(router, long_clip[0]) for _ in range(9)]
    wait_for(lambda: Counter(_owners(router, ids).values()) == {"s1": 9}, 30, what="s1 to hold all 9")
    workers("s2", AVMON_WORKER_CAPACITY="9")
    workers("s3", AVMON_WORKER_CAPACITY="9")

    def spread() -> bool:
        held = Counter(_owners(router, ids).values())
        return None not in held and len(held) == 3 and max(held.values()) <= 3 + 1

    wait_for(spread, 25, what="9 streams spread over 3 workers (fair share 3, plus one)")


def test_metrics_expose_lag_frames_and_leases(
    router: Api, workers: WorkerFactory, long_clip: tuple[Path, testsrc.GroundTruth]
) -> None:
    port = local.free_port()
    workers("m1", AVMON_METRICS_PORT=str(port))
    sid = _submit(router, long_clip[0])

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                return str(resp.read().decode())
        except OSError:
            return ""

    text = wait_for(
        lambda: (t := scrape()) and f'stream_id="{sid}"' in t and t, 30, what="the stream in /metrics"
    )
    assert "avmon_stream_frames_analysed_total" in text and "avmon_stream_lag_seconds" in text
    assert 'avmon_worker_streams{worker_id="m1"} 1' in text
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert resp.status == 200
