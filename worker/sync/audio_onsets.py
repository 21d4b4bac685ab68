"""Audio onset strength: the rectified rise of log band energies, on a regular 5 ms grid.

Band powers are taken on 20 ms Hann frames every HOP_S (octave bands from 200 Hz), and an
onset is a rise of a band's level over its previous frame beyond AUDIO_RISE_DB, summed over the
bands (knocks, cuts of sound, speech syllables). :class:`AudioOnsetTrack` keeps the onsets of a
stream fed block by block: a decimation to about ANALYSIS_HZ and one batched real FFT per block.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

HOP_S = 0.005  # audio onset step (s): the lag grid
FRAME_HOPS = 4  # audio frames are four hops (20 ms), Hann-windowed: a few bins per low band
# Audio is analysed at about this rate (Hz): the input decimated by an integer factor (mean of
# groups of samples: a crude low-pass whose aliases still rise with the onset they come from),
# a third of the FFT work at 48 kHz.
ANALYSIS_HZ = 16_000
# Band edges (Hz) of the audio onset: octaves from 200 Hz (below, a 20 ms frame has too few
# bins for a steady level), so a knock in one band shows over ambience in another.
BAND_EDGES_HZ = (200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0, 24000.0)
AUDIO_FLOOR = 1e-10  # band power floor (mean square, full scale 1): digital silence gives no rises
AUDIO_RISE_DB = 3.0  # band rises below this (dB per 5 ms) are fluctuation of steady sound
# A log rise peaks as the onset enters the frame's Hann taper, before the frame centres pass it:
# measured 4-7.5 ms early on knocks over noise, so rises are dated this much later.
ONSET_LAG_S = 0.006
AUDIO_EVENT = 1.0  # onset strength of an audio event: 1.7 dB above AUDIO_RISE_DB, summed
AUDIO_SMOOTH_HOPS = 3  # half-width of the triangle that smooths the onset (15 ms): codec smear


@functools.cache
def band_matrix(rate: int, n_fft: int) -> F64:
    """(n_fft // 2 + 1, bands) 0/1 matrix: which rfft bin belongs to which band of BAND_EDGES_HZ."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = np.array(BAND_EDGES_HZ)
    edges[-1] = max(edges[-1], rate / 2.0 + 1.0)
    bands = np.searchsorted(edges, freqs, side="right") - 1
    matrix = np.zeros((freqs.size, edges.size - 1))
    ok = (bands >= 0) & (bands < edges.size - 1)
    matrix[np.flatnonzero(ok), bands[ok]] = 1.0
    matrix[0] = 0.0  # no DC
    return matrix


@functools.cache
def _hann(size: int) -> tuple[F64, float]:
    """A symmetric Hann window of ``size`` (no zero ends) and its power normaliser."""
    window = np.hanning(size + 2)[1:-1]
    return window, float(size * (window**2).sum())


def band_levels_db(mono: F64, rate: int) -> F64:
    """(frames, bands) band power in dB of ``mono`` (n samples, full scale ±1) on Hann frames of
    FRAME_HOPS·HOP_S every HOP_S; frame j starts at sample j·hop. Empty if too short."""
    hop = round(HOP_S * rate)
    size = FRAME_HOPS * hop
    if mono.size < size:
        return np.zeros((0, len(BAND_EDGES_HZ) - 1))
    count = (mono.size - size) // hop + 1
    mono = np.ascontiguousarray(mono, np.float64)
    frames = np.lib.stride_tricks.as_strided(mono, shape=(count, size), strides=(hop * 8, 8), writeable=False)
    window, norm = _hann(size)
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    band = power @ band_matrix(rate, size) / norm
    return 10.0 * np.log10(band + AUDIO_FLOOR)


def audio_onsets(levels_db: F64, previous_db: F64 | None = None) -> F64:
    """Onset strength per frame: log(1 + the rises (dB) of each band over its previous frame
    above AUDIO_RISE_DB, summed over bands), compressed as the visual onsets are.
    ``previous_db`` is the frame before ``levels_db[0]`` (None: the first frame has no rise)."""
    if levels_db.shape[0] == 0:
        return np.zeros(0)
    before = levels_db[:1] if previous_db is None else previous_db[None, :]
    rise = np.diff(levels_db, axis=0, prepend=before)
    strength: F64 = np.log1p(np.maximum(rise - AUDIO_RISE_DB, 0.0).sum(axis=1))
    return strength


def smooth(values: F64, half_width: int = AUDIO_SMOOTH_HOPS) -> F64:
    """``values`` convolved with a unit-sum triangle of ``half_width`` samples each side (no delay)."""
    if half_width <= 0 or values.size == 0:
        return values
    kernel = np.concatenate((np.arange(1, half_width + 2), np.arange(half_width, 0, -1))).astype(np.float64)
    return np.convolve(values, kernel / kernel.sum(), mode="same")


class AudioOnsetTrack:
    """The audio onset strength of a stream, on a regular HOP_S grid, from blocks fed in order.

    ``t0`` is the time (s) the first value is centred on: the rise between frames j-1 and j is
    dated between their centres, frame j's start plus half a hop. A gap or overlap in the audio
    (beyond ``tolerance_s``) starts the track afresh."""

    def __init__(self, keep_s: float, tolerance_s: float = 0.002) -> None:
        self.keep_s = keep_s
        self.tolerance_s = tolerance_s
        self.rate = 0  # input rate, Hz
        self.factor = 1  # decimation: analysed at rate / factor
        self.t0 = 0.0
        self.values = np.zeros(0)
        self._raw = np.zeros((0, 0), np.float32)  # input samples not decimated (< ``factor``)
        self._pending = np.zeros(0)  # decimated samples not yet in a complete hop
        self._next_t = math.nan  # media time the next block should start at
        self._last_db: F64 | None = None
        self.restarts = 0

    @property
    def end(self) -> float:
        """Time (s) up to which the onsets are known (the centre of the last value, plus a hop)."""
        return self.t0 + self.values.size * HOP_S

    def _restart(self, t: float, rate: int) -> None:
        self.restarts += 1
        self.rate = rate
        self.factor = max(1, rate // ANALYSIS_HZ)
        self.values = np.zeros(0)
        self._raw = np.zeros((0, 0), np.float32)
        self._pending = np.zeros(0)
        self._last_db = None
        # The first rise is frame 1's over frame 0's, dated between their centres.
        self.t0 = t + HOP_S * (FRAME_HOPS / 2.0 + 0.5) + ONSET_LAG_S

    def feed(self, t: float, samples: F32, rate: int) -> None:
        """Take (channels, n) samples starting at media time ``t`` (s)."""
        if samples.ndim != 2 or samples.shape[1] == 0 or rate <= 0:
            return
        if rate != self.rate or not abs(t - self._next_t) <= self.tolerance_s:
            self._restart(t, rate)
        self._next_t = t + samples.shape[1] / rate
        q = self.factor
        channels = samples.shape[0]
        if self._raw.size and self._raw.shape[0] == channels:
            samples = np.concatenate((self._raw, samples), axis=1)
        usable = samples.shape[1] - samples.shape[1] % q
        self._raw = samples[:, usable:]
        # Mix to mono and decimate: the mean of each group of q samples of every channel, as a
        # sum of strided views (numpy reduces a short inner axis slowly).
        mono = np.zeros(usable // q, np.float64)
        for c in range(channels):
            for k in range(q):
                mono += samples[c, k:usable:q]
        mono /= float(channels * q)
        rate = self.rate // q
        data = np.concatenate((self._pending, mono)) if self._pending.size else mono
        hop = round(HOP_S * rate)
        size = FRAME_HOPS * hop
        count = (data.size - size) // hop + 1 if data.size >= size else 0
        if count <= 0:
            self._pending = data
            return
        levels = band_levels_db(data[: (count - 1) * hop + size], rate)
        onsets = audio_onsets(levels, self._last_db)
        if self._last_db is None:
            onsets = onsets[1:]  # the very first frame has nothing to rise from
        self._last_db = levels[-1]
        self._pending = data[count * hop :]
        self.values = np.concatenate((self.values, onsets))
        excess = self.values.size - round(self.keep_s / HOP_S)
        if excess > round(5.0 / HOP_S):  # trim in chunks, not every block
            self.values = self.values[excess:]
            self.t0 += excess * HOP_S

    def span(self, start: float, end: float) -> tuple[float, F64]:
        """(time of the first value, values) covering [start, end] s, or what of it is known."""
        lo = max(0, math.floor((start - self.t0) / HOP_S))
        hi = min(self.values.size, math.ceil((end - self.t0) / HOP_S) + 1)
        if hi <= lo:
            return self.t0, np.zeros(0)
        return self.t0 + lo * HOP_S, self.values[lo:hi]
