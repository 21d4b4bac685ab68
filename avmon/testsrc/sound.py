"""The sound: harmonic notes changing pitch every ~0.5 s at about -23 LUFS over a little noise,
as a pure function of (seed, sample index), with sync beeps, A/V sync delays, then the sound defects
(silence, clipping, loudness) and a look-ahead limiter."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from avmon.testsrc.script import AUDIO_TYPES, SYNC_TYPES
from avmon.testsrc.spec import BEEP_EDGE_S, BEEP_S, SignalSpec, first_index

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_LIMIT = 10 ** (-1.5 / 20)  # loudness limiter ceiling: -1.5 dBFS leaves room for AAC overshoot
_NOTE_SCALE = 0.125  # tone amplitude: the programme measures about -23 LUFS (EBU R128 target)
_NOISE_RMS = 0.003  # "a little noise" (-50 dBFS) under the tone
_BEEP_HZ, _BEEP_AMP = 1000.0, 10 ** (-12 / 20)  # a sync mark's beep: 1 kHz, -12 dBFS peak
_DUCK_GAIN, _DUCK_S, _DUCK_RAMP_S = 10 ** (-12 / 20), 0.1, 0.01  # bed -12 dB, 100 ms each side


def _window(d: F64, flat: float, ramp: float) -> F64:
    """1 for 0 <= d <= flat, a raised-cosine fall to 0 over ``ramp`` after it, 0 beyond (and for d < 0)."""
    x = np.clip((d - flat) / ramp, 0.0, 1.0)
    return np.where(d >= 0, 0.5 * (1 + np.cos(np.pi * x)), 0.0)


class Audio:
    """Samples as a pure function of sample index: notes, noise and marks, shifted, then defects."""

    def __init__(self, spec: SignalSpec) -> None:
        rate, channels = spec.sample_rate, spec.channels
        self.rate, self.channels = rate, channels
        rng = np.random.default_rng([spec.seed, 4])
        # Enough notes for the media and at least 1.4 s more: the limiter's lookahead, and content
        # read up to 1 s ahead by a negative av_offset (MAX_SYNC_OFFSET_MS).
        n_notes = int(spec.n_samples / rate / 0.35) + 4
        lengths = np.rint(rng.uniform(0.35, 0.65, n_notes) * rate).astype(np.int64)
        self.starts, self.lengths = np.concatenate([[0], np.cumsum(lengths)]), lengths
        self.f0 = 110.0 * 2.0 ** (rng.integers(0, 25, n_notes) / 12)  # A2..A4, semitone steps
        self.amp = rng.uniform(0.6, 1.0, n_notes)
        # Phase at each note start, accumulated so that pitch changes are click-free.
        self.phase0 = np.concatenate([[0.0], np.cumsum(2 * np.pi * self.f0 * lengths / rate)]) % (2 * np.pi)
        self.noise = rng.standard_normal((channels, 131071)).astype(np.float32)  # unit RMS
        self.block = max(1, rate // 100)  # limiter block: 10 ms
        self.ranges = [
            (d.type, first_index(d.start_s, rate), first_index(d.end_s, rate), d.params)
            for d in spec.of(*AUDIO_TYPES)
        ]
        self.shifts = [
            (first_index(d.start_s, rate), first_index(d.end_s, rate), d.params) for d in spec.of(*SYNC_TYPES)
        ]
        self.marks = np.array([first_index(i / spec.fps, rate) for i in spec.mark_frames], np.float64)

    def _positions(self, a0: int, a1: int) -> F64:
        """Content position (fractional sample) heard at output samples a0..a1-1: av_sync delays."""
        n = np.arange(a0, a1, dtype=np.float64)
        pos = n.copy()
        for s, e, params in self.shifts:
            lo, hi = max(s, a0) - a0, min(e, a1) - a0
            if lo < hi:
                late = params.get("offset_ms", 0.0) + params.get("ms_per_s", 0.0) * (n[lo:hi] - s) / self.rate
                pos[lo:hi] -= late * self.rate / 1000
        return np.maximum(pos, 0.0)

    def _content(self, pos: F64) -> F64:
        k = np.searchsorted(self.starts, pos, side="right") - 1
        u = pos - self.starts[k]
        x = u / self.lengths[k]
        phase = self.phase0[k] + 2 * np.pi * self.f0[k] * u / self.rate
        tone = np.zeros_like(phase)
        for p in range(1, 5):  # harmonics 1/p: a buzzy, voice-like timbre
            tone += np.sin(p * phase) / p
        # Envelope: fast attack, slow decay, never below 30 % (no quiet gaps within content).
        env = 0.3 + 0.7 * np.sin(np.pi * x**0.3) ** 2
        mono = _NOTE_SCALE * self.amp[k] * env * tone
        if len(self.marks):
            mono = mono * self._duck(pos) + self._beep(pos)
        pan = 0.15 * np.sin(2 * np.pi * 0.1 * pos / self.rate)
        gains = [1 + pan, 1 - pan] if self.channels == 2 else [np.ones_like(pan)]
        idx = np.rint(pos).astype(np.int64) % self.noise.shape[1]
        return np.stack([mono * g + _NOISE_RMS * self.noise[c, idx] for c, g in enumerate(gains)])

    def _beep(self, pos: F64) -> F64:
        half = BEEP_EDGE_S / 2 * self.rate
        k = np.searchsorted(self.marks, pos + half, side="right") - 1
        d = pos - self.marks[np.maximum(k, 0)]  # samples since the nominal start
        edge = np.clip(np.minimum(d + half, BEEP_S * self.rate + half - d) / (2 * half), 0.0, 1.0)
        env = np.where(k >= 0, 0.5 - 0.5 * np.cos(np.pi * edge), 0.0)
        return _BEEP_AMP * env * np.sin(2 * np.pi * _BEEP_HZ * d / self.rate)

    def _duck(self, pos: F64) -> F64:
        k = np.searchsorted(self.marks, pos, side="right")
        ramp = _DUCK_RAMP_S * self.rate
        after = _window(pos - self.marks[np.maximum(k - 1, 0)], (BEEP_S + _DUCK_S) * self.rate, ramp)
        before = _window(self.marks[np.minimum(k, len(self.marks) - 1)] - pos, _DUCK_S * self.rate, ramp)
        w = np.maximum(np.where(k > 0, after, 0.0), np.where(k < len(self.marks), before, 0.0))
        return 1.0 - (1.0 - _DUCK_GAIN) * w

    def samples(self, n0: int, n1: int) -> F32:
        """(channels, n1 - n0) float32 samples n0..n1-1, full scale ±1.0."""
        b = self.block
        # Work on whole limiter blocks plus one either side, so the result is chunk-independent.
        a0, a1 = max(0, (n0 // b - 1) * b), (-(-n1 // b) + 1) * b
        x = self._content(self._positions(a0, a1))
        gain = np.ones(a1 - a0)
        hard = np.zeros(a1 - a0, bool)
        for kind, s, e, params in self.ranges:
            s, e = max(s, a0) - a0, min(e, a1) - a0
            if s < e and kind in ("clipping", "loudness"):
                gain[s:e] *= 10 ** (params["gain_db"] / 20)
                hard[s:e] |= kind == "clipping"
        x *= gain
        # Look-ahead block limiter (only bites on boosted audio): each block's gain keeps its peak
        # under _LIMIT; nodes take the smaller neighbour and are interpolated, so gain is smooth.
        peak = np.abs(x).max(axis=0).reshape(-1, b).max(axis=1)
        r = np.minimum(1.0, _LIMIT / np.maximum(peak, 1e-12))
        nodes = np.concatenate([r[:1], np.minimum(r[:-1], r[1:]), r[-1:]])
        lim = np.interp(np.arange(a1 - a0), np.arange(len(nodes)) * b, nodes)
        lim[hard] = 1.0
        x = np.clip(x * lim, -1.0, 1.0)  # hard clipping only ever happens in "clipping" ranges
        for kind, s, e, params in self.ranges:
            s, e = max(s, a0), min(e, a1)
            if s < e and kind == "silence":
                if "level_dbfs" in params:
                    idx = np.arange(s, e) % self.noise.shape[1]
                    x[:, s - a0 : e - a0] = 10 ** (params["level_dbfs"] / 20) * self.noise[:, idx]
                else:
                    x[:, s - a0 : e - a0] = 0.0
        return np.ascontiguousarray(x[:, n0 - a0 : n1 - a0], dtype=np.float32)
