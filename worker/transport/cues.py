"""SCTE-35 cues from the transport analyser's sections, and the rules judged on them.

The analyser hands every splice_info_section of a PMT's stream_type 0x86 PID here with its
arrival time (analyser clock: arrival for live input, PCR for a file) and the system time clock
at its packet (the PCR base, 90 kHz ticks). Each cue's *pre-roll* is its splice time minus that
STC: how far ahead of the splice point the message came.

Rules (raise and clear side by side):

================== ====================================================== ======================
type               raises when                                            clears / closes
================== ====================================================== ======================
splice_preroll_    a cue-out or cue-in with a splice time arrives less    one finding per cue
short              than ``preroll_min_s`` (SCTE 67 §7.3: 4 s) before it
cue_in_missing     a cue-out with a break duration has no cue-in by its   one finding per break,
                   splice time + duration + ``cue_in_tolerance_s`` (not   start: the expected
                   judged with auto_return: the splicer returns alone)    return, end: deadline
cues_lost          a PID that carried sections has none for              the next section
                   ``cues_lost_s`` (heartbeats: splice_null count)
================== ====================================================== ======================

Not judged: immediate splices (no splice time to be early for) and breaks without a duration.
``splice_misaligned`` (SCTE 172: no IDR at the splice time) needs the decoded pictures:
:class:`SpliceAligner`, run beside the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shared.models import DefectType as D
from worker.detectors.base import Finding, Severity
from worker.scte35 import (
    AD_START_TYPES,
    PTS_HZ,
    PTS_WRAP,
    Scte35Error,
    SegmentationDescriptor,
    SpliceInfo,
    SpliceInsert,
    decode_splice_info,
)

PREROLL_MIN_S = 4.0  # SCTE 67 2017 §7.3: splice_insert at least 4 s before the splice point
CUE_IN_TOLERANCE_S = 2.0  # not the standard's: slack after a break's end before cue-in is missing
CUES_LOST_S = 600.0  # not the standard's: many channels only signal at breaks, minutes apart


@dataclass(frozen=True)
class Cue:
    """One cue as the analyser read it. Times in seconds: ``arrival_s`` and ``splice_s`` on the
    analyser clock (the one its findings use), ``splice_pts_s`` on the 33-bit PTS clock."""

    arrival_s: float
    pid: int
    command: str  # splice_insert, time_signal, splice_null, ...
    kind: str | None  # "out" (cue-out), "in" (cue-in), "cancel", None (neither)
    event_id: int | None
    splice_pts_s: float | None  # pts_adjustment applied, modulo 2^33; None: immediate / no time
    preroll_s: float | None  # splice time minus the STC at arrival; None when unknown
    splice_s: float | None  # arrival_s + preroll_s (immediate: arrival_s)
    duration_s: float | None  # break or segmentation duration
    auto_return: bool = False
    immediate: bool = False
    segmentation_type_id: int | None = None
    segmentation_type: str | None = None
    upid_type: int | None = None
    upid: str | None = None  # hex
    info: SpliceInfo | None = field(default=None, repr=False)  # the whole decoded section


@dataclass
class _Break:
    cue: Cue
    expected_return_s: float  # analyser clock
    deadline_s: float


class CueTracker:
    """Decoded cues of one stream (``cues``) and the findings of the rules above."""

    def __init__(self, *, preroll_min_s: float = PREROLL_MIN_S,
                 cue_in_tolerance_s: float = CUE_IN_TOLERANCE_S, cues_lost_s: float = CUES_LOST_S) -> None:
        self.preroll_min_s = preroll_min_s
        self.cue_in_tolerance_s = cue_in_tolerance_s
        self.cues_lost_s = cues_lost_s
        self.cues: list[Cue] = []  # appended in arrival order; the reader drains it
        self.sections = 0
        self.invalid_sections = 0  # CRC mismatches and malformed sections, dropped
        self._breaks: dict[tuple[int, str, int, int], _Break] = {}  # (pid, family, event, type)
        self._last: dict[int, float] = {}  # PID -> arrival of its last valid section
        self._lost: dict[int, float] = {}  # PID -> start of its open cues_lost
        self._out: list[Finding] = []

    def section(self, pid: int, data: bytes, arrival_s: float, stc_ticks: int | None) -> None:
        """One splice_info_section of ``pid`` that arrived at ``arrival_s``; ``stc_ticks``: the
        PCR base (90 kHz) at its packet, None before the first PCR."""
        try:
            info = decode_splice_info(data)
        except Scte35Error:
            self.invalid_sections += 1
            return
        self.sections += 1
        self._deadlines(arrival_s)  # a file's batch holds many seconds: judge in time order
        self._seen(pid, arrival_s)
        for cue in _cues(info, pid, arrival_s, stc_ticks):
            self.cues.append(cue)
            self._judge(cue)

    def tick(self, now_s: float) -> list[Finding]:
        """Judge the deadlines at ``now_s`` (analyser clock); the findings since the last tick."""
        self._deadlines(now_s)
        out, self._out = self._out, []
        return out

    def _deadlines(self, now_s: float) -> None:
        for key, br in list(self._breaks.items()):
            if now_s > br.deadline_s:
                del self._breaks[key]
                c = br.cue
                self._out.append(Finding(
                    D.CUE_IN_MISSING.value, br.expected_return_s, br.deadline_s, Severity.WARNING,
                    {"pid": float(c.pid), "event_id": float(c.event_id or 0),
                     "duration_s": round(c.duration_s or 0.0, 3)}, key=f"pid{c.pid}"))
        for pid, last in self._last.items():
            if pid not in self._lost and now_s - last > self.cues_lost_s:
                start = last + self.cues_lost_s
                self._lost[pid] = start
                self._out.append(Finding(D.CUES_LOST.value, start, None, Severity.WARNING,
                                         {"pid": float(pid)}, key=f"pid{pid}"))

    def close_all(self, t_end: float) -> list[Finding]:
        """End of input: deadlines up to ``t_end`` judged, an open cues_lost closed there."""
        out = self.tick(t_end)
        for pid, start in self._lost.items():
            out.append(Finding(D.CUES_LOST.value, start, max(start, t_end), Severity.WARNING,
                               {"pid": float(pid)}, key=f"pid{pid}"))
        self._lost.clear()
        return out

    def _seen(self, pid: int, t: float) -> None:
        start = self._lost.pop(pid, None)
        if start is not None:
            self._out.append(Finding(D.CUES_LOST.value, start, max(start, t), Severity.WARNING,
                                     {"pid": float(pid)}, key=f"pid{pid}"))
        self._last[pid] = max(t, self._last.get(pid, t))

    def _judge(self, cue: Cue) -> None:
        if cue.kind in {"out", "in"} and cue.preroll_s is not None and not cue.immediate \
                and cue.preroll_s < self.preroll_min_s:
            self._out.append(Finding(
                D.SPLICE_PREROLL_SHORT.value, cue.arrival_s, cue.arrival_s, Severity.WARNING,
                {"pid": float(cue.pid), "preroll_s": round(cue.preroll_s, 3),
                 "event_id": float(cue.event_id or 0)}, key=f"pid{cue.pid}"))
        family = "insert" if cue.command == "splice_insert" else "segmentation"
        seg = cue.segmentation_type_id if family == "segmentation" else None
        event = cue.event_id or 0
        if cue.kind == "out" and cue.duration_s is not None and not cue.auto_return:
            base = cue.splice_s if cue.splice_s is not None else cue.arrival_s
            end = base + cue.duration_s
            self._breaks[(cue.pid, family, event, seg or 0)] = _Break(cue, end, end + self.cue_in_tolerance_s)
        elif cue.kind == "in":
            start_type = None if seg is None else seg - 1
            key = (cue.pid, family, event, start_type or 0)
            if key not in self._breaks:  # a cue-in with another event id still ends the break
                key = next((k for k in self._breaks if k[:2] == (cue.pid, family)
                            and (start_type is None or k[3] == start_type)), key)
            self._breaks.pop(key, None)
        elif cue.kind == "cancel":
            for k in [k for k in self._breaks if k[:3] == (cue.pid, family, event)]:
                del self._breaks[k]


def preroll_s(splice_pts: int, stc_ticks: int) -> float:
    """Seconds from the STC to the splice time, both 90 kHz ticks on the 33-bit clock: the
    shorter way round the wrap (a splice just after the wrap is ahead, not 26.5 h behind)."""
    return ((splice_pts - stc_ticks + PTS_WRAP // 2) % PTS_WRAP - PTS_WRAP // 2) / PTS_HZ


def _cues(info: SpliceInfo, pid: int, arrival: float, stc: int | None) -> list[Cue]:
    pts = info.splice_pts
    pre = None if pts is None or stc is None else preroll_s(pts, stc)
    cmd = info.command
    immediate = isinstance(cmd, SpliceInsert) and cmd.immediate
    splice_s = arrival + pre if pre is not None else arrival if immediate else None
    base = Cue(arrival, pid, info.command_name, None, None,
               None if pts is None else pts / PTS_HZ, pre, splice_s, None, immediate=immediate,
               info=info)
    if isinstance(cmd, SpliceInsert):
        kind = "cancel" if cmd.cancel else "out" if cmd.out_of_network else "in"
        duration = None if cmd.break_duration is None else cmd.break_duration / PTS_HZ
        return [replace(base, kind=kind, event_id=cmd.event_id, duration_s=duration,
                        auto_return=cmd.auto_return)]
    return [replace(base, kind=_seg_kind(s), event_id=s.event_id,
                    duration_s=None if s.duration is None else s.duration / PTS_HZ,
                    segmentation_type_id=s.type_id, segmentation_type=s.type_name,
                    upid_type=s.upid_type, upid=s.upid.hex())
            for s in info.segmentation] or [base]


def _seg_kind(s: SegmentationDescriptor) -> str | None:
    if s.cancel:
        return "cancel"
    if s.type_id in AD_START_TYPES:
        return "out"
    if s.type_id - 1 in AD_START_TYPES:
        return "in"
    return None


SPLICE_ALIGN_TOLERANCE_S = 0.02  # not the standard's: half a frame at 25 fps; PTS are exact


class SpliceAligner:
    """SCTE 172 §7: a splice point must be an IDR picture whose PTS is the splice time. Judged on
    the decoded pictures (the decoder's keyframes), so it runs beside the decoder, not in the
    transport analyser: ``cue`` the cues with a splice time, then every ``picture`` in
    presentation order. The first picture at or after a splice time (less the tolerance) decides:
    a keyframe within ``tolerance_s`` of it is aligned; anything else is ``splice_misaligned``,
    at that picture's media time, with ``offset_s`` (its PTS minus the splice time) and, when one
    came since the last judged splice, ``keyframe_offset_s`` (the last keyframe's)."""

    def __init__(self, *, tolerance_s: float = SPLICE_ALIGN_TOLERANCE_S, max_pending: int = 64) -> None:
        self.tolerance_s = tolerance_s
        self.max_pending = max_pending  # splice points awaiting their picture; beyond, the oldest go
        self._pending: list[Cue] = []
        self._last_key_pts: int | None = None
        self.judged = 0

    def cue(self, cue: Cue) -> None:
        if cue.kind in {"out", "in"} and cue.splice_pts_s is not None:
            self._pending.append(cue)
            del self._pending[: -self.max_pending]  # a hostile stream's far-future splices

    def picture(self, pts_s: float, key_frame: bool, t_s: float) -> list[Finding]:
        """A decoded picture: its PTS in seconds (the stream's own, any unwrapping: taken modulo
        2^33), whether it is a keyframe, and its media time ``t_s`` (the findings' clock)."""
        pts = round(pts_s * PTS_HZ) % PTS_WRAP
        if key_frame:
            self._last_key_pts = pts
        out: list[Finding] = []
        tol = round(self.tolerance_s * PTS_HZ)
        for cue in list(self._pending):
            splice = round((cue.splice_pts_s or 0.0) * PTS_HZ)
            offset = (pts - splice + PTS_WRAP // 2) % PTS_WRAP - PTS_WRAP // 2
            if offset < -tol:
                continue  # its splice time is still ahead
            self._pending.remove(cue)
            self.judged += 1
            if key_frame and abs(offset) <= tol:
                continue
            metrics = {"pid": float(cue.pid), "event_id": float(cue.event_id or 0),
                       "offset_s": round(offset / PTS_HZ, 4)}
            if self._last_key_pts is not None:
                k = (self._last_key_pts - splice + PTS_WRAP // 2) % PTS_WRAP - PTS_WRAP // 2
                metrics["keyframe_offset_s"] = round(k / PTS_HZ, 4)
            out.append(Finding(D.SPLICE_MISALIGNED.value, t_s, t_s, Severity.WARNING, metrics,
                               key=f"pid{cue.pid}"))
        return out
