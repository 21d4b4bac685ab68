"""Prometheus families of the transport counters of every stream a worker holds.

One family per figure, a sample per stream (and per PID, per indicator), built with
``prometheus_client``; ``worker/metrics.py`` serves them after the worker's own families.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from worker.transport.analyzer import TransportCounters
from worker.transport.indicators import RULES


def families(streams: Mapping[str, TransportCounters]) -> list[Metric]:
    """The families below for ``streams`` (stream id -> its analyser's ``counters``)."""
    sid = ["stream_id"]
    packets = CounterMetricFamily("avmon_ts_packets_total", "MPEG-TS packets analysed.", labels=sid)
    discarded = CounterMetricFamily(
        "avmon_ts_bytes_discarded_total", "Bytes thrown away while out of TS sync.", labels=sid
    )
    errors = CounterMetricFamily(
        "avmon_ts_errors_total",
        "ETSI TR 101 290 errors by indicator (the defect type; tr101290 is the standard's number).",
        labels=[*sid, "indicator", "tr101290"],
    )
    pid_packets = CounterMetricFamily(
        "avmon_ts_pid_packets_total", "MPEG-TS packets by PID.", labels=[*sid, "pid"]
    )
    pid_errors = CounterMetricFamily(
        "avmon_ts_pid_errors_total",
        "TR 101 290 errors by PID and indicator.",
        labels=[*sid, "pid", "indicator"],
    )
    delay_factor = GaugeMetricFamily(
        "avmon_mdi_delay_factor_ms",
        "RFC 4445 delay factor of the last measurement interval (UDP input), milliseconds.",
        labels=sid,
    )
    loss_rate = GaugeMetricFamily(
        "avmon_mdi_media_loss_rate",
        "RFC 4445 media loss rate of the last measurement interval, TS packets per second.",
        labels=sid,
    )
    pcr_accuracy = GaugeMetricFamily(
        "avmon_ts_pcr_accuracy_ns",
        "TR 101 290 2.4 as information: largest PCR deviation from constant rate, last batch, ns "
        "(meaningful on CBR streams).",
        labels=sid,
    )
    for s, c in streams.items():
        packets.add_metric([s], c.packets)
        discarded.add_metric([s], c.bytes_discarded)
        for name, n in sorted(c.indicators.items()):
            errors.add_metric([s, name, RULES[name].number], n)
        for pid, counts in c.per_pid.items():
            pid_packets.add_metric([s, str(pid)], counts["packets"])
            for name, n in sorted(counts.items()):
                if name != "packets":
                    pid_errors.add_metric([s, str(pid), name], n)
        if c.mdi_delay_factor_ms is not None:
            delay_factor.add_metric([s], round(c.mdi_delay_factor_ms, 3))
            loss_rate.add_metric([s], round(c.mdi_media_loss_rate or 0.0, 3))
        if c.pcr_accuracy_ns is not None:
            pcr_accuracy.add_metric([s], c.pcr_accuracy_ns)
    return [packets, discarded, errors, pid_packets, pid_errors, delay_factor, loss_rate, pcr_accuracy]


class _Families:
    """A collector of families built already (one exposition of one moment)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> list[Metric]:
        return self._metrics


def render(streams: Mapping[str, TransportCounters]) -> str:
    """The text exposition (format 0.0.4) of :func:`families`."""
    return generate_latest(_Families(families(streams))).decode()
