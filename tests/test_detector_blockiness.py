"""The blockiness detector: the grid-edge measure on pictures with known answers, the event logic
(baseline, hysteresis, decoder evidence), and real H.264 made, damaged and decoded with PyAV."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from shared.models import Defect
from tests.media import encode_h264, transport_packets
from worker.decoded import luma_view
from worker.detectors.base import Finding, Severity, VideoFrame
from worker.detectors.blockiness import (
    BlockinessDetector,
    BlockinessOptions,
    blockiness_ratio,
    edge_periods,
    edge_profile,
    grid_line_ratio,
    profile_of,
)
from worker.media import Limits
from worker.session import SessionConfig, StreamSession

FPS = 25
H, W = 144, 256

Luma = npt.NDArray[np.uint8]
Picture = Callable[[int], Luma]  # picture number -> luma


def smooth_noise(height: int, width: int, sigma: float, seed: int) -> npt.NDArray[np.float64]:
    """Random texture with features about ``sigma`` pixels wide, scaled to 0..1."""
    white = np.random.default_rng(seed).random((height, width), dtype=np.float32)
    noise = np.asarray(cv2.GaussianBlur(white, (0, 0), sigma), dtype=np.float64)
    low, high = noise.min(), noise.max()
    return np.asarray((noise - low) / (high - low), dtype=np.float64)


def to_luma(values: npt.ArrayLike) -> Luma:
    """Luma codes from any numbers: clipped to 0..255, uint8."""
    return np.asarray(np.clip(values, 0, 255), dtype=np.uint8)


TEXTURE = to_luma(smooth_noise(H, 3 * W, 2.5, 1) * 180 + 36)


def moving(i: int) -> Luma:
    """Programme content: smooth texture scrolling 3 pixels per picture, no grid."""
    x = (3 * i) % (2 * W)
    return TEXTURE[:, x : x + W]


def blocky(picture: Luma, block: int = 8) -> Luma:
    """Each block x block tile replaced by its mean: the textbook blocking artefact."""
    h, w = picture.shape
    small = cv2.resize(picture, (w // block, h // block), interpolation=cv2.INTER_AREA)
    return to_luma(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST))


CHECKER = np.where((np.indices((H, W)) // 8).sum(axis=0) % 2 == 0, 40, -40).astype(np.int16)


def checkered(i: int) -> Luma:
    """Programme content under a grid-aligned 8x8 checkerboard: blocky by design, not damaged."""
    return to_luma(moving(i).astype(np.int16) + CHECKER)


def run(
    picture: Picture,
    seconds: float,
    options: BlockinessOptions | None = None,
    corrupt: Callable[[int], bool] = lambda i: False,
    key: Callable[[int], bool] = lambda i: i == 0,
) -> list[Finding]:
    detector = BlockinessDetector(options)
    findings: list[Finding] = []
    n = round(seconds * FPS)
    for i in range(n):
        frame = VideoFrame(t=i / FPS, luma=picture(i), key_frame=key(i), corrupt=corrupt(i))
        findings += detector.feed_video(frame)
    return findings + detector.flush(n / FPS)


def between(first_s: float, last_s: float, inside: Picture, outside: Picture = moving) -> Picture:
    return lambda i: inside(i) if first_s <= i / FPS < last_s else outside(i)


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


# ------------------------------------------------------------------ the measure


def test_edge_profile_puts_block_edges_at_positions_7_and_15() -> None:
    luma = np.zeros((64, 64), np.uint8)
    luma[:, 8::16] = 100  # vertical lines at columns 8, 24, ...: edges 7|8 and 8|9
    profile = edge_profile(luma, row_step=1)
    assert profile[0, 7] == pytest.approx(100.0) and profile[0, 8] == pytest.approx(100.0)
    assert profile[0, [k for k in range(16) if k not in (7, 8)]].max() == 0.0
    assert profile[1].max() == 0.0  # nothing changes from row to row


def test_edge_profile_rows_are_vertical_differences() -> None:
    luma = np.zeros((64, 48), np.uint8)
    luma[16:48] = 60  # edges between rows 15|16 and 47|48: position 15 of both sampled bands
    profile = edge_profile(luma, row_step=1)
    assert profile[1, 15] == pytest.approx(60.0)
    assert profile[1, :15].max() == 0.0
    assert profile[0].max() == 0.0


@pytest.mark.parametrize("band_step", [1, 2, 4])
def test_edge_profile_vertical_differences_are_those_of_every_nth_band_of_a_padded_buffer(
    band_step: int,
) -> None:
    # As a decoder's plane: rows further apart than the picture is wide, with junk between them.
    buffer = np.random.default_rng(3).integers(0, 256, (150, 80), dtype=np.uint8)
    luma = buffer[:, :72]
    rows = luma.astype(np.int64)
    expected = np.zeros(16)
    bands = range(0, 150 - 16, 16 * band_step)  # e.g. rows 0-16, 64-80, 128-144 for every 4th
    for top in bands:
        expected += np.abs(rows[top + 1 : top + 17] - rows[top : top + 16]).sum(axis=1)
    expected /= 72 * len(bands)
    assert edge_profile(luma, band_step=band_step)[1] == pytest.approx(expected)


def test_natural_texture_scores_about_one() -> None:
    assert blockiness_ratio(edge_profile(moving(0))) == pytest.approx(1.0, abs=0.1)


def test_flat_and_tiny_pictures_score_one() -> None:
    assert blockiness_ratio(edge_profile(np.full((H, W), 16, np.uint8))) == pytest.approx(1.0)
    assert blockiness_ratio(edge_profile(np.full((8, 8), 90, np.uint8))) == pytest.approx(1.0)


def test_eight_by_eight_blocking_scores_high() -> None:
    assert blockiness_ratio(edge_profile(blocky(moving(0)))) > 3.0


def test_macroblock_only_blocking_is_measured_on_the_16_grid() -> None:
    # Edges only every 16 pixels (concealed or skipped macroblocks): the 8x8 mean is diluted
    # by the clean position 7, the macroblock edge alone is not.
    luma = blocky(moving(0), block=16)
    profile = edge_profile(luma).mean(axis=0)
    assert profile[15] > 5 * profile[7]
    assert blockiness_ratio(edge_profile(luma)) > 3.0


def test_measure_accepts_strided_decoder_views() -> None:
    buffer = np.zeros((H, W + 32), np.uint8)  # a line size wider than the picture
    buffer[:, :W] = blocky(moving(0))
    view = buffer[:, :W]
    assert not view.flags.c_contiguous
    assert blockiness_ratio(edge_profile(view)) == pytest.approx(blockiness_ratio(edge_profile(view.copy())))


# ------------------------------------------------------------------ the event


def test_clean_moving_texture_is_not_blocky() -> None:
    assert run(moving, 6.0) == []


def test_blocking_episode_is_a_warning_from_first_to_first_clean_picture() -> None:
    findings = run(between(2.0, 4.0, lambda i: blocky(moving(i))), 6.0)
    opened, closing = findings
    assert opened.end_s is None and opened.severity is Severity.WARNING
    assert closing.start_s == opened.start_s == pytest.approx(2.0, abs=0.1)
    assert closing.end_s == pytest.approx(4.0, abs=0.1)
    assert closing.metrics["blockiness"] > 3.0
    assert closing.metrics["baseline"] == pytest.approx(1.0, abs=0.1)
    assert closing.metrics["corrupt_frames"] == 0.0


def test_measured_episode_opens_once_it_lasts_min_duration() -> None:
    detector = BlockinessDetector()
    opened_at = None
    for i in range(4 * FPS):
        t = i / FPS
        luma = blocky(moving(i)) if t >= 2.0 else moving(i)
        for finding in detector.feed_video(VideoFrame(t=t, luma=luma)):
            assert finding.end_s is None
            opened_at = t
    assert opened_at == pytest.approx(2.5, abs=0.1)  # live: as soon as it lasts d


def test_blip_shorter_than_min_duration_is_not_reported() -> None:
    assert run(between(2.0, 2.3, lambda i: blocky(moving(i))), 4.0) == []


def test_grid_aligned_pattern_from_the_start_is_the_streams_normal() -> None:
    assert run(checkered, 6.0) == []


def test_grid_aligned_pattern_that_stays_is_absorbed_into_the_baseline() -> None:
    options = BlockinessOptions(baseline=4.0)
    findings = run(between(2.0, 12.0, checkered), 12.0, options)
    [episode] = closed(findings)  # reported once, not forever
    assert episode.start_s == pytest.approx(2.0, abs=0.1)
    assert episode.end_s is not None and episode.end_s <= 2.0 + options.baseline / 2 + 0.5


GRADIENT = cv2.resize(
    np.random.default_rng(5).uniform(40, 200, (4, 8)).astype(np.float32),
    (2 * W, H),
    interpolation=cv2.INTER_CUBIC,
)


def gradient(i: int) -> Luma:
    """A smooth upscaled gradient panning 2 pixels per picture: almost no detail inside blocks."""
    x = (2 * i) % W
    return to_luma(GRADIENT[:, x : x + W])


def lower_third(i: int) -> Luma:
    """``gradient`` under a sharp-edged graphic: a white box on the grid, with dark text strokes."""
    picture = gradient(i)
    picture[96:128, 16:240] = 235
    picture[80:96, 16:112] = 30  # the name strap above it
    picture[104:120, 35:200:11] = 16  # text strokes, off the grid
    return picture


def test_grid_line_ratio_sees_graphics_edges_as_few_and_blocking_as_everywhere() -> None:
    graphic = edge_periods(lower_third(0))
    # The mean reads it as blocking (over the floor, and 1.3 times the gradient's)...
    assert blockiness_ratio(profile_of(graphic)) > max(1.5, 1.3 * blockiness_ratio(edge_profile(gradient(0))))
    assert grid_line_ratio(graphic) < 1.3  # ... the median over the periods does not
    assert grid_line_ratio(edge_periods(blocky(moving(0)))) > 3.0
    assert grid_line_ratio(edge_periods(moving(0))) == pytest.approx(1.0, abs=0.15)


def test_profile_of_the_periods_is_the_edge_profile() -> None:
    picture = lower_third(3)
    assert np.allclose(profile_of(edge_periods(picture)), edge_profile(picture))


def test_sharp_graphics_over_a_gradient_are_not_blockiness() -> None:
    assert run(between(2.0, 8.0, lower_third, gradient), 10.0) == []


def test_blocking_of_a_gradient_under_graphics_is_blockiness() -> None:
    [episode] = closed(run(between(2.0, 6.0, lambda i: blocky(lower_third(i)), lower_third), 8.0))
    assert episode.start_s == pytest.approx(2.0, abs=0.1)
    assert episode.severity is Severity.WARNING


def test_graphics_with_decoder_evidence_are_still_critical_blockiness() -> None:
    findings = run(between(2.0, 8.0, lower_third, gradient), 10.0, corrupt=lambda i: i == 75)
    [episode] = closed(findings)
    assert episode.severity is Severity.CRITICAL


def test_blocking_below_the_absolute_floor_is_ignored() -> None:
    def faint(i: int) -> Luma:  # grid edges raised by 8 codes on smooth texture: ratio about 1.7
        return to_luma(moving(i).astype(np.int16) + CHECKER // 10)

    picture = between(2.0, 4.0, faint)
    assert 1.3 * 1.0 < blockiness_ratio(edge_profile(faint(0))) < 2.0  # well above rise x baseline
    assert run(picture, 6.0, BlockinessOptions(th=2.0)) == []
    assert closed(run(picture, 6.0, BlockinessOptions(th=1.5)))


def test_corrupt_picture_opens_a_critical_defect_at_once() -> None:
    detector = BlockinessDetector()
    for i in range(50):
        assert detector.feed_video(VideoFrame(t=i / FPS, luma=moving(i), key_frame=i == 0)) == []
    [opened] = detector.feed_video(VideoFrame(t=2.0, luma=moving(50), corrupt=True))
    assert opened.end_s is None and opened.start_s == 2.0
    assert opened.severity is Severity.CRITICAL
    assert opened.metrics["corrupt_frames"] == 1.0


def test_decoder_damage_lasts_until_the_next_clean_keyframe() -> None:
    findings = run(moving, 5.0, corrupt=lambda i: i == 50, key=lambda i: i % 30 == 0)
    [damage] = closed(findings)
    assert damage.severity is Severity.CRITICAL
    assert damage.start_s == pytest.approx(2.0)
    assert damage.end_s == pytest.approx(60 / FPS)


def test_decoder_damage_without_keyframes_lasts_hold_seconds() -> None:
    findings = run(moving, 6.0, corrupt=lambda i: i == 25)
    [damage] = closed(findings)
    assert damage.start_s == pytest.approx(1.0)
    assert damage.end_s == pytest.approx(3.0)


def test_damage_repeated_within_gap_is_one_defect() -> None:
    # Packet loss in every GOP: healed at each keyframe, damaged again 0.4 s later.
    findings = run(moving, 6.0, corrupt=lambda i: i in (25, 45, 65), key=lambda i: i % 15 == 0)
    [damage] = closed(findings)
    assert damage.start_s == pytest.approx(1.0)
    assert damage.end_s == pytest.approx(75 / FPS)
    assert damage.metrics["corrupt_frames"] == 3.0


def test_video_decode_error_is_decoder_evidence_and_audio_is_ignored() -> None:
    detector = BlockinessDetector()
    for i in range(25):
        detector.feed_video(VideoFrame(t=i / FPS, luma=moving(i), key_frame=i == 0))
    assert detector.feed_decode_error(0.96, "audio", "Invalid data") == []
    [opened] = detector.feed_decode_error(0.96, "video", "Invalid data")
    assert opened.severity is Severity.CRITICAL and opened.start_s == 0.96
    assert opened.metrics["decode_errors"] == 1.0


def test_measured_defect_with_decoder_evidence_closes_critical() -> None:
    picture = between(2.0, 4.0, lambda i: blocky(moving(i)))
    findings = run(picture, 6.0, corrupt=lambda i: i == 80)
    opened, closing = findings
    assert opened.severity is Severity.WARNING  # only the measure knew when it opened
    assert closing.severity is Severity.CRITICAL
    assert closing.start_s == pytest.approx(2.0, abs=0.1)


def test_damage_until_the_end_is_closed_by_flush() -> None:
    findings = run(between(2.0, 9.0, lambda i: blocky(moving(i))), 4.0)
    opened, closing = findings
    assert closing.start_s == opened.start_s
    assert closing.end_s == pytest.approx(4.0)


def test_invalid_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="hyst"):
        BlockinessOptions(hyst=0.7)


# ------------------------------------------------------------------ real H.264

CLIP_W, CLIP_H = 384, 216  # not a multiple of 16 high: the decoder crops the coded 224 rows
CLIP_PICTURES = 100


def encode_clip(path: Path, crf: int) -> None:
    """Two smooth textures scrolling in different directions plus film grain, H.264 in MPEG-TS
    (libx264 defaults otherwise: B-frames, one keyframe)."""
    rng = np.random.default_rng(3)
    wide = smooth_noise(CLIP_H, 2 * CLIP_W, 3.0, 4)
    tall = smooth_noise(2 * CLIP_H, CLIP_W, 1.5, 5)

    def pictures() -> Iterator[npt.NDArray[np.uint8]]:
        for i in range(CLIP_PICTURES):
            x, y = (3 * i) % CLIP_W, (2 * i) % CLIP_H
            luma = 0.6 * wide[:, x : x + CLIP_W] + 0.4 * tall[y : y + CLIP_H]
            luma = luma * 180 + 36 + rng.normal(0.0, 2.0, luma.shape)
            yield np.clip(luma, 16, 235).astype(np.uint8)

    encode_h264(path, pictures(), fps=FPS, format="mpegts", options={"crf": str(crf)})


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("blockiness")
    paths = {}
    for crf in (23, 51):
        paths[crf] = root / f"crf{crf}.ts"
        encode_clip(paths[crf], crf)
    return paths


def monitor(path: Path, decode_threads: int = 2) -> list[Defect]:
    """Run the worker's session on a file with only this detector, as the worker feeds it."""
    records: list[Defect] = []
    config = SessionConfig(
        url=path.resolve().as_uri(),
        reconnect=False,
        detectors=frozenset({"blockiness"}),
        limits=Limits(decode_threads=decode_threads),
    )
    StreamSession("test", config, lambda d, _: records.append(d)).run()
    return records


def decoded_ratios(path: Path) -> npt.NDArray[np.float64]:
    with av.open(str(path)) as container:
        ratios = [blockiness_ratio(edge_profile(luma_view(f)[0])) for f in container.decode(video=0)]
    return np.array(ratios)


def test_clean_h264_at_crf_23_is_never_blocky(clips: dict[int, Path]) -> None:
    assert decoded_ratios(clips[23]).max() < BlockinessOptions().th
    assert monitor(clips[23]) == []


def test_measure_rises_under_heavy_quantisation(clips: dict[int, Path]) -> None:
    clean, coarse = decoded_ratios(clips[23]), decoded_ratios(clips[51])
    assert np.median(clean) == pytest.approx(1.0, abs=0.15)
    assert np.median(coarse) > np.median(clean) + 0.3


def damage(clean: Path, out: Path, how: str) -> list[float]:
    """Damage two reference pictures of ``clean`` in the middle: ``drop`` removes transport
    packets (a continuity-counter gap, as from UDP loss), ``garble`` overwrites payload bytes
    (bit errors: transport intact, slices broken). Returns the damaged pictures' media times."""
    with av.open(str(clean)) as container:
        stream = container.streams.video[0]
        start, tb = stream.start_time or 0, stream.time_base
        assert tb is not None
        packets = [
            (p.pos, p.size, float((p.pts - start) * tb), p.is_keyframe)
            for p in container.demux(stream)
            if p.size and p.pos is not None and p.pts is not None
        ]
    data = bytearray(clean.read_bytes())
    rng = np.random.default_rng(11)
    # Large non-key packets are the P-frames that later pictures predict from; take two of
    # them, a few pictures apart, from the middle of the clip.
    large = [i for i in range(30, len(packets) - 20) if packets[i][1] > 2000 and not packets[i][3]]
    chosen = [large[0], large[3]]
    drop: list[int] = []
    for i in chosen:
        offsets = transport_packets(bytes(data), packets[i][0])
        middle = offsets[len(offsets) // 3 : len(offsets) // 3 + max(1, len(offsets) // 4)]
        if how == "drop":
            drop += middle
        else:
            for off in middle:
                data[off + 4 : off + 188] = rng.integers(0, 256, 184, dtype=np.uint8).tobytes()
    for off in sorted(drop, reverse=True):
        del data[off : off + 188]
    out.write_bytes(bytes(data))
    return [packets[i][2] for i in chosen]


def test_lost_transport_packets_are_critical_blockiness(clips: dict[int, Path], tmp_path: Path) -> None:
    damaged_at = damage(clips[23], tmp_path / "drop.ts", "drop")
    records = monitor(tmp_path / "drop.ts")
    opened = [r for r in records if r.end_s is None]
    assert opened and all(r.severity == "critical" for r in records)
    assert abs(opened[0].start_s - damaged_at[0]) <= 0.5
    assert all(r.end_s is not None for r in records if r not in opened)
    assert sum(r.metrics["corrupt_frames"] for r in records if r.end_s is not None) >= 2


def test_garbled_slices_are_critical_blockiness_from_concealment_flags(
    clips: dict[int, Path], tmp_path: Path
) -> None:
    # No transport error to see: only the decoder knows, from its error concealment. One decoding
    # thread keeps it deterministic (frame threading flags the same damage, most of the time).
    damaged_at = damage(clips[23], tmp_path / "garble.ts", "garble")
    records = monitor(tmp_path / "garble.ts", decode_threads=1)
    opened = [r for r in records if r.end_s is None]
    assert opened and opened[0].severity == "critical"
    assert abs(opened[0].start_s - damaged_at[0]) <= 0.5
