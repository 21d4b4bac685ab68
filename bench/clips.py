"""Test media for the benchmarks, and the decode loops the pipeline is compared with.

Clips are made by :func:`avmon.testsrc.generate` (real H.264 High + AAC-LC in MPEG-TS, moving
textured pictures and a tone, with scripted defects so that the detectors do real work) and
cached under ``bench/out/`` by their parameters.

Decoding alone opens, demuxes and decodes as the session's reader (``worker.reader.MediaReader``)
does: ``worker.media.open_source`` with the deployment's limits, both streams demuxed together,
the video decoder on ``thread_type="AUTO"`` with ``Limits().decode_threads`` threads. Everything
else here reads through that reader itself, on the session's timeline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from avmon import testsrc
from shared.urlpolicy import to_url
from worker.detectors import AudioBlock, VideoFrame
from worker.media import Limits, open_source
from worker.reader import MediaReader
from worker.session_config import SessionConfig

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


def reader(url: str) -> MediaReader:
    """The session's own reader of the source (worker/reader.py), as the pipeline reads it, on
    the decoder threads decode-only uses here."""
    config = SessionConfig(url=to_url(url), reconnect=False, decode_threads=Limits().decode_threads)
    return MediaReader(config)


def decode(url: str, *, views: bool) -> int:
    """Decode the whole source; ``views``: as the session reads it (its MediaReader: luma views,
    audio resampled and batched, the timeline), else the decoding alone. Returns the pictures."""
    if views:
        return sum(1 for event in reader(url).events() if type(event) is VideoFrame)
    pictures = 0
    with open_media(url) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        for packet in container.demux(video, audio):
            for _frame in packet.decode():
                if packet.stream is video:
                    pictures += 1
    return pictures


@dataclass
class Decoded:
    """Media decoded once into memory, in the form the detectors are fed."""

    video: list[VideoFrame]
    audio: list[AudioBlock]

    @property
    def audio_s(self) -> float:
        return sum(block.duration for block in self.audio)


def decode_to_memory(url: str, seconds: float) -> Decoded:
    """The first ``seconds`` of the source as the session's reader yields it to the detectors:
    luma views of the decoder's own buffers, audio in the session's blocks, on its timeline."""
    result = Decoded([], [])
    past: set[type] = set()  # the kinds that have reached ``seconds``
    for event in reader(url).events():
        kind = type(event)
        if kind is VideoFrame or kind is AudioBlock:
            assert isinstance(event, VideoFrame | AudioBlock)
            if event.t >= seconds:
                past.add(kind)
                if len(past) == 2:
                    break
            elif isinstance(event, VideoFrame):
                result.video.append(event)
            else:  # the block that crosses ``seconds`` is cut there
                keep = min(event.samples.shape[1], round((seconds - event.t) * event.rate))
                result.audio.append(replace(event, samples=event.samples[:, :keep]))
    return result
