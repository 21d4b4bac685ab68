"""Per-detector cost: each registered detector alone, on media decoded once into memory.

The first seconds of a clip are decoded once (luma views of the decoder's own buffers, audio
resampled to the analysis format, exactly as the session feeds them). Then, per round, the clip
is decoded again (decode only, the session's thread settings) as the yardstick, and every
detector is fed the same pictures and audio blocks, alone, in a fresh instance: CPU time of the
whole process, so work that OpenCV spreads over its threads counts too.

Reported per detector: µs per picture, µs per second of audio, and the share of decode time;
the sum over detectors is the figure DESIGN.md §9 bounds ("all detectors together ≤ 25% of
decode time").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.clips import Clip, Decoded, decode, decode_to_memory
from bench.timing import median
from worker.detectors import StreamContext, registry


@dataclass
class DetectorCost:
    name: str
    video_us_per_picture: list[float] = field(default_factory=list)
    audio_us_per_s: list[float] = field(default_factory=list)
    share_of_decode: list[float] = field(default_factory=list)


@dataclass
class DetectorCosts:
    clip: Clip
    seconds: float
    pictures: int
    audio_s: float
    decode_us_per_picture: list[float]
    detectors: dict[str, DetectorCost]
    total_share: list[float]  # per round: all detectors / decode, per media second

    @property
    def decode_us(self) -> float:
        return median(self.decode_us_per_picture)

    @property
    def share(self) -> float:
        return median(self.total_share)


def _cpu(fn: Callable[[], object]) -> float:
    """CPU seconds of the process spent in ``fn()``."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def time_detector(name: str, media: Decoded) -> tuple[float, float]:
    """CPU seconds to feed a fresh ``name`` detector every picture, then every audio block."""
    cls = registry()[name]
    video_detector, audio_detector = cls(ctx=StreamContext()), cls(ctx=StreamContext())

    def feed_video() -> None:
        for frame in media.video:
            video_detector.feed_video(frame)

    def feed_audio() -> None:
        for block in media.audio:
            audio_detector.feed_audio(block)

    return _cpu(feed_video), _cpu(feed_audio)


def measure_detectors(clip: Clip, seconds: float, repeats: int) -> DetectorCosts:
    media = decode_to_memory(clip.url, seconds)
    pictures, audio_s = len(media.video), media.audio_s
    costs = {name: DetectorCost(name) for name in registry()}
    result = DetectorCosts(clip, seconds, pictures, audio_s, [], costs, [])
    for name in costs:  # warm-up: first calls allocate scratch buffers, build filters
        time_detector(name, media)
    for _ in range(repeats):
        decode_cpu = _cpu(lambda: decode(clip.url, views=False))
        decode_per_s = decode_cpu / clip.duration_s  # CPU s of decoding per media second
        result.decode_us_per_picture.append(decode_cpu / clip.frames * 1e6)
        total_per_s = 0.0
        for name, cost in costs.items():
            video_s, audio_cpu_s = time_detector(name, media)
            per_s = video_s / pictures * clip.fps + audio_cpu_s / audio_s
            cost.video_us_per_picture.append(video_s / pictures * 1e6)
            cost.audio_us_per_s.append(audio_cpu_s / audio_s * 1e6)
            cost.share_of_decode.append(per_s / decode_per_s)
            total_per_s += per_s
        result.total_share.append(total_per_s / decode_per_s)
    return result
