"""The PCR (ISO/IEC 13818-1 §2.4.2.2): a file's clock, and what TR 101 290 2.3 and 2.4 judge.

``PcrClock`` turns one PID's PCRs into seconds on the analyser's clock and tells a jump (2.3b)
from the time that passed; ``pcr_accuracy_ns`` is 2.4's figure, as information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from worker.transport.indicators import PCR_MAX_JUMP_S

PCR_HZ = 27_000_000
PCR_WRAP = (1 << 33) * 300  # 27 MHz ticks in the 33-bit base's cycle (26.5 h)
RATE_TAU_S = 1.0  # time constant of the packet rate the file clock extrapolates with


class PcrClock:
    """File time from the PCR PID's PCRs; also judges PCR discontinuities (2.3b)."""

    def __init__(self) -> None:
        self.anchor_g: int | None = None  # global packet index of the last PCR
        self.anchor_t = 0.0  # its time on the analyser clock
        self.last_raw = 0
        self.last_arrival: float | None = None
        self.rate_pps: float | None = None  # packets per second between PCRs
        self.rebase = False  # the next PCR comes from another PID: nothing to compare it with

    def step(
        self, raw: int, g: int, flagged: bool, arrival: float | None
    ) -> tuple[float, float | None, float | None]:
        """One PCR (27 MHz ticks) at global packet ``g``. Returns its file-clock time; for an
        unannounced discontinuity, the jump (seconds) it made beyond the time that passed; and
        otherwise the interval since the previous PCR by the PCR values (seconds)."""
        if self.anchor_g is None:
            self.anchor_g, self.anchor_t, self.last_raw = g, raw / PCR_HZ, raw
            self.last_arrival = arrival
            return self.anchor_t, None, None
        dt = ((raw - self.last_raw + PCR_WRAP // 2) % PCR_WRAP - PCR_WRAP // 2) / PCR_HZ
        n = g - self.anchor_g
        if arrival is not None and self.last_arrival is not None:
            elapsed = arrival - self.last_arrival
        elif self.rate_pps:
            elapsed = n / self.rate_pps
        else:
            elapsed = max(dt, 0.0)
        jump: float | None = None
        interval: float | None = None
        if flagged or self.rebase:
            self.rebase = False
            advance = elapsed
        elif dt < 0 or (dt > PCR_MAX_JUMP_S and abs(dt - elapsed) > max(PCR_MAX_JUMP_S, elapsed)):
            jump = dt - elapsed
            advance = elapsed
        else:
            advance = interval = dt
            if dt > 0 and n > 0:
                inst = n / dt
                a = 1.0 - math.exp(-dt / RATE_TAU_S)
                self.rate_pps = inst if self.rate_pps is None else self.rate_pps + a * (inst - self.rate_pps)
        self.anchor_g, self.anchor_t, self.last_raw = g, self.anchor_t + advance, raw
        self.last_arrival = arrival
        return self.anchor_t, jump, interval


@dataclass
class PcrPid:
    """Repetition and discontinuity state of one PCR PID, judged on the analyser clock."""

    clock: PcrClock = field(default_factory=PcrClock)
    last_t: float | None = None  # analyser time of its last PCR
    stalled: bool = False  # live: its PCRs absent for PCR_STALL_S, already reported


def pcr_accuracy_ns(g: npt.NDArray[np.int64], raw: npt.NDArray[np.int64]) -> float | None:
    """TR 101 290 2.4 as information: the largest deviation (ns) of PCRs ``raw`` (27 MHz ticks)
    at packets ``g`` from the least-squares line PCR = a + b * packet index, i.e. from a
    constant rate; None for fewer than 3 PCRs or a gap or jump among them. The standard allows
    ±500 ns on CBR streams; on VBR the figure measures the rate's variation, not the clock."""
    if g.size < 3:
        return None
    ticks = ((raw - raw[0]) % PCR_WRAP).astype(np.float64)
    steps = np.diff(ticks)
    if np.any(steps > PCR_MAX_JUMP_S * PCR_HZ) or np.any(steps < 0):
        return None
    x = g.astype(np.float64)
    x -= x.mean()
    y = ticks - ticks.mean()
    resid = y - (float(x @ y) / float(x @ x)) * x
    return float(np.abs(resid).max()) * 1e9 / PCR_HZ
