"""SCTE-35 cues injected into a real encoded MPEG-TS, with the ground truth beside them.

``python -m avmon.tscue IN.ts OUT.ts --cues "out@2:preroll=5:duration=10:id=7,in@16:id=7"``
writes OUT.ts and OUT.ts.truth.json. The first program's PMT is rewritten (new CRC_32) to carry a
stream of stream_type 0x86 on ``--pid`` (0x1F0) with the CUEI registration descriptor
(ANSI/SCTE 35 §8.1) at program and stream level; each cue is one splice_info_section in one TS
packet inserted where the stream's PCR clock reaches the cue's send time. Times are seconds from
the first PCR; a cue's splice time is its send time plus ``preroll``, on the PTS clock (PCR base).

Cues (``KIND@SEND_S[:key=value]...``):

======= ============================================ ==========================================
kind    what                                         keys (defaults)
======= ============================================ ==========================================
out     splice_insert, out_of_network (a cue-out)    preroll (4), duration (none), id (1),
                                                     auto_return (0), adjust (0 s), immediate (0),
                                                     pts (the splice time itself, PTS seconds)
in      splice_insert, return to network (a cue-in)  preroll (4), id (1), adjust, immediate
cancel  splice_insert cancelling event ``id``        id (1)
signal  time_signal + a segmentation_descriptor      preroll (4), duration (none), id (1),
                                                     type (0x34), adjust (0 s)
null    splice_null (a heartbeat)                    (none)
======= ============================================ ==========================================

``adjust`` is the section's pts_adjustment in seconds: the splice time in the section is moved
back by it (modulo 2^33), so a decoder that forgets it gets the time wrong.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avmon.testsrc import truth_path
from avmon.tsfault import layout, packet_times
from worker.scte35 import (
    CUEI,
    PTS_HZ,
    PTS_WRAP,
    SCTE35_STREAM_TYPE,
    SCTE35_TABLE,
    SEGMENTATION_DESCRIPTOR,
    SPLICE_INSERT,
    SPLICE_NULL,
    TIME_SIGNAL,
)
from worker.transport.packets import PACKET, parse_headers
from worker.transport.psi import PMT_TABLE, crc32_mpeg2

CUE_PID = 0x1F0
REGISTRATION_DESCRIPTOR = 0x05  # ISO/IEC 13818-1 §2.6.8
KINDS = ("out", "in", "cancel", "signal", "null")
_KEYS = {
    "out": {"preroll", "duration", "id", "auto_return", "adjust", "immediate", "pts"},
    "in": {"preroll", "id", "adjust", "immediate", "pts"},
    "cancel": {"id"},
    "signal": {"preroll", "duration", "id", "type", "adjust"},
    "null": set(),
}


# -- the encoder: the inverse of worker.scte35, field by field ---------------------------------

class _Bits:
    def __init__(self) -> None:
        self.value = 0
        self.n = 0

    def put(self, n: int, v: int) -> _Bits:
        self.value = (self.value << n) | (v & ((1 << n) - 1))
        self.n += n
        return self

    def bytes(self) -> bytes:
        if self.n % 8:
            raise ValueError(f"{self.n} bits is not whole bytes")
        return self.value.to_bytes(self.n // 8, "big")


def splice_time(pts: int | None) -> bytes:
    """§9.8.1 splice_time(): 1 byte without a time, 5 with (90 kHz ticks, 33 bits)."""
    b = _Bits()
    return (b.put(1, 0).put(7, 0x7F) if pts is None else b.put(1, 1).put(6, 0x3F).put(33, pts)).bytes()


def splice_insert(event_id: int, *, out: bool, pts: int | None, duration: int | None = None,
                  auto_return: bool = False, cancel: bool = False) -> bytes:
    """§9.7.3, a program splice; ``pts`` None is splice_immediate. Ticks of 90 kHz."""
    b = _Bits().put(32, event_id).put(1, int(cancel)).put(7, 0x7F)
    if cancel:
        return b.bytes()
    b.put(1, int(out)).put(1, 1).put(1, int(duration is not None)).put(1, int(pts is None)).put(4, 0xF)
    body = b.bytes() + (b"" if pts is None else splice_time(pts))
    if duration is not None:
        body += _Bits().put(1, int(auto_return)).put(6, 0x3F).put(33, duration).bytes()
    return body + _Bits().put(16, 0).put(8, 0).put(8, 0).bytes()


def segmentation_descriptor(event_id: int, type_id: int, *, duration: int | None = None,
                            upid_type: int = 0x0C, upid: bytes = b"avmon",
                            segment_num: int = 1, segments_expected: int = 1) -> bytes:
    """§10.3.3.1, a program segmentation, delivery not restricted (UPID type 0x0C: MPU)."""
    b = _Bits().put(32, event_id).put(1, 0).put(7, 0x7F)
    b.put(1, 1).put(1, int(duration is not None)).put(1, 1).put(5, 0x1F)
    body = CUEI + b.bytes()
    if duration is not None:
        body += duration.to_bytes(5, "big")
    body += bytes([upid_type, len(upid)]) + upid + bytes([type_id, segment_num, segments_expected])
    if type_id in {0x34, 0x36, 0x38, 0x3A, 0x44, 0x46}:
        body += bytes([0, 0])  # sub_segment_num, sub_segments_expected (SCTE 35 2016+)
    return bytes([SEGMENTATION_DESCRIPTOR, len(body)]) + body


def splice_info_section(command_type: int, command: bytes, descriptors: bytes = b"", *,
                        pts_adjustment: int = 0, tier: int = 0xFFF) -> bytes:
    """§9.6: the whole section with its CRC_32 (unencrypted, protocol_version 0, sap_type 3)."""
    after_length = _Bits().put(8, 0).put(1, 0).put(6, 0).put(33, pts_adjustment).put(8, 0)
    after_length.put(12, tier).put(12, len(command)).put(8, command_type)
    body = after_length.bytes() + command + len(descriptors).to_bytes(2, "big") + descriptors
    head = _Bits().put(8, SCTE35_TABLE).put(1, 0).put(1, 0).put(2, 3).put(12, len(body) + 4).bytes()
    section = head + body
    return section + crc32_mpeg2(section).to_bytes(4, "big")


# -- the injector ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cue:
    kind: str
    send_s: float  # seconds from the first PCR
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class CueTruth:
    kind: str
    command: str  # splice_insert, time_signal, splice_null
    send_s: float  # seconds from the first PCR
    pcr_send_s: float  # the same on the PCR clock (what a file analyser reports)
    splice_pts_s: float | None  # the splice time a decoder must find (pts_adjustment applied)
    preroll_s: float | None
    duration_s: float | None
    event_id: int | None
    out_of_network: bool | None
    segmentation_type_id: int | None


@dataclass
class CuedStream:
    data: bytes
    truth: list[CueTruth]
    send_offsets: np.ndarray  # byte offset of every packet start
    send_times: np.ndarray  # its send time, PCR seconds

    def arrival(self, end_offset: int) -> float:
        """Send time of the packet holding byte ``end_offset - 1``."""
        k = int(np.searchsorted(self.send_offsets, end_offset - 1, side="right")) - 1
        return float(self.send_times[max(k, 0)])


_ITEM = re.compile(r"^(?P<kind>[a-z]+)@(?P<at>[0-9.]+)(?::(?P<params>.*))?$")


def parse_cues(script: str) -> list[Cue]:
    """``'out@2:preroll=5:duration=10, in@16'`` → cues. Raises ValueError with the reason."""
    cues = []
    for raw in filter(None, (x.strip() for x in script.split(","))):
        m = _ITEM.match(raw.replace(" ", ""))
        if not m or m["kind"] not in KINDS:
            raise ValueError(f"bad cue {raw!r}: expected KIND@SEND_S[:k=v], KIND in {list(KINDS)}")
        params = {}
        for kv in m["params"].split(":") if m["params"] else []:
            k, _, v = kv.partition("=")
            if k not in _KEYS[m["kind"]]:
                raise ValueError(f"cue {raw!r}: unknown key {k!r}")
            params[k] = float(int(v, 0)) if v.lower().startswith("0x") else float(v)
        cues.append(Cue(m["kind"], float(m["at"]), params))
    return cues


def _section(cue: Cue, stc_s: float) -> tuple[bytes, CueTruth]:
    p = cue.params
    event_id = int(p.get("id", 1))
    adjust = round(p.get("adjust", 0.0) * PTS_HZ)
    preroll = None if p.get("immediate") or cue.kind in {"null", "cancel"} else p.get("preroll", 4.0)
    if preroll is not None and "pts" in p:  # a splice time given outright (e.g. at an IDR)
        preroll = p["pts"] - stc_s
    target = None if preroll is None else round((stc_s + preroll) * PTS_HZ) % PTS_WRAP
    pts = None if target is None else (target - adjust) % PTS_WRAP
    duration = p.get("duration")
    ticks = None if duration is None else round(duration * PTS_HZ)
    seg_type: int | None = None
    out: bool | None = None
    if cue.kind == "null":
        command, sec = "splice_null", splice_info_section(SPLICE_NULL, b"")
        event: int | None = None
    elif cue.kind == "signal":
        seg_type = int(p.get("type", 0x34))
        desc = segmentation_descriptor(event_id, seg_type, duration=ticks)
        command = "time_signal"
        sec = splice_info_section(TIME_SIGNAL, splice_time(pts), desc, pts_adjustment=adjust)
        event = event_id
    else:
        out = cue.kind == "out"
        cmd = splice_insert(event_id, out=out, pts=pts, duration=ticks,
                            auto_return=bool(p.get("auto_return", 0)), cancel=cue.kind == "cancel")
        command, event = "splice_insert", event_id
        sec = splice_info_section(SPLICE_INSERT, cmd, pts_adjustment=adjust)
        if cue.kind == "cancel":
            out = None
    truth = CueTruth(cue.kind, command, cue.send_s, 0.0,
                     None if target is None else target / PTS_HZ, preroll,
                     duration if cue.kind in {"out", "signal"} else None, event, out, seg_type)
    return sec, truth


def rewrite_pmt(section: bytes, cue_pid: int) -> bytes:
    """The PMT ``section`` with a stream of type 0x86 on ``cue_pid`` and CUEI registration
    descriptors (program and stream level) and a new CRC_32 (every PMT of the stream gets
    the same rewrite, so its version stays)."""
    if section[0] != PMT_TABLE or crc32_mpeg2(section) != 0:
        raise ValueError("not a valid PMT section")
    reg = bytes([REGISTRATION_DESCRIPTOR, 4]) + CUEI
    info_len = ((section[10] & 0x0F) << 8) | section[11]
    head, rest = bytearray(section[:12 + info_len]), section[12 + info_len : -4]
    head[10:12] = (0xF000 | (info_len + len(reg))).to_bytes(2, "big")
    es = bytes([SCTE35_STREAM_TYPE, 0xE0 | (cue_pid >> 8), cue_pid & 0xFF, 0xF0, len(reg)]) + reg
    body = bytes(head) + reg + rest + es
    length = len(body) + 4 - 3
    out = bytearray(body)
    out[1:3] = ((section[1] & 0xF0) << 8 | length).to_bytes(2, "big")
    return bytes(out) + crc32_mpeg2(bytes(out)).to_bytes(4, "big")


def inject_cues(data: bytes, cues: list[Cue], *, cue_pid: int = CUE_PID) -> CuedStream:
    """The stream with its PMT announcing ``cue_pid`` and ``cues`` on it, and what each is."""
    if len(data) % PACKET or data[:1] != b"\x47":
        raise ValueError("input must be whole, aligned 188-byte TS packets")
    p = np.frombuffer(data, np.uint8).reshape(-1, PACKET).copy()
    h = parse_headers(p)
    t, _ = packet_times(p, h)
    t0 = float(t[h.pcr_index[0]])
    lay = layout(p, h)
    if cue_pid in set(np.unique(h.pid).tolist()):
        raise ValueError(f"PID 0x{cue_pid:x} is already in use")
    for i in np.flatnonzero((h.pid == lay.pmt_pid) & h.pusi).tolist():
        s0 = int(h.payload_start[i]) + 1 + int(p[i, h.payload_start[i]])
        length = 3 + (((int(p[i, s0 + 1]) & 0x0F) << 8) | int(p[i, s0 + 2]))
        if s0 + length > PACKET:
            raise ValueError("the PMT spans packets: not rewritten")
        new = rewrite_pmt(p[i, s0 : s0 + length].tobytes(), cue_pid)
        if s0 + len(new) > PACKET:
            raise ValueError("the rewritten PMT does not fit its packet")
        p[i, s0 : s0 + len(new)] = np.frombuffer(new, np.uint8)
        p[i, s0 + len(new) :] = 0xFF
    extra: dict[int, list[bytes]] = {}
    truth: list[CueTruth] = []
    for cc, cue in enumerate(sorted(cues, key=lambda c: c.send_s)):
        hits = np.flatnonzero(t >= t0 + cue.send_s)
        if hits.size == 0:
            raise ValueError(f"the stream ends before {cue.send_s} s")
        i = int(hits[0])
        sec, tr = _section(cue, float(t[i]))
        if len(sec) > PACKET - 5:
            raise ValueError("a cue section longer than one packet")
        pkt = bytes([0x47, 0x40 | (cue_pid >> 8), cue_pid & 0xFF, 0x10 | (cc & 0x0F), 0]) + sec
        extra.setdefault(i, []).append(pkt + b"\xff" * (PACKET - len(pkt)))
        tr.pcr_send_s = round(float(t[i]), 6)
        tr.send_s = round(float(t[i]) - t0, 6)
        truth.append(tr)
    out = bytearray()
    offsets: list[int] = []
    times: list[float] = []
    for i in range(p.shape[0]):
        for pkt in extra.get(i, []):  # an inserted packet goes out with the one it precedes
            offsets.append(len(out))
            times.append(float(t[i]))
            out += pkt
        offsets.append(len(out))
        times.append(float(t[i]))
        out += p[i].tobytes()
    return CuedStream(bytes(out), truth, np.array(offsets, np.int64), np.array(times))


def write(src: Path, dst: Path, cues: list[Cue], cue_pid: int = CUE_PID) -> list[CueTruth]:
    result = inject_cues(src.read_bytes(), cues, cue_pid=cue_pid)
    dst.write_bytes(result.data)
    truth_path(dst).write_text(json.dumps({"source": str(src), "cue_pid": cue_pid,
                                           "cues": [asdict(x) for x in result.truth]}, indent=2))
    return result.truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avmon.tscue", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path, help="an MPEG-TS file (whole 188-byte packets)")
    ap.add_argument("output", type=Path)
    ap.add_argument("--cues", required=True, help='e.g. "out@2:preroll=5:duration=10,in@16"')
    ap.add_argument("--pid", type=lambda s: int(s, 0), default=CUE_PID, help="the cue PID (0x1F0)")
    args = ap.parse_args(argv)
    try:
        truth = write(args.input, args.output, parse_cues(args.cues), args.pid)
    except ValueError as exc:
        print(f"tscue: {exc}", file=sys.stderr)
        return 2
    for x in truth:
        print(f"{x.kind}@{x.send_s:.3f} s {x.command} splice_pts={x.splice_pts_s} duration={x.duration_s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
