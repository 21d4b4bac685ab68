"""Decoding what the test-signal generator wrote, for the tests that compare it with its truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from avmon.testsrc import GroundTruth

W, H, FPS, SR = 320, 180, 25, 48000


@dataclass
class Decoded:
    truth: GroundTruth
    times: list[float]  # media seconds of each decoded picture (container time - origin)
    luma: list[npt.NDArray[np.uint8]]  # Y planes, limited range codes as coded
    keyframes: list[bool]
    audio: npt.NDArray[np.float32]  # (channels, samples), sample 0 at media time audio_t0
    audio_t0: float
    video_first: float  # container seconds of the first decoded picture / audio frame
    audio_first: float

    def audio_between(self, a: float, b: float) -> npt.NDArray[np.float32]:
        return self.audio[:, round((a - self.audio_t0) * SR) : round((b - self.audio_t0) * SR)]


def y_plane(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The coded Y plane (no range conversion), copied out of the decoder's padded buffer."""
    plane = frame.planes[0]
    buf = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return buf[:, : plane.width].copy()


def seconds(frame: av.VideoFrame | av.AudioFrame) -> float:
    assert frame.time is not None
    return frame.time


def decode(path: Path) -> Decoded:
    truth = GroundTruth.load(path)
    with av.open(str(path)) as c:
        frames = [(seconds(f), y_plane(f), f.key_frame) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        blocks = [(seconds(f), f.to_ndarray()) for f in c.decode(audio=0)]
    return Decoded(
        truth=truth,
        times=[t - truth.origin_s for t, _, _ in frames],
        luma=[y for _, y, _ in frames],
        keyframes=[bool(k) for _, _, k in frames],
        audio=np.concatenate([b for _, b in blocks], axis=1),
        audio_t0=blocks[0][0] - truth.origin_s,
        video_first=frames[0][0],
        audio_first=blocks[0][0],
    )


def dbfs(x: npt.NDArray[np.float32]) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))
