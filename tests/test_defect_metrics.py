"""A defect's metrics carry numbers and a few named facts (DESIGN.md §4: metrics.channels, av_sync's
metrics.method), through the session and the table."""

from __future__ import annotations

from shared import store
from shared.models import Defect, DefectType
from worker.detectors.base import Finding, Severity
from worker.session import _metrics


def test_channels_and_labels_join_the_rounded_numbers() -> None:
    finding = Finding(
        "silence", 1.0, None, Severity.CRITICAL, {"level_db": -71.23456}, key="FC", channels=("FC",),
        labels={"method": "x"},
    )  # fmt: skip
    assert _metrics(finding) == {"level_db": -71.2346, "channels": ["FC"], "method": "x"}


def test_named_metrics_survive_the_defects_table() -> None:
    defect = Defect(
        stream_id="s", defect_id="000000001.000-silence-FC", type=DefectType.SILENCE, start_s=1.0,
        start_at="2026-12-03T00:00:00.000Z", severity="critical", worker_id="w",
        metrics={"level_db": -71.2, "channels": ["FC", "LFE"], "method": "content"},
    )  # fmt: skip
    item = store.unmarshal(store.marshal(store.defect_item(defect, ttl_days=1, now=0.0)))
    assert Defect.model_validate({k: v for k, v in item.items() if k in Defect.model_fields}) == defect
