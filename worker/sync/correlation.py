"""The offset of one window from its onsets: lag correlation, the peak and its evidence.

Per window the Pearson correlation of the visual onsets with the audio onsets is taken at every
lag on the audio's 5 ms grid over ±``max_lag_s`` (:func:`lag_correlation`); the offset is the
centroid of the peak above half its height (:func:`peak_centroid`: a sharp peak's vertex within
a millisecond; the middle of the plateau a drift spreads over the lags). The result carries its
own evidence: the peak's *prominence* (robust standard score against the correlation away from
it) and its *margin* over the second-best peak; a window that gives too little is unknown
(:class:`WindowEstimate`, :class:`Thresholds`).

A second audio track (a dubbed language, audio description) is compared with the first the same
way, audio onsets against audio onsets (:func:`estimate_track`): what the tracks share (music and
effects, cuts) correlates. The session decodes one audio stream today, so this is not wired into
the detector yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.sync.audio_onsets import AUDIO_EVENT, HOP_S, smooth

F64 = npt.NDArray[np.float64]

_EPS = 1e-12


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
