"""SCTE 35 splice_info_section decoding: pure, one section's bytes in, a typed value out.

ANSI/SCTE 35 2022 §9.6: table_id 0xFC, section_syntax_indicator 0 and yet a CRC_32
(CRC-32/MPEG-2 over the whole section). What is decoded: splice_null, splice_insert (§9.7.3,
program and component splices, break_duration with auto_return), time_signal (§9.7.4) and the
segmentation_descriptor (§10.3.3, identifier "CUEI") with its UPID kept as raw bytes. Other
commands (splice_schedule, bandwidth_reservation, private) and descriptors (avail, DTMF, time,
audio) are kept by type and tag only. An encrypted section (§11) is reported as such: its command
cannot be read without the key.

Times are 90 kHz ticks on the 33-bit PTS clock; ``SpliceInfo.splice_pts`` applies
``pts_adjustment`` modulo 2^33 (§9.6.1) so a splice near the wrap lands after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.transport.psi import crc32_mpeg2

SCTE35_TABLE = 0xFC
SCTE35_STREAM_TYPE = 0x86  # §8.1: the PMT's stream_type for a splice_info_section PID
CUEI = b"CUEI"  # §8.1 registration descriptor format_identifier, and every CUEI descriptor's
PTS_HZ = 90_000
PTS_WRAP = 1 << 33

SPLICE_NULL = 0x00
SPLICE_SCHEDULE = 0x04
SPLICE_INSERT = 0x05
TIME_SIGNAL = 0x06
BANDWIDTH_RESERVATION = 0x07
PRIVATE_COMMAND = 0xFF
COMMAND_NAMES = {
    SPLICE_NULL: "splice_null", SPLICE_SCHEDULE: "splice_schedule", SPLICE_INSERT: "splice_insert",
    TIME_SIGNAL: "time_signal", BANDWIDTH_RESERVATION: "bandwidth_reservation",
    PRIVATE_COMMAND: "private_command",
}
SEGMENTATION_DESCRIPTOR = 0x02

# §10.3.3.1 table 22: segmentation_type_id values. A "start" opens a span its "end" (start + 1)
# closes; the ones with sub_segment fields (placement opportunities, 2016+) are marked.
SEGMENTATION_TYPES = {
    0x00: "not_indicated", 0x01: "content_identification", 0x02: "private",
    0x10: "program_start", 0x11: "program_end", 0x12: "program_early_termination",
    0x13: "program_breakaway", 0x14: "program_resumption", 0x15: "program_runover_planned",
    0x16: "program_runover_unplanned", 0x17: "program_overlap_start",
    0x18: "program_blackout_override", 0x19: "program_join", 0x20: "chapter_start",
    0x21: "chapter_end", 0x22: "break_start", 0x23: "break_end", 0x24: "opening_credit_start",
    0x25: "opening_credit_end", 0x26: "closing_credit_start", 0x27: "closing_credit_end",
    0x30: "provider_advertisement_start", 0x31: "provider_advertisement_end",
    0x32: "distributor_advertisement_start", 0x33: "distributor_advertisement_end",
    0x34: "provider_placement_opportunity_start", 0x35: "provider_placement_opportunity_end",
    0x36: "distributor_placement_opportunity_start", 0x37: "distributor_placement_opportunity_end",
    0x38: "provider_overlay_placement_opportunity_start",
    0x39: "provider_overlay_placement_opportunity_end",
    0x3A: "distributor_overlay_placement_opportunity_start",
    0x3B: "distributor_overlay_placement_opportunity_end",
    0x3C: "provider_promo_start", 0x3D: "provider_promo_end", 0x3E: "distributor_promo_start",
    0x3F: "distributor_promo_end", 0x40: "unscheduled_event_start", 0x41: "unscheduled_event_end",
    0x42: "alternate_content_opportunity_start", 0x43: "alternate_content_opportunity_end",
    0x44: "provider_ad_block_start", 0x45: "provider_ad_block_end",
    0x46: "distributor_ad_block_start", 0x47: "distributor_ad_block_end",
    0x50: "network_start", 0x51: "network_end",
}
_SUB_SEGMENT_TYPES = frozenset({0x34, 0x36, 0x38, 0x3A, 0x44, 0x46})
# Starts of the spans an ad insertion cares about (breaks, ads, placement opportunities): the
# ones whose missing end is a missing cue-in.
AD_START_TYPES = frozenset({0x22, 0x30, 0x32, 0x34, 0x36, 0x38, 0x3A, 0x44, 0x46})


class Scte35Error(ValueError):
    """A section that is not a valid splice_info_section (wrong table, bad CRC, truncated)."""


@dataclass(frozen=True, slots=True)
class SpliceNull:
    """A heartbeat (§9.7.1): carries nothing."""


@dataclass(frozen=True, slots=True)
class SpliceInsert:
    """§9.7.3. Times are 90 kHz ticks, before pts_adjustment; None when not given."""

    event_id: int
    cancel: bool  # splice_event_cancel_indicator: the event ``event_id`` is withdrawn
    out_of_network: bool = False  # True: a cue-out (leave the network), False: a cue-in
    program_splice: bool = True
    immediate: bool = False  # splice_immediate_flag: splice at the next opportunity, no time
    pts_time: int | None = None  # the program splice time (or the first component's)
    components: tuple[tuple[int, int | None], ...] = ()  # (component_tag, pts_time)
    break_duration: int | None = None  # 90 kHz ticks
    auto_return: bool = False  # the splicer returns by itself after break_duration
    unique_program_id: int = 0
    avail_num: int = 0
    avails_expected: int = 0


@dataclass(frozen=True, slots=True)
class TimeSignal:
    """§9.7.4: a splice time for the descriptors (segmentation) that give its meaning."""

    pts_time: int | None  # 90 kHz ticks before pts_adjustment; None: "now" (time not specified)


@dataclass(frozen=True, slots=True)
class SegmentationDescriptor:
    """§10.3.3.1. ``duration`` in 90 kHz ticks (None when not given)."""

    event_id: int
    cancel: bool
    type_id: int = 0
    duration: int | None = None
    upid_type: int = 0
    upid: bytes = b""
    segment_num: int = 0
    segments_expected: int = 0
    sub_segment_num: int | None = None
    sub_segments_expected: int | None = None
    program_segmentation: bool = True
    delivery_not_restricted: bool = True
    components: tuple[tuple[int, int], ...] = ()  # (component_tag, pts_offset ticks)

    @property
    def type_name(self) -> str:
        return SEGMENTATION_TYPES.get(self.type_id, f"0x{self.type_id:02x}")


@dataclass(frozen=True, slots=True)
class SpliceDescriptor:
    """A descriptor kept by tag, identifier and raw body (avail, DTMF, time, audio, private)."""

    tag: int
    identifier: bytes
    data: bytes


Command = SpliceNull | SpliceInsert | TimeSignal


@dataclass(frozen=True, slots=True)
class SpliceInfo:
    """One decoded splice_info_section."""

    command_type: int
    command: Command | None  # None: a command this decoder keeps by type only, or encrypted
    pts_adjustment: int = 0  # 90 kHz ticks, added to every splice time modulo 2^33
    tier: int = 0xFFF
    protocol_version: int = 0
    encrypted: bool = False
    sap_type: int = 3
    descriptors: tuple[SegmentationDescriptor | SpliceDescriptor, ...] = ()

    @property
    def command_name(self) -> str:
        return COMMAND_NAMES.get(self.command_type, f"0x{self.command_type:02x}")

    @property
    def splice_pts(self) -> int | None:
        """The splice time on the PTS clock (90 kHz ticks, pts_adjustment applied, modulo 2^33);
        None for an immediate splice, a time_signal without time, or a command without one."""
        cmd = self.command
        pts = cmd.pts_time if isinstance(cmd, SpliceInsert | TimeSignal) else None
        return None if pts is None else (pts + self.pts_adjustment) % PTS_WRAP

    @property
    def segmentation(self) -> tuple[SegmentationDescriptor, ...]:
        return tuple(d for d in self.descriptors if isinstance(d, SegmentationDescriptor))


class _Reader:
    """Big-endian fields from a byte string, by bits; running off the end is a Scte35Error."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.bit = 8 * start
        self.end_bit = 8 * (len(data) if end is None else end)

    def bits(self, n: int) -> int:
        if self.bit + n > self.end_bit:
            raise Scte35Error(f"truncated: {n} bits wanted at bit {self.bit} of {self.end_bit}")
        first, last = self.bit // 8, (self.bit + n - 1) // 8
        chunk = int.from_bytes(self.data[first : last + 1], "big")
        shift = 8 * (last + 1) - (self.bit + n)
        self.bit += n
        return (chunk >> shift) & ((1 << n) - 1)

    def flag(self) -> bool:
        return bool(self.bits(1))

    def take(self, n: int) -> bytes:
        if self.bit % 8:
            raise Scte35Error("unaligned byte field")
        a = self.bit // 8
        if a + n > self.end_bit // 8:
            raise Scte35Error(f"truncated: {n} bytes wanted at byte {a}")
        self.bit += 8 * n
        return self.data[a : a + n]

    @property
    def pos(self) -> int:
        return self.bit // 8


def decode_splice_info(section: bytes) -> SpliceInfo:
    """Decode one whole splice_info_section (table_id to CRC_32). Raises Scte35Error when it is
    not one: another table, a length that disagrees with the bytes, or a CRC mismatch."""
    if len(section) < 17 or section[0] != SCTE35_TABLE:
        raise Scte35Error("not a splice_info_section (table_id 0xFC, 17 bytes at least)")
    length = 3 + (((section[1] & 0x0F) << 8) | section[2])
    if length > len(section):
        raise Scte35Error(f"section_length says {length} bytes, {len(section)} given")
    section = section[:length]
    if crc32_mpeg2(section) != 0:
        raise Scte35Error("CRC_32 mismatch")
    r = _Reader(section, 1, length - 4)
    r.bits(2)  # section_syntax_indicator, private_indicator
    sap_type = r.bits(2)
    r.bits(12)
    protocol_version = r.bits(8)
    encrypted = r.flag()
    r.bits(6)  # encryption_algorithm
    pts_adjustment = r.bits(33)
    r.bits(8)  # cw_index
    tier = r.bits(12)
    command_length = r.bits(12)
    command_type = r.bits(8)
    if encrypted:
        return SpliceInfo(command_type, None, pts_adjustment, tier, protocol_version, True, sap_type)
    start = r.pos
    command = _command(r, command_type, command_length)
    if command_length != 0xFFF:  # 0xFFF: a legacy "unknown" length, the command's own decides
        if command is not None and r.pos > start + command_length:
            raise Scte35Error("splice command overruns its splice_command_length")
        r.bit = 8 * (start + command_length)
    descriptors = _descriptors(r, r.bits(16))
    return SpliceInfo(command_type, command, pts_adjustment, tier, protocol_version, False,
                      sap_type, descriptors)


def _command(r: _Reader, command_type: int, length: int) -> Command | None:
    if command_type == SPLICE_NULL:
        return SpliceNull()
    if command_type == TIME_SIGNAL:
        return TimeSignal(_splice_time(r))
    if command_type == SPLICE_INSERT:
        return _splice_insert(r)
    if length == 0xFFF:
        raise Scte35Error(f"command 0x{command_type:02x} without a length cannot be skipped")
    return None


def _splice_time(r: _Reader) -> int | None:
    if r.flag():  # time_specified_flag
        r.bits(6)
        return r.bits(33)
    r.bits(7)
    return None


def _splice_insert(r: _Reader) -> SpliceInsert:
    event_id = r.bits(32)
    cancel = r.flag()
    r.bits(7)
    if cancel:
        return SpliceInsert(event_id, True)
    out = r.flag()
    program = r.flag()
    has_duration = r.flag()
    immediate = r.flag()
    r.bits(4)  # event_id_compliance_flag (2020), reserved
    pts: int | None = None
    components: list[tuple[int, int | None]] = []
    if program:
        if not immediate:
            pts = _splice_time(r)
    else:
        for _ in range(r.bits(8)):
            tag = r.bits(8)
            components.append((tag, None if immediate else _splice_time(r)))
        pts = next((c[1] for c in components if c[1] is not None), None)
    duration: int | None = None
    auto_return = False
    if has_duration:
        auto_return = r.flag()
        r.bits(6)
        duration = r.bits(33)
    return SpliceInsert(event_id, False, out, program, immediate, pts, tuple(components), duration,
                        auto_return, r.bits(16), r.bits(8), r.bits(8))


def _descriptors(r: _Reader, loop_length: int) -> tuple[SegmentationDescriptor | SpliceDescriptor, ...]:
    out: list[SegmentationDescriptor | SpliceDescriptor] = []
    end = r.pos + loop_length
    if end > r.end_bit // 8:
        raise Scte35Error("descriptor_loop_length overruns the section")
    while r.pos + 2 <= end:
        tag, length = r.bits(8), r.bits(8)
        body_end = r.pos + length
        if body_end > end or length < 4:
            raise Scte35Error(f"descriptor 0x{tag:02x} overruns the descriptor loop")
        identifier = r.take(4)
        if tag == SEGMENTATION_DESCRIPTOR and identifier == CUEI:
            out.append(_segmentation(_Reader(r.data, r.pos, body_end)))
        else:
            out.append(SpliceDescriptor(tag, identifier, r.take(length - 4)))
        r.bit = 8 * body_end
    return tuple(out)


def _segmentation(r: _Reader) -> SegmentationDescriptor:
    event_id = r.bits(32)
    cancel = r.flag()
    r.bits(7)  # segmentation_event_id_compliance_indicator (2020), reserved
    if cancel:
        return SegmentationDescriptor(event_id, True)
    program = r.flag()
    has_duration = r.flag()
    not_restricted = r.flag()
    r.bits(5)  # the delivery restriction flags, or reserved
    components: list[tuple[int, int]] = []
    if not program:
        for _ in range(r.bits(8)):
            tag = r.bits(8)
            r.bits(7)
            components.append((tag, r.bits(33)))
    duration = r.bits(40) if has_duration else None
    upid_type, upid_length = r.bits(8), r.bits(8)
    upid = r.take(upid_length)
    type_id, num, expected = r.bits(8), r.bits(8), r.bits(8)
    sub: int | None = None
    sub_expected: int | None = None
    if type_id in _SUB_SEGMENT_TYPES and r.end_bit - r.bit >= 16:  # absent before SCTE 35 2016
        sub, sub_expected = r.bits(8), r.bits(8)
    return SegmentationDescriptor(event_id, False, type_id, duration, upid_type, upid, num, expected,
                                  sub, sub_expected, program, not_restricted, tuple(components))
