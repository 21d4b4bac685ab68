"""Tests of the transport defects: corrupt, drop, timestamp jumps and signal loss."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import pytest

from avmon.testsrc import GroundTruth, generate, parse_script
from tests.testsrc_decode import FPS, H, W, decode, seconds


def decode_flags(path: Path) -> tuple[GroundTruth, list[float], list[float], list[float]]:
    """Media times of corrupt packets, of corrupt (concealed) pictures, and of every picture,
    decoded with threads as the worker does (FFmpeg flags concealment only then)."""
    truth = GroundTruth.load(path)
    packets, corrupt, pictures = [], [], []
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        video.thread_type = "AUTO"
        video.codec_context.thread_count = 2
        for packet in c.demux(video):
            if packet.is_corrupt and packet.pts is not None and packet.time_base is not None:
                packets.append(float(packet.pts * packet.time_base) - truth.origin_s)
            for frame in packet.decode():
                pictures.append(seconds(frame) - truth.origin_s)
                if frame.is_corrupt:
                    corrupt.append(pictures[-1])
    return truth, packets, corrupt, pictures


def test_corrupt_damages_pictures_in_the_span_only(tmp_path: Path) -> None:
    generate(tmp_path / "c.ts", duration_s=4, seed=1, width=W, height=H, defects=parse_script("corrupt@1+1"))
    _, packets, corrupt, pictures = decode_flags(tmp_path / "c.ts")
    assert len(pictures) == 100 and packets == []
    assert len(corrupt) >= 4 and all(1.0 <= t < 2.0 for t in corrupt), corrupt


def test_corrupt_damages_every_frame_at_rate_1_including_keyframes(tmp_path: Path) -> None:
    generate(
        tmp_path / "c.mp4",
        duration_s=3,
        seed=1,
        width=W,
        height=H,
        gop_s=1,
        defects=parse_script("corrupt@0.96+0.12:rate=1"),
    )
    _, _, corrupt, _ = decode_flags(tmp_path / "c.mp4")
    assert [round(t, 2) for t in corrupt] == [0.96, 1.0, 1.04]  # 1.0 is a keyframe


def test_drop_in_mpegts_makes_the_demuxer_flag_packets_in_the_span(tmp_path: Path) -> None:
    generate(tmp_path / "d.ts", duration_s=4, seed=1, width=W, height=H, defects=parse_script("drop@1+1"))
    _, packets, corrupt, pictures = decode_flags(tmp_path / "d.ts")
    assert len(pictures) == 100  # PES headers survive: every picture is still there
    assert len(packets) >= 3 and all(1.0 <= t < 2.0 for t in packets), packets
    assert corrupt and all(1.0 <= t < 2.0 for t in corrupt)


def test_drop_in_mp4_removes_video_frames_in_the_span(tmp_path: Path) -> None:
    generate(
        tmp_path / "d.mp4", duration_s=3, seed=1, width=W, height=H, defects=parse_script("drop@1+1:rate=1")
    )
    _, _, _, pictures = decode_flags(tmp_path / "d.mp4")
    assert [round(t, 2) for t in pictures] == [round(i / FPS, 2) for i in range(75) if not 25 <= i < 50]


def test_timestamp_jump_moves_every_later_timestamp_by_jump_s(tmp_path: Path) -> None:
    path = tmp_path / "j.ts"
    generate(
        path, duration_s=4, seed=1, width=W, height=H, defects=parse_script("timestamp_jump@2:jump_s=10")
    )
    d = decode(path)
    gaps = [(round(a, 2), round(b - a, 2)) for a, b in itertools.pairwise(d.times) if b - a > 0.05]
    assert gaps == [(1.96, 10.04)]
    with av.open(str(path)) as c:
        audio = [float(p.pts * p.time_base) - d.truth.origin_s for p in c.demux(audio=0) if p.pts is not None]
    jumps = [(a, b) for a, b in itertools.pairwise(audio) if b - a > 0.05]
    assert len(jumps) == 1 and jumps[0][0] < 2.0 <= jumps[0][1] - 10 < 2.03


def test_truth_after_a_jump_is_on_the_jumped_timeline(tmp_path: Path) -> None:
    path = tmp_path / "jb.ts"
    truth = generate(
        path,
        duration_s=4,
        seed=1,
        width=W,
        height=H,
        defects=parse_script("timestamp_jump@1:jump_s=5, black@2+1"),
    )
    assert [(x["type"], x["start_s"], x["end_s"], x["params"]) for x in truth.defects] == [
        ("timestamp_jump", 1.0, 1.0, {"jump_s": 5.0}),
        ("black", 7.0, 8.0, {}),
    ]
    d = decode(path)
    black = [t for t, y in zip(d.times, d.luma, strict=True) if y.mean() < 20]
    assert black[0] == pytest.approx(7.0) and black[-1] == pytest.approx(8.0 - 1 / FPS)


def test_transport_truth_names_what_a_monitor_reports(tmp_path: Path) -> None:
    truth = generate(
        tmp_path / "t.ts",
        duration_s=6,
        width=64,
        height=48,
        gop_s=2,
        defects=parse_script("corrupt@1+0.5, drop@3.2+1:rate=0.2"),
    )
    assert truth.defects == [
        {
            "type": "decode_error",
            "start_s": 1.0,
            "end_s": 1.5,
            "params": {
                "rate": 0.3,
                "injected": "corrupt",
                "expect": ["decode_error", "blockiness"],
                "recovers_by_s": 2.0,
            },
        },
        {
            "type": "decode_error",
            "start_s": 3.2,
            "end_s": 4.2,
            "params": {
                "rate": 0.2,
                "injected": "drop",
                "expect": ["decode_error", "blockiness"],
                "recovers_by_s": 6.0,
            },
        },
    ]


def test_signal_loss_is_refused_for_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="signal_loss needs a live output"):
        generate(tmp_path / "s.ts", duration_s=2, defects=parse_script("signal_loss@0.5+1"))
    assert not (tmp_path / "s.ts").exists()


def test_same_seed_gives_the_same_bytes_with_transport_defects(tmp_path: Path) -> None:
    script = parse_script("corrupt@0.5+0.5, drop@1.2+0.5, timestamp_jump@1.8")
    for name in ("a.ts", "b.ts"):
        generate(
            tmp_path / name, duration_s=2.4, seed=9, width=96, height=64, sync_marks=True, defects=script
        )
    assert (tmp_path / "a.ts").read_bytes() == (tmp_path / "b.ts").read_bytes()
