"""A defect's metrics carry numbers and a few named facts (DESIGN.md §4: metrics.channels, av_sync's
metrics.method), through the session and the table."""

from __future__ import annotations

from shared import store
from shared.models import Defect, DefectType
from tests.support import make_defect
from worker.detectors.base import Finding, Severity
from worker.session import _metrics


def test_channels_and_labels_join_the_rounded_numbers() -> None:
    finding = Finding(
        "silence", 1.0, None, Severity.CRITICAL, {"level_db": -71.23456}, key="FC", channels=("FC",),
        labels={"method": "x"},
    )  # fmt: skip
    assert _metrics(finding) == {"level_db": -71.2346, "channels": ["FC"], "method": "x"}


def test_named_metrics_survive_the_defects_table() -> None:
    metrics: dict[str, float | str | list[str]] = {
        "level_db": -71.2, "channels": ["FC", "LFE"], "method": "content"
    }  # fmt: skip
    defect = make_defect(DefectType.SILENCE, 1.0, key="FC", metrics=metrics)
    item = store.unmarshal(store.marshal(store.defect_item(defect, ttl_days=1, now=0.0)))
    assert Defect.model_validate({k: v for k, v in item.items() if k in Defect.model_fields}) == defect
