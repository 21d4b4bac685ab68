"""The clipping detector: measures with known answers, synthetic segments, and real AAC."""

from __future__ import annotations

import io

import av
import numpy as np
import numpy.typing as npt
import pytest
from scipy import signal as sps

from tests import media
from worker.bs1770 import HISTORY, LOOKAHEAD, TRUE_PEAK_FIR, oversample_4x, true_peak_windows
from worker.detectors.base import AudioBlock, Finding, Severity
from worker.detectors.clipping import BATCH_S, FLOOR_DB, ClippingDetector, ClippingOptions, db, window_levels

RATE = 48_000
BLOCK = 1024  # samples per block, as AAC frames
WINDOW_S = 0.05  # the default window: the boundary resolution on PCM

Signal = npt.NDArray[np.float32]


def music(seconds: float, peak_dbfs: float = -3.0, seed: int = 0) -> Signal:
    """:func:`tests.media.music` with its sample peak at ``peak_dbfs``."""
    return media.music(seconds, seed, peak_dbfs)


def clip_section(x: Signal, start_s: float, end_s: float, gain_db: float = 20.0) -> Signal:
    """``x`` with [start_s, end_s) amplified by ``gain_db`` and hard-clipped to ±1.0."""
    y = x.copy()
    a, b = round(start_s * RATE), round(end_s * RATE)
    y[:, a:b] = np.clip(y[:, a:b] * 10 ** (gain_db / 20), -1.0, 1.0)
    return y


def sine(seconds: float, amplitude: float, hz: float = 997.0, phase: float = 0.0) -> Signal:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.tile((amplitude * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32), (2, 1))


def blocks_of(x: Signal, t0: float = 0.0) -> list[AudioBlock]:
    return [
        AudioBlock(t=t0 + i / RATE, samples=x[:, i : i + BLOCK], rate=RATE)
        for i in range(0, x.shape[1], BLOCK)
    ]


def run(blocks: list[AudioBlock], options: ClippingOptions | None = None) -> list[Finding]:
    detector = ClippingDetector(options)
    findings: list[Finding] = []
    for block in blocks:
        findings += detector.feed_audio(block)
    last = blocks[-1]
    return findings + detector.flush(last.t + last.duration)


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


def span(finding: Finding) -> tuple[float, float]:
    assert finding.end_s is not None
    return (finding.start_s, finding.end_s)


def padded(x: Signal) -> Signal:
    """``x`` with the silent past and future that the interpolation filter reads."""
    return np.pad(x, ((0, 0), (HISTORY, LOOKAHEAD)))


# -- measures ----------------------------------------------------------------------------------


def test_annex_2_filter_is_a_symmetric_48_tap_prototype() -> None:
    prototype = TRUE_PEAK_FIR.T.ravel()  # interleave the phases: h[4k + p] = FIR[p, k]
    assert prototype.shape == (48,)
    assert np.array_equal(prototype, prototype[::-1])
    assert TRUE_PEAK_FIR.sum(axis=1) == pytest.approx(1.0, abs=0.03)  # each phase passes DC


def test_window_levels_count_samples_near_full_scale_in_the_worst_channel() -> None:
    x = np.zeros((2, 300), np.float32)
    x[1, 10:40] = 0.99  # 30 of 100 samples in window 0, right channel
    x[0, 150] = -1.2  # window 1: one sample, overshooting, negative
    ratio, peak = window_levels(x, 100, 0.98)
    assert ratio.tolist() == pytest.approx([0.30, 0.01, 0.0])
    assert peak.tolist() == pytest.approx([0.99, 1.2, 0.0])


def test_true_peak_of_a_low_tone_is_its_sample_peak() -> None:
    x = sine(0.5, 0.5)
    assert db(float(true_peak_windows(padded(x), x.shape[1], 0.0)[0])) == pytest.approx(-6.02, abs=0.05)


def test_true_peak_finds_the_intersample_peak_of_a_quarter_rate_tone() -> None:
    # fs/4 at 45 degrees: every sample is at ±0.5 (-6.02 dBFS), the waveform peaks at 0.707
    # (-3.01 dBTP). EBU Tech 3341 allows +0.2 / -0.4 dB.
    x = sine(0.5, 0.5 * np.sqrt(2), hz=RATE / 4, phase=np.pi / 4)
    assert db(float(np.abs(x).max())) == pytest.approx(-6.02, abs=0.01)
    true_peak = db(float(true_peak_windows(padded(x), x.shape[1], 0.0)[0]))
    assert -3.01 - 0.4 <= true_peak <= -3.01 + 0.2


def test_oversampling_agrees_with_a_polyphase_resampler_on_band_limited_noise() -> None:
    rng = np.random.default_rng(3)
    noise = sps.sosfilt(sps.butter(8, 15_000, fs=RATE, output="sos"), rng.standard_normal(RATE))
    x = (0.3 * noise / np.abs(noise).max()).astype(np.float32)[np.newaxis]
    ours = np.abs(oversample_4x(padded(x))).max()
    reference = np.abs(sps.resample_poly(x[0].astype(np.float64), 4, 1)).max()
    assert db(float(ours)) == pytest.approx(db(float(reference)), abs=0.1)


def test_gated_true_peak_equals_the_full_computation_where_it_matters() -> None:
    x = padded(music(1.0, peak_dbfs=-0.5, seed=4))
    gate = 0.45
    full = true_peak_windows(x, 2400, 0.0)
    gated = true_peak_windows(x, 2400, gate)
    loud = full >= 2 * gate
    assert loud.any()
    assert np.array_equal(gated[loud], full[loud])
    assert np.all(gated <= full)


def test_db_of_zero_is_the_floor() -> None:
    assert db(0.0) == FLOOR_DB


# -- segments on PCM ---------------------------------------------------------------------------


def test_clipped_section_is_one_critical_segment_with_accurate_boundaries() -> None:
    start, end = 2.03, 4.51  # off the window grid and off block boundaries
    [finding] = closed(run(blocks_of(clip_section(music(7.0), start, end))))
    assert finding.type == "clipping"
    assert finding.key == ""
    assert finding.severity is Severity.CRITICAL
    assert finding.start_s == pytest.approx(start, abs=WINDOW_S)
    assert finding.end_s == pytest.approx(end, abs=WINDOW_S)
    assert finding.metrics["peak_dbfs"] == pytest.approx(0.0, abs=0.01)
    assert finding.metrics["true_peak_dbtp"] >= 0.0
    assert 0.05 < finding.metrics["clipped_ratio"] < 1.0
    assert finding.metrics["duration_s"] == pytest.approx(end - start, abs=2 * WINDOW_S)


def test_short_clipped_section_is_a_warning() -> None:
    [finding] = closed(run(blocks_of(clip_section(music(4.0), 1.0, 1.5))))
    assert finding.severity is Severity.WARNING
    assert span(finding) == pytest.approx((1.0, 1.5), abs=WINDOW_S)


def test_clean_programme_peaking_at_minus_3_dbfs_gives_nothing() -> None:
    assert run(blocks_of(music(10.0, peak_dbfs=-3.0))) == []


def test_loud_unclipped_music_peaking_at_minus_half_a_db_gives_nothing() -> None:
    # Only a few note onsets reach -0.5 dBFS (over -1 dBTP): isolated windows, never d's worth.
    assert run(blocks_of(music(10.0, peak_dbfs=-0.5))) == []


def test_steady_tone_over_the_true_peak_ceiling_is_a_short_warning_not_clipping() -> None:
    x = np.concatenate((music(2.0), sine(1.0, 10 ** (-0.5 / 20)), music(2.0, seed=1)), axis=1)
    [finding] = closed(run(blocks_of(x)))
    assert finding.severity is Severity.WARNING
    assert span(finding) == pytest.approx((2.0, 3.0), abs=WINDOW_S)
    assert finding.metrics["clipped_ratio"] == 0.0
    assert finding.metrics["true_peak_dbtp"] == pytest.approx(-0.5, abs=0.05)
    # With the true-peak criterion off only clipping counts.
    assert run(blocks_of(x), ClippingOptions(tp_dbtp=float("inf"))) == []


def test_burst_shorter_than_d_gives_nothing() -> None:
    assert run(blocks_of(clip_section(music(3.0), 1.0, 1.12))) == []


def test_short_gaps_are_bridged_and_long_ones_split() -> None:
    x = clip_section(clip_section(music(6.0), 1.0, 2.0), 2.4, 3.0)  # 0.4 s apart: one segment
    [one] = closed(run(blocks_of(x)))
    assert span(one) == pytest.approx((1.0, 3.0), abs=WINDOW_S)
    x = clip_section(clip_section(music(6.0), 1.0, 2.0), 3.0, 4.0)  # 1 s apart: two
    first, second = closed(run(blocks_of(x)))
    assert span(first) == pytest.approx((1.0, 2.0), abs=WINDOW_S)
    assert span(second) == pytest.approx((3.0, 4.0), abs=WINDOW_S)


def test_clipping_on_every_beat_is_one_segment() -> None:
    # A hot master: every beat (0.5 s) clips for 60 ms. Each clip alone is shorter than d.
    x = music(6.0)
    for beat in np.arange(1.0, 5.0, 0.5):
        x = clip_section(x, beat, beat + 0.06)
    [finding] = closed(run(blocks_of(x)))
    assert span(finding) == pytest.approx((1.0, 4.56), abs=WINDOW_S)
    assert finding.severity is Severity.WARNING


def test_open_finding_once_flagged_time_reaches_d() -> None:
    detector = ClippingDetector()
    opened_at = None
    for block in blocks_of(clip_section(music(4.0), 1.0, 3.0)):
        for finding in detector.feed_audio(block):
            if finding.end_s is None:
                opened_at = block.t + block.duration
                assert finding.start_s == pytest.approx(1.0, abs=WINDOW_S)
    assert opened_at is not None
    assert 1.2 <= opened_at <= 1.2 + BATCH_S + BLOCK / RATE


def test_clipping_until_the_end_is_closed_by_flush() -> None:
    opened, closing = run(blocks_of(clip_section(music(3.0), 1.0, 3.0)))
    assert opened.end_s is None
    assert closing.start_s == opened.start_s
    assert span(closing) == pytest.approx((1.0, 3.0), abs=WINDOW_S)


def test_times_follow_block_timestamps_and_a_gap_ends_a_segment() -> None:
    x = clip_section(music(3.0), 1.0, 3.0)
    blocks = blocks_of(x, t0=100.0) + blocks_of(clip_section(music(2.0), 0.0, 1.0), t0=110.0)
    first, second = closed(run(blocks))
    assert span(first) == pytest.approx((101.0, 103.0), abs=WINDOW_S)
    assert span(second) == pytest.approx((110.0, 111.0), abs=WINDOW_S)


@pytest.mark.parametrize(
    "kwargs",
    [{"level": 0.0}, {"ratio": 0.0}, {"tp_dbtp": -30.0}, {"window_s": 0.0}, {"d": -1.0}, {"gap_s": 11.0}],
)
def test_options_out_of_range_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ClippingOptions(**kwargs)


# -- real AAC ----------------------------------------------------------------------------------


def aac_round_trip(x: Signal) -> list[AudioBlock]:
    """Encode ``x`` (stereo, 48 kHz) to AAC with PyAV, decode it, and cut it into AudioBlocks as
    the worker does (fltp 48 kHz through an AudioResampler, timestamps from the frames)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=RATE, layout="stereo")
        stream.bit_rate = 128_000
        for i in range(0, x.shape[1], BLOCK):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x[:, i : i + BLOCK]), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = RATE, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    buffer.seek(0)
    blocks: list[AudioBlock] = []
    with av.open(buffer) as source:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
        for frame in source.decode(audio=0):
            t = float(frame.pts * frame.time_base)
            for out_frame in resampler.resample(frame):
                samples = np.ascontiguousarray(out_frame.to_ndarray(), dtype=np.float32)
                blocks.append(AudioBlock(t=t, samples=samples, rate=RATE))
                t += samples.shape[1] / RATE
    return blocks


def test_clipping_survives_aac() -> None:
    start, end = 3.0, 5.0
    clipped = clip_section(music(8.0, peak_dbfs=-6.0, seed=2), start, end)
    blocks = aac_round_trip(clipped)
    # The trap: after AAC the clipped section has no flat tops, it overshoots full scale.
    decoded = np.concatenate([b.samples for b in blocks], axis=1)
    assert np.abs(decoded).max() > 1.05
    assert np.count_nonzero(np.abs(decoded) == 1.0) < 10

    [finding] = closed(run(blocks))
    assert finding.start_s == pytest.approx(start, abs=0.2)
    assert finding.end_s == pytest.approx(end, abs=0.2)
    assert finding.severity is Severity.CRITICAL
    assert finding.metrics["peak_dbfs"] > 0.0


def test_clean_programme_through_aac_gives_nothing() -> None:
    assert run(aac_round_trip(music(8.0, peak_dbfs=-1.0, seed=2))) == []


def test_segment_names_the_channels_that_clipped() -> None:
    # 5.1(side): only the centre is driven into the rails, the rest of the programme is clean.
    clean = music(4.0, peak_dbfs=-6.0)
    x = np.concatenate([clean, clean, clean]) * 0.5
    x[2] = clip_section(clean, 1.0, 2.5)[0]
    names = ("FL", "FR", "FC", "LFE", "SL", "SR")
    blocks = [
        AudioBlock(t=i / RATE, samples=x[:, i : i + BLOCK], rate=RATE, channels=names)
        for i in range(0, x.shape[1], BLOCK)
    ]
    [segment] = closed(run(blocks))
    assert segment.channels == ("FC",)
    assert span(segment) == pytest.approx((1.0, 2.5), abs=WINDOW_S)
