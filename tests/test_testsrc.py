"""Tests of the test-signal generator: decode what it wrote and compare with the truth."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from avmon.testsrc import (
    DEFECT_TYPES,
    DefectSpec,
    GroundTruth,
    add_arguments,
    first_index,
    generate,
    parse_script,
    run,
    truth_path,
)

W, H, FPS, SR = 320, 180, 25, 48000
SCRIPT = (
    "black@1+1, freeze@3+1.5, silence@1.5+1, clipping@3.5+0.5, "
    "loudness@4.5+1:gain_db=-20, loudness@6+0.8:gain_db=12"
)


@dataclass
class Decoded:
    truth: GroundTruth
    times: list[float]  # media seconds of each decoded picture (container time - origin)
    luma: list[npt.NDArray[np.uint8]]  # Y planes, limited range codes as coded
    keyframes: list[bool]
    audio: npt.NDArray[np.float32]  # (channels, samples), sample 0 at media time audio_t0
    audio_t0: float
    video_first: float  # container seconds of the first decoded picture / audio frame
    audio_first: float

    def audio_between(self, a: float, b: float) -> npt.NDArray[np.float32]:
        return self.audio[:, round((a - self.audio_t0) * SR) : round((b - self.audio_t0) * SR)]


def y_plane(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The coded Y plane (no range conversion), copied out of the decoder's padded buffer."""
    plane = frame.planes[0]
    buf = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return buf[:, : plane.width].copy()


def seconds(frame: av.VideoFrame | av.AudioFrame) -> float:
    assert frame.time is not None
    return frame.time


def decode(path: Path) -> Decoded:
    truth = GroundTruth.load(path)
    with av.open(str(path)) as c:
        frames = [(seconds(f), y_plane(f), f.key_frame) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        blocks = [(seconds(f), f.to_ndarray()) for f in c.decode(audio=0)]
    return Decoded(
        truth=truth,
        times=[t - truth.origin_s for t, _, _ in frames],
        luma=[y for _, y, _ in frames],
        keyframes=[bool(k) for _, _, k in frames],
        audio=np.concatenate([b for _, b in blocks], axis=1),
        audio_t0=blocks[0][0] - truth.origin_s,
        video_first=frames[0][0],
        audio_first=blocks[0][0],
    )


def dbfs(x: npt.NDArray[np.float32]) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Decoded:
    path = tmp_path_factory.mktemp("clip") / "clip.ts"
    generate(path, duration_s=7, defects=parse_script(SCRIPT), seed=3, width=W, height=H, fps=FPS)
    return decode(path)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Decoded:
    """The same content without defects, as the reference for level changes."""
    path = tmp_path_factory.mktemp("clean") / "clean.ts"
    generate(path, duration_s=7, seed=3, width=W, height=H, fps=FPS)
    return decode(path)


def test_streams_are_h264_and_aac_with_requested_format(tmp_path: Path) -> None:
    path = tmp_path / "fmt.mp4"
    generate(path, duration_s=2, width=160, height=96, fps=30, sample_rate=44100, channels=1)
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.width, v.height, v.average_rate) == ("h264", 160, 96, Fraction(30))
        assert (a.codec_context.name, a.sample_rate, a.channels) == ("aac", 44100, 1)
        frames = list(c.decode(v))
    assert len(frames) == 60
    assert frames[0].color_range == 1  # limited ("MPEG") range is signalled: black is Y=16


def test_truth_json_matches_script(clip: Decoded) -> None:
    assert [(d["type"], d["start_s"], d["end_s"], d["params"]) for d in clip.truth.defects] == [
        ("black", 1.0, 2.0, {}),
        ("silence", 1.5, 2.5, {}),
        ("freeze", 3.0, 4.5, {}),
        ("clipping", 3.5, 4.0, {"gain_db": 26.0}),
        ("loudness", 4.5, 5.5, {"gain_db": -20.0}),
        ("loudness", 6.0, 6.8, {"gain_db": 12.0}),
    ]
    assert (clip.truth.width, clip.truth.height, clip.truth.fps, clip.truth.seed) == (W, H, FPS, 3)


def test_truth_round_trips_through_json_file(clip: Decoded) -> None:
    text = truth_path(clip.truth.source).read_text()
    assert GroundTruth.from_json(text) == clip.truth
    assert json.loads(clip.truth.to_json()) == json.loads(text)


def test_black_segment_is_at_limited_range_black_level(clip: Decoded) -> None:
    for t, y in zip(clip.times, clip.luma, strict=True):
        if 1.0 <= t < 2.0:
            assert abs(float(y.mean()) - 16) < 0.5 and int(y.max()) <= 20, t
        else:
            assert y.mean() > 60, t


def test_black_boundaries_are_frame_exact(clip: Decoded) -> None:
    black = [t for t, y in zip(clip.times, clip.luma, strict=True) if y.mean() < 20]
    assert black[0] == pytest.approx(1.0, abs=1e-6)
    assert black[-1] == pytest.approx(2.0 - 1 / FPS, abs=1e-6)
    assert len(black) == FPS


def test_freeze_holds_one_picture_and_motion_resumes(clip: Decoded) -> None:
    diffs = [
        (t, key, float(np.abs(y.astype(np.int16) - p).mean()))
        for t, key, y, p in zip(
            clip.times[1:], clip.keyframes[1:], clip.luma[1:], clip.luma[:-1], strict=True
        )
    ]
    # A keyframe re-encodes the held picture (by design): it differs a little from the P-frames.
    frozen = [d for t, key, d in diffs if 3.0 < t < 4.5 and not key]
    moving = [d for t, _, d in diffs if t < 1.0 or 2.0 < t <= 3.0 or t >= 4.5]
    assert len(frozen) == first_index(4.5, FPS) - first_index(3.0, FPS) - 2
    assert max(frozen) < 1.0 and float(np.mean(frozen)) < 0.3
    assert min(moving) > 1.2


def test_freeze_shows_the_start_picture_and_resumes_on_schedule(clip: Decoded, clean: Decoded) -> None:
    def mad(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
        return float(np.abs(a.astype(np.int16) - b).mean())

    def nearest_clean(picture: npt.NDArray[np.uint8]) -> int:
        return min(range(start - 5, resume + 5), key=lambda i: mad(picture, clean.luma[i]))

    # Matching against the undisturbed encode of the same seed (encoding noise aside).
    start, resume = first_index(3.0, FPS), first_index(4.5, FPS)
    assert nearest_clean(clip.luma[resume - 1]) == start  # still the picture of 3.0 s
    assert nearest_clean(clip.luma[resume + 1]) == resume + 1  # where the scene is by then


def test_silence_boundaries_are_sharp_to_5_ms(clip: Decoded) -> None:
    # Sample-exact in the source; the AAC transform spreads each edge by a few ms only.
    assert dbfs(clip.audio_between(1.490, 1.495)) > -35
    assert dbfs(clip.audio_between(1.505, 1.510)) < -70
    assert dbfs(clip.audio_between(2.490, 2.495)) < -70
    assert dbfs(clip.audio_between(2.505, 2.510)) > -35


def test_silence_is_below_minus_70_dbfs(clip: Decoded) -> None:
    # 30 ms margin: the AAC transform smears a boundary over about one 21 ms frame.
    assert dbfs(clip.audio_between(1.53, 2.47)) < -70


def test_normal_audio_is_between_minus_30_and_minus_12_dbfs(clip: Decoded) -> None:
    for a in (0.1, 0.6, 1.0, 2.6, 5.6):
        assert -30 < dbfs(clip.audio_between(a, a + 0.4)) < -12, a


def test_normal_audio_never_drops_below_minus_45_dbfs_over_10_ms(clean: Decoded) -> None:
    x = clean.audio_between(0.05, 6.9)
    blocks = x[:, : x.shape[1] // 480 * 480].reshape(x.shape[0], -1, 480)
    worst = 20 * np.log10(np.sqrt(np.mean(np.square(blocks), axis=(0, 2))).min())
    assert worst > -45


def test_clipping_segment_clips_at_full_scale(clip: Decoded) -> None:
    inside = np.abs(clip.audio_between(3.53, 3.97))
    assert inside.max() > 0.98 and np.mean(inside > 0.9) > 0.2
    assert np.abs(clip.audio_between(2.6, 3.45)).max() < 0.8


def test_loudness_cut_lowers_level_by_gain(clip: Decoded, clean: Decoded) -> None:
    change = dbfs(clip.audio_between(4.53, 5.47)) - dbfs(clean.audio_between(4.53, 5.47))
    assert change == pytest.approx(-20, abs=1)


def test_loudness_boost_is_limited_without_clipping(clip: Decoded, clean: Decoded) -> None:
    change = dbfs(clip.audio_between(6.03, 6.77)) - dbfs(clean.audio_between(6.03, 6.77))
    assert 6 < change <= 12.5
    assert np.abs(clip.audio_between(6.0, 6.8)).max() < 0.98


def test_audio_and_video_start_at_origin_in_mpegts(clip: Decoded) -> None:
    # No 1.4 s mux delay through the library API; the 2-frame B-frame reorder delay remains.
    assert clip.video_first == clip.audio_first == clip.truth.origin_s == pytest.approx(2 / FPS)
    assert clip.times[0] == clip.audio_t0 == 0.0


def test_mp4_origin_is_zero(tmp_path: Path) -> None:
    truth = generate(tmp_path / "o.mp4", duration_s=1, width=64, height=64)
    d = decode(tmp_path / "o.mp4")
    assert truth.origin_s == d.video_first == d.audio_first == 0.0


def test_generated_audio_starts_after_aac_priming(clean: Decoded) -> None:
    start = clean.truth.audio_start_s
    assert start == pytest.approx(1024 / SR)
    assert dbfs(clean.audio_between(0, start)) < -40
    assert dbfs(clean.audio_between(start, start + 0.02)) > -35


def test_same_seed_gives_same_truth_and_pictures(tmp_path: Path) -> None:
    def make(name: str, seed: int) -> tuple[dict[str, object], list[str]]:
        truth = generate(
            tmp_path / name,
            duration_s=2,
            seed=seed,
            width=96,
            height=64,
            defects=[DefectSpec("freeze", 0.5, 0.5)],
        )
        summary = {k: v for k, v in vars(truth).items() if k != "source"}
        return summary, [hashlib.sha1(y.tobytes()).hexdigest() for y in decode(tmp_path / name).luma]

    first, again, other = make("a.ts", 7), make("b.ts", 7), make("c.ts", 8)
    assert first == again
    assert first[1] != other[1]


def test_scene_cuts_change_the_picture(clean: Decoded) -> None:
    (cut,) = clean.truth.scene_cuts_s
    assert 5 <= cut <= 8
    i = first_index(cut, FPS)
    jump = np.abs(clean.luma[i].astype(np.int16) - clean.luma[i - 1]).mean()
    step = np.abs(clean.luma[i - 1].astype(np.int16) - clean.luma[i - 2]).mean()
    assert jump > 5 * step


def test_parse_script_reads_types_times_and_params() -> None:
    assert parse_script(" black@5+3 ,loudness@30+12:gain_db=-20, silence@0.5+0.25:level_dbfs=-80") == [
        DefectSpec("silence", 0.5, 0.25, {"level_dbfs": -80.0}),
        DefectSpec("black", 5.0, 3.0),
        DefectSpec("loudness", 30.0, 12.0, {"gain_db": -20.0}),
    ]
    assert parse_script("") == []


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("blur@1+2", "unknown type"),
        ("black@-1+2", "start must be >= 0"),
        ("black@1+-2", "duration must be > 0"),
        ("black@1+0", "duration must be > 0"),
        ("black@1+3, black@2+1", "overlap"),
        ("silence@1+1, silence@2+1", "overlap or touch"),
        ("black1+2", "expected TYPE@START"),
        ("black@x+2", "not a number"),
        ("loudness@1+2", "loudness needs gain_db"),
        ("black@1+2:gain_db=3", "unknown parameter"),
        ("clipping@1+2:gain_db", "not key=value"),
        ("black@1+2,", "bad defect"),
    ],
)
def test_parse_script_rejects_bad_input(script: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_script(script)


def test_generate_rejects_unknown_container_and_late_defects(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.ts or \.mp4"):
        generate(tmp_path / "x.mkv", duration_s=1)
    with pytest.raises(ValueError, match="after the media"):
        generate(tmp_path / "x.ts", duration_s=1, defects=[DefectSpec("black", 0.5, 1)])


def test_first_index_is_exact_on_decimal_times() -> None:
    assert [first_index(t, 25) for t in (0.0, 0.04, 0.05, 0.12, 5.0)] == [0, 1, 2, 3, 125]
    assert first_index(0.3, 48000) == 14400


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_writes_media_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.ts"
    args = cli_args(str(out), "--duration", "1", "--size", "64x48", "--defects", "black@0.2+0.2")
    assert run(args) == 0
    assert GroundTruth.load(out).defects[0]["type"] == "black"
    assert capsys.readouterr().out.count("\n") == 1


def test_cli_help_documents_the_defect_script() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "TYPE@START+DURATION" in text and "loudness@30+12:gain_db=-20" in text


def test_cli_reports_bad_script_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(cli_args(str(tmp_path / "bad.ts"), "--defects", "blur@1+1")) == 2
    assert "unknown type" in capsys.readouterr().err
    assert not (tmp_path / "bad.ts").exists()


# ------------------------------------------------------------------ sync marks and A/V sync

SYNC_SCRIPT = "av_offset@2+2:offset_ms=120, av_drift@4.5+2:ms_per_s=20"


def beep_onsets(d: Decoded, near: list[float], rate: int = SR) -> list[float]:
    """Media time of each 1 kHz beep's onset (where its envelope reaches half amplitude), searched
    within ±0.45 s of each time in ``near``: the 1 kHz envelope (10 ms boxcar of the demodulated
    signal) crosses half its plateau half a boxcar later; interpolated between samples."""
    mono = d.audio.mean(axis=0).astype(np.float64)
    n = np.arange(len(mono))
    width = rate // 100
    env = 2 * np.abs(np.convolve(mono * np.exp(-2j * np.pi * 1000 * n / rate), np.ones(width) / width))
    out = []
    for t in near:
        lo = round((t - 0.45 - d.audio_t0) * rate)
        seg = env[lo : lo + round(0.9 * rate)]
        half = np.median(seg[seg > 0.6 * seg.max()]) / 2
        k = int(np.argmax(seg > half))
        crossing = lo + k - 1 + (half - seg[k - 1]) / (seg[k] - seg[k - 1])
        out.append(d.audio_t0 + (crossing - (width - 1) / 2) / rate)
    return out


@pytest.fixture(scope="module")
def sync_clip(tmp_path_factory: pytest.TempPathFactory) -> Decoded:
    path = tmp_path_factory.mktemp("sync") / "sync.ts"
    generate(
        path, duration_s=7, defects=parse_script(SYNC_SCRIPT), seed=5, width=W, height=H, sync_marks=True
    )
    return decode(path)


def offsets_ms(d: Decoded) -> dict[float, float]:
    marks = d.truth.sync_marks_s
    return {m: (on - m) * 1000 for m, on in zip(marks, beep_onsets(d, marks), strict=True)}


def test_sync_marks_are_at_k_plus_half_a_second_rounded_up_to_a_frame(sync_clip: Decoded) -> None:
    assert sync_clip.truth.sync_marks_s == [0.52, 1.52, 2.52, 3.52, 4.52, 5.52, 6.52]


def test_sync_flash_is_one_white_frame_at_each_mark(sync_clip: Decoded) -> None:
    flashes = [round(t, 6) for t, y in zip(sync_clip.times, sync_clip.luma, strict=True) if y.mean() > 200]
    assert flashes == sync_clip.truth.sync_marks_s
    assert all(int(y.min()) >= 230 for y in sync_clip.luma if y.mean() > 200)  # the whole frame


def test_sync_beep_starts_with_its_flash_to_1_ms(sync_clip: Decoded) -> None:
    outside = {m: off for m, off in offsets_ms(sync_clip).items() if m < 2 or 4 <= m < 4.5 or m >= 6.5}
    assert sorted(outside) == [0.52, 1.52, 6.52]
    assert all(abs(off) <= 1.0 for off in outside.values()), outside


def test_av_offset_delays_the_beeps_by_offset_ms(sync_clip: Decoded) -> None:
    inside = {m: off for m, off in offsets_ms(sync_clip).items() if 2 <= m < 4}
    assert sorted(inside) == [2.52, 3.52]
    assert all(abs(off - 120) <= 1.0 for off in inside.values()), inside


def test_av_drift_offset_grows_by_ms_per_s(sync_clip: Decoded) -> None:
    marks = [4.52, 5.52]
    for m, onset in zip(marks, beep_onsets(sync_clip, marks), strict=True):
        # The offset at the beep's own (output) time is ms_per_s * (time - start).
        assert (onset - m) * 1000 == pytest.approx(20 * (onset - 4.5), abs=1.0)
    assert offsets_ms(sync_clip)[5.52] > 20


def test_sync_truth_reports_av_sync_with_offsets(sync_clip: Decoded) -> None:
    assert sync_clip.truth.defects == [
        {
            "type": "av_sync",
            "start_s": 2.0,
            "end_s": 4.0,
            "params": {"offset_ms": 120.0, "injected": "av_offset"},
        },
        {
            "type": "av_sync",
            "start_s": 4.5,
            "end_s": 6.5,
            "params": {
                "ms_per_s": 20.0,
                "injected": "av_drift",
                "start_offset_ms": 0.0,
                "end_offset_ms": 40.0,
            },
        },
    ]


def test_sync_marks_peak_far_below_full_scale_and_pictures_stay_mid_grey(sync_clip: Decoded) -> None:
    assert float(np.abs(sync_clip.audio).max()) < 0.6
    others = [float(y.mean()) for y in sync_clip.luma if y.mean() <= 200]
    assert len(others) == len(sync_clip.luma) - 7 and min(others) > 40 and max(others) < 190


def test_sync_marks_trip_no_black_freeze_silence_or_clipping_detector(tmp_path: Path) -> None:
    from worker.session import SessionConfig, StreamSession

    path = tmp_path / "marks.ts"
    generate(path, duration_s=6, seed=6, width=W, height=H, sync_marks=True)
    found: list[object] = []
    config = SessionConfig(
        url=path.resolve().as_uri(),
        reconnect=False,
        detectors=frozenset({"black", "freeze", "silence", "clipping"}),
    )
    StreamSession("marks", config, lambda d, _: found.append(d)).run()
    assert found == []


def test_marks_hidden_by_black_or_silence_are_left_out_of_the_truth(tmp_path: Path) -> None:
    truth = generate(
        tmp_path / "h.ts",
        duration_s=4,
        width=64,
        height=48,
        sync_marks=True,
        defects=parse_script("black@1+0.6, silence@2.4+0.3"),
    )
    assert truth.sync_marks_s == [0.52, 3.52]


def test_av_sync_defects_need_sync_marks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need sync marks"):
        generate(tmp_path / "x.ts", duration_s=2, defects=parse_script("av_offset@0.5+1:offset_ms=40"))


# ------------------------------------------------------------------ transport defects


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


def test_realtime_writes_a_file_at_the_media_pace(tmp_path: Path) -> None:
    started = time.perf_counter()
    generate(tmp_path / "r.ts", duration_s=2, width=64, height=48, realtime=True, speed=4)
    assert time.perf_counter() - started >= 0.45


def test_parse_script_reads_the_new_types() -> None:
    assert parse_script(
        "timestamp_jump@5, av_offset@1+2:offset_ms=-40, corrupt@8+1:rate=1, signal_loss@9+1"
    ) == [
        DefectSpec("av_offset", 1.0, 2.0, {"offset_ms": -40.0}),
        DefectSpec("timestamp_jump", 5.0, 0.0, {"jump_s": 10.0}),
        DefectSpec("corrupt", 8.0, 1.0, {"rate": 1.0}),
        DefectSpec("signal_loss", 9.0, 1.0, {}),
    ]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("av_offset@1+2", "needs offset_ms"),
        ("av_offset@1+2:offset_ms=1500", "within ±1000"),
        ("av_drift@1+20:ms_per_s=100", "at most ±1000 ms"),
        ("av_offset@1+2:offset_ms=50, av_drift@3+1:ms_per_s=5", "overlap or touch"),
        ("corrupt@1+2, drop@2+2", "overlap or touch"),
        ("corrupt@1+2:rate=1.5", "rate must be in"),
        ("timestamp_jump@2+1", "duration must be 0"),
        ("timestamp_jump@0", "start > 0"),
        ("timestamp_jump@2:jump_s=-5", r"jump_s must be in \(0, 3600\]"),
        ("timestamp_jump@2, black@1+3", "falls inside"),
        ("signal_loss@1+2, black@2+2", "nothing is sent then"),
        ("black@5", "expected TYPE@START"),
    ],
)
def test_parse_script_rejects_bad_new_defects(script: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_script(script)


def test_cli_help_documents_every_defect_type_and_parameter() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = parser.format_help()
    for name in [*DEFECT_TYPES, "level_dbfs", "gain_db", "offset_ms", "ms_per_s", "rate", "jump_s"]:
        assert name in text, name
    for option in ("--udp", "--hls", "--rtmp", "--sync-marks", "--realtime", "--speed", "--truth"):
        assert option in text, option


def test_cli_needs_exactly_one_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_args("x.ts", "--udp", "127.0.0.1:5000")
    with pytest.raises(SystemExit):
        cli_args()
    assert cli_args("--udp", "127.0.0.1:5000").udp == ("127.0.0.1", 5000)
    assert cli_args("--hls", "8081").hls == ("127.0.0.1", 8081)
    assert "not allowed with" in capsys.readouterr().err


def test_cli_writes_sync_marks_and_realtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.mp4"
    args = cli_args(
        str(out),
        "--duration",
        "1.2",
        "--size",
        "64x48",
        "--sync-marks",
        "--realtime",
        "--speed",
        "8",
        "--defects",
        "av_offset@0.2+0.8:offset_ms=30",
    )
    assert run(args) == 0
    assert GroundTruth.load(out).sync_marks_s == [0.52]
    assert "1 defect(s)" in capsys.readouterr().out
