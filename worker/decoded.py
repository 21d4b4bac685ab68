"""Decoded media as the detectors see it: the picture's luma plane, audio at one rate and form.

Pictures reach the detectors as the decoder's own luma plane (a numpy view, no RGB conversion,
no range scaling: ``frame.to_ndarray(format="gray")`` would rescale limited range and cost about
as much as decoding). Audio is resampled once per stream to planar float32 at a fixed rate, and
batched into blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from worker.detectors.base import AudioBlock

# One thread per stream already runs every detector; OpenCV's and BLAS's own pools on top of that
# only fight the decoder's threads for the cores. OpenBLAS's threads spin while they wait: a
# matrix product of a few hundred rows (av_sync's tone search, clipping's true peak) cost more CPU
# in them than the whole detector (bench: 0.66x -> 0.75x of decode-only throughput for OpenCV's
# pool; BLAS's took the pipeline from 1.8 to 1.0 s of CPU per 20 s of 720p).
cv2.setNumThreads(1)
threadpool_limits(1)

ANALYSIS_RATE = 48_000  # Hz: every detector sees audio at this rate
# Audio reaches the detectors in blocks of at least this many samples (400 ms), not in the codec's
# frames (1024 samples for AAC, 21 ms): each detector pays its per-call cost 20x less often, for
# at most 400 ms more latency (a defect is reported once it has lasted its minimum duration, 2 s
# for silence). Measured (720p, 4 streams at once): 100 ms blocks 0.75-0.77x of decode-only
# throughput, 200 ms 0.79-0.80x; from 200 to 400 ms the audio detectors' CPU fell from 102 to 85 us
# per picture (their threads' CPU time in the pipeline, best of 6 rounds).
AUDIO_BATCH_SAMPLES = 19_200
# Two outputs this far apart from being contiguous start a new block: a gap or an overlap in the
# source's timestamps is for the detectors to see (av_sync re-anchors beyond 2 ms).
AUDIO_JOIN_TOLERANCE_S = 0.001
_LUMA_8BIT = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}


def luma_view(frame: Any) -> tuple[npt.NDArray[np.uint8], bool]:
    """The Y plane of a decoded picture as a (height, width) uint8 view, and whether it is full range."""
    fmt = frame.format.name
    if fmt not in _LUMA_8BIT:
        frame = frame.reformat(format="yuv420p")  # 10-bit and exotic formats: one conversion
        fmt = "yuv420p"
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(frame.height, plane.line_size)
    full_range = fmt.startswith("yuvj") or int(frame.color_range or 0) == 2
    return rows[:, : frame.width], full_range


class AudioConverter:
    """Any decoded audio → (channels, n) float32 at ``ANALYSIS_RATE``, one converter per stream.

    Audio already in that form (planar float at 48 kHz with the wanted layout: what AAC and Opus
    decoders output) is copied straight from the frame, without a resampler's own copy and
    frame. Anything else goes through a resampler, set up for the input's format, layout and
    rate. The input may change mid-stream (a stereo advert in a 5.1 programme, another sample rate
    after a splice): PyAV's resampler refuses a frame unlike its first, so a new one is set up,
    and the old one's last few held-back samples (well under a millisecond) are dropped.
    """

    def __init__(self, channels: int) -> None:
        self._layout = {1: "mono", 2: "stereo"}.get(channels)  # None: the input's own layout
        self.channels = channels
        self._input: tuple[str, str, int] | None = None  # format, layout and rate of the input
        self._direct = False  # ... which is already the analysis format
        self._resampler: av.AudioResampler | None = None
        # Layout names of the rows it outputs (FL, FR, FC, LFE...): what AudioBlock.channels carries.
        self.names: tuple[str, ...] = ()

    def convert(self, frame: Any) -> Iterator[npt.NDArray[np.float32]]:
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if source != self._input:
            self._input = source
            self._direct = (
                frame.format.name == "fltp"
                and frame.sample_rate == ANALYSIS_RATE
                and len(frame.planes) == self.channels
                and (self._layout is None or frame.layout.name == self._layout)
            )
            self._resampler = None
            if self._layout is None:
                self.names = tuple(channel.name for channel in frame.layout.channels)
            else:
                self.names = tuple(channel.name for channel in av.AudioLayout(self._layout).channels)
        if self._direct:
            yield _planar(frame)
            return
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=ANALYSIS_RATE)
        for out in self._resampler.resample(frame):
            yield _planar(out)


def _planar(frame: Any) -> npt.NDArray[np.float32]:
    """A planar float frame's samples as one (channels, n) array (its planes are separate buffers)."""
    n = frame.samples
    # One plane per channel, copied straight into one array. PyAV's to_ndarray stacks them
    # through numpy.vstack, twice the cost per AAC frame.
    planes: list[Any] = list(frame.planes)  # buffers (typed as PyAV's plane classes)
    samples = np.empty((len(planes), n), np.float32)
    for i, plane in enumerate(planes):
        samples[i] = np.frombuffer(plane, np.float32, n)
    return samples


class AudioBatcher:
    """Joins contiguous (channels, n) blocks into :class:`AudioBlock` s of at least ``min_samples``.

    A block that does not start where the pending ones end (beyond ``tolerance_s``), or has
    another channel count or layout, first releases what is pending: detectors see every
    discontinuity.
    """

    def __init__(
        self,
        rate: int = ANALYSIS_RATE,
        min_samples: int = AUDIO_BATCH_SAMPLES,
        tolerance_s: float = AUDIO_JOIN_TOLERANCE_S,
    ) -> None:
        self.rate = rate
        self.min_samples = min_samples
        self.tolerance_s = tolerance_s
        self._parts: list[npt.NDArray[np.float32]] = []
        self._t = 0.0  # media time of the first pending sample
        self._n = 0  # pending samples
        self._channels: tuple[str, ...] = ()  # layout names of the pending samples' rows

    def add(
        self, t: float, samples: npt.NDArray[np.float32], channels: tuple[str, ...] = ()
    ) -> list[AudioBlock]:
        """Queue ``samples`` (starting at media time ``t``; rows named by ``channels``, the
        layout's names, or FFmpeg's default for the count when empty); returns the blocks now
        complete."""
        ready: list[AudioBlock] = []
        if self._parts and (
            abs(t - (self._t + self._n / self.rate)) > self.tolerance_s
            or samples.shape[0] != self._parts[0].shape[0]
            or channels != self._channels
        ):
            ready.append(self._release())
        if not self._parts:
            self._t = t
            self._channels = channels
        self._parts.append(samples)
        self._n += samples.shape[1]
        if self._n >= self.min_samples:
            ready.append(self._release())
        return ready

    def drain(self) -> AudioBlock | None:
        """Whatever is pending, as one block (None if nothing is)."""
        return self._release() if self._parts else None

    def _release(self) -> AudioBlock:
        parts, self._parts, self._n = self._parts, [], 0
        samples = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return AudioBlock(t=self._t, samples=samples, rate=self.rate, channels=self._channels)
