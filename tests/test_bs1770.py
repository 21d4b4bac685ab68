"""The BS.1770-4 module (worker.bs1770) against known answers: EBU Tech 3341's loudness signals,
and the true peak of sines whose peak falls between samples."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from worker.bs1770 import FLOOR_LUFS, oversample_4x, programme_loudness, true_peak

RATE = 48_000
Signal = npt.NDArray[np.float32]


def tone(seconds: float, dbfs: float, hz: float = 1000.0, phase: float = 0.0) -> Signal:
    """A stereo sine whose peak is ``dbfs`` (EBU Tech 3341's convention), the same in both channels."""
    t = np.arange(round(seconds * RATE)) / RATE
    wave = 10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t + phase)
    return np.tile(wave.astype(np.float32), (2, 1))


def steps(*parts: tuple[float, float]) -> Signal:
    """1 kHz stereo tone in consecutive parts of (seconds, dBFS)."""
    return np.concatenate([tone(seconds, dbfs) for seconds, dbfs in parts], axis=1)


def test_a_1_khz_sine_at_minus_20_dbfs_reads_minus_20_lufs() -> None:
    # BS.1770's -0.691 LU offset cancels the K-filter's gain at 1 kHz: a stereo 1 kHz sine reads
    # its peak level (Tech 3341 cases 1 and 2 at -23 and -33 dBFS; tolerance ±0.1 LU).
    measured = programme_loudness(tone(20.0, -20.0), RATE)
    assert measured.integrated == pytest.approx(-20.0, abs=0.05)
    assert measured.momentary[-1] == pytest.approx(-20.0, abs=0.05)
    assert measured.short_term[-1] == pytest.approx(-20.0, abs=0.05)
    assert measured.momentary.size == 200 - 3 and measured.short_term.size == 200 - 29


@pytest.mark.parametrize(
    "parts",
    [
        ((10.0, -36.0), (60.0, -23.0), (10.0, -36.0)),  # Tech 3341 case 3: the relative gate
        ((10.0, -72.0), (10.0, -36.0), (60.0, -23.0), (10.0, -36.0), (10.0, -72.0)),  # case 4: both
        ((20.0, -26.0), (20.1, -20.0), (20.0, -26.0)),  # case 5: nothing gated, the power mean
    ],
    ids=["case-3", "case-4", "case-5"],
)
def test_tech_3341_gating_cases_integrate_to_minus_23_lufs(parts: tuple[tuple[float, float], ...]) -> None:
    assert programme_loudness(steps(*parts), RATE).integrated == pytest.approx(-23.0, abs=0.1)


def test_audio_under_the_absolute_gate_has_no_integrated_loudness() -> None:
    measured = programme_loudness(tone(2.0, -75.0), RATE)
    assert measured.integrated == FLOOR_LUFS
    assert measured.momentary[-1] == pytest.approx(-75.0, abs=0.05)  # momentary is ungated


def test_the_interpolation_of_an_impulse_is_the_annex_2_coefficients_exactly() -> None:
    # The taps around the impulse as BS.1770-4 Annex 2 prints them (dyadic: exact in float32).
    x = np.zeros((1, 40), np.float32)
    x[0, 20] = 1.0
    y = oversample_4x(x)[0]
    # Row i: 1/8, 3/8, 5/8, 7/8 of the way from sample i + 5 to i + 6.
    assert y[15].tolist() == [0.97216796875, 0.77978515625, 0.465087890625, 0.1373291015625]
    assert y[14].tolist() == [0.1373291015625, 0.465087890625, 0.77978515625, 0.97216796875]


@pytest.mark.parametrize(
    ("divisor", "degrees"),
    [(4, 0.0), (4, 45.0), (6, 60.0), (8, 67.5)],
    ids=["fs/4", "fs/4-45", "fs/6-60", "fs/8-67.5"],
)
def test_a_sine_of_half_full_scale_has_a_true_peak_of_minus_6_dbtp(divisor: int, degrees: float) -> None:
    # The true peak of a sine is its amplitude, wherever the samples fall: 0.5 is -6.02 dBTP.
    # The samples alone miss it (at fs/4 and 45 degrees they read -9.03 dBFS); Tech 3341 allows
    # +0.2 / -0.4 dB for a true-peak meter. Faded in and out: a step out of silence rings.
    x = tone(1.0, 20 * math.log10(0.5), hz=RATE / divisor, phase=math.radians(degrees))
    fade = np.sin(np.linspace(0.0, np.pi / 2, RATE // 50)) ** 2
    x[:, : fade.size] *= fade
    x[:, -fade.size :] *= fade[::-1]
    dbtp = 20 * math.log10(true_peak(x))
    assert -6.02 - 0.4 <= dbtp <= -6.02 + 0.2
    if (divisor, degrees) == (4, 45.0):
        assert 20 * math.log10(float(np.abs(x).max())) == pytest.approx(-9.03, abs=0.01)


def test_the_true_peak_is_never_below_the_sample_peak() -> None:
    x = np.zeros((2, 100), np.float32)
    x[1, 50] = -0.8  # a lone sample: the interpolation overshoots it nowhere
    assert true_peak(x) == pytest.approx(0.8)
    assert true_peak(np.zeros((2, 0), np.float32)) == 0.0
