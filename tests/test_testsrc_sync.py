"""Tests of the sync marks (a flash and a beep once a second) and the A/V sync defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avmon.testsrc import generate, parse_script
from tests.testsrc_decode import SR, Decoded, H, W, decode

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
