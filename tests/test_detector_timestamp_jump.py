"""The timestamp_jump detector on synthetic packet timelines (B-frame reordering, gaps, steps
back, splices) and on real MPEG-TS made with PyAV, fed by the worker's session."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import av
import pytest

from shared.models import Defect
from tests.media import moving_noise_ts, remux
from worker.detectors.base import Finding, PacketInfo, Severity
from worker.detectors.timestamp_jump import (
    TimestampJumpDetector,
    TimestampJumpOptions,
    expected_step,
)
from worker.session import SessionConfig, StreamSession

FPS = 25
AAC = 1024 / 48_000  # seconds per AAC packet at 48 kHz

# Presentation order of each picture in decode order, for a GOP of I + 3 B-frames (x264's
# b-pyramid: I0 P4 B2 b1 b3 P8 B6 b5 b7 ...).
PYRAMID = (0, 4, 2, 1, 3)


def video(n: int, fps: float = FPS, offset: float = 0.0, duration: bool = True) -> list[PacketInfo]:
    """``n`` video packets in decode order with b-pyramid reordering, from ``offset`` seconds."""
    order = [0] + [4 * g + k for g in range(n // 4 + 1) for k in PYRAMID[1:]]
    return [
        PacketInfo(
            t=offset + i / fps,
            kind="video",
            size=1000,
            key=i == 0,
            corrupt=False,
            duration=1 / fps if duration else None,
        )
        for i in order[:n]
    ]


def audio(seconds: float, offset: float = 0.0, duration: bool = True) -> list[PacketInfo]:
    return [
        PacketInfo(
            t=offset + k * AAC,
            kind="audio",
            size=300,
            key=True,
            corrupt=False,
            duration=AAC if duration else None,
        )
        for k in range(round(seconds / AAC))
    ]


def run(packets: Iterable[PacketInfo], options: TimestampJumpOptions | None = None) -> list[Finding]:
    detector = TimestampJumpDetector(options)
    findings: list[Finding] = []
    for packet in packets:
        findings += detector.feed_packet(packet)
    return findings + detector.flush(0.0)


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


def test_expected_step_is_the_larger_of_duration_and_median_increment() -> None:
    assert expected_step(deque([0.16, 0.16, 0.04]), 0.04) == pytest.approx(0.16)
    assert expected_step(deque(), 0.02) == pytest.approx(0.02)
    assert expected_step(deque(), None) == 0.0


def test_continuous_audio_and_b_frame_video_have_no_jump() -> None:
    assert run(video(250)) == []
    assert run(audio(10.0)) == []
    assert run(video(250, duration=False)) == []


def test_b_frames_at_low_frame_rate_are_not_steps_back() -> None:
    # At 5 fps a B-frame is displayed 0.6 s before the anchor stored ahead of it.
    assert run(video(100, fps=5.0)) == []


def test_gap_in_audio_is_one_jump_from_last_good_to_first_after() -> None:
    before, after = audio(5.0), audio(2.0, offset=15.0)
    findings = run(before + after)
    opened, closing = findings
    assert opened.end_s is None and closing.end_s == pytest.approx(15.0)
    assert opened.start_s == closing.start_s == pytest.approx(before[-1].t)
    assert opened.key == closing.key == "audio"
    assert opened.severity is Severity.WARNING
    expected = (before[-1].t or 0.0) + AAC
    assert closing.metrics["jump_s"] == pytest.approx(15.0 - expected)


def test_gap_within_max_gap_is_not_a_jump() -> None:
    assert run(audio(5.0) + audio(2.0, offset=5.0 + 0.9)) == []


def test_gap_in_video_is_measured_from_the_latest_picture_shown() -> None:
    before, after = video(125), video(50, offset=15.0)
    [closing] = closed(run(before + after))
    assert closing.key == "video"
    assert closing.start_s == pytest.approx(max(p.t or 0.0 for p in before))
    assert closing.end_s == pytest.approx(15.0)
    assert closing.metrics["jump_s"] == pytest.approx(10.0, abs=0.2)


def test_step_back_is_an_instant_at_the_last_good_time_with_negative_jump() -> None:
    before, after = audio(10.0), audio(2.0, offset=5.0)
    opened, closing = run(before + after)
    assert opened.end_s is None and opened.start_s == closing.start_s
    assert closing.start_s == closing.end_s == pytest.approx(before[-1].t)
    assert closing.metrics["jump_s"] == pytest.approx(-5.0, abs=0.05)


def test_small_step_back_is_tolerated() -> None:
    assert run(audio(5.0) + audio(2.0, offset=4.7)) == []


def test_packets_without_timestamps_are_skipped() -> None:
    untimed = [PacketInfo(t=None, kind="audio", size=300, key=True, corrupt=False)] * 20
    assert run(audio(2.0) + untimed + audio(2.0, offset=2.0)) == []


def test_kinds_are_independent() -> None:
    packets = sorted(audio(6.0) + video(150), key=lambda p: p.t or 0.0)
    jumped = [p for p in packets if p.kind == "video" or (p.t or 0.0) < 3.0]
    jumped += audio(3.0, offset=13.0)
    [closing] = closed(run(jumped))
    assert closing.key == "audio"


def test_splice_in_presentation_order_leaves_no_second_jump() -> None:
    # Every picture shown from 5.06 s on is shifted by 10 s: anchor P5.12 is, but B5.04 and
    # b5.00, shown before the splice and stored after that anchor, still carry the old times.
    packets = [
        PacketInfo(
            t=(p.t or 0.0) + (10.0 if (p.t or 0.0) >= 5.06 else 0.0),
            kind="video",
            size=1,
            key=False,
            corrupt=False,
        )
        for p in video(250)
    ]
    [closing] = closed(run(packets))
    assert closing.start_s == pytest.approx(5.0, abs=0.2)
    assert closing.metrics["jump_s"] == pytest.approx(10.0, abs=0.2)


def test_invalid_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_gap"):
        TimestampJumpOptions(max_gap=0.0)


# ------------------------------------------------------------------ real MPEG-TS


def shift(src: Path, dst: Path, at_s: float, by_s: float, by: str) -> None:
    """Remux ``src`` with the timestamps from ``at_s`` on moved ``by_s`` seconds later.

    ``by="dts"``: every packet stored from ``at_s`` on, both timestamps (a splice or an encoder
    restart). ``by="pts"``: the presentation time of every packet shown from ``at_s`` on; decode
    times stay as they were, since a muxer refuses decode times that go back.
    """

    def move(packet: av.Packet[Any]) -> bool:
        if packet.dts is None or packet.pts is None:
            return False
        stream, tb = packet.stream, packet.time_base
        delta = round(by_s / tb)
        ref = packet.dts if by == "dts" else packet.pts
        if (ref - (stream.start_time or 0)) * tb >= at_s:
            packet.pts += delta
            if by == "dts":
                packet.dts += delta
        return True

    remux(src, dst, move, format="mpegts")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("timestamp_jump") / "clip.ts"
    moving_noise_ts(path, 8.0)
    return path


def monitor(path: Path) -> list[Defect]:
    records: list[Defect] = []
    config = SessionConfig(
        url=path.resolve().as_uri(), reconnect=False, detectors=frozenset({"timestamp_jump"})
    )
    StreamSession("test", config, lambda d, _: records.append(d)).run()
    return records


def test_real_b_frame_stream_has_no_jump(clip: Path) -> None:
    with av.open(str(clip)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.pts is not None]
    assert pts != sorted(pts), "the clip must have B-frames (presentation order != stream order)"
    assert monitor(clip) == []


def splice_inside_a_b_group(path: Path, near_s: float) -> float:
    """A presentation time near ``near_s`` between a B-frame and the anchor stored before it:
    shifting by pts from there leaves that B-frame, stored after the shifted anchor, behind."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start, tb = stream.start_time or 0, stream.time_base
        assert tb is not None
        pts = [float((p.pts - start) * tb) for p in container.demux(stream) if p.pts is not None]
    candidates = [(a + b) / 2 for a, b in itertools.pairwise(pts) if b < a and b >= near_s]
    assert candidates, "the clip must have B-frames stored after their anchor"
    return candidates[0]


def test_real_jump_in_stream_order_is_one_per_stream(clip: Path, tmp_path: Path) -> None:
    shift(clip, tmp_path / "shifted.ts", at_s=5.0, by_s=10.0, by="dts")
    assert_one_jump_per_stream(monitor(tmp_path / "shifted.ts"), at_s=5.0)


def test_real_jump_in_presentation_order_is_one_per_stream(clip: Path, tmp_path: Path) -> None:
    at_s = splice_inside_a_b_group(clip, 5.0)
    shift(clip, tmp_path / "shifted.ts", at_s=at_s, by_s=10.0, by="pts")
    assert_one_jump_per_stream(monitor(tmp_path / "shifted.ts"), at_s=at_s)


def assert_one_jump_per_stream(records: list[Defect], at_s: float) -> None:
    closes = [r for r in records if r.end_s is not None]
    assert sorted(r.defect_id.rsplit("-", 1)[1] for r in closes) == ["audio", "video"]
    assert len(records) == 4  # an open and a close for each
    for record in closes:
        assert record.type == "timestamp_jump" and record.severity == "warning"
        assert record.start_s == pytest.approx(at_s, abs=0.2)
        assert record.end_s == pytest.approx(at_s + 10.0, abs=0.2)
        assert record.metrics["jump_s"] == pytest.approx(10.0, abs=0.2)


def test_reconnect_made_by_the_session_is_not_a_jump() -> None:
    from worker.detectors.base import PacketInfo, StreamContext
    from worker.detectors.timestamp_jump import TimestampJumpDetector

    ctx = StreamContext()
    detector = TimestampJumpDetector(ctx=ctx)
    for n in range(50):
        assert (
            detector.feed_packet(
                PacketInfo(t=n * 0.04, kind="video", size=100, key=n % 25 == 0, corrupt=False)
            )
            == []
        )
    ctx.connection += 1  # the session reopened the source after a 10 s outage
    assert detector.feed_packet(PacketInfo(t=12.0, kind="video", size=100, key=True, corrupt=False)) == []
