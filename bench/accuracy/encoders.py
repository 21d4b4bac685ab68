"""Other encoders than the generator's x264: the defect clips decoded and encoded again (MPEG-2,
HEVC, VP9, MPEG-4 Part 2, with their usual sound codecs), every picture and sample at its time."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av


@dataclass(frozen=True)
class Encoder:
    """Another encoder than the generator's, and the sound codec and container that go with it."""

    what: str
    ext: str
    video: str
    audio: str
    options: tuple[tuple[str, str], ...] = ()
    bit_rate: int = 0  # bits/s for 640x360 (scaled by area), for encoders without a quality mode
    b_frames: int = -1  # -1: the encoder's default
    gop: int = 0  # pictures; 0: the encoder's default


ENCODERS: dict[str, Encoder] = {
    "mpeg2": Encoder("FFmpeg's MPEG-2 (its defaults: GOP 12, no B pictures), 3 Mbit/s, MP2, MPEG-TS",
                     ".ts", "mpeg2video", "mp2", bit_rate=3_000_000),
    "mpeg2b": Encoder("FFmpeg's MPEG-2, 3 Mbit/s, GOP 15 with B pictures, MP2, MPEG-TS", ".ts",
                      "mpeg2video", "mp2", bit_rate=3_000_000, b_frames=2, gop=15),
    "hevc": Encoder("x265 (default CRF 28), AC-3, Matroska", ".mkv", "libx265", "ac3",
                    (("x265-params", "log-level=error"),)),
    "vp9": Encoder("libvpx VP9 (realtime), Opus, WebM", ".webm", "libvpx-vp9", "libopus",
                   (("deadline", "realtime"), ("cpu-used", "8"))),
    "mpeg4": Encoder("FFmpeg's MPEG-4 Part 2, 2 Mbit/s, MP3, Matroska", ".mkv", "mpeg4", "libmp3lame",
                     bit_rate=2_000_000),
}  # fmt: skip
CONTENT_KINDS = ("black", "freeze", "silence", "clipping", "loudness", "av_offset")
CLIPS_PER_ENCODER = 2
MAX_DEFECTS = 4  # per clip, as the generator's defect clips


def transcode(src: Path, dst: Path, encoder: Encoder) -> None:
    """Decode ``src`` and encode it again with ``encoder``, every picture and sample at its own
    time (times from the first picture), so that the truth of ``src`` holds for ``dst``."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        fps = Fraction(round(float(vin.average_rate or 25)))
        # Any: PyAV types a stream opened by codec name as video, audio or subtitles.
        vs: Any = out.add_stream(encoder.video, rate=fps, options=dict(encoder.options))
        width, height = vin.codec_context.width, vin.codec_context.height
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        cc = vs.codec_context
        cc.time_base = 1 / fps
        if encoder.bit_rate:
            cc.bit_rate = round(encoder.bit_rate * width * height / (640 * 360))
        if encoder.b_frames >= 0:
            cc.max_b_frames = encoder.b_frames
        if encoder.gop:
            cc.gop_size = encoder.gop
        rate = int(ain.codec_context.sample_rate)
        aus: Any = out.add_stream(encoder.audio, rate=rate, layout="stereo")
        formats = aus.codec_context.codec.audio_formats or ()
        sample_format = formats[0].name if formats else "fltp"
        resampler = av.AudioResampler(format=sample_format, layout="stereo", rate=rate)
        origin: float | None = None
        frame: Any
        for frame in inp.decode(vin, ain):
            if frame.pts is None or frame.time_base is None:
                continue
            t = float(frame.pts * frame.time_base)
            origin = t if origin is None else origin
            if isinstance(frame, av.VideoFrame):
                picture = frame.reformat(format="yuv420p")
                picture.pts, picture.time_base = round((t - origin) * fps), cc.time_base
                out.mux(vs.encode(picture))
                continue
            first = max(0, round((t - origin) * rate))
            for chunk in resampler.resample(frame):
                chunk.pts, chunk.time_base = first, Fraction(1, rate)
                first += chunk.samples
                out.mux(aus.encode(chunk))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
