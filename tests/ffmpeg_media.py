"""Kept for importers outside tests/ (``bench.accuracy`` runs the tests' ffmpeg CLI runner): the
makers live in :mod:`tests.media`."""

from tests.media import (
    AC3,
    FFMPEG,
    H264,
    HEVC_MAIN,
    HEVC_MAIN10,
    MP2,
    MPEG2_INTERLACED,
    decode,
    ffmpeg,
    h264_ts,
    programme_ts,
    stereo_aac,
    surround_5_1_ac3,
    under_overlay_ts,
)

__all__ = [
    "AC3",
    "FFMPEG",
    "H264",
    "HEVC_MAIN",
    "HEVC_MAIN10",
    "MP2",
    "MPEG2_INTERLACED",
    "decode",
    "ffmpeg",
    "h264_ts",
    "programme_ts",
    "stereo_aac",
    "surround_5_1_ac3",
    "under_overlay_ts",
]
