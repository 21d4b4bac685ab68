"""The findings of the ``av_sync`` detector: one key a measurement (and ``labels["method"]``),
``warning`` or ``critical``, ``duration_s`` added on the close (DESIGN.md §4)."""

from __future__ import annotations

import statistics

from shared.models import DefectType
from worker.detectors.base import Finding, Severity
from worker.sync.episodes import Episode

CONTENT_KEY = ""  # key of the sync-mark measurement (marks are content too: the first path)
PTS_KEY = "pts"  # key of the timestamp drift
PROGRAMME_KEY = "content"  # key of the measurement on programme content, without marks


def sync_finding(
    start_s: float,
    end_s: float | None,
    critical: bool,
    metrics: dict[str, float],
    key: str,
    method: str,
) -> Finding:
    """The finding of one measurement's defect (``duration_s`` added on the close)."""
    if end_s is not None:
        metrics["duration_s"] = end_s - start_s
    return Finding(
        type=DefectType.AV_SYNC,
        start_s=start_s,
        end_s=end_s,
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        metrics=metrics,
        key=key,
        labels={"method": method},
    )


def marks_finding(ep: Episode, end_s: float | None) -> Finding:
    """The finding of a sync-mark defect (its metrics: :mod:`worker.detectors.av_sync`)."""
    metrics = {
        "offset_ms": statistics.median(ep.recent) if ep.recent else 0.0,
        "offset_min_ms": ep.low if ep.count else 0.0,
        "offset_max_ms": ep.high if ep.count else 0.0,
        "drift_ms_per_s": ep.slope(),
        "drifting": 1.0 if ep.drifting else 0.0,
        "pairs": float(ep.count),
    }
    return sync_finding(ep.start_s, end_s, ep.critical, metrics, CONTENT_KEY, "marks")
