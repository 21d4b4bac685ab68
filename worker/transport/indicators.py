"""The TR 101 290 indicators the analyser reports, their raise and clear rules side by side, and
the one state machine (hysteresis) that turns errors into open and close findings.

An indicator *raises* at its first error: the finding opens at once (``end_s`` None), stamped
with the error's time. It *clears* when no error has been seen for ``hold_s`` seconds of the
analyser's clock and no condition is still going on (a PAT still missing): the finding closes
with ``end_s`` at the last error. Errors less than ``hold_s`` apart belong to the same finding,
whose ``metrics["count"]`` counts them.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shared.models import DefectType
from worker.detectors.base import Finding, Severity
from worker.transport.packets import PACKET, SYNC_ACQUIRE_COUNT

# ETSI TR 101 290 V1.4.1 §5.2 thresholds, each with the standard's value.
PAT_MAX_INTERVAL_S = 0.5  # 1.3: "PID 0x0000 does not occur at least every 0,5 s"
PMT_MAX_INTERVAL_S = 0.5  # 1.5: "... table_id 0x02 ... do not occur at least every 0,5 s"
PID_TIMEOUT_DEFAULT_S = 5.0  # 1.6: "for a user specified period" (TSDuck's default: 5 s)
PCR_MAX_INTERVAL_S = 0.1  # 2.3a: "time interval between two consecutive PCR values more than 100 ms"
# Not the standard's: live PCRs absent this long (arrival time) are reported before the next one.
PCR_STALL_S = 1.0
PCR_MAX_JUMP_S = 0.1  # 2.3b: "PCRi+1 - PCRi is outside the range of 0...100 ms"
PTS_MAX_INTERVAL_S = 0.7  # 2.5: "PTS repetition period more than 700 ms"
# Not the standard's: bytes without ever finding sync before the input is called "not TS".
NO_SYNC_REPORT_BYTES = 2 * SYNC_ACQUIRE_COUNT * PACKET  # 1,880


@dataclass(frozen=True, slots=True)
class Rule:
    type: DefectType
    number: str  # ETSI TR 101 290 V1.4.1 §5.2 indicator number
    name: str  # the standard's own name
    raise_when: str
    clear_when: str

    @property
    def priority(self) -> int:
        return int(self.number[0])

    @property
    def severity(self) -> Severity:
        return Severity.CRITICAL if self.priority == 1 else Severity.WARNING


_CLEAR = "no error for the hold time (TransportOptions.clear_hold_s)"

RULES: dict[str, Rule] = {
    r.type.value: r
    for r in (
        Rule(DefectType.TS_SYNC_LOSS, "1.1", "TS_sync_loss",
             "2 consecutive corrupted sync bytes, or no sync found in the first 1,880 bytes",
             "5 consecutive correct sync bytes, then " + _CLEAR),
        Rule(DefectType.SYNC_BYTE_ERROR, "1.2", "Sync_byte_error",
             "a sync byte other than 0x47 in a stream that stays aligned", _CLEAR),
        Rule(DefectType.PAT_ERROR, "1.3", "PAT_error",
             "PID 0x0000 absent for more than 0.5 s (from the first packet: a TS without a PAT), "
             "a table other than 0x00 on it, or it is scrambled",
             "PID 0x0000 seen again, then " + _CLEAR),
        Rule(DefectType.CONTINUITY_COUNT_ERROR, "1.4", "Continuity_count_error",
             "a lost packet, packets out of order, or a packet occurring more than twice "
             "(null PID, discontinuity_indicator and adaptation-only packets skipped)", _CLEAR),
        Rule(DefectType.PMT_ERROR, "1.5", "PMT_error",
             "no valid table 0x02 section for more than 0.5 s on a PMT PID the PAT names, or it "
             "is scrambled", "the PMT seen again, then " + _CLEAR),
        Rule(DefectType.PID_ERROR, "1.6", "PID_error",
             "an audio or video PID the PMT names absent for more than the user-set time "
             "(TransportOptions.pid_timeout_s, 5 s)", "the PID seen again, then " + _CLEAR),
        Rule(DefectType.TRANSPORT_ERROR, "2.1", "Transport_error",
             "transport_error_indicator set", _CLEAR),
        Rule(DefectType.CRC_ERROR, "2.2", "CRC_error",
             "a CRC_32 mismatch in a PAT, CAT, PMT, NIT, SDT/BAT or EIT section", _CLEAR),
        Rule(DefectType.PCR_REPETITION_ERROR, "2.3a", "PCR_repetition_error",
             "more than 100 ms between two PCRs of the PCR PID",
             "PCRs seen again, then " + _CLEAR),
        Rule(DefectType.PCR_DISCONTINUITY_ERROR, "2.3b", "PCR_discontinuity_indicator_error",
             "two consecutive PCRs differ by less than 0 or more than 100 ms, by more than the "
             "time that passed between them, without discontinuity_indicator", _CLEAR),
        Rule(DefectType.PTS_ERROR, "2.5", "PTS_error",
             "more than 700 ms between two PTS of a PID whose packets keep coming (a PID that "
             "stops altogether for longer than the PID timeout is PID_error)",
             "a PTS seen again, then " + _CLEAR),
    )
}


@dataclass
class _Episode:
    start: float
    last: float
    count: int = 0
    ongoing: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


class Indicators:
    """Open episodes per (indicator, PID) and the counters Prometheus reads."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._open: dict[tuple[str, int | None], _Episode] = {}
        self._out: list[Finding] = []
        self.counts: Counter[str] = Counter({name: 0 for name in RULES})
        self.per_pid: dict[int, Counter[str]] = {}

    def begin_batch(self) -> None:
        """Conditions still going on are re-declared by every batch that sees them."""
        for ep in self._open.values():
            ep.ongoing = False

    def hit(
        self,
        type_: str,
        t0: float,
        t1: float,
        *,
        count: int = 1,
        pid: int | None = None,
        ongoing: bool = False,
        add: dict[str, float] | None = None,
        set_: dict[str, float] | None = None,
    ) -> None:
        """``count`` errors of ``type_`` between ``t0`` and ``t1`` (seconds, analyser clock);
        ``ongoing``: the condition still holds at ``t1``. ``add`` metrics are summed over the
        episode, ``set_`` metrics keep their latest value."""
        key = (type_, pid)
        ep = self._open.get(key)
        if ep is not None and not ep.ongoing and t0 - ep.last > self.hold_s:
            self._close(key, ep)
            ep = None
        if ep is None:
            ep = self._open[key] = _Episode(t0, t1)
            if pid is not None:
                ep.metrics["pid"] = float(pid)
            opened = True
        else:
            opened = False
        ep.start = min(ep.start, t0)
        ep.last = max(ep.last, t1)
        ep.count += count
        ep.ongoing = ep.ongoing or ongoing
        for k, v in (add or {}).items():
            ep.metrics[k] = ep.metrics.get(k, 0.0) + v
        ep.metrics.update(set_ or {})
        if count:
            self.counts[type_] += count
            if pid is not None:
                self.per_pid.setdefault(pid, Counter())[type_] += count
        if opened:
            self._out.append(self._finding(type_, pid, ep, None))

    def hits(
        self,
        type_: str,
        times: npt.NDArray[np.float64],
        *,
        pid: int | None = None,
        add: dict[str, npt.NDArray[np.float64]] | None = None,
        set_: dict[str, float] | None = None,
    ) -> None:
        """One error at each of ``times`` (ascending), grouped into episodes without a Python
        loop per error: a group ends where two errors are more than the hold time apart."""
        if times.size == 0:
            return
        cut = np.flatnonzero(np.diff(times) > self.hold_s) + 1
        bounds = [0, *cut.tolist(), times.size]
        for a, b in itertools.pairwise(bounds):
            sums = {k: float(v[a:b].sum()) for k, v in (add or {}).items()}
            self.hit(type_, float(times[a]), float(times[b - 1]), count=b - a, pid=pid, add=sums,
                     set_=set_)

    def tick(self, now: float) -> list[Finding]:
        """Close what has been clear for the hold time at ``now``; the findings since last tick."""
        for key, ep in list(self._open.items()):
            if not ep.ongoing and now - ep.last > self.hold_s:
                self._close(key, ep)
        out, self._out = self._out, []
        return out

    def close_all(self, t_end: float) -> list[Finding]:
        for key, ep in list(self._open.items()):
            if ep.ongoing:
                ep.last = max(ep.last, t_end)
            self._close(key, ep)
        out, self._out = self._out, []
        return out

    def is_open(self, type_: str, pid: int | None = None) -> bool:
        return (type_, pid) in self._open

    def _close(self, key: tuple[str, int | None], ep: _Episode) -> None:
        del self._open[key]
        self._out.append(self._finding(key[0], key[1], ep, ep.last))

    @staticmethod
    def _finding(type_: str, pid: int | None, ep: _Episode, end: float | None) -> Finding:
        metrics = {**ep.metrics, "count": float(ep.count)}
        return Finding(type_, ep.start, end, RULES[type_].severity, metrics,
                       key="" if pid is None else f"pid{pid}")


class GapWatch:
    """Something that must recur at most ``limit`` seconds apart (a PAT, a PID, a PCR).

    ``observe`` takes the times it was seen in a batch and the batch's end time and returns the
    gaps longer than ``limit`` as (start, end, new): start ``limit`` after the last sighting,
    end at the next sighting or None while it is still missing; ``new`` is False for the end of
    a gap already reported as going on (so it is counted once)."""

    def __init__(self, limit: float, last: float | None = None) -> None:
        self.limit = limit
        self.last = last
        self.in_gap = False
        self.seen = False

    def observe(
        self, times: npt.NDArray[np.float64], now: float
    ) -> list[tuple[float, float | None, bool]]:
        spans: list[tuple[float, float | None, bool]] = []
        if times.size:
            seq = times if self.last is None else np.concatenate(([self.last], times))
            gaps = np.flatnonzero(np.diff(seq) > self.limit)
            carried = self.last is not None and self.in_gap
            for i in gaps.tolist():
                spans.append((float(seq[i]) + self.limit, float(seq[i + 1]), not (i == 0 and carried)))
            self.last = float(max(seq[-1], self.last if self.last is not None else seq[-1]))
            self.in_gap = False
            self.seen = True
        if self.last is not None and now - self.last > self.limit:
            spans.append((self.last + self.limit, None, not self.in_gap))
            self.in_gap = True
        return spans
