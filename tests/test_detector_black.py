"""The black detector on synthetic pictures with known answers (blackdetect semantics)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pytest

from worker.detectors.base import Finding, Severity, VideoFrame
from worker.detectors.black import (
    BlackDetector,
    BlackOptions,
    black_luma_threshold,
    black_pixel_fraction,
)

FPS = 25.0
H, W = 72, 128

Luma = npt.NDArray[np.uint8]


def picture(code: int) -> Luma:
    return np.full((H, W), code, np.uint8)


def programme() -> Luma:
    """A mid-grey picture with texture: nowhere near black."""
    rng = np.random.default_rng(7)
    return rng.integers(60, 200, (H, W), dtype=np.uint8)


def run(
    pictures: Iterable[Luma],
    options: BlackOptions | None = None,
    full_range: bool = False,
    t_end: float | None = None,
) -> list[Finding]:
    detector = BlackDetector(options)
    findings: list[Finding] = []
    t = 0.0
    for i, luma in enumerate(pictures):
        t = i / FPS
        findings += detector.feed_video(VideoFrame(t=t, luma=luma, full_range=full_range))
    findings += detector.flush(t + 1 / FPS if t_end is None else t_end)
    return findings


def sequence(*parts: tuple[Luma, float]) -> list[Luma]:
    """Pictures for consecutive (picture, seconds) parts at 25 fps."""
    return [luma for luma, seconds in parts for _ in range(round(seconds * FPS))]


def span(finding: Finding) -> tuple[float, float]:
    """(start_s, end_s) of a closed finding."""
    assert finding.end_s is not None
    return (finding.start_s, finding.end_s)


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


def test_threshold_matches_blackdetect_pixel_black_th_i() -> None:
    assert black_luma_threshold(0.10, full_range=False) == 37  # 16 + 0.1 * 219 = 37.9
    assert black_luma_threshold(0.10, full_range=True) == 25  # 0.1 * 255 = 25.5
    assert black_luma_threshold(0.0, full_range=False) == 16


def test_black_pixel_fraction_counts_codes_at_or_below_threshold() -> None:
    luma = np.array([[36, 37, 38, 255]], np.uint8)
    assert black_pixel_fraction(luma, 37) == pytest.approx(0.5)


def test_black_on_limited_range_picture_at_code_16() -> None:
    findings = run(sequence((programme(), 1.0), (picture(16), 3.0), (programme(), 1.0)))
    [black] = closed(findings)
    assert black.type == "black"
    assert black.severity is Severity.CRITICAL
    assert black.metrics["black_ratio"] == pytest.approx(1.0)
    assert black.metrics["mean_luma"] == pytest.approx(16.0)


def test_boundaries_are_first_black_and_first_non_black_picture() -> None:
    findings = run(sequence((programme(), 1.0), (picture(16), 3.0), (programme(), 1.0)))
    [black] = closed(findings)
    assert black.start_s == pytest.approx(1.0)
    assert black.end_s == pytest.approx(4.0)
    assert black.metrics["duration_s"] == pytest.approx(3.0)


def test_limited_range_grey_30_is_black_but_not_in_full_range() -> None:
    # Code 30 is below limited-range threshold 37 but above full-range threshold 25.
    pictures = sequence((programme(), 0.5), (picture(30), 3.0), (programme(), 0.5))
    assert closed(run(pictures, full_range=False))
    assert not run(pictures, full_range=True)


def test_full_range_black_at_code_0() -> None:
    findings = run(sequence((picture(0), 3.0), (programme(), 0.5)), full_range=True)
    [black] = closed(findings)
    assert span(black) == pytest.approx((0.0, 3.0))


def test_fade_shorter_than_min_duration_is_not_black() -> None:
    # A programme transition: fade down, 1.5 s of black, fade up.
    fade = [picture(code) for code in range(200, 16, -20)]
    pictures = fade + sequence((picture(16), 1.5)) + fade[::-1] + sequence((programme(), 1.0))
    assert run(pictures) == []


def test_open_finding_is_emitted_once_black_lasts_min_duration() -> None:
    detector = BlackDetector()
    opened_at = None
    for i in range(5 * int(FPS)):
        t = i / FPS
        luma = picture(16) if t >= 1.0 else programme()
        for finding in detector.feed_video(VideoFrame(t=t, luma=luma)):
            assert finding.end_s is None
            assert finding.start_s == pytest.approx(1.0)
            opened_at = t
    assert opened_at == pytest.approx(3.0)  # live: reported as soon as it lasts d, not at its end


def test_open_and_close_share_start_and_key() -> None:
    opened, closing = run(sequence((programme(), 0.2), (picture(16), 2.5), (programme(), 0.2)))
    assert opened.end_s is None and closing.end_s is not None
    assert (opened.start_s, opened.key) == (closing.start_s, closing.key)


def test_picture_with_small_logo_is_black() -> None:
    luma = picture(16)
    luma[:5, :20] = 235  # a bright logo on 1.1 % of the picture
    findings = run(sequence((luma, 3.0), (programme(), 0.5)))
    [black] = closed(findings)
    assert black.metrics["black_ratio"] == pytest.approx(1 - 100 / (H * W), abs=0.01)


def test_black_at_the_highest_black_code_with_white_speckle_is_black() -> None:
    # The early rejection bounds the share of non-black pixels from the mean: pixels at the
    # threshold itself and 1.6 % of full white is the brightest a black picture can be.
    luma = picture(black_luma_threshold(BlackOptions().pix_th, full_range=False))
    luma[:, ::64] = 255
    [black] = closed(run(sequence((luma, 3.0), (programme(), 0.5))))
    assert span(black) == pytest.approx((0.0, 3.0))


def test_dark_scene_with_lit_detail_above_pic_th_is_not_black() -> None:
    luma = picture(20)
    luma[: H // 10, :] = 80  # 10 % of the picture is visibly lit: a night scene, not black
    assert run(sequence((luma, 5.0))) == []


def test_black_until_the_end_is_closed_by_flush() -> None:
    findings = run(sequence((programme(), 1.0), (picture(16), 4.0)), t_end=5.0)
    opened, closing = findings
    assert opened.end_s is None
    assert span(closing) == pytest.approx((1.0, 5.0))


def test_corrupt_picture_inside_black_does_not_split_it() -> None:
    detector = BlackDetector()
    findings: list[Finding] = []
    for i in range(4 * int(FPS)):
        t = i / FPS
        corrupt = i == 40
        luma = programme() if corrupt else picture(16)
        findings += detector.feed_video(VideoFrame(t=t, luma=luma, corrupt=corrupt))
    findings += detector.flush(4.0)
    [black] = closed(findings)
    assert span(black) == pytest.approx((0.0, 4.0))


def test_custom_min_duration_and_thresholds() -> None:
    options = BlackOptions(d=0.5, pic_th=0.9, pix_th=0.0)
    luma = picture(16)
    luma[: H // 20, :] = 17  # 5 % of pixels just above code 16: black at pic_th 0.9
    findings = run(sequence((programme(), 0.2), (luma, 0.6), (programme(), 0.2)), options)
    [black] = closed(findings)
    assert black.end_s is not None
    assert black.end_s - black.start_s == pytest.approx(0.6)


def test_invalid_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="pic_th"):
        BlackOptions(pic_th=1.5)
