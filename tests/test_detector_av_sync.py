"""The av_sync detector: synthetic marks with exact answers, packet timelines, then real H.264/AAC
media from the test-signal generator, fed by the real session."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from avmon.testsrc import GroundTruth
from shared.models import Defect
from shared.urlpolicy import to_url
from tests.media import make_testsrc
from worker.detectors.av_sync import (
    AvSyncDetector,
    AvSyncOptions,
    BeepFinder,
    FlashFinder,
    hinge_fit,
)
from worker.detectors.base import AudioBlock, Finding, PacketInfo, Severity, VideoFrame
from worker.session import SessionConfig, StreamSession

RATE = 48_000
FPS = 25
BLOCK = 1024  # samples per audio block, as AAC frames decode
H, W = 72, 128
BEEP_S, BEEP_AMP, EDGE_S = 0.04, 10 ** (-12 / 20), 0.002

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# ------------------------------------------------------------------ synthetic streams


def mark_times(duration: float) -> list[float]:
    """Flash times as the generator places them: the first frame at or after k + 0.5 s."""
    return [math.ceil((k + 0.5) * FPS - 1e-9) / FPS for k in range(int(duration - 0.6) + 1)]


def beep(t: F64, onset: float) -> F64:
    """A 40 ms 1 kHz beep at -12 dBFS whose 2 ms raised-cosine edges cross half amplitude at
    ``onset`` and 40 ms later (the generator's)."""
    d = np.asarray(t, np.float64) - onset
    edge = np.clip(np.minimum(d + EDGE_S / 2, BEEP_S + EDGE_S / 2 - d) / EDGE_S, 0.0, 1.0)
    return BEEP_AMP * (0.5 - 0.5 * np.cos(np.pi * edge)) * np.sin(2 * np.pi * 1000.0 * d)


def programme_audio(duration: float, onsets: Iterable[float], seed: int = 0) -> F32:
    """(2, n) float32: a 220 Hz buzz with harmonics (-20 dBFS) and noise, plus the beeps."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(duration * RATE)) / RATE
    bed = sum(0.1 / p * np.sin(2 * np.pi * 220.0 * p * t) for p in range(1, 5))
    mono = bed + 0.003 * rng.standard_normal(t.size)
    for onset in onsets:
        lo, hi = max(0, int((onset - 0.01) * RATE)), int((onset + 0.06) * RATE)
        mono[lo:hi] += beep(t[lo:hi], onset)
    return np.stack([mono, mono]).astype(np.float32)


def programme_video(duration: float, white_at: Iterable[float], seed: int = 0) -> list[VideoFrame]:
    """Textured mid-grey pictures at FPS, white (code 235) at the frames of ``white_at``."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(40, 180, (H, W), dtype=np.uint8)
    white = np.full((H, W), 235, np.uint8)
    flashes = {round(t * FPS) for t in white_at}
    return [
        VideoFrame(t=i / FPS, luma=white if i in flashes else np.roll(texture, i, axis=1))
        for i in range(round(duration * FPS))
    ]


def blocks(audio: F32) -> list[AudioBlock]:
    return [
        AudioBlock(t=j / RATE, samples=np.ascontiguousarray(audio[:, j : j + BLOCK]), rate=RATE)
        for j in range(0, audio.shape[1] - BLOCK + 1, BLOCK)
    ]


def run(
    frames: list[VideoFrame], audio: F32, options: AvSyncOptions | None = None
) -> tuple[AvSyncDetector, list[Finding]]:
    """Feed pictures and blocks interleaved by time, as the session does, then flush."""
    detector = AvSyncDetector(options)
    found: list[Finding] = []
    feed: list[tuple[float, VideoFrame | AudioBlock]] = [(f.t, f) for f in frames]
    feed += [(b.t, b) for b in blocks(audio)]
    for _, item in sorted(feed, key=lambda x: x[0]):
        found += detector.feed_video(item) if isinstance(item, VideoFrame) else detector.feed_audio(item)
    found += detector.flush(frames[-1].t + 1 / FPS)
    return detector, found


def marked(
    duration: float, offset_ms: Callable[[float], float], options: AvSyncOptions | None = None
) -> tuple[AvSyncDetector, list[Finding]]:
    """A stream with sync marks whose beeps are ``offset_ms(flash time)`` after their flashes."""
    flashes = mark_times(duration)
    onsets = [t + offset_ms(t) / 1000.0 for t in flashes]
    return run(programme_video(duration, flashes), programme_audio(duration, onsets), options)


def span(offset: float, start: float, end: float) -> Callable[[float], float]:
    return lambda t: offset if start <= t < end else 0.0


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


# ------------------------------------------------------------------ flashes and beeps


def test_flash_is_timed_at_its_first_white_picture() -> None:
    finder = FlashFinder()
    found = [finder.feed(f) for f in programme_video(3.0, [1.0, 1.04])]  # two white frames
    assert [t for t in found if t is not None] == [1.0]


def test_white_card_and_bright_scene_are_not_flashes() -> None:
    finder = FlashFinder()
    card = programme_video(3.0, [i / FPS for i in range(25, 40)])  # white for 0.6 s
    assert [finder.feed(f) for f in card] == [None] * len(card)


def test_camera_flash_that_lights_the_picture_is_not_a_white_flash() -> None:
    finder = FlashFinder()
    frames = programme_video(3.0, [])
    lit = frames[30].luma.astype(np.float32)
    frames[30] = VideoFrame(t=frames[30].t, luma=np.rint(lit + (235 - lit) * 0.8).astype(np.uint8))
    assert [finder.feed(f) for f in frames] == [None] * len(frames)


def test_beep_onset_is_measured_to_a_fraction_of_a_millisecond() -> None:
    finder = BeepFinder(1000.0)
    onsets = [0.5123, 1.7777, 2.9001]
    found: list[float] = []
    for block in blocks(programme_audio(3.5, onsets)):
        found += finder.feed(block)
    # The bed's 880 Hz harmonic, 12 dB under the beep and not ducked, moves the envelope a little.
    assert found == pytest.approx(onsets, abs=5e-4)


def test_line_up_tone_is_not_a_beep() -> None:
    finder = BeepFinder(1000.0)
    t = np.arange(3 * RATE) / RATE
    tone = np.where((t > 1.0) & (t < 2.0), 0.25 * np.sin(2 * np.pi * 1000.0 * t), 0.0)
    audio = np.stack([tone, tone]).astype(np.float32)
    assert [o for b in blocks(audio) for o in finder.feed(b)] == []


# ------------------------------------------------------------------ offsets on sync marks


def test_marks_in_sync_measure_zero_and_report_nothing() -> None:
    detector, found = marked(12.0, lambda t: 0.0)
    assert found == []
    assert detector.marks_present
    assert len(detector.measurements) == 12
    assert max(abs(o) for _, o in detector.measurements) < 0.5  # ms


def test_late_sound_beyond_125_ms_is_a_critical_defect_between_the_marks() -> None:
    _, found = marked(14.0, span(200.0, 3.0, 9.0))
    opened, close = found
    assert opened.end_s is None and opened.start_s == close.start_s
    assert close.key == "" and close.severity is Severity.CRITICAL
    # Marks at k + 0.52 s: the change lies between 2.52 and 3.52, the return between 8.52 and 9.52.
    assert (close.start_s, close.end_s) == pytest.approx((3.02, 9.02))
    assert close.metrics["offset_ms"] == pytest.approx(200.0, abs=0.2)
    assert close.metrics["pairs"] == 6
    assert close.metrics["drifting"] == 0.0


def test_early_sound_beyond_45_ms_is_a_warning() -> None:
    _, found = marked(14.0, span(-80.0, 3.0, 9.0))
    [close] = closed(found)
    assert close.severity is Severity.WARNING  # inside BT.1359's acceptability (90 ms early)
    assert close.metrics["offset_ms"] == pytest.approx(-80.0, abs=0.2)


@pytest.mark.parametrize("offset", [100.0, 124.0, -40.0])
def test_offset_inside_the_detectability_window_is_not_a_defect(offset: float) -> None:
    detector, found = marked(12.0, span(offset, 3.0, 9.0))
    assert found == []
    assert detector.last_offset_ms == pytest.approx(0.0, abs=0.1)
    assert [o for t, o in detector.measurements if 3.0 < t < 9.0] == pytest.approx([offset] * 6, abs=0.5)


def test_a_stray_pair_neither_opens_nor_splits_a_defect() -> None:
    def offsets(t: float) -> float:
        if 6.0 < t < 7.0:
            return 400.0  # one wrong pair in sync (once marks have been found at 4.52)
        if 9.0 < t < 17.0 and not 12.0 < t < 13.0:
            return 200.0  # one good pair inside the defect
        return 0.0

    _, found = marked(20.0, offsets)
    [close] = closed(found)
    assert (close.start_s, close.end_s) == pytest.approx((9.02, 17.02))


def test_offset_shorter_than_d_is_not_reported() -> None:
    options = AvSyncOptions(d=3.0)
    _, found = marked(14.0, span(300.0, 6.0, 7.6), options)  # two marks: 2 s from 6.02 to 8.02
    assert found == []
    _, found = marked(14.0, span(300.0, 6.0, 8.6), options)  # three marks: 3 s
    [close] = closed(found)
    assert (close.start_s, close.end_s) == pytest.approx((6.02, 9.02))


def test_offset_until_the_end_is_closed_by_flush() -> None:
    _, found = marked(10.0, span(200.0, 5.0, 99.0))
    [close] = closed(found)
    assert (close.start_s, close.end_s) == pytest.approx((5.02, 10.0))


def test_lost_marks_end_the_defect_and_must_be_found_again() -> None:
    duration = 30.0
    flashes = [t for t in mark_times(duration) if t < 8.0 or t > 20.0]
    onsets = [t + (0.2 if t < 8.0 else 0.0) for t in flashes]
    detector, found = run(programme_video(duration, flashes), programme_audio(duration, onsets))
    [close] = closed(found)
    assert close.start_s == pytest.approx(0.02)  # out of sync from the start: half a spacing before
    assert close.end_s == pytest.approx(7.52 + 0.5)  # half a mark spacing after the last one
    assert detector.marks_present  # found again at 22.52, in sync


def test_drift_is_reported_from_where_it_began() -> None:
    _, found = marked(14.0, lambda t: 30.0 * (t - 2.0) if 2.0 <= t < 10.0 else 0.0)
    opened, close = found
    # Found inside the window, while still within acceptability: a warning, critical at the end.
    assert opened.severity is Severity.WARNING and close.severity is Severity.CRITICAL
    assert close.start_s == pytest.approx(2.0, abs=0.05)
    assert close.end_s == pytest.approx(10.02)
    assert close.metrics["drifting"] == 1.0
    assert close.metrics["drift_ms_per_s"] == pytest.approx(30.0, abs=0.5)
    assert close.metrics["offset_max_ms"] == pytest.approx(30.0 * 7.52, abs=0.5)


def test_drift_too_small_to_matter_is_not_reported() -> None:
    _, found = marked(14.0, lambda t: 3.0 * (t - 2.0) if t >= 2.0 else 0.0)  # 36 ms in 12 s
    assert found == []


def test_hinge_fit_finds_where_a_steady_offset_starts_to_drift() -> None:
    t = np.arange(10, dtype=np.float64) + 0.52
    y = np.where(t < 3.3, 40.0, 40.0 + 25.0 * (t - 3.3))
    t0, slope, residual = hinge_fit(t, y)
    assert (t0, slope, residual) == pytest.approx((3.3, 25.0, 0.0), abs=1e-6)


def test_flashes_and_tones_that_do_not_line_up_are_not_marks() -> None:
    """Hostile programme: a white picture and a 1 kHz pip every 1.2 s on average, unrelated."""
    rng = np.random.default_rng(3)
    duration = 90.0
    flashes = np.cumsum(rng.uniform(0.4, 2.0, 100))
    pips = np.cumsum(rng.uniform(0.4, 2.0, 100))
    detector, found = run(
        programme_video(duration, flashes[flashes < duration - 1]),
        programme_audio(duration, pips[pips < duration - 1]),
    )
    assert len(detector.measurements) > 20  # they did pair up by chance...
    assert not detector.marks_present and found == []  # ...but never like marks


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="critical"):
        AvSyncOptions(max_late_ms=200.0, critical_late_ms=185.0)
    with pytest.raises(ValueError, match="min_pairs"):
        AvSyncOptions(min_pairs=1)


# ------------------------------------------------------------------ timestamps


def packets(
    duration: float, audio_rate: float = 1.0, step_at: float | None = None, seed: int = 0
) -> Iterator[PacketInfo]:
    """A live mux: video at 25 fps in decode order (I P B B), AAC packets whose timestamps run
    ``audio_rate`` times as fast as the video's, sent in bursts of 10 with up to 0.3 s of random
    extra buffering; ``step_at`` adds a one-off 0.4 s step to the audio timestamps."""
    rng = np.random.default_rng(seed)
    queue: list[tuple[float, PacketInfo]] = []
    for i in range(int(duration * FPS)):
        pts = i / FPS + (0.12 if i % 3 == 0 else -0.04)
        queue.append((i / FPS, PacketInfo(t=pts, kind="video", size=2000, key=i % 50 == 0, corrupt=False)))
    step = BLOCK / RATE
    for j in range(int(duration / step)):
        pts = j * step * audio_rate + (0.4 if step_at is not None and j * step >= step_at else 0.0)
        sent = (j // 10 + 1) * 10 * step + rng.uniform(0.0, 0.3)
        queue.append(
            (sent, PacketInfo(t=pts, kind="audio", size=300, key=True, corrupt=False, duration=step))
        )
    for _, packet in sorted(queue, key=lambda x: x[0]):
        yield packet


def feed_packets(stream: Iterable[PacketInfo], t_end: float) -> list[Finding]:
    detector = AvSyncDetector()
    found: list[Finding] = []
    for packet in stream:
        found += detector.feed_packet(packet)
    return found + detector.flush(t_end)


def test_audio_timestamps_running_fast_are_a_pts_drift() -> None:
    opened, close = feed_packets(packets(240.0, audio_rate=1.002), 240.0)
    assert close.key == "pts" and (close.start_s, close.end_s) == (opened.start_s, 240.0)
    assert close.metrics["drift_ms_per_s"] == pytest.approx(2.0, abs=0.3)
    assert close.severity is Severity.CRITICAL  # by the end, diverged beyond 185 ms


def test_interleaving_bursts_and_a_one_off_step_are_not_a_pts_drift() -> None:
    assert feed_packets(packets(240.0), 240.0) == []
    assert feed_packets(packets(240.0, step_at=120.0, seed=1), 240.0) == []


# ------------------------------------------------------------------ real media


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """10-12 s of the generator's H.264/AAC at 192x108, one per case."""
    root = tmp_path_factory.mktemp("av_sync")
    scripts = {
        "clean": ("", True),
        "late200": ("av_offset@3+6:offset_ms=200", True),
        "early80": ("av_offset@3+6:offset_ms=-80", True),
        "late100": ("av_offset@3+6:offset_ms=100", True),
        "drift": ("av_drift@2+8:ms_per_s=30", True),
        "no_marks": ("", False),
    }
    paths = {}
    for name, (script, marks) in scripts.items():
        path = root / f"{name}.ts"
        make_testsrc(path, duration_s=12.0, width=192, height=108, sync_marks=marks, script=script)
        paths[name] = path
    return paths


def analyse(path: Path, everything: bool = False) -> tuple[AvSyncDetector, list[Defect]]:
    """Run the real session on ``path`` (every detector, or av_sync only); its av_sync records."""
    records: list[Defect] = []
    detectors = None if everything else frozenset({"av_sync"})
    config = SessionConfig(url=to_url(str(path)), reconnect=False, detectors=detectors)
    session = StreamSession("test", config, lambda d, _: records.append(d))
    session.run()
    [detector] = [d for d in session.detectors if isinstance(d, AvSyncDetector)]
    return detector, [r for r in records if r.type.value == "av_sync"]


def test_clean_clip_with_marks_measures_in_sync_with_every_detector(clips: dict[str, Path]) -> None:
    detector, records = analyse(clips["clean"], everything=True)
    assert records == []
    assert detector.marks_present
    assert len(detector.measurements) == len(GroundTruth.load(clips["clean"]).sync_marks_s)
    assert max(abs(o) for _, o in detector.measurements) <= 20.0  # measured: under 0.2 ms


def test_clip_200_ms_late_is_one_defect_at_the_truth(clips: dict[str, Path]) -> None:
    _, records = analyse(clips["late200"])
    [truth] = GroundTruth.load(clips["late200"]).defects
    opened, close = records
    assert opened.defect_id == close.defect_id and close.end_s is not None
    assert close.start_s == pytest.approx(truth["start_s"], abs=0.5)
    assert close.end_s == pytest.approx(truth["end_s"], abs=0.5)
    assert close.metrics["offset_ms"] == pytest.approx(200.0, abs=20.0)
    assert close.severity == "critical"


def test_clip_80_ms_early_is_a_defect(clips: dict[str, Path]) -> None:
    _, records = analyse(clips["early80"])
    close = records[-1]
    assert close.start_s == pytest.approx(3.0, abs=0.5)
    assert close.metrics["offset_ms"] == pytest.approx(-80.0, abs=20.0)


def test_clip_100_ms_late_is_within_the_window(clips: dict[str, Path]) -> None:
    detector, records = analyse(clips["late100"])
    assert records == []
    assert max(o for _, o in detector.measurements) == pytest.approx(100.0, abs=20.0)


def test_clip_with_drift_reports_a_drift_from_its_start(clips: dict[str, Path]) -> None:
    _, records = analyse(clips["drift"])
    [truth] = GroundTruth.load(clips["drift"]).defects
    close = records[-1]
    assert close.start_s == pytest.approx(truth["start_s"], abs=0.5)
    assert close.end_s == pytest.approx(truth["end_s"], abs=0.5)
    assert close.metrics["drifting"] == 1.0
    assert close.metrics["drift_ms_per_s"] == pytest.approx(30.0, abs=3.0)


def test_clean_clip_without_marks_reports_nothing(clips: dict[str, Path]) -> None:
    detector, records = analyse(clips["no_marks"], everything=True)
    assert records == []
    assert not detector.marks_present and len(detector.measurements) == 0


# ------------------------------------------------------------------ programme content (no marks)


def content_stream(
    duration: float, offset_ms: Callable[[float], float], seed: int = 0, related: bool = True
) -> tuple[list[VideoFrame], F32]:
    """Programme without marks: a panning blocky texture where a small square flashes white at
    irregular times, and a knock at each flash's time plus ``offset_ms(t)`` over a noise floor
    (``related`` False: the knocks of another seed's times)."""
    rng = np.random.default_rng(seed)

    def times(r: np.random.Generator) -> list[float]:
        found, t = [], r.uniform(0.35, 2.0)
        while t < duration - 1.0:
            found.append(round(t * FPS) / FPS)
            t += r.uniform(0.35, 2.0)
        return found

    flashes = times(rng)
    sounds = flashes if related else times(np.random.default_rng(seed + 99))
    texture = np.kron(rng.integers(60, 160, (H // 6, W // 8)), np.ones((6, 8))).astype(np.uint8)
    where = {round(t * FPS): (int(rng.integers(0, H - 12)), int(rng.integers(0, W - 12))) for t in flashes}
    frames = []
    for i in range(round(duration * FPS)):
        luma = np.roll(texture, i, axis=1)
        if i in where:
            y, x = where[i]
            luma[y : y + 12, x : x + 12] = 235
        frames.append(VideoFrame(t=i / FPS, luma=luma))
    mono = 0.003 * rng.standard_normal(round(duration * RATE))
    for t in sounds:
        i = round((t + offset_ms(t) / 1000.0) * RATE)
        k = np.arange(min(4000, max(0, mono.size - i)))
        mono[i : i + k.size] += (
            0.3 * np.exp(-k / 960.0) * np.sin(2 * np.pi * rng.uniform(300, 3000) * k / RATE)
        )
    return frames, np.stack([mono, mono]).astype(np.float32)


def content_run(
    duration: float,
    offset_ms: Callable[[float], float],
    related: bool = True,
    options: AvSyncOptions | None = None,
) -> tuple[AvSyncDetector, list[Finding]]:
    frames, audio = content_stream(duration, offset_ms, related=related)
    return run(frames, audio, options)


def test_programme_sound_200_ms_late_is_a_content_defect_with_its_confidence() -> None:
    detector, found = content_run(40.0, lambda t: 200.0)
    opened, close = found
    assert opened.key == close.key == "content" and opened.end_s is None
    assert opened.start_s == 0.0 and close.end_s == pytest.approx(40.0, abs=0.1)  # by flush
    assert opened.metrics["offset_ms"] == pytest.approx(200.0, abs=1000.0 / FPS)
    assert opened.metrics["confidence"] >= 0.35 and opened.metrics["windows"] == 3.0
    assert opened.severity == Severity.CRITICAL
    assert detector.content_reports[0][0] == pytest.approx(30.0)  # the third window's end
    assert detector.ctx.extra["av_sync"]["method"] == "content"


def test_programme_sound_inside_the_window_publishes_its_offset_and_no_defect() -> None:
    detector, found = content_run(30.0, lambda t: 80.0)
    assert found == []
    view = detector.ctx.extra["av_sync"]
    assert view["offset_ms"] == pytest.approx(80.0, abs=1000.0 / FPS) and view["confidence"] >= 0.35


def test_unrelated_programme_sound_is_unknown_and_no_defect() -> None:
    detector, found = content_run(40.0, lambda t: 0.0, related=False)
    assert found == []
    assert detector.content_windows and not any(w.known for w in detector.content_windows)
    assert "av_sync" not in detector.ctx.extra  # unknown is not "in sync"


def test_content_defect_ends_when_the_sound_is_back_in_sync() -> None:
    _, found = content_run(75.0, lambda t: 200.0 if t < 40.0 else 0.0)
    [close] = closed(found)
    # The windows straddling the change are mixed; it ended between the last bad one's centre
    # and the first good one's.
    assert 35.0 <= close.end_s <= 50.0  # type: ignore[operator]
    assert close.metrics["offset_ms"] == pytest.approx(200.0, abs=1000.0 / FPS)


def test_marks_take_priority_over_programme_content() -> None:
    detector, found = marked(30.0, lambda t: 0.0)
    assert found == [] and detector.marks_present
    assert len(detector.content_windows) == 0  # not evaluated while marks are followed
    assert detector.ctx.extra["av_sync"]["method"] == "marks"


def test_content_measurement_can_be_switched_off() -> None:
    detector, found = content_run(40.0, lambda t: 200.0, options=AvSyncOptions(content=False))
    assert found == [] and len(detector.content_windows) == 0


@pytest.fixture(scope="module")
def programme(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """40 s of the sync corpus (320x180 H.264/AAC by the ffmpeg CLI): 200 ms late, unrelated."""
    from bench.sync_corpus import constant, make_clip

    root = tmp_path_factory.mktemp("av_sync_content")
    return {
        "late200": make_clip(root / "late200.ts", "knocks", 40.0, constant(200.0), seed=11),
        "unrelated": make_clip(root / "unrelated.ts", "unrelated", 40.0, seed=12),
    }


def test_encoded_programme_200_ms_late_is_one_content_defect(programme: dict[str, Path]) -> None:
    _, records = analyse(programme["late200"])
    opened, close = records
    assert opened.defect_id == close.defect_id and opened.defect_id.endswith("-content")
    assert close.metrics["offset_ms"] == pytest.approx(200.0, abs=1000.0 / FPS)
    assert close.metrics["confidence"] >= 0.35 and close.metrics["windows"] >= 3
    assert close.severity == "critical"


def test_encoded_programme_with_unrelated_sound_reports_nothing(programme: dict[str, Path]) -> None:
    detector, records = analyse(programme["unrelated"])
    assert records == []
    assert not any(w.known for w in detector.content_windows)
