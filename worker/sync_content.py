"""A/V offset from programme content, without marks: pure numpy functions and small accumulators.

What others do, and what we do differently:

* **SyncNet** (Chung & Zisserman, 2016) embeds 0.2 s of MFCCs and five frames of a mouth crop
  with two trained CNNs and takes the offset (within ±15 frames) where their distance is
  smallest; its confidence is the median distance minus the minimum. It needs a face, model
  weights and a GPU-class budget per frame.
* **Synchformer** (Iashin et al., 2024) classifies the offset of in-the-wild clips (sparse cues:
  a ball, a door) with a transformer over segment features from contrastively pre-trained
  audio and visual encoders, in 0.2 s classes over ±2 s, and predicts *synchronisability*
  (whether a clip can be synchronised at all). Weights again, and 0.2 s steps: coarser than
  BT.1359's window.
* **audio-offset-finder** (BBC) finds one audio file inside another by cross-correlating
  standardised MFCCs, and reports the peak's *standard score* (above about 10: likely right,
  below 5: unlikely). Audio against audio only.
* **Broadcast lip-sync monitors** mostly avoid content analysis: they follow test marks
  (flash and beep, as our marks path does), watermarks, or SMPTE ST 2064 audio/video
  fingerprints taken at a reference point and compared downstream, which needs the reference.
  Some file QC tools add face-and-mouth models for talking heads.

We need no weights, no reference and no face: an *audio onset strength* (the rectified rise of
log band energies on 20 ms frames every 5 ms, summed over bands: knocks, cuts of sound, speech
syllables) is correlated with a *visual onset strength* (the rectified rise of motion energy,
the mean absolute luma difference between pictures, in the cells of a coarse grid over a
downscaled luma, summed over cells: a flash, a hit that starts motion, a cut). Per ``window_s``
window (hopping) the Pearson correlation is taken at every lag on the audio's 5 ms grid over
±``max_lag_s`` (BT.1359's ±1 s); the offset is the centroid of the peak above half its height
(a sharp peak's vertex within a millisecond; the middle of the plateau a drift spreads over the
lags). Visual onsets are dated on their picture, so whatever a frame cannot resolve (an event
between two pictures) is at most a frame of error. Like audio-offset-finder
(and unlike SyncNet's embedding distance) the result carries its own evidence: the peak's
*prominence* (robust standard score against the correlation away from it) and its *margin*
over the second-best peak. Content that gives too little (silence, a static picture, audio
unrelated to the picture, a regular beat whose period aliases the lag) is *unknown*, as
Synchformer's synchronisability would say, and unknown is never "in sync".

A second audio track (a dubbed language, audio description) is compared with the first the
same way, audio onsets against audio onsets (:func:`estimate_track`): what the tracks share
(music and effects, cuts) correlates. The session decodes one audio stream today, so this is
not wired into the detector yet.

Costs (measured in ``bench.accuracy_sync``: 2.5 % of 720p25 decoding): per picture a strided
luma sample, one absolute difference, OpenCV's cell means and a few 48-element operations; per
audio block a decimation and one batched real FFT; per hop one correlation, the cross term on
the pictures that have an onset only. Not done: speech gating, and a face or mouth region
(OpenCV's cascades cost milliseconds a picture); a large mouth moves its own cells anyway.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

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

SAMPLE_COLUMNS = 64  # the luma is sampled about this many columns wide (every n-th pixel)
GRID = (6, 8)  # cells (rows, columns) whose motion energy is followed separately
MOTION_FLOOR = 4.0  # luma codes added before the log: coding noise and grain are not motion
# A rise is over the largest motion of this many previous pictures (a maximum filter, as in
# SuperFlux): motion that alternates between pictures (repeated frames, judder, pans stepping by
# whole pixels) does not rise over it, nor an object sliding into a cell over a few pictures.
REFERENCE_PICTURES = 4
VIDEO_RISE = 0.7  # rises of log motion energy below this (natural log, 2x) are not onsets
VIDEO_CELL_CAP = 1.5  # largest contribution of one cell

_EPS = 1e-12
# float32 scalars made once: numpy builds one in microseconds, as long as the per-cell work.
_MOTION_FLOOR32 = np.float32(MOTION_FLOOR)
_VIDEO_RISE32 = np.float32(VIDEO_RISE)
_VIDEO_CELL_CAP32 = np.float32(VIDEO_CELL_CAP)
_ZERO32 = np.float32(0.0)


# ----------------------------------------------------------------------------- audio


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


# ----------------------------------------------------------------------------- video


def luma_sample(luma: U8) -> U8:
    """A contiguous copy of every n-th pixel of ``luma`` (h, w uint8), about SAMPLE_COLUMNS wide,
    cropped to whole cells of GRID (OpenCV's cell means are three times faster then)."""
    step = max(1, round(luma.shape[1] / SAMPLE_COLUMNS))
    sample = luma[::step, ::step]
    rows, cols = GRID
    h, w = sample.shape
    if h >= rows and w >= cols:
        sample = sample[: h - h % rows, : w - w % cols]
    return np.ascontiguousarray(sample)


def cell_motion(sample: U8, previous: U8) -> F32:
    """(rows·columns of GRID) mean absolute difference (luma codes) between two samples, per cell."""
    diff = cv2.absdiff(sample, previous)
    rows, cols = GRID
    h, w = diff.shape
    if h < rows or w < cols:
        return np.full(rows * cols, float(diff.mean()) if diff.size else 0.0, np.float32)
    # INTER_AREA to the grid's size is the mean of each cell, in OpenCV's kernel.
    cells = cv2.resize(diff.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    return np.asarray(cells, np.float32).ravel()


def log_motion(motion: F32) -> F32:
    """log(MOTION_FLOOR + motion), per cell (motion in luma codes)."""
    out: F32 = np.log(motion + _MOTION_FLOOR32)
    return out


def visual_onset(log_now: F32, log_reference: F32) -> float:
    """Onset strength of a picture: the rises of :func:`log_motion` per cell over
    ``log_reference`` (the cells' largest in the previous REFERENCE_PICTURES pictures), above
    VIDEO_RISE and at most VIDEO_CELL_CAP each, summed over cells, as log(1 + sum)."""
    rise = log_now - log_reference
    # Each cell counts up to VIDEO_CELL_CAP and the sum is compressed: a cut (every cell) must
    # not outweigh the dozen small events of a window in the correlation.
    np.subtract(rise, _VIDEO_RISE32, out=rise)
    np.minimum(rise, _VIDEO_CELL_CAP32, out=rise)
    np.maximum(rise, _ZERO32, out=rise)
    return math.log1p(float(rise.sum()))


# ----------------------------------------------------------------------------- correlation


@dataclass(frozen=True, slots=True)
class WindowEstimate:
    """One window's answer. ``offset_ms`` is None when the window is unknown (``reason`` says why).

    ``peak`` is the Pearson correlation at the refined lag; ``prominence`` its robust standard
    score (median and MAD of the correlation at lags more than ``exclusion_s`` away);
    ``second`` the best other local maximum there; ``confidence`` = 1 − max(second, 0) / peak,
    0..1 (0: a rival peak as high)."""

    start_s: float
    end_s: float
    offset_ms: float | None
    confidence: float
    peak: float
    prominence: float
    second: float
    video_events: int
    audio_events: int
    reason: str = ""

    @property
    def known(self) -> bool:
        return self.offset_ms is not None


def lag_correlation(
    video_t: F64, video_v: F64, audio_t0: float, audio_v: F64, max_lag_s: float, step_s: float = HOP_S
) -> tuple[F64, F64]:
    """Pearson correlation between the visual onsets ``video_v`` at times ``video_t`` (s, sorted)
    and the audio onsets ``audio_v`` (regular, every ``step_s`` from ``audio_t0``) read at the
    same times plus each lag (linear interpolation): (lags s, correlation), lags every ``step_s``
    over ±``max_lag_s``; a positive lag is sound later than picture.

    Visual onsets are zero on most pictures, so the cross term is gathered (interpolated) on
    the pictures that have one only; the audio's mean and variance per lag are taken on every
    picture at the nearest audio value (a float32 gather, no interpolation: within half a step).
    They must be the audio *as the pictures sample it*: over the continuous span, audio events
    that fall on the picture grid would inflate the correlation of every lag that is a multiple
    of a frame. Audio missing at either end (the stream's first window) is filled with its
    median: no event."""
    n_lag = round(max_lag_s / step_s)
    lags = np.arange(-n_lag, n_lag + 1) * step_s
    count = video_t.size
    if count < 2 or audio_v.size < 2:
        return lags.astype(np.float64), np.zeros(lags.size)
    # Pad the audio so that every lag of every picture reads inside it.
    first = math.floor((float(video_t[0]) - audio_t0) / step_s) - n_lag - 1
    last = math.ceil((float(video_t[-1]) - audio_t0) / step_s) + n_lag + 2
    before, after = max(0, -first), max(0, last - audio_v.size)
    if before or after:
        fill = float(np.median(audio_v))
        audio_v = np.concatenate((np.full(before, fill), audio_v, np.full(after, fill)))
        audio_t0 -= before * step_s
    position = (video_t - audio_t0) / step_s
    shift = np.arange(-n_lag, n_lag + 1)
    # Per-lag statistics of the audio at every picture's time plus the lag.
    nearest = np.rint(position).astype(np.int32)[:, None] + shift[None, :].astype(np.int32)
    sampled = audio_v.astype(np.float32)[nearest]
    mean_a = sampled.mean(axis=0, dtype=np.float64)
    np.multiply(sampled, sampled, out=sampled)
    var_a = sampled.mean(axis=0, dtype=np.float64) - mean_a * mean_a
    mean_v = float(video_v.mean())
    var_v = float(video_v.var())
    # The cross term, on the pictures with an onset.
    events = np.flatnonzero(video_v)
    base = np.floor(position[events]).astype(np.int64)
    frac = (position[events] - base)[:, None]
    index = base[:, None] + shift[None, :]
    a = audio_v[index] * (1.0 - frac) + audio_v[index + 1] * frac
    cross = video_v[events] @ a / count
    cov = cross - mean_v * mean_a
    corr = cov / np.sqrt(np.maximum(var_v * var_a, _EPS))
    corr[(var_a <= _EPS) | (var_v <= _EPS)] = 0.0
    return lags.astype(np.float64), np.asarray(corr, np.float64)


def refine_peak(values: F64, i: int) -> tuple[float, float]:
    """Sub-sample position (index units) and height of the parabola through values[i-1..i+1]."""
    if i <= 0 or i >= values.size - 1:
        return float(i), float(values[i])
    left, mid, right = float(values[i - 1]), float(values[i]), float(values[i + 1])
    den = left - 2.0 * mid + right
    if den >= 0.0:
        return float(i), mid
    shift = 0.5 * (left - right) / den
    return i + shift, mid - 0.25 * (left - right) * shift


def peak_centroid(lags: F64, corr: F64, best: int, floor: float) -> float:
    """The centroid (lag units) of the peak at ``best`` above half its height over ``floor``
    (the correlation's level away from the peak), over the lags around it that stay above.

    A steady offset gives a sharp, nearly symmetric peak, where this is the parabola's vertex
    within a millisecond; a drift spreads the window's events over a range of lags (83 ms in
    20 s at 4 ms/s), a plateau whose highest point is anywhere on it: its centroid is the
    offset at the window's centre."""
    half = floor + 0.5 * (float(corr[best]) - floor)
    lo = hi = best
    while lo > 0 and corr[lo - 1] >= half:
        lo -= 1
    while hi < corr.size - 1 and corr[hi + 1] >= half:
        hi += 1
    weight = corr[lo : hi + 1] - half
    total = float(weight.sum())
    return float((lags[lo : hi + 1] * weight).sum()) / total if total > 0.0 else float(lags[best])


def count_events(values: F64, floor: float) -> int:
    """Onsets in a strength series: local maxima above ``floor``."""
    if values.size < 3:
        return int(np.count_nonzero(values > floor))
    inner = values[1:-1]
    return int(np.count_nonzero((inner > floor) & (inner >= values[:-2]) & (inner > values[2:])))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What makes a window's peak confident (see :class:`WindowEstimate`)."""

    # Calibrated on bench.sync_corpus (20 s windows, 60 s clips): knocks, speech and music peak
    # at 0.32-0.88 with prominence 8.8-36 (a 0-250 ms drift, smeared over 83 ms a window: 0.28,
    # 7.3), confidence 0.35-0.85 (music's regular grid: rivals, often below 0.35); unrelated
    # audio peaks at 0.22 and 6.3 at most. A lone wrong window is no defect (three must agree).
    # With fewer events a chance coincidence of two or three is a high, "prominent" peak: the
    # generator's programme (2-4 visual events per window, none related) reaches 0.22 and a
    # robust score above 100, its correlation being zero almost everywhere.
    min_events: int = 8  # visual and audio onsets in the window, each
    min_peak: float = 0.25  # Pearson correlation at the peak
    min_prominence: float = 7.0  # robust standard score of the peak
    min_confidence: float = 0.35  # 1 − second / peak
    exclusion_s: float = 0.06  # lags this close to the peak are its own flank, not rivals


def estimate_window(
    video_t: F64,
    video_v: F64,
    audio_t0: float,
    audio_v: F64,
    max_lag_s: float,
    thresholds: Thresholds,
    start_s: float,
    end_s: float,
) -> WindowEstimate:
    """The offset of one window from its onsets (see :func:`lag_correlation`), or unknown."""
    video_events = count_events(video_v, 0.0)
    audio_events = count_events(audio_v, AUDIO_EVENT)
    if video_events < thresholds.min_events:
        return _unknown(start_s, end_s, video_events, audio_events, "too few visual events")
    if audio_events < thresholds.min_events:
        return _unknown(start_s, end_s, video_events, audio_events, "too few audio events")
    lags, corr = lag_correlation(video_t, video_v, audio_t0, smooth(audio_v), max_lag_s)
    return judge_correlation(lags, corr, thresholds, start_s, end_s, video_events, audio_events)


def _unknown(
    start_s: float, end_s: float, events_a: int, events_b: int, reason: str, *scores: float
) -> WindowEstimate:
    peak, prominence, second = (*scores, 0.0, 0.0, 0.0)[:3]
    return WindowEstimate(start_s, end_s, None, 0.0, peak, prominence, second, events_a, events_b, reason)


def judge_correlation(
    lags: F64,
    corr: F64,
    thresholds: Thresholds,
    start_s: float,
    end_s: float,
    events_a: int,
    events_b: int,
) -> WindowEstimate:
    """The offset at the correlation's peak (its centroid, :func:`peak_centroid`) with its
    prominence and confidence (see :class:`WindowEstimate`), or unknown with the reason."""
    best = int(np.argmax(corr))
    _, peak = refine_peak(corr, best)
    far = np.abs(lags - lags[best]) > thresholds.exclusion_s
    rest = corr[far]
    if rest.size < 3 or peak <= 0.0:
        return _unknown(start_s, end_s, events_a, events_b, "no correlation peak", peak)
    median = float(np.median(rest))
    offset_s = peak_centroid(lags, corr, best, median)
    mad = 1.4826 * float(np.median(np.abs(rest - median)))
    prominence = (peak - median) / max(mad, 1e-6)
    is_max = np.zeros(corr.size, bool)
    is_max[1:-1] = (corr[1:-1] >= corr[:-2]) & (corr[1:-1] >= corr[2:])
    rivals = corr[far & is_max]
    second = float(rivals.max()) if rivals.size else 0.0
    confidence = float(np.clip(1.0 - max(second, 0.0) / peak, 0.0, 1.0))
    scores = (peak, prominence, second)
    if best == 0 or best == corr.size - 1:
        return _unknown(start_s, end_s, events_a, events_b, "peak at the edge of the lag range", *scores)
    if peak < thresholds.min_peak:
        return _unknown(start_s, end_s, events_a, events_b, "weak correlation", *scores)
    if prominence < thresholds.min_prominence:
        return _unknown(start_s, end_s, events_a, events_b, "peak not prominent", *scores)
    if confidence < thresholds.min_confidence:
        return _unknown(start_s, end_s, events_a, events_b, "a rival peak", *scores)
    return WindowEstimate(
        start_s, end_s, offset_s * 1000.0, confidence, peak, prominence, second, events_a, events_b
    )


# ----------------------------------------------------------------------------- a second audio track


def track_correlation(
    ref_t0: float, ref_v: F64, other_t0: float, other_v: F64, start_s: float, end_s: float, max_lag_s: float
) -> tuple[F64, F64]:
    """Pearson correlation between the reference track's onsets over [start_s, end_s) and the
    other track's (both on the HOP_S grid, from ``ref_t0`` / ``other_t0``) shifted by each lag:
    (lags s, correlation), every HOP_S over ±``max_lag_s``; a positive lag is the other track
    later. The other track is first interpolated onto the reference's grid (their grids may be
    a fraction of a step apart); missing audio is filled with its median (no event)."""
    n_lag = round(max_lag_s / HOP_S)
    lags = np.arange(-n_lag, n_lag + 1) * HOP_S
    lo = max(0, math.ceil((start_s - ref_t0) / HOP_S))
    hi = min(ref_v.size, math.floor((end_s - ref_t0) / HOP_S))
    if hi - lo < 3 or other_v.size < 2:
        return lags.astype(np.float64), np.zeros(lags.size)
    ref = ref_v[lo:hi]
    grid = ref_t0 + np.arange(lo - n_lag, hi + n_lag) * HOP_S  # the other track, read on this grid
    other_times = other_t0 + np.arange(other_v.size) * HOP_S
    fill = float(np.median(other_v))
    other = np.interp(grid, other_times, other_v, left=fill, right=fill)
    n = ref.size
    centred = ref - ref.mean()
    # Per-lag sums of the other track's windows from cumulative sums; the cross term by correlate.
    sums = np.concatenate(([0.0], np.cumsum(other)))
    squares = np.concatenate(([0.0], np.cumsum(other * other)))
    starts = np.arange(2 * n_lag + 1)
    mean_o = (sums[starts + n] - sums[starts]) / n
    var_o = (squares[starts + n] - squares[starts]) / n - mean_o * mean_o
    cov = np.correlate(other, centred, mode="valid") / n
    var_r = float(centred @ centred) / n
    corr = cov / np.sqrt(np.maximum(var_r * var_o, _EPS))
    corr[var_o <= _EPS] = 0.0
    return lags.astype(np.float64), np.asarray(corr, np.float64)


def estimate_track(
    ref_t0: float,
    ref_v: F64,
    other_t0: float,
    other_v: F64,
    start_s: float,
    end_s: float,
    max_lag_s: float = 1.0,
    thresholds: Thresholds | None = None,
) -> WindowEstimate:
    """The offset (ms, positive: the other track later) of a second audio track (a dubbed
    language, audio description) against the reference track over one window, from their onset
    tracks (:class:`AudioOnsetTrack`): what they share (music and effects, cuts of sound)
    correlates; a track with nothing in common is unknown. ``video_events`` and
    ``audio_events`` of the result count the reference's and the other track's onsets."""
    thresholds = thresholds or Thresholds()
    ref_lo = max(0, math.ceil((start_s - ref_t0) / HOP_S))
    ref_hi = max(ref_lo, math.floor((end_s - ref_t0) / HOP_S))
    ref_events = count_events(ref_v[ref_lo:ref_hi], AUDIO_EVENT)
    other_events = count_events(other_v, AUDIO_EVENT)
    if min(ref_events, other_events) < thresholds.min_events:
        return _unknown(start_s, end_s, ref_events, other_events, "too few audio events")
    lags, corr = track_correlation(
        ref_t0, smooth(ref_v), other_t0, smooth(other_v), start_s, end_s, max_lag_s
    )
    return judge_correlation(lags, corr, thresholds, start_s, end_s, ref_events, other_events)


# ----------------------------------------------------------------------------- streaming


class ContentSync:
    """Onsets of one stream and its hopping windows: feed pictures and audio in order, then
    take the windows that both timelines have passed from :meth:`ready`.

    A window ends every ``hop_s`` of video time from ``window_s`` after the first picture and
    covers the ``window_s`` before its end; it is evaluated once the audio has reached its end
    plus ``max_lag_s`` (a late sound must have arrived). Time going back or jumping by more than
    ``max_gap_s`` starts the pictures' history afresh."""

    def __init__(
        self,
        window_s: float,
        hop_s: float,
        max_lag_s: float,
        thresholds: Thresholds | None = None,
        max_gap_s: float = 1.0,
    ) -> None:
        self.window_s = window_s
        self.hop_s = hop_s
        self.max_lag_s = max_lag_s
        self.thresholds = thresholds or Thresholds()
        self.max_gap_s = max_gap_s
        self.audio = AudioOnsetTrack(keep_s=window_s + 2.0 * max_lag_s + hop_s + 1.0)
        self._times: list[float] = []
        self._values: list[float] = []
        self._sample: U8 | None = None
        rows, cols = GRID
        self._logs = np.zeros((REFERENCE_PICTURES, rows * cols), np.float32)  # ring of log motion
        self._filled = 0  # pictures in the ring
        self._next_end: float | None = None

    def reset_video(self) -> None:
        self._times, self._values = [], []
        self._sample = None
        self._filled = 0
        self._next_end = None

    def feed_video(self, t: float, luma: U8) -> None:
        if self._times and not 0.0 < t - self._times[-1] <= self.max_gap_s:
            self.reset_video()
        sample = luma_sample(luma)
        value = 0.0
        if self._sample is not None and self._sample.shape == sample.shape:
            logs = log_motion(cell_motion(sample, self._sample))
            if self._filled >= REFERENCE_PICTURES:
                value = visual_onset(logs, self._logs.max(axis=0))
            self._logs[self._filled % REFERENCE_PICTURES] = logs
            self._filled += 1
        else:
            self._filled = 0
        self._sample = sample
        self._times.append(t)
        self._values.append(value)
        if self._next_end is None:
            self._next_end = t + self.window_s

    def feed_audio(self, t: float, samples: F32, rate: int) -> None:
        self.audio.feed(t, samples, rate)

    def ready(self, skip: bool = False) -> list[WindowEstimate]:
        """The windows that can now be evaluated, in order (``skip``: pass them by unevaluated,
        while another measurement has priority)."""
        found: list[WindowEstimate] = []
        while (
            self._next_end is not None
            and self._times
            and self._times[-1] >= self._next_end
            and self.audio.end >= self._next_end + self.max_lag_s
        ):
            end = self._next_end
            self._next_end = end + self.hop_s
            if not skip:
                found.append(self._evaluate(end - self.window_s, end))
        # Pictures no later window needs.
        if self._next_end is not None and self._times:
            keep_from = self._next_end - self.window_s - 1.0
            drop = 0
            while drop < len(self._times) and self._times[drop] < keep_from:
                drop += 1
            if drop > 256:
                del self._times[:drop], self._values[:drop]
        return found

    def _evaluate(self, start: float, end: float) -> WindowEstimate:
        times = np.array(self._times)
        chosen = (times >= start) & (times < end)
        video_t = times[chosen]
        video_v = np.array(self._values)[chosen]
        audio_t0, audio_v = self.audio.span(start - self.max_lag_s, end + self.max_lag_s)
        return estimate_window(
            video_t, video_v, audio_t0, audio_v, self.max_lag_s, self.thresholds, start, end
        )
