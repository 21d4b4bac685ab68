"""When programme content (no marks) shows a defect: the episodes of the content windows of
:mod:`worker.sync.content` (the rules are in :mod:`worker.detectors.av_sync`'s docstring).

A confident window outside the detectability window joins a run; ``content_windows`` of them,
each within ``content_agree_ms`` of the one before, open a defect. ``content_close_windows``
confident windows inside close it, as do ``content_timeout_s`` without a confident window and
the end of the media (:meth:`ContentJudge.close`). Unknown windows move nothing.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import numpy as np

from worker.detectors.base import Finding
from worker.sync.correlation import WindowEstimate
from worker.sync.episodes import MEDIAN_PAIRS, ContentEpisode, centre
from worker.sync.findings import PROGRAMME_KEY, sync_finding
from worker.sync.fit import line_fit


class ContentOptions(Protocol):
    """What the judgement reads of the detector's options."""

    @property
    def max_early_ms(self) -> float: ...

    @property
    def max_late_ms(self) -> float: ...

    @property
    def critical_early_ms(self) -> float: ...

    @property
    def critical_late_ms(self) -> float: ...

    @property
    def content_window_s(self) -> float: ...

    @property
    def content_windows(self) -> int: ...

    @property
    def content_close_windows(self) -> int: ...

    @property
    def content_agree_ms(self) -> float: ...

    @property
    def content_timeout_s(self) -> float: ...


class ContentJudge:
    """The content defect in progress, window by window (see the module docstring)."""

    def __init__(self, options: ContentOptions) -> None:
        self.options = options
        self._run: list[WindowEstimate] = []  # confident bad windows, not yet a defect
        self._good: WindowEstimate | None = None  # the latest confident window inside
        self._episode: ContentEpisode | None = None
        self._end = -math.inf  # end of the last content defect, s
        # Every content window (known or not), for inspection, tests and the benchmark.
        self.windows: deque[WindowEstimate] = deque(maxlen=720)
        # (media time s at which it was reported, finding) of every content finding.
        self.reports: list[tuple[float, Finding]] = []

    def on_window(self, window: WindowEstimate, origin: float) -> list[Finding]:
        """Advance the defect over one window (``origin``: the earliest media time seen, s)."""
        opts = self.options
        self.windows.append(window)
        ep = self._episode
        if window.offset_ms is None:
            # Unknown: neither in sync nor a defect; a defect with nothing confident for long
            # ends where its evidence did.
            if ep is not None and window.end_s - ep.last_bad.end_s > opts.content_timeout_s:
                return self.close(ep.last_bad.end_s, window.end_s)
            return []
        offset = window.offset_ms
        if -opts.max_early_ms <= offset <= opts.max_late_ms:
            self._run.clear()
            self._good = window
            if ep is None:
                return []
            ep.good.append(window)
            if len(ep.good) < opts.content_close_windows:
                return []
            return self.close(0.5 * (centre(ep.last_bad) + centre(ep.good[0])), window.end_s)
        if ep is not None:
            ep.good.clear()
            ep.windows.append(window)
            ep.critical = ep.critical or self._critical(ep)
            return []
        run = self._run
        if run and abs(offset - (run[-1].offset_ms or 0.0)) > opts.content_agree_ms:
            run.clear()  # not the same offset: start the run afresh
        run.append(window)
        if len(run) < opts.content_windows:
            return []
        good = self._good
        # The change came between the last window in sync and the first one out, as far as the
        # windows tell; bad from the first window on: from its start.
        start = 0.5 * (centre(good) + centre(run[0])) if good is not None else run[0].start_s
        start = max(start, self._end, min(origin, run[0].start_s))
        ep = self._episode = ContentEpisode(start_s=start, windows=list(run), opened=True)
        run.clear()
        ep.critical = self._critical(ep)
        finding = self._finding(ep, None)
        self.reports.append((window.end_s, finding))
        return [finding]

    def close(self, end: float, now: float) -> list[Finding]:
        """End the defect at ``end`` (reported at media time ``now``); forget the run."""
        self._run.clear()
        ep = self._episode
        if ep is None:
            return []
        self._episode = None
        end = max(end, ep.start_s)
        self._end = end
        finding = self._finding(ep, end)
        self.reports.append((now, finding))
        return [finding]

    def _critical(self, ep: ContentEpisode) -> bool:
        level = float(np.median(ep.offsets()))
        return level < -self.options.critical_early_ms or level > self.options.critical_late_ms

    def _finding(self, ep: ContentEpisode, end_s: float | None) -> Finding:
        offsets = ep.offsets()
        centres = np.array([centre(w) for w in ep.windows[-MEDIAN_PAIRS:]])
        slope, _ = line_fit(centres, offsets)
        metrics = {
            "offset_ms": float(np.median(offsets)),
            "offset_min_ms": float(offsets.min()),
            "offset_max_ms": float(offsets.max()),
            "drift_ms_per_s": slope,
            "confidence": float(np.median([w.confidence for w in ep.windows])),
            "prominence": float(np.median([w.prominence for w in ep.windows])),
            "windows": float(len(ep.windows)),
            "window_s": self.options.content_window_s,
            "first_window_s": ep.windows[0].start_s,
            "last_window_s": ep.last_bad.end_s,
        }
        return sync_finding(ep.start_s, end_s, ep.critical, metrics, PROGRAMME_KEY, "content")
