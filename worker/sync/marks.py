"""Sync marks: flashes (:mod:`worker.sync.flash`) and beeps (:mod:`worker.sync.beep`) paired.

Test signals carry marks: a white picture and, at the same instant, a short 1 kHz beep
(``avmon.testsrc``: once a second, one white frame and a 40 ms -12 dBFS beep whose envelope
crosses half amplitude at the frame's time). Flashes and beeps are paired one to one, as mutual
nearest neighbours no further apart than the window (the detector's ``max_pair_ms``), once both
timelines are two windows past the flash (nothing can compete for it any more); the pair's
offset is beep time − flash time. Marks once a second are ambiguous beyond ±500 ms: a mark then
pairs with its neighbour's flash.
"""

from __future__ import annotations

import bisect

MARK_RHYTHM_S = 0.07  # marks are regular: intervals within this of their median (a 15 fps frame)
PAIR_QUEUE = 64  # flashes waiting for a partner, at most (a stream without usable audio)


class MarkPairer:
    """Pairs flashes and beeps as mutual nearest neighbours within ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._pending: list[float] = []  # flashes not yet decided, in time order
        self._flashes: list[float] = []  # recent flashes, decided or not, in time order
        self._beeps: list[float] = []  # recent unpaired beeps, in time order

    def add_flash(self, t: float) -> None:
        bisect.insort(self._pending, t)
        bisect.insort(self._flashes, t)
        if len(self._pending) > PAIR_QUEUE:
            del self._pending[0]  # no sound to pair them with (a picture-only stretch)
        if len(self._flashes) > 2 * PAIR_QUEUE:
            del self._flashes[0]

    def add_beep(self, t: float) -> None:
        bisect.insort(self._beeps, t)
        if len(self._beeps) > PAIR_QUEUE:
            del self._beeps[0]  # no pictures to pair them with (an audio-only stretch)

    def resolve(self, progress: float) -> list[tuple[float, float]]:
        """Pairs (flash time, beep time − flash time), s, for the flashes that can be decided:
        every beep and flash that could compete for them is known once both timelines have
        reached ``progress`` ≥ flash + 2 ``window``."""
        w = self.window
        pairs: list[tuple[float, float]] = []
        while self._pending and self._pending[0] + 2.0 * w <= progress:
            f = self._pending.pop(0)
            near = [b for b in self._beeps if abs(b - f) <= w]
            if not near:
                continue
            b = min(near, key=lambda x: abs(x - f))
            rival = min(self._flashes, key=lambda x: abs(x - b))
            if rival == f:
                pairs.append((f, b - f))
                self._beeps.remove(b)
        horizon = progress - 4.0 * w
        self._beeps = [b for b in self._beeps if b >= horizon]
        self._flashes = [x for x in self._flashes if x >= horizon or x in self._pending]
        return pairs
