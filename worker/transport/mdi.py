"""The Media Delivery Index (RFC 4445) from datagram arrival times: delay factor and media loss rate.

Per measurement interval (RFC 4445 §3: typically 1 s):

* **DF** (delay factor, ms): a virtual buffer fills with each datagram's bytes as it arrives and
  drains at the media's rate; ``DF = (max(VB) - min(VB)) / rate``, VB taken just after and just
  before each arrival. It is how long a receiver must buffer to absorb the arrival jitter. The
  drain rate is the interval's own mean rate (bytes over the interval's span): for a CBR stream
  that is its mux rate, for VBR the rate the interval needed. A perfectly paced stream's DF is
  one datagram's time on the wire (7 packets at 20 Mb/s: 0.5 ms).
* **MLR** (media loss rate, packets/s): TS packets lost in the interval (continuity counter gaps)
  over its length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MDI_INTERVAL_S = 1.0  # RFC 4445 §3's typical measurement interval

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MdiSample:
    t_start: float  # seconds, arrival clock
    t_end: float
    delay_factor_ms: float
    media_loss_rate: float  # TS packets lost per second
    rate_bps: float  # the drain rate used, bits/s


def delay_factor_s(arrival_s: F64, nbytes: F64) -> tuple[float, float]:
    """DF (seconds) and drain rate (bytes/s) of datagrams arriving at ``arrival_s`` (ascending)
    with ``nbytes`` bytes each. The rate is total bytes over the span from the first arrival to
    the last one plus one mean inter-arrival time (n datagrams cover n inter-arrival periods)."""
    n = arrival_s.size
    if n < 2:
        return 0.0, 0.0
    span = float(arrival_s[-1] - arrival_s[0]) * n / (n - 1)
    if span <= 0:
        return 0.0, 0.0
    rate = float(nbytes.sum()) / span
    cum = np.cumsum(nbytes)
    drained = rate * (arrival_s - arrival_s[0])
    after = cum - drained
    before = after - nbytes
    return float(after.max() - before.min()) / rate, rate


class MdiMeter:
    """Accumulates datagrams and lost packets; closes an MdiSample every ``interval_s``."""

    def __init__(self, interval_s: float = MDI_INTERVAL_S, history: int = 60) -> None:
        self.interval_s = interval_s
        self._t: list[F64] = []
        self._n: list[F64] = []
        self._lost = 0
        self._t0: float | None = None
        self.last: MdiSample | None = None
        self.history: deque[MdiSample] = deque(maxlen=history)  # the latest intervals
        self.max_delay_factor_ms = 0.0

    def add(self, arrival_s: F64, nbytes: F64, lost_packets: int) -> None:
        """One batch's datagrams (arrival seconds, bytes each) and the packets it lost."""
        if arrival_s.size == 0:
            return
        if self._t0 is None:
            self._t0 = float(arrival_s[0])
        self._lost += lost_packets
        self._t.append(arrival_s)
        self._n.append(nbytes)
        if float(arrival_s[-1]) - self._t0 >= self.interval_s:
            t = np.concatenate(self._t)
            n = np.concatenate(self._n)
            df, rate = delay_factor_s(t, n)
            span = max(float(t[-1]) - self._t0, 1e-9)
            self.last = MdiSample(self._t0, float(t[-1]), 1000.0 * df, self._lost / span, 8.0 * rate)
            self.history.append(self.last)
            self.max_delay_factor_ms = max(self.max_delay_factor_ms, self.last.delay_factor_ms)
            self._t, self._n, self._lost, self._t0 = [], [], 0, None
