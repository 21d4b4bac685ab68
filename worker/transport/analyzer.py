"""ETSI TR 101 290 priority 1 and 2 on MPEG-TS bytes as they arrive: pure, bytes in, findings out.

Modelled on TSDuck's ``TR101290Analyzer`` and ``ContinuityAnalyzer`` (one context per PID, the
indicators named as the standard names them) with ltntstools' habit of writing raise and clear
rules side by side: ``indicators.py`` holds the rules, the standard's thresholds as named
constants and the hysteresis; ``continuity.py``, ``pcr.py``, ``psi.py`` and ``packets.py`` the
numpy and section work; ``options.py`` the options and counters; ``timing.py`` the clock and
the PCR checks; this module the per-stream state that ties them together.

Time: with ``arrival_s`` (live input) every packet carries its datagram's arrival time. Without
it (a file) the clock is the PCR of the PCR PID, interpolated between PCRs by packet position
(ISO/IEC 13818-1 §2.4.2.2) and extrapolated after the last one at the rate measured between
PCRs; a PCR that jumps (a discontinuity) does not move the clock by its jump.

Cost: bytes are analysed in batches (``TransportOptions.batch_bytes`` / ``batch_s``); each batch
is one ``(n, 188)`` array whose header fields are parsed as arrays. Python runs per batch, per PID
present in it and per PSI packet (a few dozen a second), never per elementary-stream packet.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shared.models import DefectType as D
from worker.detectors.base import Finding
from worker.scte35 import SCTE35_STREAM_TYPE, SCTE35_TABLE
from worker.transport.continuity import CcState, check_continuity
from worker.transport.cues import Cue, CueTracker
from worker.transport.indicators import (
    NO_SYNC_REPORT_BYTES,
    PAT_MAX_INTERVAL_S,
    PMT_MAX_INTERVAL_S,
    PTS_MAX_INTERVAL_S,
    GapWatch,
    Indicators,
)
from worker.transport.mdi import MdiMeter, MdiSample
from worker.transport.options import TransportCounters, TransportOptions
from worker.transport.packets import (
    NULL_PID,
    PACKET,
    PAT_PID,
    Framer,
    Frames,
    Headers,
    parse_headers,
    pts_present,
    rtp_payload_offset,
)
from worker.transport.pcr import PcrClock, PcrPid
from worker.transport.psi import (
    AV_STREAM_TYPES,
    PAT_TABLE,
    PMT_TABLE,
    SI_PIDS,
    Pmt,
    SectionAssembler,
    parse_pat,
    parse_pmt,
)
from worker.transport.timing import PcrTiming

__all__ = ["TransportAnalyzer", "TransportCounters", "TransportOptions"]

MAX_DEFER_BYTES = 4 << 20  # a file's packets wait this long for a first PCR to give them a time

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass
class _Pid:
    packets: int = 0
    cc: CcState = field(default_factory=CcState)
    last_seen: float | None = None
    last_pts: float | None = None
    pts_watch: GapWatch | None = None
    gaps: list[tuple[float, float | None]] = field(default_factory=list)  # recent PID_error gaps


class TransportAnalyzer(PcrTiming):
    """TR 101 290 priority 1 and 2 for one MPEG-TS stream (one instance per stream)."""

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._ind = Indicators(self.options.clear_hold_s)
        self._framer = Framer()
        self._chunks: list[bytes] = []
        self._arrivals: list[float] = []
        self._buffered = 0
        self._live: bool | None = None
        self._rest_arrival = 0.0
        self._stash: Frames | None = None  # file packets waiting for a first PCR
        self._g0 = 0  # global index of the next packet
        self._pids: dict[int, _Pid] = {}
        self._asm: dict[int, SectionAssembler] = {}
        self._pat_seen = False
        self._pat_watch: GapWatch | None = None
        self._pmt_pids: set[int] = set()
        self._pmt_watch: dict[int, GapWatch] = {}
        self._pmts: dict[int, Pmt] = {}
        self._pid_watch: dict[int, GapWatch] = {}
        self._pcr_pid: int | None = None  # the clock's: the first program's PCR PID
        self._main_pmt_pid: int | None = None  # the PMT PID of the PAT's first program
        self._pmt_pcr: dict[int, int] = {}  # PMT PID -> its PCR PID (every program is judged)
        self._pcr: dict[int, PcrPid] = {}
        self._pcr_acc: float | None = None
        self._pcr_acc_max: float | None = None
        self._clock = PcrClock()
        self._mdi = MdiMeter(self.options.mdi_interval_s)
        self._now: float | None = None
        self._first_byte_t: float | None = None
        self._discarded = 0
        self._pmt_times: dict[int, F64] = {}
        self._restart = False  # after discontinuity(): gap watches restart at the next packet
        o = self.options
        self._cues = CueTracker(preroll_min_s=o.cue_preroll_min_s,
                                cue_in_tolerance_s=o.cue_in_tolerance_s, cues_lost_s=o.cues_lost_s)
        self._cue_pids: dict[int, set[int]] = {}  # PMT PID -> its SCTE-35 PIDs (stream_type 0x86)
        self._stc: tuple[int, int] | None = None  # (global packet, PCR ticks) of the last clock PCR

    # -- input ---------------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview, arrival_s: float | None = None) -> list[Finding]:
        """Bytes as they arrived, in any chunking (a 7x188 datagram, a 64 KiB read; a partial
        packet waits for the next call). A datagram that starts with an RTP header (RFC 3550,
        carrying whole TS packets) has it skipped. ``arrival_s``: when the chunk arrived
        (seconds, any origin, monotonic) or None for a file, whose time then comes from the PCR.
        The bytes are copied: the caller may reuse its buffer."""
        if self._live is None:
            self._live = arrival_s is not None
        skip = rtp_payload_offset(data) if arrival_s is not None else 0
        chunk = bytes(data[skip:]) if skip else bytes(data)
        if not chunk:
            return []
        t = arrival_s if arrival_s is not None else 0.0
        if self._first_byte_t is None:
            self._first_byte_t = t if self._live else None
        self._chunks.append(chunk)
        self._arrivals.append(t)
        self._buffered += len(chunk)
        if self._buffered >= self.options.batch_bytes or (
            self._live and t - self._arrivals[0] >= self.options.batch_s
        ):
            return self._process(final=False)
        return []

    def poll(self, now_s: float) -> list[Finding]:
        """Live input that went quiet: analyse what is buffered and judge the timeouts (PAT, PMT,
        PID, PCR) at ``now_s`` (same clock as ``arrival_s``). Silence then reads as missing
        tables and PIDs; a caller that reports a total outage itself (signal_loss) need not poll."""
        out = self._process(final=False) if self._chunks else []
        if self._live and self._now is not None and now_s > self._now:
            self._now = now_s
            self._ind.begin_batch()
            empty = np.empty(0)
            self._sync_state(empty, Frames(np.empty((0, PACKET), np.uint8), empty.astype(np.int64),
                                           empty.astype(bool)))
            self._pcr_stall(now_s)
            self._timeouts(empty, None, None, {})
            out += self._ind.tick(now_s) + self._cues.tick(now_s)
        return out

    def flush(self, t_end: float) -> list[Finding]:
        """End of input: analyse the rest and close every open finding at ``t_end`` at the
        latest (an ongoing condition ends there)."""
        out = self._process(final=True)
        # A file's ongoing conditions end with its last packet, on its own (PCR) clock.
        end = t_end if self._now is None else max(t_end, self._now) if self._live else self._now
        return out + self._ind.close_all(end) + self._cues.close_all(end)

    def discontinuity(self) -> list[Finding]:
        """The input restarts (a reconnect, an HLS ``EXT-X-DISCONTINUITY``): what is buffered is
        analysed, a partial packet dropped, and continuity counters, sections and the PCR start
        afresh; the time between is not judged as missing tables or PIDs (a total outage is the
        session's signal_loss). Open findings close by their own hold."""
        out = self._process(final=True) if self._chunks or self._framer.rest_len else []
        self._framer = Framer()
        for st in self._pids.values():
            st.cc = CcState()
            st.pts_watch = None
            st.gaps = []
        for asm in self._asm.values():
            asm.reset()
        self._clock.rebase = True
        for pcr in self._pcr.values():
            pcr.clock.rebase, pcr.clock.last_arrival = True, None
            pcr.last_t, pcr.stalled = None, False
        self._restart = True
        return out

    @property
    def counters(self) -> TransportCounters:
        per_pid = {
            pid: {"packets": st.packets, **dict(self._ind.per_pid.get(pid, {}))}
            for pid, st in sorted(self._pids.items())
        }
        mdi = self._mdi.last
        return TransportCounters(
            packets=self._g0,
            bytes_discarded=self._discarded,
            indicators=dict(self._ind.counts),
            per_pid=per_pid,
            mdi_delay_factor_ms=None if mdi is None else mdi.delay_factor_ms,
            mdi_media_loss_rate=None if mdi is None else mdi.media_loss_rate,
            mdi_max_delay_factor_ms=None if mdi is None else self._mdi.max_delay_factor_ms,
            pcr_accuracy_ns=self._pcr_acc,
            pcr_accuracy_max_ns=self._pcr_acc_max,
        )

    @property
    def cues(self) -> list[Cue]:
        """SCTE-35 cues decoded so far, in arrival order (``Cue.arrival_s``, ``Cue.splice_s`` on
        the analyser clock, as the findings). The list itself: a reader takes them with
        ``cues = a.cues[:]; a.cues.clear()`` (cues are rare: a few a minute)."""
        return self._cues.cues

    @property
    def cue_pids(self) -> set[int]:
        """PIDs of stream_type 0x86 (SCTE-35) in the current PMTs."""
        return set().union(*self._cue_pids.values())

    @property
    def cue_sections(self) -> tuple[int, int]:
        """(valid, invalid) splice_info_sections since the start (invalid: CRC or malformed)."""
        return self._cues.sections, self._cues.invalid_sections

    @property
    def mdi(self) -> list[MdiSample]:
        """RFC 4445 figures of the latest measurement intervals (live input only), oldest first."""
        return list(self._mdi.history)

    # -- one batch -----------------------------------------------------------------------------

    def _process(self, *, final: bool) -> list[Finding]:
        out = self._process_batch(final=final)
        return out + self._cues.tick(self._now) if self._now is not None else out

    def _process_batch(self, *, final: bool) -> list[Finding]:
        data = b"".join(self._chunks)
        arrivals = np.array(self._arrivals)
        sizes = np.fromiter((len(c) for c in self._chunks), np.int64, len(self._chunks))
        self._chunks, self._arrivals, self._buffered = [], [], 0
        frames, head = self._framer.push(data, final=final)
        self._discarded += frames.discarded
        n = frames.packets.shape[0]
        t_arr: F64 | None = None
        if self._live:
            if n and arrivals.size:
                # A packet arrived with the chunk that holds its last byte.
                last_byte = frames.ends - 1
                ends = head + np.cumsum(sizes)
                k = np.minimum(np.searchsorted(ends, last_byte, side="right"), ends.size - 1)
                t_arr = np.where(last_byte < head, self._rest_arrival, arrivals[k])
            elif n:
                t_arr = np.full(n, self._rest_arrival)
            if arrivals.size:
                self._rest_arrival = float(arrivals[-1])
        self._ind.begin_batch()
        if n == 0:
            now = float(arrivals[-1]) if self._live and arrivals.size else (self._now or 0.0)
            self._now = max(now, self._now or now)
            self._sync_state(np.empty(0), frames)
            if self._live:
                self._pcr_stall(self._now)
            self._timeouts(np.empty(0), None, None, {})
            return self._ind.tick(self._now)
        if not self._live:
            if self._stash is not None:
                frames = _concat(self._stash, frames)
                self._stash = None
            if self._clock.anchor_g is None and not final and frames.packets.nbytes < MAX_DEFER_BYTES:
                h = parse_headers(frames.packets)
                if h.pcr_index.size == 0:
                    self._stash = Frames(frames.packets.copy(), frames.ends, frames.bad_sync,
                                         frames.lost_at, frames.acquired_at)
                    return self._ind.tick(self._now) if self._now is not None else []
        p = frames.packets
        n = p.shape[0]
        h = parse_headers(p)
        groups = _by_pid(h.pid)
        cc_bad, dup, lost = self._continuity(p, h, groups)
        events = self._psi(p, h, groups, cc_bad.astype(np.int8) + 2 * dup.astype(np.int8))
        idx, raw = self._pcr_on_pid(h)
        self._pcr_accuracy(idx, raw, h)
        t = t_arr if t_arr is not None else self._file_times(h, n, idx, raw)
        self._cue_sections(events, t, idx, raw)
        self._pcr_judge(h, t, skip_clock_pid=not self._live)
        self._now = max(float(t[-1]), self._now if self._now is not None else float(t[-1]))
        if self._first_byte_t is None:
            self._first_byte_t = float(t[0])
        if self._pat_watch is None:
            self._pat_watch = GapWatch(PAT_MAX_INTERVAL_S, last=self._first_byte_t)
        if self._restart:
            self._restart = False
            t0 = float(t[0])
            for watch in (self._pat_watch, *self._pmt_watch.values(), *self._pid_watch.values()):
                watch.last, watch.in_gap = t0, False
        self._sync_state(t, frames)
        self._ind.hits(D.TRANSPORT_ERROR.value, t[h.tei])
        for pid, idx in groups.items():
            st = self._pids[pid]
            st.last_seen = float(t[idx[-1]])
        self._cc_findings(t, cc_bad, lost, h)
        self._psi_events(events, t)
        self._scrambled_psi(h, t)
        self._timeouts(t, p, h, groups)
        if self._live and arrivals.size:
            self._mdi.add(arrivals, sizes.astype(np.float64), int(lost.sum()))
        self._g0 += n
        return self._ind.tick(self._now)

    # -- continuity (1.4) ----------------------------------------------------------------------

    def _continuity(
        self, p: npt.NDArray[np.uint8], h: Headers, groups: dict[int, I64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], I64]:
        """Per packet: a continuity error, a tolerated duplicate, and packets lost before it.
        Skipped as TSDuck skips them: the null PID, packets without payload (their CC does not
        advance) and packets with the discontinuity_indicator (which restart the count)."""
        n = h.pid.size
        bad_out = np.zeros(n, bool)
        dup_out = np.zeros(n, bool)
        lost = np.zeros(n, np.int64)
        for pid, idx in groups.items():
            st = self._pids.get(pid)
            if st is None:
                st = self._pids[pid] = _Pid()
            st.packets += idx.size
            if pid == NULL_PID:
                continue
            pay, bad, dup, missing = check_continuity(p, h, idx, st.cc)
            bad_out[pay] = bad
            dup_out[pay] = dup
            lost[pay] = missing
        return bad_out, dup_out, lost

    def _cc_findings(self, t: F64, bad: npt.NDArray[np.bool_], lost: I64, h: Headers) -> None:
        idx = np.flatnonzero(bad)
        if idx.size == 0:
            return
        pids = h.pid[idx]
        for pid in np.unique(pids).tolist():
            sel = idx[pids == pid]
            self._ind.hits(D.CONTINUITY_COUNT_ERROR.value, t[sel], pid=pid,
                           add={"missing_packets": lost[sel].astype(np.float64)})

    # -- PSI (1.3, 1.5, 2.2) -------------------------------------------------------------------

    def _psi(
        self, p: npt.NDArray[np.uint8], h: Headers, groups: dict[int, I64], skip: npt.NDArray[np.int8]
    ) -> list[tuple[str, int, int, object]]:
        """Sections of the PAT, the PMTs and the CRC-protected SI, in packet order per PID.
        Returns events (kind, pid, packet index, payload) to be timed once the clock is known."""
        events: list[tuple[str, int, int, object]] = []
        order = [PAT_PID] if PAT_PID in groups else []
        for pid in order:
            self._sections(pid, groups[pid], p, h, skip, events)
        for pid in sorted(self._pmt_pids | set(SI_PIDS)):
            if pid in groups and pid != PAT_PID:
                self._sections(pid, groups[pid], p, h, skip, events)
        for pid in sorted(self.cue_pids - self._pmt_pids - {PAT_PID, *SI_PIDS}):
            if pid in groups:  # after the PMTs, so a PMT's first mention of a PID counts at once
                self._sections(pid, groups[pid], p, h, skip, events)
        return events

    def _sections(
        self,
        pid: int,
        idx: I64,
        p: npt.NDArray[np.uint8],
        h: Headers,
        skip: npt.NDArray[np.int8],
        events: list[tuple[str, int, int, object]],
    ) -> None:
        asm = self._asm.setdefault(pid, SectionAssembler())
        for i in idx[h.has_payload[idx]].tolist():
            if skip[i] == 2:  # a tolerated repeat: its payload is already in
                continue
            if skip[i] == 1:
                asm.reset()  # a lost packet breaks the section it was part of
                if not h.pusi[i]:
                    continue
            for s in asm.push(p[i, h.payload_start[i] :].tobytes(), bool(h.pusi[i])):
                if not s.crc_ok:
                    events.append(("crc", pid, i, s.table_id))
                elif pid == PAT_PID:
                    pat = parse_pat(s.data) if s.table_id == PAT_TABLE else None
                    events.append(("pat", pid, i, pat))
                    if pat is not None:
                        self._pmt_pids = set(pat.pmt_pids.values())
                        self._cue_pids = {k: v for k, v in self._cue_pids.items() if k in self._pmt_pids}
                        self._main_pmt_pid = min(pat.pmt_pids.items())[1] if pat.pmt_pids else None
                        self._pmt_pcr = {k: v for k, v in self._pmt_pcr.items() if k in self._pmt_pids}
                elif s.table_id == SCTE35_TABLE and pid in self.cue_pids:
                    events.append(("scte35", pid, i, s.data))
                elif s.table_id == PMT_TABLE and pid in self._pmt_pids:
                    pmt = parse_pmt(s.data)
                    if pmt is not None:
                        events.append(("pmt", pid, i, pmt))
                        self._pmt_pcr[pid] = pmt.pcr_pid
                        self._cue_pids[pid] = {
                            es for es, st in pmt.streams.items() if st == SCTE35_STREAM_TYPE
                        }
                        main = pid == self._main_pmt_pid
                        if main and pmt.pcr_pid not in (NULL_PID, self._pcr_pid):
                            if self._pcr_pid is not None:  # the clock moves to another PID
                                self._clock.rebase = True
                            self._pcr_pid = pmt.pcr_pid

    def _psi_events(self, events: list[tuple[str, int, int, object]], t: F64) -> None:
        pmt_times: dict[int, list[float]] = {}
        for kind, pid, i, what in events:
            ti = float(t[i])
            if kind == "crc":
                table = float(what) if isinstance(what, int) else -1.0
                self._ind.hit(D.CRC_ERROR.value, ti, ti, pid=pid, set_={"table_id": table})
            elif kind == "pat":
                if what is None:  # 1.3/2: a section on PID 0 that is not a PAT
                    self._ind.hit(D.PAT_ERROR.value, ti, ti, set_={"wrong_table": 1.0})
                    continue
                self._pat_seen = True
                for gone in set(self._pmt_watch) - self._pmt_pids:
                    del self._pmt_watch[gone]
                for new in self._pmt_pids - set(self._pmt_watch):
                    self._pmt_watch[new] = GapWatch(PMT_MAX_INTERVAL_S, last=ti)
            elif kind == "pmt" and isinstance(what, Pmt):
                pmt_times.setdefault(pid, []).append(ti)
                old = self._pmts.get(pid)
                self._pmts[pid] = what
                watched = {es for es, st in what.streams.items() if st in AV_STREAM_TYPES}
                before = set() if old is None else {
                    es for es, st in old.streams.items() if st in AV_STREAM_TYPES
                }
                for gone in before - watched:
                    self._pid_watch.pop(gone, None)
                for new in watched - set(self._pid_watch):
                    self._pid_watch[new] = GapWatch(self.options.pid_timeout_s, last=ti)
        self._pmt_times = {k: np.array(v) for k, v in pmt_times.items()}

    def _cue_sections(self, events: list[tuple[str, int, int, object]], t: F64, idx: I64, raw: I64) -> None:
        """Each splice_info_section with its time and the STC at its packet: the last PCR of
        the clock PID before it, advanced by the packets between at the measured rate."""
        prev = self._stc
        for kind, pid, i, what in events:
            if kind != "scte35" or not isinstance(what, bytes):
                continue
            j = int(np.searchsorted(idx, i, side="right")) - 1
            anchor = (self._g0 + int(idx[j]), int(raw[j])) if j >= 0 else prev
            stc: int | None = None
            if anchor is not None:
                rate = self._clock.rate_pps or (
                    self._pcr[self._pcr_pid].clock.rate_pps if self._pcr_pid in self._pcr else None)
                ahead = (self._g0 + i - anchor[0]) / rate if rate else 0.0
                stc = (anchor[1] // 300 + round(ahead * 90_000)) % (1 << 33)
            self._cues.section(pid, what, float(t[i]), stc)
        if idx.size:
            self._stc = (self._g0 + int(idx[-1]), int(raw[-1]))

    def _scrambled_psi(self, h: Headers, t: F64) -> None:
        """1.3/3 and 1.5/2: PSI must never be scrambled (transport_scrambling_control 00)."""
        if not h.scrambled.any():
            return
        self._ind.hits(D.PAT_ERROR.value, t[h.scrambled & (h.pid == PAT_PID)], set_={"scrambled": 1.0})
        for pid in self._pmt_pids:
            self._ind.hits(D.PMT_ERROR.value, t[h.scrambled & (h.pid == pid)], pid=pid,
                           set_={"scrambled": 1.0})

    # -- sync (1.1, 1.2) -----------------------------------------------------------------------

    def _sync_state(self, t: F64, frames: Frames) -> None:
        now = self._now if self._now is not None else 0.0
        loss = D.TS_SYNC_LOSS.value

        def at(k: int) -> float:
            return float(t[k]) if k < t.size else now

        if t.size and frames.bad_sync.any():
            self._ind.hits(D.SYNC_BYTE_ERROR.value, t[frames.bad_sync])
        events = sorted([(k, 0) for k in frames.lost_at] + [(k, 1) for k in frames.acquired_at])
        for k, regained in events:
            if not regained:
                self._ind.hit(loss, at(k), at(k), set_={"sync_found": 1.0})
            elif self._ind.is_open(loss):  # the loss lasted until here
                self._ind.hit(loss, at(k), at(k), count=0)
        fr = self._framer
        if fr.synced:
            return
        if self._ind.is_open(loss):
            self._ind.hit(loss, now, now, count=0, ongoing=True,
                          set_={"bytes_discarded": float(fr.unsynced_bytes)})
        elif not fr.ever_synced and fr.unsynced_bytes >= NO_SYNC_REPORT_BYTES:
            # Not MPEG-TS at all (or not yet): say so, from the first byte.
            start = now if self._first_byte_t is None else self._first_byte_t
            self._ind.hit(loss, start, now, ongoing=True,
                          set_={"sync_found": 0.0, "bytes_discarded": float(fr.unsynced_bytes)})

    # -- timeouts: PAT, PMT, PID, PTS (1.3, 1.5, 1.6, 2.5) -------------------------------------

    def _timeouts(
        self, t: F64, p: npt.NDArray[np.uint8] | None, h: Headers | None, groups: dict[int, I64]
    ) -> None:
        now = self._now if self._now is not None else 0.0
        empty = np.empty(0)
        if self._pat_watch is not None:
            seen = t[groups[PAT_PID]] if PAT_PID in groups else empty
            for start, end, new in self._pat_watch.observe(seen, now):
                self._ind.hit(D.PAT_ERROR.value, start, now if end is None else end, count=int(new),
                              ongoing=end is None, set_={"pat_seen": float(self._pat_seen)})
        pmt_times, self._pmt_times = self._pmt_times, {}
        for pid, watch in self._pmt_watch.items():
            for start, end, new in watch.observe(pmt_times.get(pid, empty), now):
                self._ind.hit(D.PMT_ERROR.value, start, now if end is None else end, count=int(new),
                              pid=pid, ongoing=end is None)
        for pid, watch in self._pid_watch.items():
            st = self._pids.setdefault(pid, _Pid())
            spans = watch.observe(t[groups[pid]] if pid in groups else empty, now)
            st.gaps = [g for g in st.gaps if g[1] is None or now - g[1] < 60.0]
            for start, end, new in spans:
                st.gaps = [g for g in st.gaps if g[1] is not None]
                st.gaps.append((start - self.options.pid_timeout_s, end))
                self._ind.hit(D.PID_ERROR.value, start, now if end is None else end, count=int(new),
                              pid=pid, ongoing=end is None)
        if p is not None and h is not None:
            self._pts(t, p, h, now)
        else:
            for pid, st in self._pids.items():
                self._pts_pid(pid, st, empty, now)

    def _pts(self, t: F64, p: npt.NDArray[np.uint8], h: Headers, now: float) -> None:
        psi = self._pmt_pids | self.cue_pids | {PAT_PID, NULL_PID, *SI_PIDS}
        starts = np.flatnonzero(h.pusi & h.has_payload)
        starts = starts[~np.isin(h.pid[starts], np.fromiter(psi, np.int32))]
        has = pts_present(p, h, starts) if starts.size else np.zeros(0, bool)
        with_pts = starts[has]
        pids_pts = h.pid[with_pts]
        for pid, st in self._pids.items():
            if pid in psi:
                continue
            sel = with_pts[pids_pts == pid]
            self._pts_pid(pid, st, t[sel], now)

    def _pts_pid(self, pid: int, st: _Pid, times: F64, now: float) -> None:
        if st.pts_watch is None:
            if times.size == 0:
                return
            st.pts_watch = GapWatch(PTS_MAX_INTERVAL_S)
        watch = st.pts_watch
        for start, end, new in watch.observe(times, now):
            # A PID that stopped altogether is PID_error, not a PTS one; and while it is absent
            # there is nothing to judge its PTS by.
            last_pts = start - PTS_MAX_INTERVAL_S
            if any(a >= last_pts - 1e-9 and (b is None or end is None or b <= end + 1e-9)
                   for a, b in st.gaps):
                continue
            if end is None and (st.last_seen is None or st.last_seen <= start):
                watch.in_gap = False  # not yet judged: re-examined with the next batch
                continue
            self._ind.hit(D.PTS_ERROR.value, start, now if end is None else end, count=int(new),
                          pid=pid, ongoing=end is None)


def _by_pid(pid: npt.NDArray[np.int32]) -> dict[int, I64]:
    """Packet indices per PID (ascending within each), from one stable sort."""
    order = np.argsort(pid, kind="stable")
    sp = pid[order]
    cut = np.flatnonzero(np.diff(sp)) + 1
    bounds = [0, *cut.tolist(), sp.size]
    return {int(sp[a]): order[a:b] for a, b in itertools.pairwise(bounds)}


def _concat(a: Frames, b: Frames) -> Frames:
    na = a.packets.shape[0]
    return Frames(
        np.concatenate([a.packets, b.packets]),
        np.concatenate([a.ends, b.ends]),
        np.concatenate([a.bad_sync, b.bad_sync]),
        a.lost_at + [k + na for k in b.lost_at],
        a.acquired_at + [k + na for k in b.acquired_at],
        a.discarded + b.discarded,
    )

