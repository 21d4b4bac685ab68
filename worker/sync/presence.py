"""Whether sync-mark pairs are marks: regular, and with offsets on a line (the rules are in
:mod:`worker.detectors.av_sync`'s docstring). Costs a line fit over a handful of pairs."""

from __future__ import annotations

import numpy as np

from worker.sync.episodes import Pair
from worker.sync.fit import line_fit
from worker.sync.marks import MARK_RHYTHM_S


def look_like_marks(pairs: list[Pair], presence_s: float, consistency_ms: float) -> bool:
    """Whether consecutive ``pairs`` are sync marks: within ``presence_s``, regular (their
    intervals within MARK_RHYTHM_S of the median interval), and with offsets within
    ``consistency_ms`` of a straight line (a steady offset, or one that drifts). Flashes and
    tones that programme pairs up by chance do neither: offsets spread over ±max_pair_ms."""
    t = np.array([p.t for p in pairs])
    o = np.array([p.offset for p in pairs])
    intervals = np.diff(t)
    slope, intercept = line_fit(t, o)
    return (
        float(t[-1] - t[0]) <= presence_s
        and float(np.abs(intervals - np.median(intervals)).max()) <= MARK_RHYTHM_S
        and float(np.abs(o - (intercept + slope * t)).max()) <= consistency_ms
    )
