"""The worker's /metrics page: prometheus_client families on a registry of the worker's own, with the
names, labels and values the dashboards and DESIGN.md know, served as Prometheus text 0.0.4."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from worker import metrics
from worker.transport import TransportCounters


def _sample(worker_id: str = "w-1", heartbeat_age_s: float = 0.5) -> metrics.WorkerSample:
    stream = metrics.StreamSample(
        stream_id='s"1',
        frames_analysed=1_234_567,
        lag_s=0.25,
        media_time_s=None,  # not known yet: no sample
        lease_expires_in_s=9.5,
        reconnecting=True,
        cpu_cores=0.4,
        dropped_datagrams=3,
    )
    return metrics.WorkerSample(
        worker_id=worker_id,
        capacity=4,
        streams=[stream],
        defects_written=7,
        defects_dropped=1,
        defects_buffered=2,
        heartbeat_age_s=heartbeat_age_s,
        cores=2.0,
        committed_cores=0.4,
        cpu_target=0.75,
        transport={'s"1': TransportCounters(packets=10, bytes_discarded=0, indicators={}, per_pid={})},
    )


def _values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_page_parses_as_prometheus_text_with_every_family_named_as_before() -> None:
    values = _values(metrics.render(_sample()))
    w = ("worker_id", "w-1")
    ws = frozenset({w, ("stream_id", 's"1')})
    assert values["avmon_worker_capacity", frozenset({w})] == 4
    assert values["avmon_worker_streams", frozenset({w})] == 1
    assert values["avmon_defects_written_total", frozenset({w})] == 7
    assert values["avmon_defects_dropped_total", frozenset({w})] == 1
    assert values["avmon_defects_buffered", frozenset({w})] == 2
    assert values["avmon_heartbeat_age_seconds", frozenset({w})] == 0.5
    assert values["avmon_worker_cpu_target", frozenset({w})] == 0.75
    assert values["avmon_stream_frames_analysed_total", ws] == 1_234_567  # exact, not 6 digits
    assert values["avmon_stream_reconnecting", ws] == 1
    assert values["avmon_stream_dropped_datagrams_total", ws] == 3
    assert values["avmon_ts_packets_total", frozenset({("stream_id", 's"1')})] == 10
    assert not any(name == "avmon_stream_media_time_seconds" for name, _ in values)


def test_counters_and_gauges_keep_their_types() -> None:
    text = metrics.render(_sample())
    assert "# TYPE avmon_defects_written_total counter" in text.splitlines()
    assert "# TYPE avmon_stream_lag_seconds gauge" in text.splitlines()


def test_each_worker_has_its_own_registry_not_the_process_global_one() -> None:
    a = metrics.registry(lambda: _sample("a"))
    b = metrics.registry(lambda: _sample("b"))
    assert a is not b and REGISTRY not in (a, b)
    assert REGISTRY.get_sample_value("avmon_worker_capacity", {"worker_id": "a"}) is None
    assert a.get_sample_value("avmon_worker_capacity", {"worker_id": "a"}) == 4
    assert b.get_sample_value("avmon_worker_capacity", {"worker_id": "a"}) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(port: int, path: str) -> tuple[str, str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head, body = raw.split("\r\n\r\n", 1)
    ctype = next(line.split(": ", 1)[1] for line in head.splitlines() if line.startswith("Content-Type"))
    return head.splitlines()[0], ctype, body


async def test_the_endpoint_serves_metrics_and_health_with_content_types_prometheus_reads() -> None:
    port = _free_port()
    stopping = asyncio.Event()
    age = [0.5]
    server = asyncio.create_task(metrics.serve(port, lambda: _sample(heartbeat_age_s=age[0]), 10.0, stopping))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                status, ctype, body = await _get(port, "/metrics")
                break
            await asyncio.sleep(0.02)
        assert status == "HTTP/1.1 200 OK"
        assert ctype.startswith("text/plain; version=0.0.4")
        assert _values(body)["avmon_worker_capacity", frozenset({("worker_id", "w-1")})] == 4
        assert (await _get(port, "/healthz"))[0] == "HTTP/1.1 200 OK"
        age[0] = 60.0
        status, _, body = await _get(port, "/healthz")
        assert (status, body) == ("HTTP/1.1 503 Service Unavailable", "stuck\n")
        assert (await _get(port, "/nope"))[0] == "HTTP/1.1 404 Not Found"
    finally:
        stopping.set()
        await server
