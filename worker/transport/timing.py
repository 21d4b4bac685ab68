"""The analyser's clock and its PCR checks (TR 101 290 2.3): packet times of a file from the PCR
of the clock's PID, and repetition and discontinuity on every program's PCR PID.

A mixin of :class:`~worker.transport.analyzer.TransportAnalyzer`, which owns the state named
below (the per-stream state ties every check together); these methods read and update it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.models import DefectType as D
from worker.transport.indicators import PCR_MAX_INTERVAL_S, PCR_STALL_S, Indicators
from worker.transport.packets import NULL_PID, Headers
from worker.transport.pcr import PcrClock, PcrPid, pcr_accuracy_ns

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class PcrTiming:
    """The clocks-and-PCR part of the per-stream analyser (see the module doc)."""

    _ind: Indicators
    _clock: PcrClock
    _pcr: dict[int, PcrPid]
    _pcr_pid: int | None  # the clock's: the first program's PCR PID
    _pmt_pcr: dict[int, int]  # PMT PID -> its PCR PID
    _pcr_acc: float | None
    _pcr_acc_max: float | None
    _g0: int  # global index of the batch's first packet
    _now: float | None
    _live: bool | None

    def _pcr_on_pid(self, h: Headers) -> tuple[I64, I64]:
        if h.pcr_index.size == 0:
            return h.pcr_index, h.pcr
        if self._pcr_pid is None:
            self._pcr_pid = int(h.pid[h.pcr_index[0]])
        on = h.pid[h.pcr_index] == self._pcr_pid
        return h.pcr_index[on], h.pcr[on]

    def _pcr_accuracy(self, idx: I64, raw: I64, h: Headers) -> None:
        if h.discontinuity[idx].any():
            return
        acc = pcr_accuracy_ns(self._g0 + idx, raw)
        if acc is not None:
            self._pcr_acc = round(acc, 1)
            self._pcr_acc_max = round(max(acc, self._pcr_acc_max or 0.0), 1)

    def _file_times(self, h: Headers, n: int, idx: I64, raw: I64) -> F64:
        """Packet times from the PCR clock (the PCRs ``raw`` of packets ``idx`` of the clock's
        PID): interpolated between PCRs, extrapolated after."""
        g = self._g0 + np.arange(n, dtype=np.int64)
        anchors_g: list[int] = [] if self._clock.anchor_g is None else [self._clock.anchor_g]
        anchors_t: list[float] = [] if self._clock.anchor_g is None else [self._clock.anchor_t]
        for i, r in zip(idx.tolist(), raw.tolist(), strict=True):
            ti, jump, interval = self._clock.step(r, self._g0 + i, bool(h.discontinuity[i]), None)
            anchors_g.append(self._g0 + i)
            anchors_t.append(ti)
            if self._pcr_pid is not None:
                self._pcr_seen(self._pcr_pid, ti, jump, interval)
        if not anchors_g:
            t = np.full(n, self._now if self._now is not None else 0.0)
        else:
            t = np.interp(g, anchors_g, anchors_t)
            after = g > anchors_g[-1]
            if after.any() and self._clock.rate_pps:
                # Capped at the PCR interval limit: beyond it the clock would be a guess (the
                # tail of a file after its last PCR, or PCRs withheld), and a PCR gap is judged
                # by the next PCR's value instead.
                ahead = (g[after] - anchors_g[-1]) / self._clock.rate_pps
                t[after] = anchors_t[-1] + np.minimum(ahead, PCR_MAX_INTERVAL_S)
        if self._now is not None:
            np.maximum(t, self._now, out=t)
        return np.maximum.accumulate(t)

    def _pcr_judge(self, h: Headers, t: F64, *, skip_clock_pid: bool) -> None:
        """Repetition and discontinuity on every program's PCR PID, on the analyser clock (a
        file's own clock PID is judged as it makes the clock)."""
        pids = {*self._pmt_pcr.values(), *([self._pcr_pid] if self._pcr_pid is not None else [])}
        pids.discard(NULL_PID)
        if skip_clock_pid and self._pcr_pid is not None:
            pids.discard(self._pcr_pid)
        on = h.pid[h.pcr_index]
        for pid in pids:
            st = self._pcr.setdefault(pid, PcrPid())
            sel = on == pid
            for i, r in zip(h.pcr_index[sel].tolist(), h.pcr[sel].tolist(), strict=True):
                ti = float(t[i])
                _, jump, interval = st.clock.step(r, self._g0 + i, bool(h.discontinuity[i]), ti)
                self._pcr_seen(pid, ti, jump, interval)
        if self._live:
            self._pcr_stall(float(t[-1]))

    def _pcr_stall(self, now: float) -> None:
        for pid, st in self._pcr.items():
            if st.last_t is not None and now - st.last_t > PCR_STALL_S:
                self._ind.hit(D.PCR_REPETITION_ERROR.value, st.last_t + PCR_MAX_INTERVAL_S, now,
                              count=int(not st.stalled), pid=pid, ongoing=True)
                st.stalled = True

    def _pcr_seen(self, pid: int, t: float, jump: float | None, interval: float | None) -> None:
        """One PCR of ``pid`` at analyser time ``t``. Repetition (2.3a) is judged on the PCR
        values, which network jitter cannot move; the analyser clock only places the gap."""
        st = self._pcr.setdefault(pid, PcrPid())
        last, st.last_t = st.last_t, t
        stalled, st.stalled = st.stalled, False
        if jump is not None:
            self._ind.hit(D.PCR_DISCONTINUITY_ERROR.value, t, t, pid=pid,
                          set_={"jump_ms": round(1000.0 * jump, 3)})
        elif last is not None and interval is not None and interval > PCR_MAX_INTERVAL_S:
            start = min(last + PCR_MAX_INTERVAL_S, t)
            self._ind.hit(D.PCR_REPETITION_ERROR.value, start, t, count=int(not stalled),
                          pid=pid, set_={"interval_ms": round(1000.0 * interval, 3)})
