"""The findings of the ``av_sync`` detector: one key a measurement (and ``labels["method"]``),
``warning`` or ``critical``, ``duration_s`` added on the close (DESIGN.md §4)."""

from __future__ import annotations

from shared.models import DefectType
from worker.detectors.base import Finding, Severity

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
