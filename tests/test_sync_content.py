"""Content-based A/V sync math (worker.sync_content): synthetic onsets and media with exact answers."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from worker.sync_content import (
    HOP_S,
    AudioOnsetTrack,
    ContentSync,
    Thresholds,
    WindowEstimate,
    estimate_track,
    estimate_window,
    peak_centroid,
)

RATE = 48_000
FPS = 25
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def event_times(duration: float, seed: int) -> F64:
    """Irregular event times on the frame grid, 0.35-2 s apart."""
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.35, 2.0, int(duration))
    times = np.cumsum(gaps)
    return np.round(times[times < duration - 1.0] * FPS) / FPS


def onset_series(events: F64, shift_s: float, duration: float, width_s: float = 0.005) -> tuple[float, F64]:
    """An audio onset strength on the HOP_S grid from -1 s: a narrow bump at each event + shift."""
    t = -1.0 + np.arange(round((duration + 2.0) / HOP_S)) * HOP_S
    values = np.zeros(t.size)
    for e in events + shift_s:
        values += 3.0 * np.exp(-0.5 * ((t - e) / width_s) ** 2)
    return -1.0, values


def picture_series(events: F64, duration: float) -> tuple[F64, F64]:
    t = np.arange(round(duration * FPS)) / FPS
    v = np.zeros(t.size)
    v[np.round(events * FPS).astype(int)] = 1.0
    return t, v


def window(
    events: F64, shift_s: float, duration: float = 20.0, audio_events: F64 | None = None
) -> WindowEstimate:
    video_t, video_v = picture_series(events, duration)
    t0, audio_v = onset_series(events if audio_events is None else audio_events, shift_s, duration)
    return estimate_window(video_t, video_v, t0, audio_v, 1.0, Thresholds(), 0.0, duration)


@pytest.mark.parametrize("shift_ms", [-200.0, -40.0, 0.0, 120.0, 400.0])
def test_offset_is_the_lag_of_the_correlation_peak(shift_ms: float) -> None:
    estimate = window(event_times(20.0, 1), shift_ms / 1000.0)
    assert estimate.offset_ms == pytest.approx(shift_ms, abs=1.0)
    assert estimate.confidence > 0.5 and estimate.prominence > 10.0


def test_offset_between_lag_steps_is_refined() -> None:
    estimate = window(event_times(20.0, 2), 0.0925)  # half-way between two 5 ms lags
    assert estimate.offset_ms == pytest.approx(92.5, abs=1.0)


def test_unrelated_sound_is_unknown() -> None:
    estimate = window(event_times(20.0, 3), 0.0, audio_events=event_times(20.0, 4))
    assert not estimate.known and estimate.offset_ms is None
    assert estimate.reason


def test_static_picture_is_unknown_for_too_few_visual_events() -> None:
    estimate = window(np.zeros(0), 0.0, audio_events=event_times(20.0, 5))
    assert not estimate.known and estimate.reason == "too few visual events"


def test_regular_beat_is_ambiguous_and_unknown() -> None:
    beat = (12 + 10 * np.arange(47)) / FPS  # every 0.4 s: its period aliases within ±1 s
    estimate = window(beat, 0.1)
    assert not estimate.known
    assert estimate.reason == "a rival peak"


def test_centroid_of_a_plateau_is_its_middle() -> None:
    lags = np.asarray(np.arange(-100, 101) * 0.005, np.float64)
    corr = np.asarray(np.where(np.abs(lags - 0.15) <= 0.04, 0.5, 0.0), np.float64)  # a drift's spread of lags
    corr[np.argmin(np.abs(lags - 0.12))] = 0.52  # its highest point, off centre
    assert peak_centroid(lags, corr, int(np.argmax(corr)), 0.0) == pytest.approx(0.15, abs=0.004)


# ------------------------------------------------------------------ onsets from samples


def knock(n: int, rng: np.random.Generator) -> F64:
    k = np.arange(n)
    return 0.3 * np.exp(-k / (0.02 * RATE)) * np.sin(2 * np.pi * rng.uniform(300, 3000) * k / RATE)


def feed_audio(track: AudioOnsetTrack, mono: F64, block: int = 19_200, t0: float = 0.0) -> None:
    for j in range(0, mono.size, block):
        track.feed(t0 + j / RATE, np.stack([mono[j : j + block]] * 2).astype(np.float32), RATE)


def test_audio_onset_of_a_knock_over_noise_is_dated_within_3_ms() -> None:
    rng = np.random.default_rng(0)
    mono = 0.01 * rng.standard_normal(4 * RATE)
    onsets = [0.5013, 1.2371, 2.0, 2.73333, 3.3]
    for o in onsets:
        i = round(o * RATE)
        mono[i : i + 4000] += knock(4000, rng)
    track = AudioOnsetTrack(keep_s=60.0)
    feed_audio(track, mono, block=1024)  # AAC-sized blocks: not a multiple of the decimation
    t = track.t0 + np.arange(track.values.size) * HOP_S
    for o in onsets:
        near = np.abs(t - o) < 0.05
        assert t[near][np.argmax(track.values[near])] == pytest.approx(o, abs=0.003)


def test_digital_silence_has_no_audio_onsets() -> None:
    track = AudioOnsetTrack(keep_s=60.0)
    feed_audio(track, np.zeros(2 * RATE))
    assert track.values.size > 0 and not track.values.any()


def test_audio_gap_restarts_the_onset_track() -> None:
    track = AudioOnsetTrack(keep_s=60.0)
    feed_audio(track, np.zeros(RATE))
    feed_audio(track, np.zeros(RATE), t0=5.0)
    assert track.restarts == 2 and track.t0 > 5.0


# ------------------------------------------------------------------ onsets from pictures


def texture(seed: int, h: int = 90, w: int = 160) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 180, (h // 6, w // 8)).astype(np.uint8)
    return np.kron(small, np.ones((6, 8), np.uint8))


def visual_values(pictures: list[npt.NDArray[np.uint8]]) -> F64:
    sync = ContentSync(20.0, 5.0, 1.0)
    for k, luma in enumerate(pictures):
        sync.feed_video(k / FPS, luma)
    return np.array(sync._values)


def test_a_flash_is_a_visual_onset_and_steady_motion_is_not() -> None:
    base = texture(1)
    pictures = []
    for k in range(50):
        luma = np.roll(base, 2 * k, axis=1)  # a steady pan
        if k == 30:
            luma = luma.copy()
            luma[30:50, 60:80] = 235  # a small white flash
        pictures.append(luma)
    values = visual_values(pictures)
    assert values[30] > 0.5
    assert np.delete(values, [30, 31]).max() == 0.0


def test_judder_of_a_pan_is_not_a_visual_onset() -> None:
    base = texture(2)
    shifts = np.cumsum([0, *([0, 3] * 25)])  # moves every other picture (repeated frames)
    values = visual_values([np.roll(base, int(s), axis=1) for s in shifts])
    assert values.max() == 0.0


# ------------------------------------------------------------------ a second audio track


def knock_track(times: F64, seed: int, duration: float = 22.0) -> AudioOnsetTrack:
    rng = np.random.default_rng(seed)
    mono = 0.01 * rng.standard_normal(round(duration * RATE))
    for t in times:
        i = round(t * RATE)
        mono[i : i + 4000] += knock(min(4000, mono.size - i), rng)
    track = AudioOnsetTrack(keep_s=60.0)
    feed_audio(track, mono)
    return track


def test_second_track_120_ms_late_is_measured_against_the_first() -> None:
    shared = event_times(20.0, 6)  # music and effects, in both
    dialogue = event_times(20.0, 7)[::2]  # another language's, in the second only
    ref = knock_track(shared, 1)
    other = knock_track(np.sort(np.concatenate((shared + 0.12, dialogue))), 2)
    estimate = estimate_track(ref.t0, ref.values, other.t0, other.values, 1.0, 19.0)
    assert estimate.offset_ms == pytest.approx(120.0, abs=3.0)
    assert estimate.confidence >= 0.35


def test_second_track_with_nothing_in_common_is_unknown() -> None:
    ref = knock_track(event_times(20.0, 8), 3)
    other = knock_track(event_times(20.0, 9), 4)
    assert not estimate_track(ref.t0, ref.values, other.t0, other.values, 1.0, 19.0).known


def test_a_gap_in_the_pictures_starts_the_windows_afresh() -> None:
    sync = ContentSync(20.0, 5.0, 1.0)
    base = texture(3)
    for k in range(250):  # 10 s
        sync.feed_video(k / FPS, np.roll(base, k, axis=1))
    for k in range(250):  # after a 5 s outage
        sync.feed_video(15.0 + k / FPS, np.roll(base, k, axis=1))
    assert sync._times[0] == 15.0 and sync._next_end == 35.0
