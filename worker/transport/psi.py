"""PSI sections (PAT, PMT and the other CRC-protected tables) from TS packet payloads.

Only the few PSI/SI PIDs go through here (a PAT and a PMT every 0.1 s are ~20 packets a second
of the thousands a stream carries), so a Python loop per PSI packet is cheap; elementary-stream
packets never reach this module.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

PAT_TABLE = 0x00
CAT_TABLE = 0x01
PMT_TABLE = 0x02

# PIDs whose tables TR 101 290 2.2 (CRC_error) names besides PAT and PMTs: CAT, NIT, SDT/BAT, EIT.
SI_PIDS = (0x0001, 0x0010, 0x0011, 0x0012)

# Stream types whose PIDs PID_error watches (video and audio only, as TSDuck does; a sparse data
# PID such as SCTE-35 may rightly stay silent for minutes): MPEG-1/2 video (0x01, 0x02), MPEG-1/2
# audio (0x03, 0x04), AAC ADTS and LATM (0x0F, 0x11), MPEG-4 visual (0x10), H.264 and its MVC
# layer (0x1B, 0x20), HEVC (0x24), VVC (0x33), AVS (0x42), AC-3, DTS, TrueHD, E-AC-3 (0x81-0x87).
AV_STREAM_TYPES = frozenset(
    {0x01, 0x02, 0x03, 0x04, 0x0F, 0x10, 0x11, 0x1B, 0x20, 0x24, 0x33, 0x42, 0x81, 0x82, 0x83, 0x87}
)

_REVERSED_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (ISO/IEC 13818-1 annex A: polynomial 0x04C11DB7, initial 0xFFFFFFFF, no
    reflection, no final xor). zlib runs the same polynomial bit-reflected with a final xor, so
    it is fed bit-reversed bytes and its register reversed back: C speed from the standard
    library. A section followed by its own CRC_32 gives 0."""
    reflected = zlib.crc32(data.translate(_REVERSED_BITS)) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


@dataclass(frozen=True, slots=True)
class Section:
    table_id: int
    data: bytes  # the whole section, header to CRC_32
    crc_ok: bool  # True also for sections without CRC (section_syntax_indicator 0)


class SectionAssembler:
    """Reassembles the sections of one PID from its packets' payloads, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._active = False

    def reset(self) -> None:
        self._buf.clear()
        self._active = False

    def push(self, payload: bytes, pusi: bool) -> list[Section]:
        """One packet's payload; returns the sections it completes."""
        out: list[Section] = []
        if pusi:
            if not payload:
                return out
            pointer = payload[0]
            if self._active:
                self._buf += payload[1 : 1 + pointer]
                self._take(out, final=True)
            self._buf = bytearray(payload[1 + pointer :])
            self._active = True
            self._take(out, final=False)
        elif self._active:
            self._buf += payload
            self._take(out, final=False)
        return out

    def _take(self, out: list[Section], *, final: bool) -> None:
        """Move complete sections out of the buffer; stuffing (0xFF) ends the packet's sections."""
        buf = self._buf
        while len(buf) >= 3 and buf[0] != 0xFF:
            length = 3 + (((buf[1] & 0x0F) << 8) | buf[2])
            if len(buf) < length:
                if final:  # the next section started before this one was complete
                    buf.clear()
                    self._active = False
                return
            raw = bytes(buf[:length])
            syntax = bool(raw[1] & 0x80)
            crc_ok = not syntax or (length >= 12 and crc32_mpeg2(raw) == 0)
            out.append(Section(raw[0], raw, crc_ok))
            del buf[:length]
        if not buf or buf[0] == 0xFF or final:
            buf.clear()
            self._active = False


@dataclass(frozen=True, slots=True)
class Pat:
    pmt_pids: dict[int, int]  # program_number -> PMT PID (program 0, the NIT, left out)


@dataclass(frozen=True, slots=True)
class Pmt:
    program: int
    pcr_pid: int
    streams: dict[int, int] = field(default_factory=dict)  # elementary PID -> stream_type
    # format_identifiers of the registration descriptors (§2.6.8), program and stream level:
    # b"CUEI" marks SCTE-35 (ANSI/SCTE 35 §8.1)
    registrations: frozenset[bytes] = frozenset()


def parse_pat(s: bytes) -> Pat | None:
    """ISO/IEC 13818-1 §2.4.4.3; None when the section is too short to be one."""
    if len(s) < 12 or s[0] != PAT_TABLE:
        return None
    pmts: dict[int, int] = {}
    for i in range(8, len(s) - 4 - 3, 4):
        program = (s[i] << 8) | s[i + 1]
        pid = ((s[i + 2] & 0x1F) << 8) | s[i + 3]
        if program:
            pmts[program] = pid
    return Pat(pmts)


def parse_pmt(s: bytes) -> Pmt | None:
    """ISO/IEC 13818-1 §2.4.4.8; None when the section is malformed."""
    if len(s) < 16 or s[0] != PMT_TABLE:
        return None
    program = (s[3] << 8) | s[4]
    pcr_pid = ((s[8] & 0x1F) << 8) | s[9]
    info_end = 12 + (((s[10] & 0x0F) << 8) | s[11])
    end = len(s) - 4
    regs = _registrations(s, 12, min(info_end, end))
    i = info_end
    streams: dict[int, int] = {}
    while i + 5 <= end:
        pid = ((s[i + 1] & 0x1F) << 8) | s[i + 2]
        streams[pid] = s[i]
        es_end = i + 5 + (((s[i + 3] & 0x0F) << 8) | s[i + 4])
        regs |= _registrations(s, i + 5, min(es_end, end))
        i = es_end
    if i > end:
        return None
    return Pmt(program, pcr_pid, streams, frozenset(regs))


REGISTRATION_DESCRIPTOR = 0x05


def _registrations(s: bytes, i: int, end: int) -> set[bytes]:
    """The format_identifiers of the registration descriptors in ``s[i:end]``."""
    out: set[bytes] = set()
    while i + 2 <= end:
        tag, length = s[i], s[i + 1]
        if tag == REGISTRATION_DESCRIPTOR and length >= 4 and i + 6 <= end:
            out.add(bytes(s[i + 2 : i + 6]))
        i += 2 + length
    return out
