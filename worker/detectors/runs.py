"""The run every duration-based detector keeps: open after a minimum duration, close when its
end is known, report whole what only proved long enough at its end.

A run begins at the first bad picture or window (``start``), *opens* (the open finding, ``end_s``
None) once it has lasted ``min_s``, and *stops* at the first good one (or at the end of the
media): the close finding if it had opened, both findings at once if it is long enough only now
that its end is known (a run of exactly ``min_s``), nothing if it stayed short. Both findings
share ``start``, so the sink derives one ``defect_id`` for them (DESIGN.md §4).
"""

from __future__ import annotations

from collections.abc import Callable

Ends = list[tuple[float, float | None]]  # (start_s, end_s) of each finding to report, in order


class RunTracker:
    """One run of a defect in progress (times in media seconds)."""

    __slots__ = ("is_open", "min_s", "start")

    def __init__(self, min_s: float) -> None:
        self.min_s = min_s  # minimum duration, s
        self.start: float | None = None  # when the current run began; None: no run
        self.is_open = False  # its open finding has been reported

    @property
    def active(self) -> bool:
        return self.start is not None

    def begin(self, t: float) -> None:
        """Start a new run at ``t``, forgetting any current one (which must have been stopped)."""
        self.start = t
        self.is_open = False

    def extend(self, t: float, eligible: Callable[[], bool] | None = None) -> bool:
        """The run goes on at ``t`` (beginning there if none is running). True when it opens
        now: it has lasted ``min_s`` and ``eligible`` (asked only then: it may cost) agrees."""
        if self.start is None:
            self.begin(t)
            assert self.start is not None
        if self.is_open or t - self.start < self.min_s or (eligible is not None and not eligible()):
            return False
        self.is_open = True
        return True

    def stop(self, t: float, eligible: Callable[[], bool] | None = None) -> Ends:
        """End the run at ``t`` (never before its start): the findings to report, as (start,
        end) pairs: ``[(start, end)]`` if it was open, ``[(start, None), (start, end)]`` if it
        is long enough only now, ``[]`` if it never was (or no run is going on)."""
        start = self.start
        if start is None:
            return []
        end = max(t, start)
        ends: Ends = []
        if not self.is_open and end - start >= self.min_s and (eligible is None or eligible()):
            ends.append((start, None))
            self.is_open = True
        if self.is_open:
            ends.append((start, end))
        self.start = None
        self.is_open = False
        return ends
