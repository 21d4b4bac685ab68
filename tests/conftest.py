"""Shared fixtures: one AWS emulator server per test session, fresh resources per test."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra import local
from tests.support import wait_for as wait_for  # re-exported: tests import it from here too

EVENTS = Path(__file__).parent / "events"


@pytest.fixture(scope="session")
def emulator() -> Iterator[str]:
    """moto's server in its own process on a free loopback port, for the whole session."""
    em = local.start_emulator(port=local.free_port())
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL=em.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
    )
    try:
        yield em.url
    finally:
        em.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Stack:
    """A fresh set of tables and queues on the emulator, and the env that points at them."""

    prefix: str
    endpoint: str
    plane: local.DataPlane
    env: dict[str, str]

    @property
    def queue_url(self) -> str:
        return self.plane.queue_urls["AssignmentQueue"]

    @property
    def dlq_url(self) -> str:
        return self.plane.queue_urls["AssignmentDeadLetterQueue"]


def _close_router_clients() -> None:
    """Close the router's cached boto3 clients (their pooled sockets would leak otherwise)."""
    from router import api

    if api.deps.cache_info().currsize:
        d = api.deps()
        d.ddb.close()
        d.sqs.close()
    api.deps.cache_clear()


@pytest.fixture
def stack(emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    prefix = f"t{secrets.token_hex(4)}"
    plane = local.create_data_plane(prefix)
    env = {
        **local.settings_env(prefix),
        "AWS_ENDPOINT_URL": emulator,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AVMON_ALLOWED_SCHEMES": "http,https,udp,file",
        "AVMON_ALLOW_PRIVATE_HOSTS": "true",
        "AVMON_LEASE_PERIOD_S": "3",
        "AVMON_TAKEOVER_SCAN_S": "1",
        "AVMON_POLL_WAIT_S": "1",
        "AVMON_REENQUEUE_AFTER_S": "2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _close_router_clients()
    yield Stack(prefix=prefix, endpoint=emulator, plane=plane, env=env)
    _close_router_clients()


@pytest.fixture
def sqs_client(stack: Stack) -> Iterator[Any]:
    from shared import aws

    client = aws.client("sqs")
    yield client
    client.close()


@pytest.fixture
def ddb_client(stack: Stack) -> Iterator[Any]:
    from shared import aws

    client = aws.client("dynamodb")
    yield client
    client.close()


def load_event(name: str, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    event.update(changes)
    return event


@dataclass
class Api:
    """A tiny JSON client of the router's HTTP API."""

    base: str

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def router(stack: Stack) -> Iterator[Api]:
    """The router's handler behind the local HTTP adapter, on a free port, housekeeping every second."""
    from router import local as router_local

    stop = threading.Event()
    server = router_local.RouterServer("127.0.0.1", 0)
    http = threading.Thread(target=server.serve_forever, daemon=True)
    http.start()

    def housekeeping() -> None:
        while not stop.wait(1.0):
            router_local.run_housekeeping(server)

    hk = threading.Thread(target=housekeeping, daemon=True)
    hk.start()
    try:
        yield Api(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        stop.set()
        hk.join(timeout=10)
        server.shutdown()
        server.server_close()


WorkerFactory = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def workers(stack: Stack, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start real `avmon worker` processes joined to the test's stack; all are stopped after."""
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start(worker_id: str, **env: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{worker_id}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "avmon", "worker"],
            env={
                **os.environ,
                **stack.env,
                "AVMON_WORKER_ID": worker_id,
                "AVMON_HEALTH_FILE": str(tmp_path / f"{worker_id}.health"),
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


@pytest.fixture
async def worker_clients(stack: Stack) -> Any:
    """The worker's aioboto3 clients (``worker.clients.Clients``) on the test's stack."""
    from worker.clients import aws_clients

    async with aws_clients() as clients:
        yield clients
