"""The tests' media: every clip a test decodes is made here, by our own encoders
(:mod:`tests.media.own`: ``avmon testsrc`` and PyAV on drawn pictures) or by the ffmpeg CLI
(:mod:`tests.media.cli`), and read back by :mod:`tests.media.read`.

A test that needs a clip only to read it asks for a shared one (:func:`cached`,
:func:`generated`): identical clips are encoded once per session. A test that changes its clip
makes its own with the same makers (each takes the path to write first).

Imported by ``bench`` too (``tests.ffmpeg_media``, ``tests.hls_origin``):
nothing here needs pytest.
"""

from tests.media.cache import cached, cached_path
from tests.media.cli import (
    AC3,
    FFMPEG,
    H264,
    HEVC_MAIN,
    HEVC_MAIN10,
    MP2,
    MPEG2_INTERLACED,
    TRANSPORT_SECONDS,
    ffmpeg,
    h264_ts,
    mpts_source,
    mpts_ts,
    programme_ts,
    stereo_aac,
    surround_5_1_ac3,
    transport_sources,
    transport_ts,
    under_overlay_ts,
)
from tests.media.own import encode_h264, generated, make_testsrc, moving_noise_ts
from tests.media.read import decode, remux, transport_packets
from tests.media.signals import music

__all__ = [
    "AC3",
    "FFMPEG",
    "H264",
    "HEVC_MAIN",
    "HEVC_MAIN10",
    "MP2",
    "MPEG2_INTERLACED",
    "TRANSPORT_SECONDS",
    "cached",
    "cached_path",
    "decode",
    "encode_h264",
    "ffmpeg",
    "generated",
    "h264_ts",
    "make_testsrc",
    "moving_noise_ts",
    "mpts_source",
    "mpts_ts",
    "music",
    "programme_ts",
    "remux",
    "stereo_aac",
    "surround_5_1_ac3",
    "transport_packets",
    "transport_sources",
    "transport_ts",
    "under_overlay_ts",
]
