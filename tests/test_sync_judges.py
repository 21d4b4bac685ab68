"""The av_sync judges on their own: when content windows and timestamp trends open and close
a defect (worker.sync.content_judge, worker.sync.pts_judge)."""

from __future__ import annotations

import pytest

from worker.detectors.av_sync import AvSyncOptions
from worker.detectors.base import PacketInfo, Severity
from worker.sync.content_judge import ContentJudge
from worker.sync.correlation import WindowEstimate
from worker.sync.pts_judge import PtsJudge


def window(start: float, offset_ms: float | None) -> WindowEstimate:
    """A 20 s content window starting at ``start`` (None: unknown)."""
    confidence = 0.0 if offset_ms is None else 0.7
    return WindowEstimate(start, start + 20.0, offset_ms, confidence, 0.5, 12.0, 0.1, 20, 30)


def test_content_defect_opens_after_three_agreeing_windows_and_closes_after_two_good() -> None:
    judge = ContentJudge(AvSyncOptions())
    assert judge.on_window(window(0.0, 10.0), 0.0) == []
    assert judge.on_window(window(5.0, 200.0), 0.0) == []
    assert judge.on_window(window(10.0, 210.0), 0.0) == []
    [opened] = judge.on_window(window(15.0, 220.0), 0.0)
    assert opened.key == "content" and opened.end_s is None and opened.severity is Severity.CRITICAL
    assert opened.start_s == pytest.approx(12.5)  # between the good window's centre and the first bad
    assert opened.metrics["windows"] == 3.0 and opened.metrics["offset_ms"] == 210.0
    assert judge.on_window(window(20.0, 0.0), 0.0) == []  # one good window does not close it
    [close] = judge.on_window(window(25.0, 5.0), 0.0)
    assert close.start_s == opened.start_s and close.end_s == pytest.approx(27.5)
    assert close.metrics["duration_s"] == pytest.approx(15.0)
    assert [t for t, _ in judge.reports] == [35.0, 45.0]  # the windows' ends


def test_content_windows_that_disagree_do_not_open_a_defect() -> None:
    judge = ContentJudge(AvSyncOptions())
    for i, offset in enumerate([200.0, 300.0, 200.0, 300.0]):
        assert judge.on_window(window(5.0 * i, offset), 0.0) == []
    assert judge.close(40.0, 40.0) == [] and judge.reports == []


def test_content_defect_without_confident_windows_ends_at_its_last_bad_window() -> None:
    judge = ContentJudge(AvSyncOptions(content_timeout_s=30.0))
    found = [f for i in range(3) for f in judge.on_window(window(5.0 * i, -60.0), 0.0)]
    assert len(found) == 1 and found[0].severity is Severity.WARNING  # 60 ms early: not past 90
    assert judge.on_window(window(40.0, None), 0.0) == []  # 30 s after the last bad end: not yet
    [close] = judge.on_window(window(45.0, None), 0.0)
    assert close.end_s == 30.0 and judge.reports[-1][0] == 65.0


def drifting_packets(duration: float, rate: float) -> list[PacketInfo]:
    """Video at 25 fps and audio packets of 40 ms whose timestamps run ``rate`` times as fast."""
    out = []
    for i in range(int(duration * 25)):
        out.append(PacketInfo(t=i / 25, kind="video", size=2000, key=i % 50 == 0, corrupt=False))
        audio = PacketInfo(t=i * 0.04 * rate, kind="audio", size=300, key=True, corrupt=False, duration=0.04)
        out.append(audio)
    return out


def test_pts_drift_opens_once_held_and_a_reconnect_ends_it_where_the_timeline_was() -> None:
    judge = PtsJudge(AvSyncOptions(), connection=0)
    found = [f for p in drifting_packets(150.0, 1.005) for f in judge.feed(p, 0)]
    [opened] = found
    assert opened.key == "pts" and opened.end_s is None and opened.labels == {"method": "pts"}
    assert opened.metrics["drift_ms_per_s"] == pytest.approx(5.0, abs=0.2)
    reached = judge.drift.now
    [close] = judge.feed(PacketInfo(t=0.0, kind="video", size=2000, key=True, corrupt=False), 1)
    assert close.start_s == opened.start_s and close.end_s == reached
    assert judge.episode is None and judge.close(200.0) == []


def test_steady_timestamps_are_no_pts_drift() -> None:
    judge = PtsJudge(AvSyncOptions(), connection=0)
    assert [f for p in drifting_packets(150.0, 1.0) for f in judge.feed(p, 0)] == []
    assert judge.close(150.0) == []
