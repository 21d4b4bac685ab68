"""The SCTE 35 decoder on byte fixtures: the specification's own examples (SCTE 35 2019r1 §14,
whose CRC_32 the decoder checks) and sections built field by field by ``avmon.tscue``'s encoder."""

from __future__ import annotations

import base64

import pytest

from avmon.tscue import segmentation_descriptor, splice_info_section, splice_insert, splice_time
from worker.scte35 import (
    PTS_WRAP,
    SPLICE_INSERT,
    SPLICE_NULL,
    TIME_SIGNAL,
    Scte35Error,
    SegmentationDescriptor,
    SpliceDescriptor,
    SpliceInsert,
    SpliceNull,
    TimeSignal,
    decode_splice_info,
)

# SCTE 35 2019r1 §14.1 "time_signal – Placement Opportunity Start" and §14.2 "splice_insert".
SPEC_TIME_SIGNAL = "/DA0AAAAAAAA///wBQb+cr0AUAAeAhxDVUVJSAAAjn/PAAGlmbAICAAAAAAsoKGKNAIAmsnRfg=="
SPEC_SPLICE_INSERT = "/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo="


def test_spec_time_signal_placement_opportunity_start() -> None:
    info = decode_splice_info(base64.b64decode(SPEC_TIME_SIGNAL))
    assert info.command_name == "time_signal"
    assert info.command == TimeSignal(0x072BD0050)
    assert info.splice_pts == 0x072BD0050  # 21388.766756 s
    (seg,) = info.segmentation
    assert seg.event_id == 0x4800008E
    assert seg.type_id == 0x34
    assert seg.type_name == "provider_placement_opportunity_start"
    assert seg.duration == 0x0001A599B0  # 307.0 s
    assert (seg.upid_type, seg.upid) == (0x08, bytes.fromhex("000000002ca0a18a"))
    assert (seg.segment_num, seg.segments_expected) == (2, 0)


def test_spec_splice_insert() -> None:
    info = decode_splice_info(base64.b64decode(SPEC_SPLICE_INSERT))
    cmd = info.command
    assert isinstance(cmd, SpliceInsert)
    assert cmd.event_id == 0x4800008F
    assert cmd.out_of_network and cmd.program_splice and not cmd.immediate
    assert cmd.pts_time == 0x07369C02E  # 21514.559089 s
    assert cmd.break_duration == 0x00052CCF5  # 60.293567 s
    assert cmd.auto_return
    assert info.descriptors == (SpliceDescriptor(0x00, b"CUEI", bytes.fromhex("00000135")),)


def test_a_corrupted_section_fails_its_crc() -> None:
    raw = bytearray(base64.b64decode(SPEC_SPLICE_INSERT))
    raw[20] ^= 0x01
    with pytest.raises(Scte35Error, match="CRC"):
        decode_splice_info(bytes(raw))


def test_another_table_is_refused() -> None:
    raw = bytearray(base64.b64decode(SPEC_SPLICE_INSERT))
    raw[0] = 0x02
    with pytest.raises(Scte35Error, match="table_id"):
        decode_splice_info(bytes(raw))


def test_a_truncated_section_is_refused() -> None:
    with pytest.raises(Scte35Error):
        decode_splice_info(base64.b64decode(SPEC_SPLICE_INSERT)[:20])


def test_splice_null() -> None:
    info = decode_splice_info(splice_info_section(SPLICE_NULL, b""))
    assert info.command == SpliceNull()
    assert info.splice_pts is None


def test_pts_adjustment_is_added_modulo_2_to_the_33() -> None:
    pts = PTS_WRAP - 90_000  # one second before the wrap
    adjust = 3 * 90_000
    info = decode_splice_info(splice_info_section(TIME_SIGNAL, splice_time(pts), pts_adjustment=adjust))
    assert info.pts_adjustment == adjust
    assert info.splice_pts == 2 * 90_000  # two seconds after it


def test_splice_immediate_has_no_splice_time() -> None:
    cmd = splice_insert(42, out=True, pts=None, duration=30 * 90_000)
    info = decode_splice_info(splice_info_section(SPLICE_INSERT, cmd))
    assert isinstance(info.command, SpliceInsert)
    assert info.command.immediate
    assert info.splice_pts is None
    assert info.command.break_duration == 30 * 90_000


def test_cue_in_without_duration() -> None:
    cmd = splice_insert(7, out=False, pts=123_456)
    info = decode_splice_info(splice_info_section(SPLICE_INSERT, cmd))
    assert info.command == SpliceInsert(7, False, out_of_network=False, pts_time=123_456)


def test_splice_event_cancel() -> None:
    cmd = splice_insert(9, out=True, pts=None, cancel=True)
    info = decode_splice_info(splice_info_section(SPLICE_INSERT, cmd))
    assert info.command == SpliceInsert(9, True)


def test_time_signal_with_two_segmentation_descriptors() -> None:
    descs = segmentation_descriptor(1, 0x22, duration=90 * 90_000) + segmentation_descriptor(
        2, 0x30, duration=30 * 90_000, upid_type=0x09, upid=b"ad-1")
    info = decode_splice_info(splice_info_section(TIME_SIGNAL, splice_time(10 * 90_000), descs))
    assert [d.type_name for d in info.segmentation] == ["break_start", "provider_advertisement_start"]
    first, second = info.segmentation
    assert isinstance(first, SegmentationDescriptor)
    assert (first.event_id, first.duration) == (1, 90 * 90_000)
    assert (second.event_id, second.upid_type, second.upid) == (2, 0x09, b"ad-1")


def test_placement_opportunity_carries_sub_segments() -> None:
    desc = segmentation_descriptor(5, 0x34, duration=None)
    info = decode_splice_info(splice_info_section(TIME_SIGNAL, splice_time(None), desc))
    (seg,) = info.segmentation
    assert (seg.sub_segment_num, seg.sub_segments_expected) == (0, 0)
    assert seg.duration is None
    assert info.splice_pts is None  # time_signal without a time: "now"
