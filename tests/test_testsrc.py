"""Tests of the test-signal generator: decode what it wrote and compare with the truth."""

from __future__ import annotations

import hashlib
import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from avmon.testsrc import DefectSpec, GroundTruth, first_index, generate, parse_script, truth_path
from tests.testsrc_decode import FPS, SR, Decoded, H, W, dbfs, decode

SCRIPT = (
    "black@1+1, freeze@3+1.5, silence@1.5+1, clipping@3.5+0.5, "
    "loudness@4.5+1:gain_db=-20, loudness@6+0.8:gain_db=12"
)


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


def test_generate_rejects_unknown_container_and_late_defects(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.ts or \.mp4"):
        generate(tmp_path / "x.mkv", duration_s=1)
    with pytest.raises(ValueError, match="after the media"):
        generate(tmp_path / "x.ts", duration_s=1, defects=[DefectSpec("black", 0.5, 1)])


def test_realtime_writes_a_file_at_the_media_pace(tmp_path: Path) -> None:
    started = time.perf_counter()
    generate(tmp_path / "r.ts", duration_s=2, width=64, height=48, realtime=True, speed=4)
    assert time.perf_counter() - started >= 0.45
