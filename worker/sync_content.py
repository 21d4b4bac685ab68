"""The content-based A/V offset's public names, kept at this import path: the method and its
streaming windows are :mod:`worker.sync.content`, over the onset and correlation modules of
:mod:`worker.sync`."""

from worker.sync.audio_onsets import HOP_S, AudioOnsetTrack
from worker.sync.content import ContentSync
from worker.sync.correlation import Thresholds, WindowEstimate, estimate_track, estimate_window, peak_centroid

__all__ = [
    "HOP_S",
    "AudioOnsetTrack",
    "ContentSync",
    "Thresholds",
    "WindowEstimate",
    "estimate_track",
    "estimate_window",
    "peak_centroid",
]
