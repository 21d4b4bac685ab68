"""ITU-R BS.1770-4 measurement: K-weighted loudness with its gates, and the 4x true peak.

Loudness (BS.1770-4, EBU Tech 3341), as the ``loudness`` detector meters it:

* every channel is K-weighted: a high shelf (+4 dB above ~1.7 kHz, the head) and a high pass
  (~38 Hz, RLB), the two biquads of BS.1770 Tables 1 and 2, derived for the block's rate with
  libebur128's formulas (at 48 kHz, the rate the worker resamples everything to, they equal the
  tables to 1e-15) and run as one 4th-order IIR filter whose state carries across blocks;
* the filtered signal is cut into 100 ms *sub-blocks*; a sub-block's power is the channel-weighted
  sum of mean squares (L, R, C 1.0; surrounds 1.41; LFE 0), and loudness is
  ``-0.691 + 10 log10(power)`` LUFS;
* *momentary* loudness is that of the last 4 sub-blocks (400 ms, updated every 100 ms),
  *short-term* that of the last 30 (3 s), both ungated;
* *integrated* loudness gates the momentary blocks (400 ms, 75 % overlap): blocks under -70 LUFS
  are dropped, then blocks more than 10 LU under the loudness of the rest. Memory stays bounded
  like libebur128's: each block adds its power to a histogram bin of 0.1 LU, and the sums of the
  bins above the relative gate give the result (exact but for the one bin the gate falls into).

Channel order is FFmpeg's (the worker's resampler keeps the source layout beyond stereo): 3 = L R
C, 5 = L R C Ls Rs, 6 = L R C LFE Ls Rs, 8 = L R C LFE Lb Rb Ls Rs; other counts weigh every
channel 1.0.

True peak (BS.1770-4 Annex 2, which EBU R128 requires), as the ``clipping`` detector measures it:
the signal is oversampled 4x with the Annex's 48-tap, 4-phase FIR and the largest magnitude is
taken (never less than the sample peak). :func:`channel_true_peak_windows` interpolates only the
intervals next to a sample that may reach a gate, so programme at normal level skips most of the
48 multiply-adds per sample and channel.

:func:`programme_loudness` and :func:`true_peak` measure a whole signal at once (the streaming
detectors keep their own state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.iir import lfilter  # scipy.signal's, without importing scipy.signal (0.7 s)

LOUDNESS_OFFSET = -0.691  # LUFS of a power of 1.0 (BS.1770 eq. 2: cancels the K-filter's 1 kHz gain)
FLOOR_LUFS = -200.0  # reported for digital zero instead of -inf
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
SUBBLOCK_S = 0.1  # the 100 ms step of momentary and short-term loudness
MOMENTARY_SUBBLOCKS = 4  # 400 ms
SHORT_TERM_SUBBLOCKS = 30  # 3 s
BIN_LU = 0.1  # integrated-loudness histogram resolution
BIN_TOP_LUFS = 10.0  # louder blocks share the top bin (their power is still summed exactly)
SURROUND_WEIGHT = 1.41  # BS.1770 G for the surround channels

Power = npt.NDArray[np.float64]


# -- loudness ----------------------------------------------------------------------------------


def k_weighting(rate: int) -> npt.NDArray[np.float64]:
    """The two K-weighting biquads for ``rate`` Hz, as (2, 6) second-order sections.

    Rows are ``[b0, b1, b2, 1, a1, a2]``: the high shelf (BS.1770-4 Table 1) then the high pass
    (Table 2). Derived from their analogue parameters as libebur128 does, so at 48 kHz they are the
    tables' values.
    """
    k = math.tan(math.pi * 1681.974450955533 / rate)
    q = 0.7071752369554196
    vh = 10.0 ** (3.999843853973347 / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    shelf += [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    k = math.tan(math.pi * 38.13547087602444 / rate)
    q = 0.5003270373238773
    a0 = 1.0 + k / q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, high_pass])


def k_weighting_filter(rate: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The K-weighting cascade as one 4th-order filter ``(b, a)`` (5 coefficients each).

    One ``lfilter`` call costs half of two cascaded sections; in float64 the direct form is
    accurate for these poles (libebur128 runs the same combined filter).
    """
    sos = k_weighting(rate)
    b = np.convolve(sos[0, :3], sos[1, :3])
    a = np.convolve(sos[0, 3:], sos[1, 3:])
    return b, a


def channel_weights(channels: int) -> Power:
    """BS.1770 channel weights G for ``channels`` channels in FFmpeg's order (see module doc)."""
    s = SURROUND_WEIGHT
    known = {
        5: [1.0, 1.0, 1.0, s, s],
        6: [1.0, 1.0, 1.0, 0.0, s, s],
        8: [1.0, 1.0, 1.0, 0.0, s, s, s, s],
    }
    return np.array(known.get(channels, [1.0] * channels))


def weighted_power(filtered: npt.NDArray[np.floating], weights: Power, hop: int) -> Power:
    """Channel-weighted mean square of every whole hop of ``hop`` samples.

    ``filtered`` is (channels, n) K-weighted audio (full scale 1.0), ``weights`` (channels,);
    returns (n // hop,): ``sum_c G_c * mean(x_c ** 2)`` per hop.
    """
    channels, n = filtered.shape
    hops = n // hop
    whole = filtered[:, : hops * hop].reshape(channels, hops, hop)
    energies = np.einsum("chk,chk->ch", whole, whole, dtype=np.float64)
    power: Power = weights @ energies / hop
    return power


def lufs(power: float) -> float:
    """Loudness (LUFS) of a channel-weighted mean square, floored at :data:`FLOOR_LUFS`."""
    if power <= 0.0:
        return FLOOR_LUFS
    return max(LOUDNESS_OFFSET + 10.0 * math.log10(power), FLOOR_LUFS)


def lufs_array(power: Power) -> Power:
    """:func:`lufs` of every element of ``power``."""
    with np.errstate(divide="ignore"):
        level: Power = np.maximum(LOUDNESS_OFFSET + 10.0 * np.log10(power), FLOOR_LUFS)
    return level


def sliding_loudness(power: Power, subblocks: int) -> Power:
    """Loudness (LUFS) of every run of ``subblocks`` consecutive sub-block powers.

    ``power`` is (m,) sub-block powers; returns (m - subblocks + 1,): with 100 ms sub-blocks, 4
    gives momentary and 30 short-term loudness, value ``j`` ending with sub-block ``j + subblocks - 1``.
    """
    windows = np.lib.stride_tricks.sliding_window_view(power, subblocks)
    return lufs_array(windows.mean(axis=1))


def integrated_loudness(block_power: Power) -> float:
    """Gated integrated loudness (LUFS) of 400 ms block powers (BS.1770-4 eq. 5-7), exactly.

    ``block_power`` is (m,) channel-weighted mean squares of the gating blocks. Returns
    :data:`FLOOR_LUFS` when no block passes the absolute gate.
    """
    gated = block_power[lufs_array(block_power) > ABSOLUTE_GATE_LUFS]
    if gated.size == 0:
        return FLOOR_LUFS
    relative = lufs(float(gated.mean())) + RELATIVE_GATE_LU
    kept = gated[lufs_array(gated) > relative]
    return lufs(float(kept.mean()))


class LoudnessHistogram:
    """Integrated loudness of a stream of 400 ms gating blocks in bounded memory.

    Blocks over the absolute gate are counted in bins of :data:`BIN_LU` from -70 to
    :data:`BIN_TOP_LUFS` LUFS, with their powers summed per bin, so the relative gate is the only
    approximation: the bin it falls into is kept or dropped whole (by its lower edge).
    """

    def __init__(self) -> None:
        bins = round((BIN_TOP_LUFS - ABSOLUTE_GATE_LUFS) / BIN_LU)
        self.counts = np.zeros(bins, np.int64)
        self.powers = np.zeros(bins, np.float64)

    def add(self, power: float) -> None:
        """Count one gating block of channel-weighted mean square ``power``."""
        level = lufs(power)
        if level <= ABSOLUTE_GATE_LUFS:
            return
        index = min(int((level - ABSOLUTE_GATE_LUFS) / BIN_LU), self.counts.size - 1)
        self.counts[index] += 1
        self.powers[index] += power

    def integrated(self) -> float:
        """Gated integrated loudness (LUFS) of the blocks so far; FLOOR_LUFS if none passed."""
        total = int(self.counts.sum())
        if total == 0:
            return FLOOR_LUFS
        relative = lufs(float(self.powers.sum()) / total) + RELATIVE_GATE_LU
        first = max(0, math.ceil((relative - ABSOLUTE_GATE_LUFS) / BIN_LU - 1e-9))
        kept = int(self.counts[first:].sum())
        if kept == 0:
            return FLOOR_LUFS
        return lufs(float(self.powers[first:].sum()) / kept)


# -- true peak ---------------------------------------------------------------------------------

# ITU-R BS.1770-4 Annex 2: 4x oversampling FIR, order 48, as four 12-tap phases. The prototype is
# symmetric, so phases 2 and 3 are phases 1 and 0 reversed (the Recommendation prints all four).
_PHASE_0 = (
    0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000,
    -0.0594482421875, 0.1373291015625, 0.9721679687500, -0.1022949218750,
    0.0476074218750, -0.0266113281250, 0.0148925781250, -0.0083007812500,
)  # fmt: skip
_PHASE_1 = (
    -0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250,
    -0.1665039062500, 0.4650878906250, 0.7797851562500, -0.2003173828125,
    0.1015625000000, -0.0582275390625, 0.0330810546875, -0.0189208984375,
)  # fmt: skip
TRUE_PEAK_FIR: npt.NDArray[np.float64] = np.array([_PHASE_0, _PHASE_1, _PHASE_1[::-1], _PHASE_0[::-1]])
TRUE_PEAK_TAPS = TRUE_PEAK_FIR.shape[1]
# Phase p's output at sample n is sum_k FIR[p, k] * x[n - k], the signal at n - 5.875 + p / 4
# (the prototype's delay is 23.5 / 4 samples): the interval between samples m and m + 1 is
# interpolated from samples m - 5 .. m + 6.
HISTORY = 6  # samples before the measured ones that their interpolation needs
LOOKAHEAD = 6  # samples after them
# A sliding window holds x[n - 11 .. n] oldest first, so the taps are applied reversed:
# window @ _TP_MATRIX gives the four phases.
# float32 like the samples: a mixed-type product is several times slower, and float32 resolves a
# peak far below the 0.01 dB that matters here.
_TP_MATRIX: npt.NDArray[np.float32] = np.ascontiguousarray(TRUE_PEAK_FIR[:, ::-1].T, dtype=np.float32)


def oversample_4x(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The BS.1770-4 Annex 2 4x interpolation of ``x`` (channels, k), full scale 1.0.

    Returns (channels, k - 11, 4): row ``i`` holds the signal at 1/8, 3/8, 5/8 and 7/8 of the
    way from ``x[:, i + 5]`` to ``x[:, i + 6]`` (each interval is interpolated from the 6 samples
    on either side of it).
    """
    windows = np.lib.stride_tricks.sliding_window_view(x, TRUE_PEAK_TAPS, axis=-1)
    out: npt.NDArray[np.float32] = windows @ _TP_MATRIX
    return out


def _halves(y: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Largest magnitude of the first two and of the last two phases (last axis) of ``y``.

    Elementwise maxima: numpy's reduction over a short innermost axis costs about 20 times more.
    """
    a = np.abs(y)
    return np.maximum(a[..., 0], a[..., 1]), np.maximum(a[..., 2], a[..., 3])


def true_peak_windows(x: npt.NDArray[np.float32], window: int, gate: float) -> npt.NDArray[np.float64]:
    """Largest 4x-interpolated magnitude of every window over all channels: the maximum over
    channels of :func:`channel_true_peak_windows`, (n // window,)."""
    result: npt.NDArray[np.float64] = channel_true_peak_windows(x, window, gate).max(axis=0)
    return result


def channel_true_peak_windows(
    x: npt.NDArray[np.float32], window: int, gate: float
) -> npt.NDArray[np.float64]:
    """Largest 4x-interpolated magnitude of every window and channel, where it may reach ``gate``.

    ``x`` is (channels, HISTORY + n + LOOKAHEAD), full scale 1.0: the n samples to measure with
    the neighbours their interpolation needs; n is a multiple of ``window``. Each interpolated
    value belongs to the window of its nearer sample, so that a window next to a clipped one is
    not flagged by the ramp between them. Intervals are interpolated only when one of their two
    ends has ``|x| >= gate``; elsewhere the result is 0 (combine it with the sample peak).
    Returns (channels, n // window).
    """
    channels, total = x.shape
    n = total - HISTORY - LOOKAHEAD
    # Interval i (0..n) runs from sample i - 1 to sample i of the n (x columns i + 5, i + 6).
    big = np.abs(x) >= gate
    need = big[:, HISTORY - 1 : HISTORY + n] | big[:, HISTORY : HISTORY + n + 1]
    rows, cols = np.nonzero(need)
    if rows.size * 4 > channels * (n + 1):
        # Mostly loud (a clipped passage): one matrix product beats gathering the intervals.
        early, late = _halves(oversample_4x(x))
    else:
        early = np.zeros((channels, n + 1), np.float32)
        late = np.zeros((channels, n + 1), np.float32)
        if rows.size:
            picked = np.lib.stride_tricks.sliding_window_view(x, TRUE_PEAK_TAPS, axis=-1)[rows, cols]
            early[rows, cols], late[rows, cols] = _halves(picked @ _TP_MATRIX)
    # Sample m's neighbourhood: the late half of the interval before it, the early half after it.
    around = np.maximum(late[:, :n], early[:, 1:])
    result: npt.NDArray[np.float64] = around.reshape(channels, n // window, window).max(axis=2)
    return result.astype(np.float64)


# -- whole signals -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgrammeLoudness:
    """The loudness of a whole signal: momentary and short-term series (LUFS, one value every
    100 ms sub-block, value ``j`` ending with sub-block ``j + 3`` or ``j + 29``) and the gated
    integrated loudness (LUFS; FLOOR_LUFS when nothing passes the absolute gate)."""

    momentary: Power
    short_term: Power
    integrated: float


def programme_loudness(samples: npt.NDArray[np.floating], rate: int) -> ProgrammeLoudness:
    """BS.1770-4 loudness of ``samples`` ((channels, n), full scale 1.0, FFmpeg's channel
    order) at ``rate`` Hz, from silence before it; a trailing partial sub-block is left out."""
    b, a = k_weighting_filter(rate)
    filtered, _ = lfilter(b, a, samples, np.zeros((samples.shape[0], 4)))
    power = weighted_power(filtered, channel_weights(samples.shape[0]), round(SUBBLOCK_S * rate))
    empty = np.zeros(0)
    momentary = sliding_loudness(power, MOMENTARY_SUBBLOCKS) if power.size >= MOMENTARY_SUBBLOCKS else empty
    short_term = (
        sliding_loudness(power, SHORT_TERM_SUBBLOCKS) if power.size >= SHORT_TERM_SUBBLOCKS else empty
    )
    blocks = (
        np.lib.stride_tricks.sliding_window_view(power, MOMENTARY_SUBBLOCKS).mean(axis=1)
        if momentary.size
        else empty
    )
    return ProgrammeLoudness(momentary, short_term, integrated_loudness(blocks))


def true_peak(samples: npt.NDArray[np.float32]) -> float:
    """The true peak (full scale 1.0) of ``samples`` ((channels, n) float32), between digital
    silence before and after it: the largest 4x-interpolated or sample magnitude of any channel."""
    if samples.size == 0:
        return 0.0
    x = np.pad(samples.astype(np.float32, copy=False), ((0, 0), (HISTORY, LOOKAHEAD)))
    interpolated = float(channel_true_peak_windows(x, samples.shape[1], 0.0).max())
    return max(interpolated, float(np.abs(samples).max()))
