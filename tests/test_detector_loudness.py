"""The loudness detector: BS.1770 metering against known answers and pyloudnorm, and excursions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest
from scipy.signal import lfilter

from tests.media import music
from worker import iir
from worker.bs1770 import (
    FLOOR_LUFS,
    LoudnessHistogram,
    channel_weights,
    integrated_loudness,
    k_weighting,
    k_weighting_filter,
    sliding_loudness,
    weighted_power,
)
from worker.detectors.base import AudioBlock, Finding, Severity, StreamContext
from worker.detectors.clipping import ClippingOptions
from worker.detectors.loudness import LoudnessDetector, LoudnessOptions, step_onset
from worker.detectors.silence import SilenceDetector

RATE = 48_000
BLOCK = 1024  # samples per block, as AAC frames
BOUNDARY_S = 0.2  # boundary accuracy against a sample-exact gain change
HOP = RATE // 10  # one 100 ms sub-block

Signal = npt.NDArray[np.float32]


def speech_like(seconds: float, seed: int = 0) -> Signal:
    """``music`` cut into syllables (0.1-0.4 s) and pauses (0.05-0.6 s, sometimes up to 1.5 s)."""
    rng = np.random.default_rng(seed + 1000)
    x = music(seconds, seed)
    on = np.zeros(x.shape[1], np.float32)
    at = 0
    while at < on.size:
        syllable = round(rng.uniform(0.1, 0.4) * RATE)
        pause = round(rng.uniform(0.05, 0.6 if rng.random() > 0.1 else 1.5) * RATE)
        on[at : at + syllable] = 1.0
        at += syllable + pause
    return x * on


def noise(seconds: float, seed: int = 0) -> Signal:
    return np.random.default_rng(seed).standard_normal((2, round(seconds * RATE))).astype(np.float32)


def measured(x: Signal) -> float:
    """Integrated loudness (LUFS) of ``x`` with the module's own pure functions."""
    b, a = k_weighting_filter(RATE)
    power = weighted_power(lfilter(b, a, x, axis=-1), channel_weights(x.shape[0]), HOP)
    momentary = np.lib.stride_tricks.sliding_window_view(power, 4).mean(axis=1)
    return integrated_loudness(momentary)


def at_lufs(x: Signal, target: float) -> Signal:
    """``x`` scaled to an integrated loudness of ``target`` LUFS."""
    return (x * 10 ** ((target - measured(x)) / 20)).astype(np.float32)


def gain(x: Signal, start_s: float, end_s: float, gain_db: float) -> Signal:
    y = x.copy()
    y[:, round(start_s * RATE) : round(end_s * RATE)] *= 10 ** (gain_db / 20)
    return y


def sine(seconds: float, dbfs: float, hz: float = 1000.0) -> Signal:
    """Stereo sine whose *peak* is ``dbfs`` (EBU Tech 3341's convention)."""
    t = np.arange(round(seconds * RATE)) / RATE
    return np.tile((10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32), (2, 1))


def blocks_of(x: Signal, block: int = BLOCK, t0: float = 0.0) -> list[AudioBlock]:
    return [
        AudioBlock(t=t0 + i / RATE, samples=x[:, i : i + block], rate=RATE)
        for i in range(0, x.shape[1], block)
    ]


def run(
    x: Signal,
    options: LoudnessOptions | None = None,
    ctx: StreamContext | None = None,
    t0: float = 0.0,
) -> list[Finding]:
    detector = LoudnessDetector(options, ctx)
    findings: list[Finding] = []
    for block in blocks_of(x, t0=t0):
        findings += detector.feed_audio(block)
    return findings + detector.flush(t0 + x.shape[1] / RATE)


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


def span(finding: Finding) -> tuple[float, float]:
    assert finding.end_s is not None
    return (finding.start_s, finding.end_s)


def meter_series(x: Signal) -> tuple[list[float], list[float], float]:
    """The detector's momentary and short-term loudness after every sub-block, and integrated."""
    detector = LoudnessDetector()
    momentary: list[float] = []
    short_term: list[float] = []
    for block in blocks_of(x, block=HOP):
        detector.feed_audio(block)
        if detector.momentary_lufs is not None:
            momentary.append(detector.momentary_lufs)
        if detector.short_term_lufs is not None:
            short_term.append(detector.short_term_lufs)
    return momentary, short_term, detector.integrated_lufs


# -- measurement -------------------------------------------------------------------------------


def test_k_weighting_at_48_khz_is_the_bs_1770_tables() -> None:
    tables = [
        [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
        [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
    ]
    assert k_weighting(RATE) == pytest.approx(np.array(tables), abs=1e-12)


def test_the_k_filter_is_scipys_lfilter_bit_for_bit_across_blocks() -> None:
    assert iir._kernel() is not None  # the compiled kernel, not the fallback
    b, a = k_weighting_filter(RATE)
    x = music(1.0)
    zi = np.zeros((2, 4))
    ours = []
    for part in np.array_split(x, 7, axis=1):  # the state carries across blocks
        y, zi = iir.lfilter(b, a, part, zi)
        ours.append(y)
    theirs, zf = lfilter(b, a, x, axis=-1, zi=np.zeros((2, 4)))
    assert np.array_equal(np.concatenate(ours, axis=1), theirs) and np.array_equal(zi, zf)


def test_the_loudness_detector_does_not_import_scipy_signal() -> None:
    # scipy.signal's import is 0.7 s of CPU: most of `avmon analyze`'s start-up when it was used.
    code = "import sys, worker.detectors.loudness; print('scipy.signal' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_channel_weights_leave_out_the_lfe_and_lift_the_surrounds() -> None:
    assert channel_weights(2).tolist() == [1.0, 1.0]
    assert channel_weights(6).tolist() == [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]


@pytest.mark.parametrize("dbfs", [-23.0, -33.0])
def test_tech_3341_stereo_sine_reads_its_level(dbfs: float) -> None:
    # EBU Tech 3341 cases 1 and 2: a 1 kHz stereo sine at -23 (-33) dBFS reads -23 (-33) LUFS.
    momentary, short_term, integrated = meter_series(sine(20.0, dbfs))
    assert integrated == pytest.approx(dbfs, abs=0.1)
    assert momentary[-1] == pytest.approx(dbfs, abs=0.1)
    assert short_term[-1] == pytest.approx(dbfs, abs=0.1)


@pytest.mark.parametrize("signal", [music(20.0, seed=1), 0.05 * noise(20.0, seed=2)], ids=["music", "noise"])
def test_agrees_with_pyloudnorm(signal: Signal) -> None:
    x = signal.T.astype(np.float64)
    momentary, short_term, integrated = meter_series(signal)

    assert integrated == pytest.approx(pyloudnorm.Meter(RATE).integrated_loudness(x), abs=0.5)
    # pyloudnorm's per-block loudness is momentary loudness with 400 ms blocks and short-term
    # loudness with 3 s blocks, at a 100 ms hop as ours.
    for seconds, ours in ((0.4, momentary), (3.0, short_term)):
        meter = pyloudnorm.Meter(RATE, block_size=seconds, overlap=1 - 0.1 / seconds)
        meter.integrated_loudness(x)
        reference = np.array(meter.blockwise_loudness)
        n = min(len(ours), len(reference))
        assert n >= len(reference) - 1
        assert np.abs(np.array(ours[:n]) - reference[:n]).max() < 0.5


def test_histogram_integrates_like_the_exact_gating() -> None:
    rng = np.random.default_rng(5)
    # Blocks at many levels, some under the absolute gate and some under the relative one.
    levels = np.concatenate((rng.uniform(-30, -15, 500), rng.uniform(-50, -35, 200), np.full(50, -90.0)))
    powers = 10 ** ((levels + 0.691) / 10)
    histogram = LoudnessHistogram()
    for power in powers:
        histogram.add(float(power))
    assert histogram.integrated() == pytest.approx(integrated_loudness(powers), abs=0.05)
    assert LoudnessHistogram().integrated() == FLOOR_LUFS


def test_sliding_loudness_is_the_mean_power_of_the_window() -> None:
    power = np.array([1.0, 1.0, 0.0, 0.0])
    assert sliding_loudness(power, 2).tolist() == pytest.approx(
        [-0.691, -0.691 - 3.0103, FLOOR_LUFS], abs=1e-3
    )


def test_step_onset_finds_the_first_element_after_a_step() -> None:
    rng = np.random.default_rng(0)
    levels = np.concatenate((np.full(21, -23.0), np.full(9, -11.0))) + rng.normal(0, 2, 30)
    assert step_onset(levels, rising=True) == 21
    # Only steps the right way count: from a loud start to a quiet end is a step down.
    falling = levels[::-1]
    assert step_onset(falling, rising=False) == 9
    assert step_onset(levels, rising=True, first=25) == 25


def test_meter_does_not_depend_on_block_size() -> None:
    x = music(8.0, seed=3)
    results = []
    for block in (HOP, BLOCK, 777):
        detector = LoudnessDetector()
        for b in blocks_of(x, block=block):
            detector.feed_audio(b)
        results.append((detector.short_term_lufs, detector.integrated_lufs))
    assert results[1] == pytest.approx(results[0], abs=1e-6)
    assert results[2] == pytest.approx(results[0], abs=1e-6)


# -- excursions --------------------------------------------------------------------------------


def programme(seconds: float, seed: int = 0, lufs: float = -23.0) -> Signal:
    return at_lufs(music(seconds, seed=seed), lufs)


@pytest.mark.parametrize("seed", [0, 1])
def test_loud_section_is_one_critical_defect_with_accurate_boundaries(seed: int) -> None:
    start, end = 8.37, 28.37  # +12 dB: -11 LUFS in a -23 LUFS programme
    findings = run(gain(programme(36.0, seed=seed), start, end, 12.0))
    [finding] = closed(findings)
    assert finding.type == "loudness"
    assert finding.key == "loud"
    assert finding.severity is Severity.CRITICAL  # 12 LU over: beyond twice the tolerance
    assert finding.start_s == pytest.approx(start, abs=BOUNDARY_S)
    assert finding.end_s == pytest.approx(end, abs=BOUNDARY_S)
    assert finding.metrics["lufs"] == pytest.approx(-11.0, abs=0.5)
    assert finding.metrics["target_lufs"] == -23.0
    assert -23.0 < finding.metrics["integrated_lufs"] < -11.0


def test_loud_speech_with_pauses_has_boundaries_within_half_a_second() -> None:
    start, end = 12.3, 31.8
    [finding] = closed(run(gain(at_lufs(speech_like(45.0, seed=4), -23.0), start, end, 12.0)))
    assert finding.key == "loud"
    assert span(finding) == pytest.approx((start, end), abs=0.5)


def test_loud_programme_starting_after_a_pause_is_dated_where_it_starts() -> None:
    # Speech, a 1.2 s pause, then a programme 10 LU louder from its first syllable: the gain
    # change fits equally well anywhere in the pause; it is dated at the loud audio, not before.
    x = at_lufs(speech_like(45.0, seed=4), -23.0)
    start, end = 12.0, 32.0
    x[:, round((start - 1.2) * RATE) : round(start * RATE)] = 0.0
    x[:, round(start * RATE) : round((start + 0.3) * RATE)] = at_lufs(music(1.0, seed=9), -23.0)[
        :, : round(0.3 * RATE)
    ]
    [finding] = closed(run(gain(x, start, end, 10.0)))
    assert finding.key == "loud"
    assert finding.start_s == pytest.approx(start, abs=0.1)


def test_step_onset_places_a_step_up_after_a_pause_and_a_step_down_before_it() -> None:
    levels = np.array([-23.0] * 10 + [-80.0] * 5 + [-13.0] * 10)
    assert step_onset(levels, rising=True, gate=-50.0) == 15
    assert step_onset(levels[::-1], rising=False, gate=-50.0) == 10


def test_quiet_section_is_a_defect_too() -> None:
    start, end = 12.0, 30.55  # -8 dB: -31 LUFS, under -28 but not twice the tolerance
    [finding] = closed(run(gain(at_lufs(noise(40.0), -23.0), start, end, -8.0)))
    assert finding.key == "quiet"
    assert finding.severity is Severity.WARNING
    assert span(finding) == pytest.approx((start, end), abs=BOUNDARY_S)
    assert finding.metrics["lufs"] == pytest.approx(-31.0, abs=0.5)


def test_a_gain_change_on_a_steady_tone_is_placed_inside_the_sub_block() -> None:
    start, end = 10.037, 23.071  # off the 100 ms grid: the sub-blocks either side hold a mix
    [finding] = closed(run(gain(sine(30.0, -20.0), start, end, -20.0)))
    assert finding.key == "quiet"
    assert span(finding) == pytest.approx((start, end), abs=0.005)


def test_excursion_of_exactly_d_off_the_sub_block_grid_is_reported() -> None:
    start = 10.063
    findings = run(gain(sine(30.0, -20.0), start, start + 10.0, -20.0), LoudnessOptions(d=10.0))
    [finding] = closed(findings)
    assert finding.metrics["duration_s"] == pytest.approx(10.0, abs=0.01)


def test_programme_within_tolerance_gives_nothing() -> None:
    # -24 LUFS, its level wandering ±2 dB over a few seconds: always in -23 ± 5.
    x = programme(40.0, lufs=-24.0)
    t = np.arange(x.shape[1]) / RATE
    wander = (10 ** (2.0 * np.sin(2 * np.pi * t / 7.0) / 20)).astype(np.float32)
    assert run(x * wander) == []


def test_atsc_target_is_an_option() -> None:
    x = programme(30.0, lufs=-24.0)
    assert run(x, LoudnessOptions(target=-24.0, tolerance=2.0)) == []
    [finding] = closed(run(x, LoudnessOptions(target=-31.0, tolerance=2.0)))
    assert finding.key == "loud"


def test_atsc_a85_profile_targets_minus_24_lkfs_with_a_minus_2_dbtp_ceiling() -> None:
    a85 = LoudnessOptions.for_profile("atsc_a85")
    assert (a85.target, a85.tolerance) == (-24.0, LoudnessOptions().tolerance)
    assert ClippingOptions.for_profile("atsc_a85").tp_dbtp == -2.0
    assert (LoudnessOptions.for_profile("ebu_r128"), ClippingOptions.for_profile("ebu_r128")) == (
        LoudnessOptions(),
        ClippingOptions(),
    )
    # -18.5 LUFS is within R128's -23 ± 5 but 5.5 LU over A/85's -24.
    x = programme(30.0, lufs=-18.5)
    assert run(x) == []
    [finding] = closed(run(x, a85))
    assert (finding.key, finding.metrics["target_lufs"]) == ("loud", -24.0)


def test_profile_options_can_be_changed_and_unknown_profiles_are_refused() -> None:
    assert LoudnessOptions.for_profile("atsc_a85", tolerance=2.0).tolerance == 2.0
    with pytest.raises(ValueError, match="atsc_a85"):
        LoudnessOptions.for_profile("arib")


def test_digital_silence_gives_nothing() -> None:
    assert run(np.zeros((2, 20 * RATE), np.float32)) == []


def test_silence_inside_a_programme_is_not_too_quiet() -> None:
    x = programme(40.0)
    x[:, 10 * RATE : 25 * RATE] = 0.0
    assert run(x) == []


def test_quiet_audio_is_not_judged_while_the_silence_detector_says_silent() -> None:
    x = at_lufs(noise(20.0), -45.0)  # quiet but audible: a defect of its own
    [finding] = closed(run(x))
    assert finding.key == "quiet"
    assert run(x, ctx=StreamContext(audio_silent_since=0.0)) == []


def test_quiet_programme_then_silence_ends_where_the_silence_starts() -> None:
    # The session feeds the loudness detector before the silence detector, sharing the context.
    x = at_lufs(noise(30.0), -40.0)
    x[:, 20 * RATE :] = 0.0
    ctx = StreamContext()
    loudness, silence = LoudnessDetector(ctx=ctx), SilenceDetector(ctx=ctx)
    findings: list[Finding] = []
    for block in blocks_of(x):
        findings += loudness.feed_audio(block)
        silence.feed_audio(block)
    findings += loudness.flush(30.0)
    [finding] = closed(findings)
    assert finding.key == "quiet"
    assert span(finding) == pytest.approx((0.0, 20.0), abs=BOUNDARY_S)


def test_a_short_return_into_range_does_not_split_an_excursion() -> None:
    # Loud, 3.3 s back at the target, loud again: short-term loudness is in range for about 1.2 s.
    x = gain(gain(programme(45.0), 8.0, 20.0, 12.0), 23.3, 40.0, 12.0)
    [one] = closed(run(x, LoudnessOptions(gap_s=2.0)))
    assert span(one) == pytest.approx((8.0, 40.0), abs=BOUNDARY_S)
    first, second = closed(run(x, LoudnessOptions(gap_s=0.0)))
    assert span(first) == pytest.approx((8.0, 20.0), abs=BOUNDARY_S)
    assert span(second) == pytest.approx((23.3, 40.0), abs=BOUNDARY_S)


def test_loud_burst_shorter_than_d_gives_nothing() -> None:
    assert run(gain(programme(30.0), 10.0, 15.0, 12.0)) == []


def test_open_finding_waits_for_the_window_to_start_d_after_the_excursion() -> None:
    x = gain(programme(40.0), 10.0, 35.0, 12.0)
    detector = LoudnessDetector()
    opened_at = None
    for block in blocks_of(x):
        for finding in detector.feed_audio(block):
            if finding.end_s is None:
                opened_at = block.t + block.duration
                assert finding.start_s == pytest.approx(10.0, abs=BOUNDARY_S)
    assert opened_at == pytest.approx(10.0 + 10.0 + 3.0, abs=0.2)


def test_excursion_until_the_end_is_closed_by_flush() -> None:
    opened, closing = run(gain(programme(30.0), 10.0, 30.0, 12.0))
    assert opened.end_s is None
    assert closing.start_s == opened.start_s
    assert span(closing) == pytest.approx((10.0, 30.0), abs=BOUNDARY_S)
    assert closing.metrics["duration_s"] == pytest.approx(20.0, abs=BOUNDARY_S)


def test_programme_loud_from_the_start_starts_at_the_start() -> None:
    [finding] = closed(run(programme(25.0, lufs=-12.0), t0=100.0))
    assert span(finding) == pytest.approx((100.0, 125.0), abs=BOUNDARY_S)


def test_lfe_does_not_count() -> None:
    x = np.zeros((6, 20 * RATE), np.float32)
    x[:2] = programme(20.0)
    x[3] = 0.5 * noise(20.0)[0]  # a loud LFE channel
    assert run(x) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": 5.0},
        {"tolerance": 0.0},
        {"d": -1.0},
        {"gap_s": 11.0},
        {"floor_lufs": -80.0},
        {"floor_lufs": -20.0},
    ],
)
def test_options_out_of_range_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoudnessOptions(**kwargs)
