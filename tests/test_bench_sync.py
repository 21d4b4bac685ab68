"""bench.accuracy_sync: the corpus covers what issue 17 asks for, and the scoring judges windows
and reports as documented (the media path itself is tested in test_detector_av_sync.py)."""

from __future__ import annotations

from bench.accuracy_sync import CLEAN_KINDS, OFFSETS_MS, Case, clean_cases, corpus, markdown, score
from bench.sync_corpus import constant
from worker.detectors.av_sync import AvSyncDetector
from worker.detectors.base import Finding, Severity
from worker.sync_content import WindowEstimate


def known(start: float, offset_ms: float | None) -> WindowEstimate:
    return WindowEstimate(
        start, start + 20.0, offset_ms, 0.7 if offset_ms is not None else 0.0, 0.5, 12.0, 0.1, 20, 30
    )


def test_corpus_has_every_offset_a_drift_scenes_and_negatives() -> None:
    cases = corpus(60.0)
    knocks = {c.offset(0.0) for c in cases if c.kind == "knocks" and c.name.startswith("knocks")}
    assert knocks == set(OFFSETS_MS)
    [drift] = [c for c in cases if c.name.startswith("drift")]
    assert drift.offset(0.0) == 0.0 and drift.offset(60.0) == 250.0 and drift.leaves_at_s == 30.0
    assert {c.kind for c in cases if c.expect == "unknown"} == {"unrelated", "silence", "static"}
    assert {"speech", "music"} <= {c.kind for c in cases}
    assert {c.expect for c in cases if c.name.startswith("knocks") and abs(c.offset(0.0)) <= 40.0} == {"none"}


def test_clean_content_adds_up_to_the_minutes_asked_and_cycles_the_scenes() -> None:
    cases = clean_cases(30.0)
    assert sum(c.duration_s for c in cases) == 1800.0
    assert {c.kind for c in cases} == set(CLEAN_KINDS)


def test_a_confident_window_on_content_that_should_be_unknown_fails_the_clip() -> None:
    detector = AvSyncDetector()
    detector.content_windows.extend([known(0.0, None), known(5.0, 300.0)])
    result = score(Case("unrelated", "unrelated", constant(0.0), 60.0, 1, "unknown"), detector, [])
    assert not result.ok and result.confident == 1


def test_a_late_report_or_an_error_beyond_a_frame_fails_the_clip() -> None:
    detector = AvSyncDetector()
    detector.content_windows.extend([known(0.0, 200.0), known(5.0, 250.0)])
    opened = Finding("av_sync", 0.0, None, Severity.CRITICAL, {"offset_ms": 200.0}, "content")
    detector.content_reports.append((70.0, opened))
    result = score(Case("late", "knocks", constant(200.0), 80.0, 1, "defect"), detector, [])
    assert not result.ok
    assert result.within_frame == 1 and result.max_error_ms == 50.0
    assert any("after it left the window" in p for p in result.problems)
    assert "| late | defect |" in markdown([result], [], 0.0, None)
