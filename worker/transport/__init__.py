"""The MPEG-TS transport layer: ETSI TR 101 290 priority 1 and 2 and RFC 4445 MDI on the bytes
the worker reads itself. Pure: bytes and arrival times in, findings and counters out."""

from worker.transport.analyzer import TransportAnalyzer, TransportCounters, TransportOptions
from worker.transport.indicators import RULES, Rule

__all__ = ["RULES", "Rule", "TransportAnalyzer", "TransportCounters", "TransportOptions"]
