"""Prometheus text exposition and a health check over plain HTTP (no extra dependency).

``GET /metrics``: per-stream lag, frames analysed, lease state, and the worker's defect writer.
``GET /healthz``: 200 while the event loop's heartbeat is fresh, 503 when it is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

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


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(sample: WorkerSample) -> str:
    """The Prometheus text format (version 0.0.4) of one sample of the worker's state."""
    w = f'worker_id="{_label(sample.worker_id)}"'
    lines = [
        "# HELP avmon_worker_capacity Streams this worker may monitor at once.",
        "# TYPE avmon_worker_capacity gauge",
        f"avmon_worker_capacity{{{w}}} {sample.capacity}",
        "# HELP avmon_worker_streams Streams this worker holds a lease on.",
        "# TYPE avmon_worker_streams gauge",
        f"avmon_worker_streams{{{w}}} {len(sample.streams)}",
        "# HELP avmon_defects_written_total Defect records written to the store.",
        "# TYPE avmon_defects_written_total counter",
        f"avmon_defects_written_total{{{w}}} {sample.defects_written}",
        "# HELP avmon_defects_dropped_total Defect records not written (fenced out or buffer full).",
        "# TYPE avmon_defects_dropped_total counter",
        f"avmon_defects_dropped_total{{{w}}} {sample.defects_dropped}",
        "# HELP avmon_defects_buffered Defect records waiting for the store.",
        "# TYPE avmon_defects_buffered gauge",
        f"avmon_defects_buffered{{{w}}} {sample.defects_buffered}",
        "# HELP avmon_heartbeat_age_seconds Since the event loop last beat.",
        "# TYPE avmon_heartbeat_age_seconds gauge",
        f"avmon_heartbeat_age_seconds{{{w}}} {sample.heartbeat_age_s:.3f}",
        "# HELP avmon_worker_cores CPU cores this worker may use (affinity, cgroup quota).",
        "# TYPE avmon_worker_cores gauge",
        f"avmon_worker_cores{{{w}}} {sample.cores:g}",
        "# HELP avmon_worker_committed_cores Cores its streams cost, measured or expected.",
        "# TYPE avmon_worker_committed_cores gauge",
        f"avmon_worker_committed_cores{{{w}}} {sample.committed_cores:.3f}",
        "# HELP avmon_worker_cpu_target Share of its cores it fills with streams.",
        "# TYPE avmon_worker_cpu_target gauge",
        f"avmon_worker_cpu_target{{{w}}} {sample.cpu_target:g}",
    ]
    per_stream = [
        (
            "avmon_stream_frames_analysed_total",
            "counter",
            "Video frames decoded and analysed.",
            "frames_analysed",
        ),
        ("avmon_stream_lag_seconds", "gauge", "Behind the live edge (or real time).", "lag_s"),
        ("avmon_stream_media_time_seconds", "gauge", "Media time reached.", "media_time_s"),
        (
            "avmon_stream_lease_expires_in_seconds",
            "gauge",
            "Until the lease lapses unless renewed.",
            "lease_expires_in_s",
        ),
        ("avmon_stream_reconnecting", "gauge", "1 while the source is lost and retried.", "reconnecting"),
        ("avmon_stream_cpu_cores", "gauge", "CPU cores the stream costs (measured).", "cpu_cores"),
        (
            "avmon_stream_dropped_datagrams_total",
            "counter",
            "UDP datagrams the kernel dropped before the worker read them (its own loss).",
            "dropped_datagrams",
        ),
        (
            "avmon_stream_frames_dropped_total",
            "counter",
            "Pictures missing from the source's own timeline (a single one is counted, not alarmed).",
            "frames_dropped",
        ),
    ]
    for name, kind, help_text, attr in per_stream:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for s in sample.streams:
            value = getattr(s, attr)
            if value is None:
                continue
            lines.append(f'{name}{{{w},stream_id="{_label(s.stream_id)}"}} {float(value):g}')
    text = "\n".join(lines) + "\n"
    return text + transport_metrics.render(sample.transport) if sample.transport else text


async def serve(
    port: int, sample: Callable[[], WorkerSample], max_heartbeat_age_s: float, stopping: asyncio.Event
) -> None:
    """Serve until ``stopping`` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            path = request.decode("latin-1").split(" ")[1] if request.count(b" ") >= 2 else ""
            current = sample()
            if path == "/metrics":
                status, body, ctype = "200 OK", render(current), "text/plain; version=0.0.4"
            elif path == "/healthz":
                ok = current.heartbeat_age_s < max_heartbeat_age_s
                status, body, ctype = (
                    ("200 OK" if ok else "503 Service Unavailable"),
                    ("ok\n" if ok else "stuck\n"),
                    "text/plain",
                )
            else:
                status, body, ctype = "404 Not Found", "not found\n", "text/plain"
            data = body.encode()
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
