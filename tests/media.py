"""Small real media for detector tests that need a decoder's own output."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FPS = 25
RATE = 48_000


def moving_noise_ts(path: Path, seconds: float) -> None:
    """H.264 (libx264 defaults: B-frames with pyramid) and AAC in MPEG-TS, 160x90 at 25 fps:
    noise scrolling sideways and a 440 Hz tone, so every picture and audio block is live."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (90, 320), dtype=np.uint8)
    chroma = np.full((45, 160), 128, np.uint8)
    with av.open(str(path), "w", format="mpegts") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = 160, 90, "yuv420p"
        a = out.add_stream("aac", rate=RATE)
        a.layout = "mono"
        sample = 0
        for i in range(round(seconds * FPS)):
            luma = np.roll(texture, 2 * i, axis=1)[:, :160]
            picture = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
            picture.pts, picture.time_base = i, Fraction(1, FPS)
            out.mux(v.encode(picture))
            while sample < (i + 1) * RATE // FPS:
                tone = 0.3 * np.sin(2 * np.pi * 440 * (sample + np.arange(1024)) / RATE)
                block = av.AudioFrame.from_ndarray(
                    tone.astype(np.float32)[np.newaxis], format="fltp", layout="mono"
                )
                block.sample_rate, block.pts = RATE, sample
                out.mux(a.encode(block))
                sample += 1024
        out.mux(v.encode())
        out.mux(a.encode())
