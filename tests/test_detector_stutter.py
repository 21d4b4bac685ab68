"""The stutter detector: missing pictures counted one by one, reported when visible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.media import decode, h264_ts
from worker.detectors.base import Finding, StreamContext, VideoFrame
from worker.detectors.decode_error import DecodeErrorDetector
from worker.detectors.stutter import StutterDetector, StutterOptions

FPS = 25
LUMA = np.full((16, 16), 100, np.uint8)


def feed(
    detector: StutterDetector, times: list[float], corrupt: frozenset[int] = frozenset()
) -> list[Finding]:
    findings: list[Finding] = []
    for i, t in enumerate(times):
        findings += detector.feed_video(VideoFrame(t=t, luma=LUMA, corrupt=i in corrupt))
    return findings + detector.flush(times[-1])


def steady(frames: int, missing: set[int], fps: float = FPS) -> list[float]:
    return [i / fps for i in range(frames) if i not in missing]


def test_a_single_missing_picture_is_counted_not_reported() -> None:
    ctx = StreamContext()
    detector = StutterDetector(ctx=ctx)
    assert feed(detector, steady(200, {100})) == []
    assert detector.frames_dropped == 1
    assert ctx.extra["frames_dropped"] == 1


def test_pictures_missing_in_a_row_are_a_stutter_at_the_gap() -> None:
    detector = StutterDetector()
    opened, closing = feed(detector, steady(200, {100, 101, 102}))
    assert opened.type == "stutter" and opened.end_s is None
    assert opened.start_s == pytest.approx(100 / FPS)
    assert closing.end_s == pytest.approx(103 / FPS)
    assert closing.metrics["missing_frames"] == 3
    assert closing.metrics["longest_gap_frames"] == 3
    assert closing.metrics["longest_gap_s"] == pytest.approx(4 / FPS)


def test_single_pictures_missing_repeatedly_are_a_stutter_from_the_first() -> None:
    # One picture a second for 8 s: each one invisible, together a judder.
    missing = {50 + 25 * k for k in range(8)}
    opened, closing = feed(StutterDetector(), steady(400, missing))
    assert opened.start_s == pytest.approx(50 / FPS)
    assert closing.end_s == pytest.approx((50 + 25 * 7 + 1) / FPS)
    assert closing.metrics["missing_frames"] == 8
    assert closing.metrics["gaps"] == 8


def test_single_pictures_missing_rarely_are_only_counted() -> None:
    detector = StutterDetector()
    missing = {50 + 75 * k for k in range(8)}  # one every 3 s: at most 2 in any 5 s window
    assert feed(detector, steady(700, missing)) == []
    assert detector.frames_dropped == 8


def test_stutter_closes_after_a_window_without_gaps() -> None:
    times = steady(1000, {100, 101, 102, 600, 601, 602})  # 20 s apart: two stutters
    starts = [f.start_s for f in feed(StutterDetector(), times) if f.end_s is not None]
    assert starts == pytest.approx([100 / FPS, 600 / FPS])


def test_pictures_lost_to_decode_errors_are_counted_but_left_to_decode_error() -> None:
    ctx = StreamContext()
    errors, detector = DecodeErrorDetector(ctx=ctx), StutterDetector(ctx=ctx)
    findings: list[Finding] = []
    for t in steady(200, {100, 101, 102}):
        if t == pytest.approx(103 / FPS):
            errors.feed_decode_error(t, "video", "Invalid data found when processing input")
        findings += detector.feed_video(VideoFrame(t=t, luma=LUMA))
    assert findings == []
    assert detector.frames_dropped == 3


def test_a_change_of_frame_rate_is_not_missing_pictures() -> None:
    detector = StutterDetector()
    times = [i / 50 for i in range(100)] + [2.0 + i / 25 for i in range(1, 100)]
    assert feed(detector, times) == []
    assert detector.frames_dropped == 0


def test_a_variable_frame_rate_is_not_judged() -> None:
    rng = np.random.default_rng(3)
    detector = StutterDetector()
    assert feed(detector, list(np.cumsum(rng.uniform(0.02, 0.06, 500)))) == []
    assert detector.frames_dropped == 0


def test_a_gap_longer_than_a_second_is_left_to_timestamp_jump() -> None:
    detector = StutterDetector()
    assert feed(detector, [i / FPS for i in range(50)] + [5.0 + i / FPS for i in range(50)]) == []
    assert detector.frames_dropped == 0


def test_missing_pictures_at_59_94_fps_are_counted_in_pictures() -> None:
    detector = StutterDetector()
    fps = 60000 / 1001
    [opened, _] = feed(detector, steady(600, {300, 301, 302, 303}, fps=fps))
    assert opened.start_s == pytest.approx(300 / fps)
    assert detector.frames_dropped == 4


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="run_frames"):
        StutterOptions(run_frames=1)
    with pytest.raises(ValueError, match="window"):
        StutterOptions(window=0.0)


def test_ffmpeg_encoded_single_drop_is_counted_and_a_visible_one_is_a_stutter(tmp_path: Path) -> None:
    # libx264 in MPEG-TS, pictures removed before encoding with their timestamps kept: one at
    # 1.2 s (a step of two frame durations), four in a row at 4 s.
    clip = tmp_path / "dropped.ts"
    h264_ts(clip, 8.0, vf="select='not(eq(n\\,30))*not(between(n\\,100\\,103))'")
    ctx = StreamContext()
    stutter = StutterDetector(ctx=ctx)
    findings = decode(clip, DecodeErrorDetector(ctx=ctx), stutter)
    assert [f.type for f in findings] == ["stutter", "stutter"]
    assert findings[0].start_s == pytest.approx(4.0, abs=0.05)  # media time counts from the audio
    assert findings[1].metrics["missing_frames"] == 4
    assert ctx.extra["frames_dropped"] == 5


def test_pictures_lost_one_apart_are_all_counted() -> None:
    # Every other picture missing three times: long intervals in a row, then a normal one.
    detector = StutterDetector()
    [opened, _] = feed(detector, steady(200, {100, 102, 104}))
    assert detector.frames_dropped == 3
    assert opened.start_s == pytest.approx(100 / FPS)


def test_a_picture_out_of_order_is_ignored_not_a_new_timeline() -> None:
    # A decoder missing references outputs a picture 0.72 s back; the rate and gaps go on.
    times = steady(300, {150, 151, 152})
    times.insert(160, times[140])
    detector = StutterDetector()
    [opened, _] = feed(detector, times)
    assert opened.start_s == pytest.approx(150 / FPS)
    assert detector.frames_dropped == 3
