"""Transport faults injected into a real encoded MPEG-TS, with the ground truth beside it.

``python -m avmon.tsfault IN.ts OUT.ts --faults "drop@3,pat@5+1,pid@2+6"`` writes OUT.ts and
OUT.ts.truth.json. Times are seconds from the stream's first PCR (its own clock: packets are
timed by their PCR, interpolated by position). Each fault breaks exactly one ETSI TR 101 290
indicator (``FAULTS`` names it; ``duplicate`` breaks none: one repeat is allowed) and leaves the
rest of the stream valid: packets that are withheld become null packets (a CBR stream keeps its
rate and every other packet its timing) and the continuity counters of the withheld PID's later
packets are renumbered, as a multiplexer that stopped sending it would.

Faults (``KIND@START[+DURATION][:key=value]``):

=============== ==================================== ==========================================
kind            what                                 indicator
=============== ==================================== ==========================================
drop            one video packet removed             continuity_count_error
duplicate       one video packet sent twice          none (a single repeat is allowed)
duplicate2      one video packet sent three times    continuity_count_error
sync            one packet's sync byte corrupted     sync_byte_error
garbage         ``bytes`` (1000) of junk inserted    ts_sync_loss
tei             transport_error_indicator set once   transport_error
pat             PAT packets withheld for DURATION    pat_error
pmt             PMT packets withheld for DURATION    pmt_error
pmt_crc         one PMT's CRC_32 broken              crc_error
pid             ``pid`` (audio) withheld             pid_error (pts_error if ≤ 5 s)
pcr             ``pid``'s PCRs withheld for DURATION pcr_repetition_error
pcr_jump        PCRs from START on moved ``jump_s``  pcr_discontinuity_error (``pid``: as pcr)
pts             ``pid``'s (audio) PTS removed        pts_error
=============== ==================================== ==========================================

A span fault raises its indicator when DURATION exceeds the indicator's limit (pat, pmt 0.5 s;
pid 5 s; pcr 0.1 s; pts 0.7 s): the truth's ``type`` says what a default analyser must report.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from avmon.testsrc import truth_path
from worker.transport.packets import PACKET, PAT_PID, Headers, parse_headers
from worker.transport.psi import AV_STREAM_TYPES, SectionAssembler, parse_pat, parse_pmt

FAULTS: dict[str, str | None] = {
    "drop": "continuity_count_error",
    "duplicate": None,
    "duplicate2": "continuity_count_error",
    "sync": "sync_byte_error",
    "garbage": "ts_sync_loss",
    "tei": "transport_error",
    "pat": "pat_error",
    "pmt": "pmt_error",
    "pmt_crc": "crc_error",
    "pid": "pid_error",
    "pcr": "pcr_repetition_error",
    "pcr_jump": "pcr_discontinuity_error",
    "pts": "pts_error",
}
SPAN_FAULTS = frozenset({"pat", "pmt", "pid", "pcr", "pts"})
# The gap a span fault must exceed to raise its indicator, at the analyser's default settings
# (TR 101 290: PAT and PMT 0.5 s, PCR 100 ms, PTS 700 ms; the PID timeout is user-set, 5 s).
SPAN_LIMIT_S = {"pat": 0.5, "pmt": 0.5, "pid": 5.0, "pcr": 0.1, "pts": 0.7}
_PARAMS = {
    "garbage": {"bytes"}, "pid": {"pid"}, "pts": {"pid"}, "pcr": {"pid"}, "pcr_jump": {"jump_s", "pid"},
}
PCR_HZ = 27_000_000
_NULL = bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * (PACKET - 4)

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Fault:
    kind: str
    start_s: float  # seconds from the first PCR
    duration_s: float = 0.0
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class FaultTruth:
    kind: str
    type: str | None  # the defect type it must raise (None: must raise nothing)
    start_s: float  # when the fault was applied, seconds from the first PCR
    end_s: float
    pcr_start_s: float  # the same on the PCR clock (what a file analyser reports)
    pcr_end_s: float
    pid: int | None
    packets: int  # packets touched


@dataclass
class StreamLayout:
    pmt_pid: int
    pcr_pid: int
    video_pid: int
    audio_pid: int


_ITEM = re.compile(r"^(?P<kind>[a-z0-9_]+)@(?P<start>[0-9.]+)(?:\+(?P<dur>[0-9.]+))?(?::(?P<params>.*))?$")


def parse_faults(script: str) -> list[Fault]:
    """``'drop@3, pat@5+1, pid@2+6:pid=257'`` → faults. Raises ValueError with the reason."""
    faults = []
    for raw in filter(None, (x.strip() for x in script.split(","))):
        m = _ITEM.match(raw.replace(" ", ""))
        if not m or m["kind"] not in FAULTS:
            raise ValueError(
                f"bad fault {raw!r}: expected KIND@START[+DURATION][:k=v], KIND in {sorted(FAULTS)}"
            )
        if (m["dur"] is None) == (m["kind"] in SPAN_FAULTS):
            need = "needs" if m["dur"] is None else "takes no"
            raise ValueError(f"fault {raw!r}: {m['kind']} {need} +DURATION")
        params = {}
        for kv in m["params"].split(":") if m["params"] else []:
            k, _, v = kv.partition("=")
            if k not in _PARAMS.get(m["kind"], set()):
                raise ValueError(f"fault {raw!r}: unknown parameter {k!r}")
            params[k] = float(v)
        faults.append(Fault(m["kind"], float(m["start"]), float(m["dur"] or 0.0), params))
    return faults


def expected_type(f: Fault) -> str | None:
    """The defect type ``f`` must raise at default settings. A span no longer than its limit
    raises nothing, except a PID withheld for less than the PID timeout: its PTS stop for that
    long, a pts_error once that exceeds 700 ms."""
    limit = SPAN_LIMIT_S.get(f.kind)
    if limit is None or f.duration_s > limit:
        return FAULTS[f.kind]
    if f.kind == "pid" and f.duration_s > SPAN_LIMIT_S["pts"]:
        return "pts_error"
    return None


def packet_times(p: U8, h: Headers) -> tuple[F64, int]:
    """Each packet's time (PCR seconds) from the first PCR PID's PCRs, linear by position between
    them and at the mean rate before the first and after the last; and that PID."""
    if h.pcr_index.size < 2:
        raise ValueError("the stream needs at least two PCRs to be timed")
    pcr_pid = int(h.pid[h.pcr_index[0]])
    on = h.pid[h.pcr_index] == pcr_pid
    idx, raw = h.pcr_index[on], h.pcr[on].astype(np.float64) / PCR_HZ
    g = np.arange(p.shape[0], dtype=np.float64)
    t = np.interp(g, idx, raw)
    rate = (idx[-1] - idx[0]) / (raw[-1] - raw[0])  # packets per second
    t[g < idx[0]] = raw[0] - (idx[0] - g[g < idx[0]]) / rate
    t[g > idx[-1]] = raw[-1] + (g[g > idx[-1]] - idx[-1]) / rate
    return t, pcr_pid


def layout(p: U8, h: Headers) -> StreamLayout:
    """The first program's PIDs, from the stream's own PAT and PMT."""
    pat_asm, pmt_asm = SectionAssembler(), SectionAssembler()
    pmt_pid = None
    for i in np.flatnonzero(h.has_payload).tolist():
        pid = int(h.pid[i])
        if pid == PAT_PID and pmt_pid is None:
            for s in pat_asm.push(p[i, h.payload_start[i] :].tobytes(), bool(h.pusi[i])):
                pat = parse_pat(s.data)
                if pat and pat.pmt_pids:
                    pmt_pid = next(iter(pat.pmt_pids.values()))
        elif pmt_pid is not None and pid == pmt_pid:
            for s in pmt_asm.push(p[i, h.payload_start[i] :].tobytes(), bool(h.pusi[i])):
                pmt = parse_pmt(s.data)
                if pmt is None:
                    continue
                av = [(pid_, st) for pid_, st in pmt.streams.items() if st in AV_STREAM_TYPES]
                video = [x for x, st in av if st in {0x01, 0x02, 0x10, 0x1B, 0x24, 0x33}]
                audio = [x for x, st in av if x not in video]
                if not video or not audio:
                    raise ValueError("the stream needs a video and an audio PID")
                return StreamLayout(pmt_pid, pmt.pcr_pid, video[0], audio[0])
    raise ValueError("no PAT and PMT found")


@dataclass
class Injected:
    data: bytes
    truth: list[FaultTruth]
    # When a real-time sender would send each byte: (byte offset, PCR seconds) of every packet
    # start, by the clean stream's clock (a PCR moved by pcr_jump does not move the sender).
    send_offsets: npt.NDArray[np.int64]
    send_times: F64

    def arrival(self, end_offset: int) -> float:
        """Send time of the packet holding byte ``end_offset - 1``: a datagram leaves when its
        last byte is due."""
        k = int(np.searchsorted(self.send_offsets, end_offset - 1, side="right")) - 1
        return float(self.send_times[max(k, 0)])


def inject(data: bytes, faults: list[Fault]) -> Injected:
    """The stream with ``faults`` applied, what each one is, and its sending schedule."""
    if len(data) % PACKET or data[:1] != b"\x47":
        raise ValueError("input must be whole, aligned 188-byte TS packets")
    p = np.frombuffer(data, np.uint8).reshape(-1, PACKET).copy()
    h = parse_headers(p)
    t, pcr_pid = packet_times(p, h)
    t0 = float(t[h.pcr_index[0]])
    lay = layout(p, h) if faults else StreamLayout(-1, pcr_pid, -1, -1)
    extra: dict[int, list[bytes]] = {}  # packet index -> bytes inserted before it
    drop: set[int] = set()
    truth: list[FaultTruth] = []
    pid_arr = h.pid
    mid_video = (pid_arr == lay.video_pid) & ~h.pusi & h.has_payload & (h.payload_start == 4)

    def first(mask: npt.NDArray[np.bool_], at: float) -> int:
        hits = np.flatnonzero(mask & (t >= t0 + at))
        if hits.size == 0:
            raise ValueError(f"nothing to apply a fault to at {at} s")
        return int(hits[0])

    def window(mask: npt.NDArray[np.bool_], f: Fault) -> npt.NDArray[np.int64]:
        return np.flatnonzero(mask & (t >= t0 + f.start_s) & (t < t0 + f.start_s + f.duration_s))

    def withhold(pid: int, f: Fault) -> int:
        sel = window(pid_arr == pid, f)
        if sel.size == 0:
            return 0
        removed = int(h.has_payload[sel].sum()) % 16
        later = np.flatnonzero((pid_arr == pid) & (np.arange(pid_arr.size) > sel[-1]))
        p[later, 3] = (p[later, 3] & 0xF0) | ((p[later, 3] - removed) & 0x0F)
        p[sel] = np.frombuffer(_NULL, np.uint8)
        return int(sel.size)

    for f in faults:
        pid: int | None = None
        count = 1
        end = f.start_s + f.duration_s
        if f.kind in {"drop", "duplicate", "duplicate2", "sync", "tei"}:
            i = first(mid_video, f.start_s)
            pid = lay.video_pid
            if f.kind == "drop":
                drop.add(i)
            elif f.kind.startswith("duplicate"):
                extra.setdefault(i + 1, []).extend([p[i].tobytes()] * (2 if f.kind == "duplicate2" else 1))
            elif f.kind == "sync":
                p[i, 0] = 0x00
                pid = None
            else:
                p[i, 1] |= 0x80
                pid = None
            start = end = float(t[i]) - t0
        elif f.kind == "garbage":
            i = first(np.ones(pid_arr.size, bool), f.start_s)
            rng = np.random.default_rng(int(f.start_s * 1000))
            junk = rng.integers(0, 256, int(f.params.get("bytes", 1000)))
            junk[junk == 0x47] = 0x00
            extra.setdefault(i, []).append(junk.astype(np.uint8).tobytes())
            start = end = float(t[i]) - t0
            count = 0
        elif f.kind in {"pat", "pmt", "pid"}:
            pid = {"pat": PAT_PID, "pmt": lay.pmt_pid}.get(f.kind, int(f.params.get("pid", lay.audio_pid)))
            count = withhold(pid, f)
            start = f.start_s
        elif f.kind == "pmt_crc":
            i = first((pid_arr == lay.pmt_pid) & h.pusi, f.start_s)
            s0 = int(h.payload_start[i]) + 1 + int(p[i, h.payload_start[i]])
            length = 3 + (((int(p[i, s0 + 1]) & 0x0F) << 8) | int(p[i, s0 + 2]))
            if s0 + length > PACKET:
                raise ValueError("the PMT spans packets: its CRC is not in its first packet")
            p[i, s0 + length - 1] ^= 0xFF
            pid = lay.pmt_pid
            start = end = float(t[i]) - t0
        elif f.kind in {"pcr", "pcr_jump"}:
            pid = int(f.params.get("pid", pcr_pid))
            on = h.pcr_index[pid_arr[h.pcr_index] == pid]
            if f.kind == "pcr":
                sel = on[(t[on] >= t0 + f.start_s) & (t[on] < t0 + end)]
                p[sel, 5] &= 0xEF
                p[sel, 6:12] = 0xFF
            else:
                sel = on[t[on] >= t0 + f.start_s]
                jump = round(f.params.get("jump_s", 1.0) * 90_000)
                for i in sel.tolist():
                    base, ext = divmod(read_pcr(p[i]), 300)
                    write_pcr(p[i], (base + jump) % (1 << 33) * 300 + ext)
                end = f.start_s
            count = int(sel.size)
            start = f.start_s
        elif f.kind == "pts":
            pid = int(f.params.get("pid", lay.audio_pid))
            sel = window((pid_arr == pid) & h.pusi & h.has_payload, f)
            count = 0
            for i in sel.tolist():
                ps = int(h.payload_start[i])
                if p[i, ps : ps + 3].tobytes() != b"\x00\x00\x01" or ps + 19 > PACKET or p[i, ps + 7] & 0x3F:
                    continue
                n = 5 if p[i, ps + 7] >> 6 == 2 else 10 if p[i, ps + 7] >> 6 == 3 else 0
                p[i, ps + 7] &= 0x3F
                p[i, ps + 9 : ps + 9 + n] = 0xFF  # PES header stuffing (ISO/IEC 13818-1 §2.4.3.7)
                count += bool(n)
            start = f.start_s
        else:  # pragma: no cover - parse_faults refuses it
            raise ValueError(f.kind)
        truth.append(FaultTruth(f.kind, expected_type(f), round(start, 6), round(end, 6),
                                round(start + t0, 6), round(end + t0, 6), pid, count))
    out = bytearray()
    offsets: list[npt.NDArray[np.int64]] = []
    times: list[F64] = []
    prev = 0
    for i in [*sorted(set(extra) | drop), p.shape[0]]:
        offsets.append(len(out) + PACKET * np.arange(i - prev, dtype=np.int64))
        times.append(t[prev:i])
        out += p[prev:i].tobytes()
        for piece in extra.get(i, []):  # inserted bytes go out with the packet they precede
            offsets.append(np.array([len(out)], np.int64))
            times.append(t[min(i, p.shape[0] - 1) : min(i, p.shape[0] - 1) + 1])
            out += piece
        prev = i + 1 if i in drop else i
    return Injected(bytes(out), truth, np.concatenate(offsets), np.concatenate(times))


def read_pcr(pkt: U8) -> int:
    q = [int(x) for x in pkt[6:12]]
    base = (q[0] << 25) | (q[1] << 17) | (q[2] << 9) | (q[3] << 1) | (q[4] >> 7)
    return base * 300 + (((q[4] & 1) << 8) | q[5])


def write_pcr(pkt: U8, pcr: int) -> None:
    base, ext = divmod(pcr, 300)
    pkt[6:12] = [
        (base >> 25) & 0xFF, (base >> 17) & 0xFF, (base >> 9) & 0xFF, (base >> 1) & 0xFF,
        ((base & 1) << 7) | 0x7E | (ext >> 8), ext & 0xFF,
    ]


def write(src: Path, dst: Path, faults: list[Fault]) -> list[FaultTruth]:
    """Inject ``faults`` into ``src``, write ``dst`` and ``dst``'s ``.truth.json``."""
    result = inject(src.read_bytes(), faults)
    dst.write_bytes(result.data)
    truth = result.truth
    doc = {"source": str(src), "faults": [asdict(x) for x in truth]}
    truth_path(dst).write_text(json.dumps(doc, indent=2))
    return truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avmon.tsfault", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path, help="an MPEG-TS file (whole 188-byte packets)")
    ap.add_argument("output", type=Path)
    ap.add_argument("--faults", required=True, help='e.g. "drop@3,pat@5+1,pid@2+6:pid=257"')
    args = ap.parse_args(argv)
    try:
        truth = write(args.input, args.output, parse_faults(args.faults))
    except ValueError as exc:
        print(f"tsfault: {exc}", file=sys.stderr)
        return 2
    for x in truth:
        print(f"{x.kind}@{x.start_s:.3f}-{x.end_s:.3f} s pid={x.pid} packets={x.packets} -> {x.type}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
