"""Test media for the benchmarks, and the decode loops the pipeline is compared with.

Clips are made by :func:`avmon.testsrc.generate` (real H.264 High + AAC-LC in MPEG-TS, moving
textured pictures and a tone, with scripted defects so that the detectors do real work) and
cached under ``bench/out/`` by their parameters.

The decode loops open, demux and decode exactly as ``worker.session.StreamSession._read`` does:
``worker.media.open_source`` with the deployment's limits, both streams demuxed together, the
video decoder on ``thread_type="AUTO"`` with ``Limits().decode_threads`` threads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avmon import testsrc
from worker.detectors import AudioBlock, VideoFrame
from worker.media import ANALYSIS_RATE, AudioBatcher, AudioConverter, Limits, luma_view, open_source

OUT = Path(__file__).resolve().parent / "out"
# Defects spread over the clip (scaled to its length) so that every detector has work to do.
DEFECT_SCRIPT = (
    "black@0.2+0.12, freeze@0.45+0.12, silence@0.3+0.1, clipping@0.6+0.08, loudness@0.75+0.2:gain_db=-20"
)


@dataclass(frozen=True)
class Clip:
    label: str
    path: Path
    width: int
    height: int
    fps: int
    duration_s: float

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()

    @property
    def frames(self) -> int:
        return round(self.duration_s * self.fps)


def defect_script(duration_s: float) -> str:
    """:data:`DEFECT_SCRIPT` with its fractions of the clip turned into seconds."""
    items = []
    for item in DEFECT_SCRIPT.split(","):
        kind, _, span = item.strip().partition("@")
        start, _, rest = span.partition("+")
        length, colon, params = rest.partition(":")
        seconds = f"{float(start) * duration_s:.2f}+{float(length) * duration_s:.2f}"
        items.append(f"{kind}@{seconds}{colon}{params}")
    return ", ".join(items)


def ensure_clip(
    label: str,
    width: int,
    height: int,
    duration_s: float,
    *,
    fps: int = 25,
    seed: int = 1,
    healthy: bool = False,
    out_dir: Path = OUT,
) -> Clip:
    """The clip with these parameters, generated once and then reused from ``out_dir``.
    ``healthy``: no defects at all (the generator's programme is at EBU R128's -23 LUFS), else
    :data:`DEFECT_SCRIPT`."""
    script = "" if healthy else defect_script(duration_s)
    # The generator's own source is part of the key: a changed generator makes new media.
    generator = testsrc.generator_source()
    params = f"{width}x{height}@{fps}/{duration_s}/{seed}/{script}".encode()
    key = hashlib.sha1(params + generator).hexdigest()[:10]
    path = out_dir / f"{label}-{width}x{height}-{duration_s:g}s-{key}.ts"
    if not (path.exists() and testsrc.truth_path(path).exists()):
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.ts")
        testsrc.generate(
            partial,
            duration_s=duration_s,
            defects=testsrc.parse_script(script),
            seed=seed,
            width=width,
            height=height,
            fps=fps,
        )
        testsrc.truth_path(partial).replace(testsrc.truth_path(path))
        partial.replace(path)
    return Clip(label, path, width, height, fps, duration_s)


def open_media(url: str) -> Any:
    limits = Limits()
    container = open_source(url, limits, 10.0, 5.0)
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    video.codec_context.thread_count = limits.decode_threads
    return container


def decode(url: str, *, views: bool) -> int:
    """Decode the whole source as the session does; ``views``: also take the luma view of every
    picture and resample the audio to the analysis format. Returns the pictures decoded."""
    pictures = 0
    with open_media(url) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        converter = AudioConverter(min(audio.codec_context.channels or 2, 16))
        for packet in container.demux(video, audio):
            for frame in packet.decode():
                if packet.stream is video:
                    pictures += 1
                    if views:
                        luma_view(frame)
                elif views:
                    for _ in converter.convert(frame):
                        pass
    return pictures


@dataclass
class Decoded:
    """Media decoded once into memory, in the form the detectors are fed."""

    video: list[VideoFrame]
    audio: list[AudioBlock]
    keep: list[Any]  # the decoder's frames, alive as long as their luma views are

    @property
    def audio_s(self) -> float:
        return sum(block.duration for block in self.audio)


def decode_to_memory(url: str, seconds: float) -> Decoded:
    """The first ``seconds`` of the source as detector inputs: luma views of the decoder's own
    buffers (strided, as in the session) and resampled audio in the session's 400 ms blocks,
    times from the origin."""
    result = Decoded([], [], [])
    batcher = AudioBatcher()
    with open_media(url) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        converter = AudioConverter(min(audio.codec_context.channels or 2, 16))
        origin: float | None = None
        past: set[str] = set()  # the kinds whose frames have reached ``seconds``
        for packet in container.demux(video, audio):
            for frame in packet.decode():
                if frame.pts is None or frame.time_base is None:
                    continue
                t = float(frame.pts * frame.time_base)
                origin = t if origin is None else origin
                t -= origin
                if t >= seconds:
                    past.add(packet.stream.type)
                    if len(past) == 2:
                        return _with_pending(result, batcher)
                    continue
                if packet.stream is video:
                    luma, full_range = luma_view(frame)
                    result.keep.append(frame)
                    result.video.append(
                        VideoFrame(t=t, luma=luma, full_range=full_range, key_frame=bool(frame.key_frame))
                    )
                else:
                    for samples in converter.convert(frame):
                        result.audio += batcher.add(t, samples)
                        t += samples.shape[1] / ANALYSIS_RATE
    return _with_pending(result, batcher)


def _with_pending(result: Decoded, batcher: AudioBatcher) -> Decoded:
    pending = batcher.drain()
    if pending is not None:
        result.audio.append(pending)
    return result
