"""`avmon up`: the whole system on this machine, on embedded defaults.

The AWS emulator (moto's server) in its own process, the tables and queues from
``infra/template.yaml``, the router's handler behind the local HTTP adapter (with housekeeping
on a schedule, as EventBridge would run it), and N ``avmon worker`` processes. Everything it
started stops with it, in order: the workers first (they release their leases and flush their
defects through the emulator), then the router, the emulator last. The children get no Ctrl-C of
their own: a terminal's SIGINT goes to its whole foreground process group, and an emulator that
died with it would leave the workers unable to let go of their leases.

The local policy (:func:`local_policy`) is what makes it a local tool: local files and
loopback/private sources are accepted. ``avmon worker`` applies the same policy when it joins a
stack on a loopback ``AWS_ENDPOINT_URL``, so whatever the local router accepts, its workers
monitor.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from infra import local
from shared.settings import DEFAULT_PREFIX, LOCAL_SCHEMES

log = logging.getLogger("avmon.stack")


@dataclass
class StackConfig:
    workers: int = 2
    port: int = 8080
    host: str = "127.0.0.1"
    aws_port: int = 4566
    prefix: str = DEFAULT_PREFIX
    housekeeping_every_s: float = 5.0
    worker_capacity: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def local_policy(environ: Mapping[str, str]) -> dict[str, str]:
    """The trust settings of a local stack (DESIGN.md §8: `avmon up` enables ``file`` and
    loopback sources), unless ``environ`` sets them: local files and loopback or private hosts
    are what people test with on their own machine."""
    return {
        "AVMON_ALLOWED_SCHEMES": environ.get("AVMON_ALLOWED_SCHEMES", LOCAL_SCHEMES),
        "AVMON_ALLOW_PRIVATE_HOSTS": environ.get("AVMON_ALLOW_PRIVATE_HOSTS", "true"),
    }


def is_local_endpoint(endpoint: str | None) -> bool:
    """Whether an ``AWS_ENDPOINT_URL`` is an emulator on this machine (loopback host)."""
    if not endpoint:
        return False
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_env(config: StackConfig, endpoint: str) -> dict[str, str]:
    """Environment for every process of a local stack: the emulator, the names, local trust."""
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        **local_policy(os.environ),
        "AVMON_LOG_LEVEL": os.environ.get("AVMON_LOG_LEVEL", "WARNING"),
        **local.settings_env(config.prefix),
        **config.extra_env,
    }
    if config.worker_capacity is not None:
        env["AVMON_WORKER_CAPACITY"] = str(config.worker_capacity)
    return env


def spawn_worker(env: dict[str, str], worker_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "avmon", "worker"],
        env={
            **os.environ,
            **env,
            "AVMON_WORKER_ID": worker_id,
            "AVMON_HEALTH_FILE": f"/tmp/avmon-{worker_id}.health",
        },
        stdin=subprocess.DEVNULL,
        # Its own process group: a Ctrl-C in the terminal reaches only `avmon up`, which stops
        # the workers while the emulator still answers their lease releases.
        start_new_session=True,
    )


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout_s: float = 25.0) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def running_stack(config: StackConfig, stop: threading.Event) -> Iterator[str]:
    """Start everything; yield the router's base URL; stop everything on exit."""
    from router import local as router_local  # the router reads its settings from the environment

    emulator = local.start_emulator(port=config.aws_port)  # in its own process group, like the workers
    workers: list[subprocess.Popen[bytes]] = []
    saved = dict(os.environ)
    try:
        env = local_env(config, emulator.url)
        os.environ.update(env)
        local.create_data_plane(config.prefix)
        server = router_local.RouterServer(config.host, config.port)
        http = threading.Thread(target=server.serve_forever, name="router-http", daemon=True)
        http.start()

        def housekeeping() -> None:
            while not stop.wait(config.housekeeping_every_s):
                try:
                    router_local.run_housekeeping(server)
                except Exception:
                    log.exception("housekeeping failed")

        threading.Thread(target=housekeeping, name="housekeeping", daemon=True).start()
        for n in range(config.workers):
            workers.append(spawn_worker(env, f"worker-{n + 1}-{os.getpid()}"))
        try:
            yield f"http://{config.host}:{server.server_address[1]}"
        finally:
            stop.set()
            stop_processes(workers)  # first: they release their leases through the emulator
            server.shutdown()
            server.server_close()
    finally:
        stop_processes(workers)  # a failed start (the router's port taken) leaves none running
        emulator.stop()  # last
        os.environ.clear()
        os.environ.update(saved)
