"""The freeze detector: freezedetect's semantics, its traps (keyframe refresh, grain), and one
real H.264 clip encoded and decoded with PyAV."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.media import decode, encode_h264, under_overlay_ts
from worker.detectors.base import Finding, Severity, StreamContext, VideoFrame
from worker.detectors.freeze import PROBE_REST, FreezeDetector, FreezeOptions
from worker.picture_diff import (
    RegionGrid,
    block_means,
    db_to_ratio,
    dc_shifts,
    identical_block_fraction,
    macroblock_sample,
    mafd,
    mafd_bounded,
    ratio_to_db,
)

FPS = 25
GOP = 10  # a keyframe every 10 pictures, as in the spec's test stream
H, W = 96, 160
N_60DB = db_to_ratio(-60.0)

Luma = npt.NDArray[np.uint8]
Picture = Callable[[int], Luma]  # picture number -> luma


def textured(seed: int) -> Luma:
    return np.random.default_rng(seed).integers(30, 220, (H, W), dtype=np.uint8)


BASE = textured(0)


def moving(i: int) -> Luma:
    """Programme content: a different picture every time."""
    return np.roll(BASE, 3 * i + 1, axis=1)


def with_noise(picture: Luma, sigma: float, seed: int) -> Luma:
    noise = np.random.default_rng(seed).normal(0.0, sigma, picture.shape)
    return np.clip(picture + noise, 0, 255).astype(np.uint8)


def run(
    picture: Picture,
    seconds: float,
    options: FreezeOptions | None = None,
    ctx: StreamContext | None = None,
    on_frame: Callable[[float, StreamContext], None] | None = None,
) -> list[Finding]:
    ctx = ctx if ctx is not None else StreamContext()
    detector = FreezeDetector(options, ctx)
    findings: list[Finding] = []
    count = round(seconds * FPS)
    for i in range(count):
        t = i / FPS
        if on_frame is not None:
            on_frame(t, ctx)
        findings += detector.feed_video(VideoFrame(t=t, luma=picture(i), key_frame=i % GOP == 0))
    findings += detector.flush(count / FPS)
    return findings


def span(finding: Finding) -> tuple[float, float]:
    """(start_s, end_s) of a closed finding."""
    assert finding.end_s is not None
    return (finding.start_s, finding.end_s)


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


def hold(first: int, last: int, held: Picture) -> Picture:
    """Moving content, except pictures ``first`` to ``last - 1``, which come from ``held``."""
    return lambda i: held(i) if first <= i < last else moving(i)


def still(_: int) -> Luma:
    return BASE


# -- the measures ---------------------------------------------------------------------------------


def test_mafd_is_normalised_like_freezedetect() -> None:
    brighter = BASE + np.uint8(1)
    assert mafd(BASE, brighter) == pytest.approx(1 / 256)
    assert ratio_to_db(N_60DB) == pytest.approx(-60.0)
    assert pytest.approx(0.256) == N_60DB * 256  # -60 dB: a quarter of a code on average


def test_mafd_bounded_is_exact_below_its_bound() -> None:
    changed = BASE.copy()
    changed[:10] ^= 3  # the top rows only: the middle rows alone prove nothing
    assert mafd_bounded(BASE, changed, 0.5) == pytest.approx(mafd(BASE, changed))


def test_mafd_bounded_stops_above_its_bound_when_the_middle_rows_prove_it() -> None:
    moved = textured(1)
    exact = mafd(BASE, moved)
    bounded = mafd_bounded(BASE, moved, N_60DB)
    assert N_60DB < bounded < exact  # a lower bound, from the middle quarter of the rows


def test_mafd_bounded_stops_above_its_bound_when_the_middle_and_top_rows_prove_it() -> None:
    changed = BASE.copy()
    changed[: 3 * H // 8] ^= 64  # the top 3/8 of the rows: far above the bound by themselves
    changed[5 * H // 8 :] ^= 1  # the bottom ones, a little
    exact = mafd(BASE, changed)
    bounded = mafd_bounded(BASE, changed, N_60DB)
    assert N_60DB < bounded < exact  # the bottom rows were not read


def test_identical_block_fraction_counts_bit_identical_macroblocks() -> None:
    changed = BASE.copy()
    changed[20, 40] ^= 1  # one pixel in one of the 6 x 10 macroblocks
    assert identical_block_fraction(BASE, changed, 16) == pytest.approx(59 / 60)
    assert identical_block_fraction(BASE, BASE, 16) == 1.0


@pytest.mark.parametrize("top", [0, 4, 8, 12])
def test_a_change_to_any_4x4_block_changes_its_macroblock_at_the_default_row_step(top: int) -> None:
    # A codec changes a picture in 4x4 blocks at least (H.264's smallest transform and
    # partition): every such block has a sampled row, so no coded change looks like a skip.
    row_step = FreezeOptions().row_step
    changed = BASE.copy()
    changed[top : top + 4, 4:8] ^= 1  # one 4x4 block of the first macroblock
    changed[top + 16 : top + 20, 20:24] ^= 1  # ... and one of the macroblock below and right of it
    share = identical_block_fraction(
        macroblock_sample(BASE, row_step), macroblock_sample(changed, row_step), 16 // row_step
    )
    assert share == pytest.approx(58 / 60)


def test_block_means_are_exact_macroblock_means() -> None:
    means = block_means(BASE, 16)
    assert means.shape == (6, 10)
    assert means[2, 3] == pytest.approx(BASE[32:48, 48:64].mean())


def test_dc_shifts_separate_zero_mean_noise_from_new_content() -> None:
    base = block_means(BASE, 16)
    noisy = block_means(with_noise(BASE, 3.0, seed=1), 16)
    caption = BASE.copy()
    caption[64:80, 32:128] = 235
    captioned = block_means(caption, 16)
    block_shift, mean_shift = dc_shifts(noisy, base)
    assert ratio_to_db(block_shift) < -40.0  # < 2.6 codes
    assert ratio_to_db(mean_shift) < -50.0
    block_shift, _ = dc_shifts(captioned, base)
    assert ratio_to_db(block_shift) > -10.0  # > 80 codes


# -- freezedetect semantics -----------------------------------------------------------------------


def test_held_picture_is_frozen_from_first_appearance_to_first_change() -> None:
    [freeze] = closed(run(hold(25, 100, still), 5.0))
    assert freeze.type == "freeze"
    assert span(freeze) == pytest.approx((1.0, 4.0))
    assert freeze.metrics["duration_s"] == pytest.approx(3.0)
    assert freeze.metrics["mafd_db"] == pytest.approx(-120.0)


def test_hold_shorter_than_min_duration_is_not_frozen() -> None:
    assert run(hold(25, 60, still), 4.0) == []


def test_open_finding_is_emitted_once_the_hold_lasts_min_duration() -> None:
    detector = FreezeDetector()
    picture = hold(25, 125, still)
    for i in range(150):
        t = i / FPS
        for finding in detector.feed_video(VideoFrame(t=t, luma=picture(i))):
            assert finding.end_s is None
            assert finding.start_s == pytest.approx(1.0)
            assert t == pytest.approx(3.0)  # live: when the hold reaches d, not when it ends
            return
    pytest.fail("no open finding")


def test_freeze_until_the_end_is_closed_by_flush() -> None:
    opened, closing = run(hold(25, 125, still), 5.0)
    assert opened.end_s is None
    assert span(closing) == pytest.approx((1.0, 5.0))


def test_held_black_picture_is_left_to_the_black_detector() -> None:
    black = np.full((H, W), 16, np.uint8)
    assert run(hold(25, 125, lambda i: black), 6.0) == []


def test_held_dark_picture_that_is_not_black_is_frozen() -> None:
    dark = np.full((H, W), 16, np.uint8)
    dark[: H // 4] = 60  # a dim sky: 25 % of the picture is above the black threshold
    [freeze] = closed(run(hold(25, 125, lambda i: dark), 6.0))
    assert span(freeze) == pytest.approx((1.0, 5.0))


def test_corrupt_picture_inside_freeze_does_not_split_it() -> None:
    detector = FreezeDetector()
    picture = hold(25, 100, still)
    findings: list[Finding] = []
    for i in range(125):
        frame = VideoFrame(t=i / FPS, luma=moving(i) if i == 60 else picture(i), corrupt=i == 60)
        findings += detector.feed_video(frame)
    findings += detector.flush(5.0)
    [freeze] = closed(findings)
    assert span(freeze) == pytest.approx((1.0, 4.0))


# -- trap 1: the codec re-encodes the frozen picture ----------------------------------------------


def refreshed(i: int) -> Luma:
    """The held picture as a decoder shows it: copied by P-frames, re-encoded (new zero-mean
    quantisation noise) at each keyframe."""
    return with_noise(BASE, 3.0, seed=(i // GOP) + 1000)


def test_keyframe_refresh_inside_freeze_does_not_split_it() -> None:
    # freezedetect's own test fails here: each refresh differs from the held picture by far more
    # than -60 dB, so it would split this into 0.4 s pieces and report nothing.
    assert mafd(refreshed(30), refreshed(40)) > 10 * N_60DB
    [freeze] = closed(run(hold(25, 125, refreshed), 6.0))
    assert span(freeze) == pytest.approx((1.0, 5.0))
    assert freeze.metrics["reencoded"] == 10  # keyframes 30, 40, ... 120


def test_content_change_at_a_keyframe_ends_the_freeze() -> None:
    # A caption appears exactly on a keyframe: small on average (inside refresh_n), but it shifts
    # the mean of its macroblocks by ~100 codes, so it is new content, not a refresh.
    captioned = BASE.copy()
    captioned[64:80, 48:80] = 235
    assert mafd(BASE, captioned) < db_to_ratio(FreezeOptions().refresh_n)
    picture = hold(25, 150, lambda i: BASE if i < 90 else captioned)
    first, second = closed(run(picture, 7.0))
    assert span(first) == pytest.approx((1.0, 3.6))
    assert span(second) == pytest.approx((3.6, 6.0))


def test_keyframe_followed_by_motion_ends_the_freeze_at_the_keyframe() -> None:
    # The keyframe at 4.0 s looks like a re-encode, but the picture moves on right after it:
    # the source most likely resumed at the GOP boundary.
    def picture(i: int) -> Luma:
        if i == 100:
            return with_noise(BASE, 2.0, seed=5)
        return BASE if 25 <= i < 100 else moving(i)

    [freeze] = closed(run(picture, 5.0))
    assert span(freeze) == pytest.approx((1.0, 4.0))


def refined(i: int) -> Luma:
    """The held picture as x264 shows it between keyframes: every 4th picture (B/P) refines
    40 % of the pixels by one code (-56 dB); the others copy it."""
    picture = BASE.copy()
    for step in range(i // 4):
        flips = np.random.default_rng(step).random((H, W)) < 0.4
        picture[flips] ^= 1
    return picture


def test_refinement_between_keyframes_does_not_split_the_freeze() -> None:
    assert mafd(refined(35), refined(36)) > N_60DB  # freezedetect would split here, ...
    assert identical_block_fraction(refined(35), refined(36), 16) < 0.5  # ... and so would the blocks
    [freeze] = closed(run(hold(25, 125, refined), 6.0))
    assert span(freeze) == pytest.approx((1.0, 5.0))
    assert freeze.metrics["reencoded"] == 25  # pictures 28, 32, ... 124


def reconverged(i: int) -> Luma:
    """The held picture as an MPEG-2 encoder shows it: each keyframe re-encodes it coarsely, the
    picture after it refines it by more than refine_n, and the rest of the GOP copies that."""
    gop = i // GOP
    if i % GOP == 0:
        return with_noise(BASE, 3.0, seed=gop)
    return with_noise(BASE, 1.5, seed=gop + 500)


def test_refinement_right_after_a_keyframe_does_not_split_the_freeze() -> None:
    refine_n = db_to_ratio(FreezeOptions().refine_n)
    assert mafd(reconverged(30), reconverged(31)) > refine_n  # judged tightly, it would split
    [freeze] = closed(run(hold(25, 125, reconverged), 6.0))
    assert span(freeze) == pytest.approx((1.0, 5.0))


def test_changes_that_never_settle_end_the_freeze_where_they_began() -> None:
    # After the hold, changes as small as refinements keep coming and never settle: live video
    # (faint noise on a static card, coded as a codec codes it: in 4x4 blocks, here 8 % of them
    # changed by one code). The freeze ended at 4.0 s, known once settle_s has passed.
    def picture(i: int) -> Luma:
        if i < 100:
            return BASE
        flips = np.random.default_rng(i).random((H // 4, W // 4)) < 0.08
        return BASE ^ np.kron(flips, np.ones((4, 4), bool)).astype(np.uint8)

    findings = run(picture, 7.0)
    [freeze] = closed(findings)
    assert span(freeze) == pytest.approx((0.0, 4.0))


# -- trap 2: noise on a static picture is live video ------------------------------------------------


def test_grainy_static_card_is_not_frozen() -> None:
    def card(i: int) -> Luma:
        return with_noise(BASE, 2.0, seed=i)

    # Loosening n to swallow keyframe refreshes would swallow this card too.
    assert mafd(card(1), card(2)) < db_to_ratio(FreezeOptions().refresh_n)
    assert run(card, 5.0) == []


def test_faint_noise_below_n_is_not_frozen() -> None:
    # A dark static scene whose sensor noise flips 3 % of the pixels by one code each picture:
    # below freezedetect's -60 dB, yet it touches nearly every macroblock.
    dark = np.full((H, W), 20, np.uint8)

    def noisy(i: int) -> Luma:
        flips = np.random.default_rng(i).random((H, W)) < 0.03
        return dark + flips.astype(np.uint8)

    assert mafd(noisy(1), noisy(2)) < N_60DB
    assert run(noisy, 5.0) == []


def test_slow_drift_accumulates_against_the_reference_and_ends_the_freeze() -> None:
    # A slow fade as a codec shows it: each picture brightens a different tenth of the
    # macroblocks by 2 codes. Picture to picture that is frozen by every measure (-62 dB, 90 %
    # of the blocks identical); against the reference and the origin it is a fade.
    rng = np.random.default_rng(3)
    steps = [rng.random((H // 16, W // 16)) < 0.1 for _ in range(150)]

    def fading(i: int) -> Luma:
        lift = np.sum(steps[:i], axis=0) * 2 if i else np.zeros((H // 16, W // 16))
        return np.clip(BASE + np.kron(lift, np.ones((16, 16))), 0, 255).astype(np.uint8)

    assert mafd(fading(11), fading(10)) < N_60DB
    assert identical_block_fraction(fading(11), fading(10), 16) >= 0.5
    assert run(fading, 6.0) == []


# -- severity from the audio -------------------------------------------------------------------------


def test_frozen_picture_under_live_audio_is_a_warning() -> None:
    [freeze] = closed(run(hold(25, 100, still), 5.0))
    assert freeze.severity is Severity.WARNING


def test_frozen_picture_with_silent_audio_is_critical() -> None:
    ctx = StreamContext(audio_silent_since=0.9)
    findings = run(hold(25, 100, still), 5.0, ctx=ctx)
    assert [f.severity for f in findings] == [Severity.CRITICAL, Severity.CRITICAL]


def test_frozen_picture_without_audio_is_critical() -> None:
    findings = run(hold(25, 100, still), 5.0, ctx=StreamContext(has_audio=False))
    assert {f.severity for f in findings} == {Severity.CRITICAL}


def test_audio_falling_silent_during_the_freeze_makes_its_close_critical() -> None:
    def audio(t: float, ctx: StreamContext) -> None:
        ctx.audio_silent_since = 3.5 if t >= 3.5 else None

    opened, closing = run(hold(25, 150, still), 6.5, on_frame=audio)
    assert opened.severity is Severity.WARNING
    assert closing.severity is Severity.CRITICAL


def test_a_short_pause_in_the_narration_does_not_make_it_critical() -> None:
    def audio(t: float, ctx: StreamContext) -> None:
        ctx.audio_silent_since = 2.8 if 2.8 <= t < 3.4 else None  # 0.6 s between sentences

    [freeze] = closed(run(hold(25, 100, still), 5.0, on_frame=audio))
    assert freeze.severity is Severity.WARNING


# -- a real H.264 stream --------------------------------------------------------------------------------


def encode_clip(path: Path, width: int = 160, height: int = 90) -> None:
    """6 s at 25 fps, GOP 10, 300 kbit/s: grain (live) for 1 s, a held picture until 4 s, grain."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:height, 0:width]
    scene = 110 + 50 * np.sin(xx / 9.0) + 40 * np.cos(yy / 7.0) + 25 * rng.standard_normal((height, width))
    held = np.clip(scene, 16, 235).astype(np.uint8)

    def pictures() -> Iterator[npt.NDArray[np.uint8]]:
        for i in range(6 * FPS):
            grain = scene + rng.normal(0.0, 4.0, scene.shape)
            yield held if 25 <= i < 100 else np.clip(grain, 16, 235).astype(np.uint8)

    # Bitrate mode: each keyframe gets a new quantiser.
    encode_h264(path, pictures(), fps=FPS, gop_size=GOP, options={"b": "300k"})


def decode_clip(path: Path) -> Iterator[VideoFrame]:
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            plane = frame.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
            yield VideoFrame(
                t=float(frame.time), luma=rows[:, : frame.width], key_frame=bool(frame.key_frame)
            )


def test_h264_freeze_with_keyframe_refreshes_between_grain(tmp_path: Path) -> None:
    path = tmp_path / "hold.mp4"
    encode_clip(path)
    frames = list(decode_clip(path))

    # The trap is really in the stream: keyframes inside the hold differ from the picture before.
    spikes = [
        mafd(cur.luma, prev.luma)
        for prev, cur in itertools.pairwise(frames)
        if cur.key_frame and 1.2 <= cur.t < 3.9
    ]
    assert spikes and max(spikes) > N_60DB

    detector = FreezeDetector()
    findings: list[Finding] = []
    for frame in frames:
        findings += detector.feed_video(frame)
    findings += detector.flush(frames[-1].t + 1 / FPS)
    [freeze] = closed(findings)
    assert freeze.end_s is not None
    assert freeze.start_s == pytest.approx(1.0, abs=0.1)
    assert freeze.end_s == pytest.approx(4.0, abs=0.1)
    assert freeze.metrics["reencoded"] >= 1


# ------------------------------------------------------------------ overlays on a frozen picture


def with_patch(picture: Luma, i: int, top: int, left: int, height: int, width: int) -> Luma:
    """``picture`` with a live patch (new random content in every picture ``i``) at (top, left)."""
    out = picture.copy()
    out[top : top + height, left : left + width] = textured(1000 + i)[:height, :width]
    return out


def test_region_grid_covers_the_picture_on_macroblock_boundaries() -> None:
    grid = RegionGrid((24, 160), grid=16, block_rows=4)  # 6 x 10 macroblocks, every 4th row
    assert grid.area.shape == (6, 10)
    assert grid.area.sum() == pytest.approx(1.0)
    assert list(grid.cols) == [16 * c for c in range(10)]
    diff = np.zeros((24, 160), np.uint8)
    diff[4:8, 32:48] = 128
    assert np.argwhere(grid.mafd(diff) > 0).tolist() == [[1, 2]]
    assert grid.mafd(diff)[1, 2] == pytest.approx(0.5)


def test_frozen_picture_under_a_small_live_overlay_is_frozen() -> None:
    # A clock-like patch of 2 macroblocks (3 % of the picture) changes in every picture.
    def picture(i: int) -> Luma:
        return moving(i) if i < 25 or i >= 150 else with_patch(moving(25), i, 16, 16, 16, 32)

    [freeze] = closed(run(picture, 8.0))
    # After moving pictures the overlay probe rests for PROBE_REST pictures: up to 2 late.
    assert 1.0 <= freeze.start_s <= 1.0 + PROBE_REST / FPS
    assert freeze.end_s == pytest.approx(6.0)
    assert freeze.metrics["frozen_share"] == pytest.approx(1 - 2 / 60)


def test_frozen_picture_under_a_large_live_area_is_live() -> None:
    # 12 macroblocks of 60 (20 %) keep moving: that is motion that matters.
    picture: Picture = lambda i: with_patch(BASE, i, 16, 16, 48, 64)  # noqa: E731
    assert run(picture, 6.0) == []


def test_small_object_moving_across_a_static_picture_is_live() -> None:
    # One macroblock of new content that moves to the next one every 4 pictures: each picture
    # changes little, but the area that changes outgrows any overlay.
    def picture(i: int) -> Luma:
        k = i // 4
        return with_patch(BASE, k, 16 * (k // 10 % 6), 16 * (k % 10), 16, 16)

    assert run(picture, 6.0) == []


def test_a_change_outside_the_overlay_ends_the_freeze() -> None:
    def picture(i: int) -> Luma:
        held = with_patch(BASE if i < 100 else moving(i), i, 16, 16, 16, 32)  # the live overlay
        return held  # ... over a picture held until 4 s, then moving again

    [freeze] = closed(run(picture, 6.0))
    assert span(freeze) == pytest.approx((0.0, 4.0))


def test_overlay_zero_restores_whole_picture_judgement() -> None:
    picture: Picture = lambda i: with_patch(BASE, i, 16, 16, 16, 32)  # noqa: E731
    assert run(picture, 6.0, FreezeOptions(overlay=0.0)) == []


def test_ffmpeg_encoded_freeze_under_a_burned_in_running_clock(tmp_path: Path) -> None:
    clip = tmp_path / "clock.ts"
    under_overlay_ts(clip, 12.0, (3.0, 9.0))  # libx264, a drawtext clock to the millisecond
    [freeze] = closed(decode(clip, FreezeDetector()))
    assert span(freeze) == pytest.approx((3.0, 9.0), abs=0.05)
    assert 0.9 < freeze.metrics["frozen_share"] < 1.0


def test_ffmpeg_encoded_live_picture_under_a_running_clock_is_not_frozen(tmp_path: Path) -> None:
    clip = tmp_path / "clock_live.ts"
    under_overlay_ts(clip, 8.0, None)
    assert decode(clip, FreezeDetector()) == []


def test_ffmpeg_encoded_frozen_picture_under_a_large_moving_inset_is_live(tmp_path: Path) -> None:
    clip = tmp_path / "inset.ts"
    under_overlay_ts(clip, 8.0, (2.0, 7.0), inset="240x136")  # 14 % of the picture moves
    assert decode(clip, FreezeDetector()) == []
