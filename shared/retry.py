"""Capped, jittered exponential backoff: the one retry schedule of the project.

The wait after the ``attempt``-th consecutive failure (1-based) is ``base_s × 2**(attempt − 1)``
seconds, at most ``cap_s``, then drawn uniformly between half of it and all of it (so that the
workers a receiver or store lost do not all come back at the same instant, while the wait still
grows), then raised to the other side's ``Retry-After`` when it asks for longer, up to the cap.

Its users, and how each maps onto it:

* webhook and SNS delivery (``worker/notify/delivery.py``): ``backoff_delay(attempt, backoff_s,
  backoff_max_s, retry_after_s=...)`` between two attempts of one message, awaited;
* the defect writer (``worker/sink.py``): a :class:`Backoff` without jitter, ``0.4 s`` doubling
  to ``10 s``; it never waits, it skips flushes until :attr:`Backoff.waiting` turns false;
* source reconnects (``worker/reader.py``): ``backoff_delay(min(attempt, 10), 1.0,
  reconnect_max_s)`` is its ``uniform(d / 2, d)`` of ``d = min(reconnect_max_s, 0.5 × 2**min(attempt,
  10))``, draw for draw.

No I/O and no sleeping here: the caller waits the way its loop can (``asyncio.sleep``, an
``Event.wait``, or a deadline checked on the next pass).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

# 2**1000 is still a finite float and past every cap anyone sets: the exponent stops there, so a
# source that stays down for days cannot overflow the computation.
_MAX_DOUBLINGS = 1000


def exponential_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """``base_s × 2**(attempt − 1)`` seconds, at most ``cap_s``: the wait after the ``attempt``-th
    consecutive failure (1-based), before jitter."""
    if attempt < 1:
        raise ValueError(f"attempt counts failures from 1, got {attempt}")
    return min(cap_s, base_s * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))


def backoff_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    *,
    rng: random.Random | None = None,
    jitter: bool = True,
    retry_after_s: float | None = None,
) -> float:
    """Seconds to wait after the ``attempt``-th consecutive failure (1-based).

    ``jitter``: drawn uniformly in [d/2, d] from ``rng`` (the ``random`` module's generator when
    None). ``retry_after_s``: what the other side asked for (HTTP ``Retry-After``), honoured when
    longer than the draw, never beyond ``cap_s``.
    """
    delay = exponential_delay(attempt, base_s, cap_s)
    if jitter:
        uniform = random.uniform if rng is None else rng.uniform
        delay = uniform(delay / 2, delay)
    if retry_after_s is not None:
        delay = min(cap_s, max(delay, retry_after_s))
    return delay


@dataclass(slots=True)
class Backoff:
    """Consecutive failures of one dependency and the time before which it is not tried again,
    for a loop that must not wait: it checks :attr:`waiting` and tries again on a later pass.

    Times are ``clock()`` seconds (monotonic by default); ``until`` is when trying is allowed again.
    """

    base_s: float
    cap_s: float
    jitter: bool = True
    rng: random.Random | None = None
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    until: float = -math.inf

    def failed(self, *, retry_after_s: float | None = None) -> float:
        """Count a failure and push :attr:`until` out by the next wait; the wait, in seconds."""
        self.failures += 1
        delay = backoff_delay(
            self.failures,
            self.base_s,
            self.cap_s,
            rng=self.rng,
            jitter=self.jitter,
            retry_after_s=retry_after_s,
        )
        self.until = self.clock() + delay
        return delay

    def succeeded(self) -> None:
        """The next failure starts the schedule again from ``base_s``. A wait already running is
        left to end on its own (the caller may have tried early, e.g. for one stream only)."""
        self.failures = 0

    @property
    def waiting(self) -> bool:
        """True until the current wait is over."""
        return self.clock() < self.until
