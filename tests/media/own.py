"""Clips from our own encoders: ``avmon testsrc`` (the generator, through its public functions) and
PyAV's libx264 fed pictures a test draws itself."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from avmon import testsrc
from tests.media.cache import cached

FPS = 25
RATE = 48_000


def make_testsrc(path: Path, *, script: str = "", **options: Any) -> testsrc.GroundTruth:
    """``avmon testsrc`` to ``path`` with the defects of ``script`` (its script language, e.g.
    ``"black@2+3,silence@8+3"``) and ``options`` as :func:`avmon.testsrc.generate` takes them
    (``duration_s``, ``seed``, ``width``, ``height``, ``gop_s``...); its ground truth."""
    return testsrc.generate(path, defects=testsrc.parse_script(script), **options)


def generated(
    filename: str = "clip.ts", /, *, script: str = "", **options: Any
) -> tuple[Path, testsrc.GroundTruth]:
    """:func:`make_testsrc` made once per session for each distinct set of arguments (a shared file:
    never change it); its path and ground truth."""
    return cached(filename, make_testsrc, script=script, **options)


def encode_h264(
    path: Path,
    pictures: Iterable[npt.NDArray[np.uint8]],
    *,
    fps: int = FPS,
    format: str | None = None,
    options: dict[str, object] | None = None,
    gop_size: int | None = None,
    tone_hz: float | None = None,
) -> None:
    """PyAV's libx264 (its defaults, B-frames with pyramid, unless ``options`` say otherwise) on
    ``pictures`` (luma planes, height x width, grey chroma added), picture ``i`` at ``i / fps`` s,
    in ``format`` (None: from the suffix); with ``tone_hz``, a mono AAC tone at 0.3 (-10.5 dBFS)
    muxed beside each picture, so every audio block is live too."""
    with av.open(str(path), "w", format=format) as out:
        v = out.add_stream("libx264", rate=fps)
        v.pix_fmt = "yuv420p"
        if options is not None:
            v.options = options
        if gop_size is not None:
            v.gop_size = gop_size
        a = None
        if tone_hz is not None:
            a = out.add_stream("aac", rate=RATE)
            a.layout = "mono"
        sample = 0
        for i, luma in enumerate(pictures):
            if i == 0:
                v.height, v.width = luma.shape
            chroma = np.full((luma.shape[0] // 2, luma.shape[1]), 128, np.uint8)
            picture = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
            picture.pts, picture.time_base = i, Fraction(1, fps)
            out.mux(v.encode(picture))
            while a is not None and tone_hz is not None and sample < (i + 1) * RATE // fps:
                tone = 0.3 * np.sin(2 * np.pi * tone_hz * (sample + np.arange(1024)) / RATE)
                block = av.AudioFrame.from_ndarray(
                    tone.astype(np.float32)[np.newaxis], format="fltp", layout="mono"
                )
                block.sample_rate, block.pts = RATE, sample
                out.mux(a.encode(block))
                sample += 1024
        out.mux(v.encode())
        if a is not None:
            out.mux(a.encode())


def moving_noise_ts(path: Path, seconds: float) -> None:
    """H.264 (libx264 defaults: B-frames with pyramid) and AAC in MPEG-TS, 160x90 at 25 fps:
    noise scrolling sideways and a 440 Hz tone, so every picture and audio block is live."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (90, 320), dtype=np.uint8)
    pictures = (np.roll(texture, 2 * i, axis=1)[:, :160] for i in range(round(seconds * FPS)))
    encode_h264(path, pictures, format="mpegts", tone_hz=440)
