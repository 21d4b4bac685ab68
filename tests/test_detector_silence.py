"""The silence detector on synthetic signals with sample-exact truths."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.media import cached_path, decode, surround_5_1_ac3
from worker.detectors.base import AudioBlock, Finding, Severity, StreamContext
from worker.detectors.silence import (
    BATCH_HOPS,
    FLOOR_DBFS,
    SilenceDetector,
    SilenceOptions,
    dbfs,
    hop_energies,
    window_rms,
)

RATE = 48_000
BLOCK = 1024  # samples per block, as AAC frames
BOUNDARY_S = 0.05  # the boundary accuracy we aim for

Signal = npt.NDArray[np.float32]


def tone(seconds: float, dbfs_rms: float = -20.0, channels: int = 2, hz: float = 440.0) -> Signal:
    """A sine whose RMS is ``dbfs_rms`` dBFS, on every channel."""
    n = round(seconds * RATE)
    amplitude = 10 ** (dbfs_rms / 20) * np.sqrt(2)
    wave = amplitude * np.sin(2 * np.pi * hz * np.arange(n) / RATE)
    return np.tile(wave.astype(np.float32), (channels, 1))


def silence_between(
    total_s: float, start_s: float, end_s: float, channels: int = 2, silent: tuple[int, ...] | None = None
) -> Signal:
    """Tone everywhere except digital silence on ``silent`` channels (all by default) in [start, end)."""
    signal = tone(total_s, channels=channels)
    a, b = round(start_s * RATE), round(end_s * RATE)
    for c in range(channels) if silent is None else silent:
        signal[c, a:b] = 0.0
    return signal


def run(
    signal: Signal,
    options: SilenceOptions | None = None,
    ctx: StreamContext | None = None,
    t0: float = 0.0,
    names: tuple[str, ...] = (),
) -> list[Finding]:
    detector = SilenceDetector(options, ctx)
    findings: list[Finding] = []
    for i in range(0, signal.shape[1], BLOCK):
        block = AudioBlock(t=t0 + i / RATE, samples=signal[:, i : i + BLOCK], rate=RATE, channels=names)
        findings += detector.feed_audio(block)
    findings += detector.flush(t0 + signal.shape[1] / RATE)
    return findings


def span(finding: Finding) -> tuple[float, float]:
    """(start_s, end_s) of a closed finding."""
    assert finding.end_s is not None
    return (finding.start_s, finding.end_s)


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


def test_window_rms_of_a_sine_is_its_rms() -> None:
    signal = tone(1.0, dbfs_rms=-30.0)
    rms = window_rms(hop_energies(signal, 480), 40, 480)
    assert rms.shape == (2, 100 - 40 + 1)
    assert dbfs(float(rms.min())) == pytest.approx(-30.0, abs=0.01)
    assert dbfs(float(rms.max())) == pytest.approx(-30.0, abs=0.01)


def test_dbfs_of_digital_zero_is_the_floor() -> None:
    assert dbfs(0.0) == FLOOR_DBFS


def test_all_channel_silence_reported_once_with_empty_key() -> None:
    findings = run(silence_between(6.0, 1.0, 4.0))
    [silence] = closed(findings)
    assert silence.type == "silence"
    assert silence.key == ""
    assert silence.severity is Severity.CRITICAL
    assert silence.metrics["rms_dbfs"] == FLOOR_DBFS


def test_boundaries_within_a_hop_of_sample_exact_truth() -> None:
    start, end = 1.23456, 4.32109  # off the hop grid and off block boundaries
    [silence] = closed(run(silence_between(6.0, start, end)))
    assert silence.end_s is not None
    assert silence.start_s == pytest.approx(start, abs=0.011)
    assert silence.end_s == pytest.approx(end, abs=0.011)


def test_boundaries_follow_the_block_timestamps() -> None:
    [silence] = closed(run(silence_between(6.0, 1.5, 4.5), t0=100.0))
    assert silence.end_s is not None
    assert silence.start_s == pytest.approx(101.5, abs=BOUNDARY_S)
    assert silence.end_s == pytest.approx(104.5, abs=BOUNDARY_S)


def test_quiet_passage_at_minus_50_dbfs_is_not_silence() -> None:
    assert run(tone(5.0, dbfs_rms=-50.0)) == []


def test_noise_at_minus_70_dbfs_is_silence() -> None:
    rng = np.random.default_rng(1)
    noise = (10 ** (-70 / 20) * rng.standard_normal((2, 3 * RATE))).astype(np.float32)
    [silence] = closed(run(noise))
    assert silence.metrics["rms_dbfs"] == pytest.approx(-70.0, abs=1.0)


def test_isolated_clicks_do_not_break_an_energy_silence() -> None:
    # One -40 dBFS sample every 0.1 s: a peak detector at -60 dB sees sound 10 times a second;
    # the energy (about -77 dBFS over 0.4 s) is silence.
    signal = np.zeros((1, 4 * RATE), np.float32)
    signal[0, :: RATE // 10] = 0.01
    [silence] = closed(run(signal))
    assert span(silence) == pytest.approx((0.0, 4.0))


def test_silence_shorter_than_min_duration_is_not_reported() -> None:
    assert run(silence_between(5.0, 1.0, 2.9)) == []


def test_open_finding_is_emitted_once_silence_lasts_min_duration() -> None:
    detector = SilenceDetector()
    signal = silence_between(6.0, 1.0, 5.0)
    opened_at = None
    for i in range(0, signal.shape[1], BLOCK):
        t = i / RATE
        for finding in detector.feed_audio(AudioBlock(t=t, samples=signal[:, i : i + BLOCK], rate=RATE)):
            if finding.end_s is None:
                opened_at = t + BLOCK / RATE  # the audio time by which it was reported
                assert finding.start_s == pytest.approx(1.0, abs=BOUNDARY_S)
    assert opened_at is not None
    # Reported once 2 s are silent, at the latest one batch of hops and one block later.
    latest = 3.0 + BATCH_HOPS * SilenceOptions().hop_s + 2 * BLOCK / RATE
    assert 3.0 <= opened_at <= latest


def test_one_silent_channel_reported_with_key() -> None:
    findings = run(silence_between(6.0, 1.0, 4.0, silent=(1,)))
    [silence] = closed(findings)
    assert silence.key == "FR"
    assert silence.channels == ("FR",)
    assert silence.end_s is not None
    assert silence.start_s == pytest.approx(1.0, abs=BOUNDARY_S)
    assert silence.end_s == pytest.approx(4.0, abs=BOUNDARY_S)


def test_silent_centre_lfe_and_surrounds_of_a_5_1_stream_are_not_reported() -> None:
    # Stereo carried as 5.1 (FL FR FC LFE BL BR): only the front pair has sound.
    assert run(silence_between(6.0, 0.0, 6.0, channels=6, silent=(2, 3, 4, 5))) == []


def test_dead_front_channel_of_a_5_1_stream_is_reported() -> None:
    [silence] = closed(run(silence_between(6.0, 1.0, 4.0, channels=6, silent=(0,))))
    assert silence.key == "FL"
    assert span(silence) == pytest.approx((1.0, 4.0), abs=BOUNDARY_S)


def test_channels_silent_together_are_not_also_reported_one_by_one() -> None:
    # The right channel drops 5 ms after the left one and comes back 30 ms later.
    signal = tone(6.0)
    signal[0, round(1.000 * RATE) : round(4.000 * RATE)] = 0.0
    signal[1, round(1.005 * RATE) : round(4.030 * RATE)] = 0.0
    assert [f.key for f in run(signal)] == ["", ""]


def test_dead_channel_outlasting_a_total_silence_is_reported_separately() -> None:
    signal = tone(10.0)
    signal[1, 1 * RATE : 9 * RATE] = 0.0  # right channel dead from 1 s to 9 s
    signal[0, 4 * RATE : 6 * RATE + RATE // 2] = 0.0  # both silent from 4 s to 6.5 s
    by_key = {f.key: f for f in closed(run(signal))}
    assert set(by_key) == {"", "FR"}
    assert by_key[""].start_s == pytest.approx(4.0, abs=BOUNDARY_S)
    assert by_key["FR"].start_s == pytest.approx(1.0, abs=BOUNDARY_S)
    assert by_key["FR"].end_s == pytest.approx(9.0, abs=BOUNDARY_S)


def test_context_tracks_when_all_channels_fell_silent() -> None:
    ctx = StreamContext()
    detector = SilenceDetector(ctx=ctx)
    signal = silence_between(6.0, 1.0, 4.0)
    seen: dict[float, float | None] = {}
    for i in range(0, signal.shape[1], BLOCK):
        t = i / RATE
        detector.feed_audio(AudioBlock(t=t, samples=signal[:, i : i + BLOCK], rate=RATE))
        seen[t] = ctx.audio_silent_since
    during = [since for t, since in seen.items() if 1.5 <= t <= 3.5]
    assert all(since == pytest.approx(1.0, abs=BOUNDARY_S) for since in during)
    assert all(since is None for t, since in seen.items() if t < 1.0 or t > 4.5)


def test_one_silent_channel_does_not_set_audio_silent_since() -> None:
    ctx = StreamContext()
    run(silence_between(6.0, 1.0, 4.0, silent=(0,)), ctx=ctx)
    assert ctx.audio_silent_since is None


def test_silence_until_the_end_is_closed_by_flush() -> None:
    ctx = StreamContext()
    findings = run(silence_between(5.0, 1.0, 5.0), ctx=ctx)
    opened, closing = findings
    assert opened.end_s is None
    assert closing.start_s == pytest.approx(1.0, abs=BOUNDARY_S)
    assert closing.end_s == pytest.approx(5.0)
    assert ctx.audio_silent_since is None


def test_mono_silence_uses_the_all_channel_key() -> None:
    [silence] = closed(run(silence_between(5.0, 1.0, 4.0, channels=1)))
    assert silence.key == ""


def test_timestamp_gap_reanchors_times() -> None:
    detector = SilenceDetector()
    quiet = np.zeros((2, BLOCK), np.float32)
    findings: list[Finding] = []
    for i in range(50):  # ~1.07 s of sound
        findings += detector.feed_audio(AudioBlock(t=i * BLOCK / RATE, samples=tone(BLOCK / RATE), rate=RATE))
    for i in range(150):  # ~3.2 s of silence, stamped after a 10 s gap
        findings += detector.feed_audio(AudioBlock(t=10.0 + i * BLOCK / RATE, samples=quiet, rate=RATE))
    findings += detector.flush(10.0 + 150 * BLOCK / RATE)
    opened, closing = findings
    assert opened.end_s is None
    assert closing.start_s == pytest.approx(10.0, abs=BOUNDARY_S)


SIDE_5_1 = ("FL", "FR", "FC", "LFE", "SL", "SR")  # what an AC-3 5.1 decoder names its channels


def test_centre_channel_lost_in_5_1_is_one_defect_naming_it() -> None:
    # Dialogue lost: the centre goes silent for 10 s while the rest of the programme plays on.
    signal = silence_between(16.0, 3.0, 13.0, channels=6, silent=(2,))
    [silence] = closed(run(signal, names=SIDE_5_1))
    assert (silence.key, silence.channels) == ("FC", ("FC",))
    assert span(silence) == pytest.approx((3.0, 13.0), abs=BOUNDARY_S)


def test_centre_silent_for_less_than_other_d_is_not_reported() -> None:
    signal = silence_between(10.0, 3.0, 3.0 + SilenceOptions().other_d - 0.5, channels=6, silent=(2,))
    assert run(signal, names=SIDE_5_1) == []


def test_silent_lfe_is_exempt() -> None:
    assert run(silence_between(16.0, 3.0, 13.0, channels=6, silent=(3,)), names=SIDE_5_1) == []


def test_surround_pair_lost_together_is_one_defect_naming_both() -> None:
    [silence] = closed(run(silence_between(16.0, 3.0, 13.0, channels=6, silent=(4, 5)), names=SIDE_5_1))
    assert (silence.key, silence.channels) == ("SL+SR", ("SL", "SR"))


def test_channel_lost_during_another_loss_joins_its_defect() -> None:
    signal = silence_between(20.0, 2.0, 12.0, channels=6, silent=(2,))
    signal[4, 6 * RATE : 16 * RATE] = 0.0  # SL lost while FC still is, and for longer
    [silence] = closed(run(signal, names=SIDE_5_1))
    assert (silence.key, silence.channels) == ("FC", ("FC", "SL"))
    assert span(silence) == pytest.approx((2.0, 16.0), abs=BOUNDARY_S)


def test_programme_silent_but_for_the_lfe_is_an_all_channel_silence() -> None:
    signal = silence_between(10.0, 2.0, 6.0, channels=6, silent=(0, 1, 2, 4, 5))
    [silence] = closed(run(signal, names=SIDE_5_1))
    assert silence.key == ""
    assert silence.channels == ("FL", "FR", "FC", "SL", "SR")
    assert span(silence) == pytest.approx((2.0, 6.0), abs=BOUNDARY_S)


def test_unnamed_six_channels_are_taken_as_ffmpegs_5_1() -> None:
    [silence] = closed(run(silence_between(16.0, 3.0, 13.0, channels=6, silent=(2,))))
    assert silence.channels == ("FC",)
    assert run(silence_between(16.0, 3.0, 13.0, channels=6, silent=(3,))) == []


def test_centre_channel_lost_in_ffmpeg_encoded_ac3_5_1_is_reported() -> None:
    clip = cached_path("dialogue_lost.ac3", surround_5_1_ac3, 16.0, {"FC": (3.0, 13.0)})
    [silence] = closed(decode(clip, SilenceDetector()))
    assert (silence.key, silence.channels) == ("FC", ("FC",))
    # AC-3's decoder delay (256 samples) moves both ends by 5 ms.
    assert span(silence) == pytest.approx((3.0, 13.0), abs=BOUNDARY_S)
