"""The runs the av_sync detector builds into defects: sync-mark pairs, drifts and episodes
(a defect in the making) of the marks and of the programme-content measurement."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from worker.sync.correlation import WindowEstimate
from worker.sync.fit import line_fit

F64 = npt.NDArray[np.float64]

SEQUENCE = 64  # pairs kept for classification and drift search
MEDIAN_PAIRS = 600  # pairs of a defect in its offset median (10 min of marks once a second)


@dataclass(slots=True, eq=False)  # compared by identity
class Pair:
    t: float  # flash time, s
    offset: float  # beep − flash, ms
    drift: bool = False  # part of a drift run
    classified: bool = False


@dataclass(slots=True)
class DriftRun:
    pairs: list[Pair]
    start_s: float  # where the drift began (extrapolated), s
    slope: float = 0.0  # ms/s
    intercept: float = 0.0  # ms at t = 0

    def refit(self, last: int) -> None:
        """Fit the line to the ``last`` latest pairs (a drift may bend slowly)."""
        t = np.array([p.t for p in self.pairs[-last:]])
        o = np.array([p.offset for p in self.pairs[-last:]])
        self.slope, self.intercept = line_fit(t, o)

    def predict(self, t: float) -> float:
        return self.intercept + self.slope * t


@dataclass(slots=True)
class Episode:
    """A defect in the making: a run of bad pairs."""

    start_s: float
    last_bad_t: float = 0.0
    opened: bool = False
    drifting: bool = False
    critical: bool = False
    count: int = 0
    low: float = math.inf  # ms
    high: float = -math.inf  # ms
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=MEDIAN_PAIRS))  # offsets, ms
    members: list[Pair] = field(default_factory=list)  # its pairs, kept until it is reported
    # Least-squares sums of (t - start_s, offset) for the drift slope.
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def add(self, pair: Pair) -> None:
        x, y = pair.t - self.start_s, pair.offset
        self.count += 1
        self.low, self.high = min(self.low, y), max(self.high, y)
        self.recent.append(y)
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y
        self.drifting = self.drifting or pair.drift
        if not self.opened:
            self.members.append(pair)

    def slope(self) -> float:
        """Least-squares slope of offset against time, ms/s (0 with fewer than 2 pairs)."""
        n = self.count
        den = n * self.sxx - self.sx * self.sx
        return (n * self.sxy - self.sx * self.sy) / den if n >= 2 and den > 1e-12 else 0.0


def centre(window: WindowEstimate) -> float:
    return 0.5 * (window.start_s + window.end_s)


@dataclass(slots=True)
class ContentEpisode:
    """A content defect: confident windows outside the detectability window."""

    start_s: float
    windows: list[WindowEstimate]
    opened: bool = False
    critical: bool = False
    good: list[WindowEstimate] = field(default_factory=list)  # confident windows inside, since

    @property
    def last_bad(self) -> WindowEstimate:
        return self.windows[-1]

    def offsets(self) -> F64:
        return np.array([w.offset_ms or 0.0 for w in self.windows[-MEDIAN_PAIRS:]])
