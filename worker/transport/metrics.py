"""Prometheus text exposition of the transport counters of every stream a worker holds.

One family per figure, a sample per stream (and per PID, per indicator), in the text format
``worker/metrics.py`` serves; a caller appends ``render(...)`` to that page.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.transport.analyzer import TransportCounters
from worker.transport.indicators import RULES


def _label(value: str) -> str:
    """A label value escaped as the text format requires (as ``worker/metrics.py`` does)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(streams: Mapping[str, TransportCounters]) -> str:
    """The families below for ``streams`` (stream id -> its analyser's ``counters``)."""
    lines: list[str] = []

    def family(name: str, kind: str, help_: str, samples: list[tuple[str, float | int]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {value}" for labels, value in samples)

    def sid(stream_id: str) -> str:
        return f'stream_id="{_label(stream_id)}"'

    family("avmon_ts_packets_total", "counter", "MPEG-TS packets analysed.",
           [(sid(s), c.packets) for s, c in streams.items()])
    family("avmon_ts_bytes_discarded_total", "counter", "Bytes thrown away while out of TS sync.",
           [(sid(s), c.bytes_discarded) for s, c in streams.items()])
    family("avmon_ts_errors_total", "counter",
           "ETSI TR 101 290 errors by indicator (the defect type; tr101290 is the standard's number).",
           [(f'{sid(s)},indicator="{name}",tr101290="{RULES[name].number}"', n)
            for s, c in streams.items() for name, n in sorted(c.indicators.items())])
    family("avmon_ts_pid_packets_total", "counter", "MPEG-TS packets by PID.",
           [(f'{sid(s)},pid="{pid}"', v["packets"]) for s, c in streams.items()
            for pid, v in c.per_pid.items()])
    family("avmon_ts_pid_errors_total", "counter", "TR 101 290 errors by PID and indicator.",
           [(f'{sid(s)},pid="{pid}",indicator="{name}"', n) for s, c in streams.items()
            for pid, v in c.per_pid.items() for name, n in sorted(v.items()) if name != "packets"])
    mdi = {s: c for s, c in streams.items() if c.mdi_delay_factor_ms is not None}
    family("avmon_mdi_delay_factor_ms", "gauge",
           "RFC 4445 delay factor of the last measurement interval (UDP input), milliseconds.",
           [(sid(s), round(c.mdi_delay_factor_ms or 0.0, 3)) for s, c in mdi.items()])
    family("avmon_mdi_media_loss_rate", "gauge",
           "RFC 4445 media loss rate of the last measurement interval, TS packets per second.",
           [(sid(s), round(c.mdi_media_loss_rate or 0.0, 3)) for s, c in mdi.items()])
    acc = {s: c for s, c in streams.items() if c.pcr_accuracy_ns is not None}
    family("avmon_ts_pcr_accuracy_ns", "gauge",
           "TR 101 290 2.4 as information: largest PCR deviation from constant rate, last batch, ns "
           "(meaningful on CBR streams).",
           [(sid(s), c.pcr_accuracy_ns or 0.0) for s, c in acc.items()])
    return "\n".join(lines) + "\n"
