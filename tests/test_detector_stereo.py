"""The stereo checks: phase inversion (the mono downmix cancels) and stereo collapsed (dual mono)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.media import decode, stereo_aac
from worker.detectors.base import AudioBlock, Finding, Severity
from worker.detectors.stereo import (
    PhaseInversionDetector,
    StereoCollapsedDetector,
    StereoOptions,
    correlation,
    pair_sums,
    side_mid_db,
)

RATE = 48_000
BLOCK = 19_200  # the session's 400 ms blocks
Signal = npt.NDArray[np.float32]


def programme(seconds: float, seed: int = 0) -> Signal:
    """Stereo with a strong shared centre (dialogue-like band noise) and independent sides
    (ambience): correlation about 0.93, side 14 dB under mid."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    centre = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
    sides = rng.standard_normal((2, n)) * 0.1
    return (0.1 * (centre + sides)).astype(np.float32)


def run(
    detector: PhaseInversionDetector | StereoCollapsedDetector, x: Signal, names: tuple[str, ...] = ()
) -> list[Finding]:
    findings: list[Finding] = []
    for i in range(0, x.shape[1], BLOCK):
        findings += detector.feed_audio(
            AudioBlock(t=i / RATE, samples=x[:, i : i + BLOCK], rate=RATE, channels=names)
        )
    return findings + detector.flush(x.shape[1] / RATE)


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


def test_pair_measures_of_known_signals() -> None:
    tone = np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE).astype(np.float32)
    same, inverted = pair_sums(tone, tone, RATE)[:, 0], pair_sums(tone, -tone, RATE)[:, 0]
    assert correlation(*same) == pytest.approx(1.0)
    assert correlation(*inverted) == pytest.approx(-1.0)
    assert side_mid_db(*same) == -150.0
    half = pair_sums(tone, 0.5 * tone, RATE)[:, 0]  # side 0.5, mid 1.5: -9.5 dB
    assert side_mid_db(*half) == pytest.approx(20 * np.log10(0.5 / 1.5), abs=1e-6)


def test_inverted_right_channel_is_a_critical_phase_inversion() -> None:
    x = programme(20.0)
    a, b = 5 * RATE, 15 * RATE
    x[1, a:b] = -x[1, a:b]
    [finding] = closed(run(PhaseInversionDetector(), x))
    assert (finding.start_s, finding.end_s) == pytest.approx((5.0, 15.0), abs=0.2)
    assert finding.severity is Severity.CRITICAL
    assert finding.metrics["correlation"] < -0.9
    assert finding.channels == ("FL", "FR")


def test_ordinary_stereo_is_neither_inverted_nor_collapsed() -> None:
    x = programme(20.0)
    assert run(PhaseInversionDetector(), x) == []
    assert run(StereoCollapsedDetector(), x) == []


def test_unrelated_channels_are_not_phase_inverted() -> None:
    x = (0.1 * np.random.default_rng(1).standard_normal((2, 10 * RATE))).astype(np.float32)
    assert run(PhaseInversionDetector(), x) == []


def test_dual_mono_is_stereo_collapsed_after_collapsed_d() -> None:
    x = programme(40.0)
    a, b = 5 * RATE, 30 * RATE
    x[1, a:b] = x[0, a:b]
    [finding] = closed(run(StereoCollapsedDetector(), x))
    assert (finding.start_s, finding.end_s) == pytest.approx((5.0, 30.0), abs=0.2)
    assert finding.severity is Severity.WARNING
    assert finding.metrics["side_mid_db"] == -150.0
    assert run(PhaseInversionDetector(), x) == []


def test_dual_mono_shorter_than_collapsed_d_is_not_reported() -> None:
    x = programme(20.0)
    x[1, 5 * RATE : 13 * RATE] = x[0, 5 * RATE : 13 * RATE]
    assert run(StereoCollapsedDetector(), x) == []


def test_a_silent_channel_is_left_to_the_silence_detector() -> None:
    x = programme(20.0)
    x[1] = 0.0
    assert run(PhaseInversionDetector(), x) == []
    assert run(StereoCollapsedDetector(), x) == []


def test_the_front_pair_of_5_1_is_found_by_its_names() -> None:
    front = programme(12.0)
    x = np.zeros((6, front.shape[1]), np.float32)
    x[4], x[5] = front[0], -front[1]  # SL/SR inverted: not the front pair
    x[0], x[1] = front[0], -front[1]  # FL/FR inverted
    x[2] = front[0] + front[1]
    [finding] = closed(run(PhaseInversionDetector(), x, ("FL", "FR", "FC", "LFE", "SL", "SR")))
    assert finding.channels == ("FL", "FR")


def test_mono_is_not_judged() -> None:
    assert run(StereoCollapsedDetector(), programme(20.0)[:1]) == []


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_correlation"):
        StereoOptions(max_correlation=0.5)


def test_ffmpeg_encoded_aac_with_the_right_channel_inverted_is_found(tmp_path: Path) -> None:
    inverted, clean = tmp_path / "inverted.m4a", tmp_path / "clean.m4a"
    stereo_aac(inverted, 8.0, pan="stereo|c0=c0|c1=-1*c1")
    stereo_aac(clean, 8.0)
    [finding] = closed(decode(inverted, PhaseInversionDetector()))
    assert finding.start_s == pytest.approx(0.0, abs=0.25)
    assert decode(clean, PhaseInversionDetector(), StereoCollapsedDetector()) == []


def test_ffmpeg_encoded_stereo_that_collapses_to_dual_mono_is_reported(tmp_path: Path) -> None:
    clip = tmp_path / "collapses.m4a"
    stereo_aac(clip, 18.0, collapse_at_s=4.0)
    [finding] = closed(decode(clip, StereoCollapsedDetector()))
    assert finding.start_s == pytest.approx(4.0, abs=0.5)
    assert finding.metrics["side_mid_db"] < -40.0


def test_ffmpeg_encoded_dual_mono_from_the_start_is_a_mono_programme_not_a_collapse(tmp_path: Path) -> None:
    clip = tmp_path / "dual_mono.m4a"
    stereo_aac(clip, 14.0, pan="stereo|c0=c0|c1=c0")
    assert decode(clip, StereoCollapsedDetector()) == []
