"""Prometheus metrics (``prometheus_client``, a registry per worker) and a health check over HTTP.

``GET /metrics``: per-stream lag, frames analysed, lease state, and the worker's defect writer.
``GET /healthz``: 200 while the event loop's heartbeat is fresh, 503 when it is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from worker.transport import TransportCounters
from worker.transport import metrics as transport_metrics

log = logging.getLogger("avmon.worker.metrics")


@dataclass(frozen=True)
class StreamSample:
    stream_id: str
    frames_analysed: int
    lag_s: float | None
    media_time_s: float | None
    lease_expires_in_s: float
    reconnecting: bool
    cpu_cores: float | None = None  # measured cost, once past its warm-up
    dropped_datagrams: int = 0
    frames_dropped: int = 0  # pictures missing from the source's timeline (the stutter detector counts)


@dataclass(frozen=True)
class WorkerSample:
    worker_id: str
    capacity: int
    streams: list[StreamSample]
    defects_written: int
    defects_dropped: int
    defects_buffered: int
    heartbeat_age_s: float
    cores: float = 0.0  # the cores it may use
    committed_cores: float = 0.0  # what its streams cost (measured or expected)
    cpu_target: float = 0.0
    transport: dict[str, TransportCounters] = field(default_factory=dict)  # per UDP stream


# (name, kind, help, the figure): one sample each, labelled with the worker's id.
_WORKER_FAMILIES: tuple[tuple[str, str, str, Callable[[WorkerSample], float]], ...] = (
    ("avmon_worker_capacity", "gauge", "Streams this worker may monitor at once.", lambda w: w.capacity),
    ("avmon_worker_streams", "gauge", "Streams this worker holds a lease on.", lambda w: len(w.streams)),
    (
        "avmon_defects_written_total",
        "counter",
        "Defect records written to the store.",
        lambda w: w.defects_written,
    ),
    (
        "avmon_defects_dropped_total",
        "counter",
        "Defect records not written (fenced out or buffer full).",
        lambda w: w.defects_dropped,
    ),
    (
        "avmon_defects_buffered",
        "gauge",
        "Defect records waiting for the store.",
        lambda w: w.defects_buffered,
    ),
    (
        "avmon_heartbeat_age_seconds",
        "gauge",
        "Since the event loop last beat.",
        lambda w: round(w.heartbeat_age_s, 3),
    ),
    (
        "avmon_worker_cores",
        "gauge",
        "CPU cores this worker may use (affinity, cgroup quota).",
        lambda w: w.cores,
    ),
    (
        "avmon_worker_committed_cores",
        "gauge",
        "Cores its streams cost, measured or expected.",
        lambda w: round(w.committed_cores, 3),
    ),
    ("avmon_worker_cpu_target", "gauge", "Share of its cores it fills with streams.", lambda w: w.cpu_target),
)

# (name after "avmon_stream_", kind, help, StreamSample attribute): one sample per stream whose
# figure is known.
_STREAM_FAMILIES = (
    ("frames_analysed_total", "counter", "Video frames decoded and analysed.", "frames_analysed"),
    ("lag_seconds", "gauge", "Behind the live edge (or real time).", "lag_s"),
    ("media_time_seconds", "gauge", "Media time reached.", "media_time_s"),
    ("lease_expires_in_seconds", "gauge", "Until the lease lapses unless renewed.", "lease_expires_in_s"),
    ("reconnecting", "gauge", "1 while the source is lost and retried.", "reconnecting"),
    ("cpu_cores", "gauge", "CPU cores the stream costs (measured).", "cpu_cores"),
    (
        "dropped_datagrams_total",
        "counter",
        "UDP datagrams the kernel dropped before the worker read them (its own loss).",
        "dropped_datagrams",
    ),
    (
        "frames_dropped_total",
        "counter",
        "Pictures missing from the source's own timeline (a single one is counted, not alarmed).",
        "frames_dropped",
    ),
)


def _family(
    name: str, kind: str, help_text: str, labels: list[str]
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


def families(sample: WorkerSample) -> list[Metric]:
    """The worker's families for one sample of its state, then its streams' transport counters."""
    out: list[Metric] = []
    for name, kind, help_text, figure in _WORKER_FAMILIES:
        family = _family(name, kind, help_text, ["worker_id"])
        family.add_metric([sample.worker_id], float(figure(sample)))
        out.append(family)
    for suffix, kind, help_text, attr in _STREAM_FAMILIES:
        family = _family("avmon_stream_" + suffix, kind, help_text, ["worker_id", "stream_id"])
        for s in sample.streams:
            value = getattr(s, attr)
            if value is not None:
                family.add_metric([sample.worker_id, s.stream_id], float(value))
        out.append(family)
    return out + transport_metrics.families(sample.transport) if sample.transport else out


class WorkerCollector:
    """A ``prometheus_client`` collector of one worker: its families at each scrape."""

    def __init__(self, sample: Callable[[], WorkerSample]) -> None:
        self._sample = sample

    def collect(self) -> list[Metric]:
        return families(self._sample())


def registry(sample: Callable[[], WorkerSample]) -> CollectorRegistry:
    """A registry of the worker's own (not the process-global one: tests run several workers in
    one process, and the global one also exports the process's own figures)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(WorkerCollector(sample))
    return reg


def render(sample: WorkerSample) -> str:
    """The Prometheus text format (version 0.0.4) of one sample of the worker's state."""
    return generate_latest(registry(lambda: sample)).decode()


async def serve(
    port: int, sample: Callable[[], WorkerSample], max_heartbeat_age_s: float, stopping: asyncio.Event
) -> None:
    """Serve until ``stopping`` is set."""

    metrics_registry = registry(sample)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            path = request.decode("latin-1").split(" ")[1] if request.count(b" ") >= 2 else ""
            if path == "/metrics":
                status, data, ctype = "200 OK", generate_latest(metrics_registry), CONTENT_TYPE_PLAIN_0_0_4
            elif path == "/healthz":
                ok = sample().heartbeat_age_s < max_heartbeat_age_s
                status, data, ctype = (
                    ("200 OK" if ok else "503 Service Unavailable"),
                    (b"ok\n" if ok else b"stuck\n"),
                    "text/plain",
                )
            else:
                status, data, ctype = "404 Not Found", b"not found\n", "text/plain"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + data)
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "0.0.0.0", port)
    log.info("metrics on :%d/metrics", port)
    async with server:
        await stopping.wait()
