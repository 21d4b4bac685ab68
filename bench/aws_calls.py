"""AWS requests per healthy stream-hour, counted on the emulator.

The real system runs on this machine: moto's server (the AWS emulator), the router's Lambda
handler behind its local HTTP adapter (in this process) and one real ``avmon worker`` process.
Each of them reaches the emulator through its own :class:`bench.proxy.CountingProxy`, so every
request is counted at the wire, by operation.

1. Setup (counted apart, per stream start): ``POST /streams`` for K healthy (defect-free) clips
   read at real-time pace; the worker claims them.
2. Steady state: both counters are reset, and the system runs for ``seconds`` with no user
   traffic. The worker has one free slot, so its idle polling and lease scans are in the count.
3. Housekeeping, which EventBridge invokes once a minute in the cloud, is run by hand a few times
   and its requests per run are scaled to that schedule.
4. A few user requests (``GET /streams/{id}``, ``GET /streams``, ``GET .../defects``,
   ``DELETE /streams/{id}``): the AWS requests each one costs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bench.clips import Clip
from bench.proxy import CountingProxy
from infra import local

HOUSEKEEPING_PER_HOUR = 60  # EventBridge schedule of the router's housekeeping (infra/template.yaml)
HOUSEKEEPING_RUNS = 3
# Requests a worker makes for itself, however many streams it holds (the rest are per stream):
# polling for assignments, lease surveys and its own liveness record.
PER_WORKER_OPS = frozenset(
    {"sqs:ReceiveMessage", "sqs:GetQueueUrl", "dynamodb:Scan", "dynamodb:PutItem", "dynamodb:DeleteItem"}
)
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class AwsCalls:
    streams: int
    seconds: float
    worker_capacity: int
    worker: Counter[str]  # steady state, the whole window
    housekeeping: Counter[str]  # over HOUSEKEEPING_RUNS runs
    setup: Counter[str]  # router + worker requests to start every stream (POST + claim)
    per_request: dict[str, Counter[str]] = field(default_factory=dict)  # user request → AWS requests
    defects_written: int = 0

    @property
    def per_start(self) -> dict[str, float]:
        """Requests to start one stream (its POST and the worker's claim; the worker's own start
        is shared out among the streams)."""
        return {op: n / self.streams for op, n in self.setup.items()}

    @property
    def per_stream_hour(self) -> float:
        """Requests per healthy stream-hour as measured: ``streams`` streams on one worker with a
        free slot, and the router's housekeeping."""
        return sum(self.at(self.streams).values())

    def per_stream_rates(self) -> dict[str, float]:
        """Per-stream operations (lease renewals, defect writes), per stream-hour."""
        return {
            op: n * 3600.0 / (self.streams * self.seconds)
            for op, n in self.worker.items()
            if op not in PER_WORKER_OPS
        }

    def per_worker_rates(self) -> dict[str, float]:
        """Per-worker operations of a worker with a free slot, per worker-hour."""
        return {op: n * 3600.0 / self.seconds for op, n in self.worker.items() if op in PER_WORKER_OPS}

    def housekeeping_rates(self) -> dict[str, float]:
        """The router's scheduled housekeeping, per hour (for the whole system)."""
        return {op: n * HOUSEKEEPING_PER_HOUR / HOUSEKEEPING_RUNS for op, n in self.housekeeping.items()}

    def at(self, streams_per_worker: int) -> dict[str, float]:
        """Requests per stream-hour, by operation, for workers holding ``streams_per_worker``
        streams with one slot free, the housekeeping shared by those streams only (a one-worker
        system: the most it can cost per stream)."""
        rates: dict[str, float] = {}
        for source, part, share in (
            ("worker", self.per_stream_rates(), 1.0),
            ("worker", self.per_worker_rates(), 1.0 / streams_per_worker),
            ("router", self.housekeeping_rates(), 1.0 / streams_per_worker),
        ):
            for op, n in part.items():
                rates[f"{source} {op}"] = rates.get(f"{source} {op}", 0.0) + n * share
        return dict(sorted(rates.items(), key=lambda kv: -kv[1]))


def _http(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _reset_router_clients() -> None:
    from router import api

    if api.deps.cache_info().currsize:
        d = api.deps()
        d.ddb.close()
        d.sqs.close()
    api.deps.cache_clear()


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.25)


def count_calls(
    clip: Clip,
    streams: int,
    seconds: float,
    endpoint: str | None = None,
    settings: dict[str, str] | None = None,
) -> AwsCalls:
    """Run the system on the emulator (see the module docstring) and count its requests.
    ``endpoint``: an emulator that is already running (else one is started, and stopped after);
    ``settings``: ``AVMON_*`` variables for router and worker beyond the defaults (tests)."""
    from router import local as router_local

    emulator = None if endpoint is not None else local.start_emulator(port=local.free_port())
    upstream = emulator.url if emulator is not None else str(endpoint)
    prefix = f"bench{os.getpid()}"
    base_env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        **local.settings_env(prefix),
        "AVMON_ALLOWED_SCHEMES": "http,https,udp,file",
        "AVMON_ALLOW_PRIVATE_HOSTS": "true",
        **(settings or {}),
    }
    router_proxy, worker_proxy = CountingProxy(upstream), CountingProxy(upstream)
    worker: subprocess.Popen[bytes] | None = None
    server: Any = None
    with contextlib.ExitStack() as stack:
        if emulator is not None:
            stack.callback(emulator.stop)
        stack.callback(router_proxy.close)
        stack.callback(worker_proxy.close)
        stack.enter_context(_environ({**base_env, "AWS_ENDPOINT_URL": upstream}))
        local.create_data_plane(prefix)
        os.environ["AWS_ENDPOINT_URL"] = router_proxy.url
        _reset_router_clients()
        stack.callback(_reset_router_clients)
        server = router_local.RouterServer("127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        api = f"http://127.0.0.1:{server.server_address[1]}"

        health = stack.enter_context(tempfile.TemporaryDirectory())
        log = stack.enter_context(open(Path(health) / "worker.log", "wb"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "avmon", "worker"],
            env={
                **os.environ,
                "AWS_ENDPOINT_URL": worker_proxy.url,
                "AVMON_WORKER_ID": "bench-worker",
                "AVMON_WORKER_CAPACITY": str(streams + 1),
                "AVMON_HEALTH_FILE": str(Path(health) / "health"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
        stack.callback(_stop, worker)

        # 1. Setup: submit and wait until the worker holds every stream.
        ids = [
            str(_http(api, "POST", "/streams", {"url": clip.url, "realtime": True})["stream_id"])
            for _ in range(streams)
        ]
        # Watched straight on the emulator, not through the proxies: not counted.
        ddb = boto3.client("dynamodb", endpoint_url=upstream, region_name="us-east-1")
        stack.callback(ddb.close)
        table = f"{prefix}-streams"

        def owner(stream_id: str) -> str | None:
            item = ddb.get_item(TableName=table, Key={"stream_id": {"S": stream_id}}).get("Item", {})
            value = item.get("owner", {}).get("S")
            return None if value is None else str(value)

        _wait(lambda: all(owner(i) == "bench-worker" for i in ids), 60, "the worker to claim every stream")
        time.sleep(1.0)  # claims answered, messages deleted
        setup = router_proxy.snapshot() + worker_proxy.snapshot()

        # 2. Steady state.
        router_proxy.reset()
        worker_proxy.reset()
        time.sleep(seconds)
        steady = worker_proxy.snapshot()

        # 3. Housekeeping, by hand, a few times.
        router_proxy.reset()
        for _ in range(HOUSEKEEPING_RUNS):
            router_local.run_housekeeping(server)
        housekeeping = router_proxy.snapshot()

        # 4. What each user request costs.
        per_request: dict[str, Counter[str]] = {}
        for label, method, path in (
            ("GET /streams/{id}", "GET", f"/streams/{ids[0]}"),
            ("GET /streams", "GET", "/streams"),
            ("GET /streams/{id}/defects", "GET", f"/streams/{ids[0]}/defects"),
            ("DELETE /streams/{id}", "DELETE", f"/streams/{ids[-1]}"),
        ):
            router_proxy.reset()
            _http(api, method, path)
            per_request[label] = router_proxy.snapshot()
        defects = sum(len(_http(api, "GET", f"/streams/{i}/defects")["defects"]) for i in ids)

    return AwsCalls(
        streams=streams,
        seconds=seconds,
        worker_capacity=streams + 1,
        worker=steady,
        housekeeping=housekeeping,
        setup=setup,
        per_request=per_request,
        defects_written=defects,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
