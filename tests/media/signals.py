"""Synthetic PCM that tests feed detectors directly (no container, no codec)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RATE = 48_000

Signal = npt.NDArray[np.float32]


def music(seconds: float, seed: int = 0, peak_dbfs: float | None = None) -> Signal:
    """Stereo music-like signal at 48 kHz, shape (2, samples): harmonic notes (0.25-0.6 s,
    decaying) over a little noise. Each channel plays one 5-harmonic waveform from a wavetable
    (cheap to make at any length); notes vary in level, so only a few onsets come near its peak.
    With ``peak_dbfs``, scaled so that its sample peak is that (dBFS)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    theta = 2 * np.pi * np.arange(4096) / 4096
    table = np.array(
        [sum(np.sin(h * theta + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 6)) for _ in "LR"]
    )
    lengths = rng.integers(round(0.25 * RATE), round(0.6 * RATE), n // round(0.25 * RATE) + 1)
    starts = np.concatenate(([0], np.cumsum(lengths)))
    f0 = 110.0 * 2 ** (rng.integers(0, 25, lengths.size) / 12)
    amplitude = rng.uniform(0.5, 1.0, lengths.size)
    i = np.arange(n)
    note = np.searchsorted(starts, i, side="right") - 1
    t = (i - starts[note]) / RATE
    index = ((f0[note] * t) % 1.0 * 4096).astype(np.int64)
    envelope = amplitude[note] * (0.3 + 0.7 * np.exp(-4 * t))
    x = table[:, index] * envelope + 0.02 * rng.standard_normal((2, n))
    if peak_dbfs is not None:
        x *= 10 ** (peak_dbfs / 20) / np.abs(x).max()
    return x.astype(np.float32)
