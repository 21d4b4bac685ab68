"""Closed-caption presence from the decoded pictures' A/53 side data: pure, per picture.

FFmpeg's H.264 and HEVC decoders attach the caption data of a picture's SEI (ATSC A/53 Part 4
user_data_registered_itu_t_t35, "GA94") as ``AV_FRAME_DATA_A53_CC`` side data: cc_data triplets
(CEA-708-E §4.4): ``marker(5) cc_valid(1) cc_type(2)``, cc_data_1, cc_data_2. cc_type 0 and 1
carry CEA-608 byte pairs (field 1, field 2), 2 and 3 CEA-708 DTVCC packet bytes.

*Text* is a valid triplet that is not padding: a 608 pair other than the null pair (0x80 0x80
with parity, 0x00 0x00 without), or DTVCC bytes other than 0x00 0x00. An encoder that keeps its
caption channel alive with padding only has no captions. A stream that had text and then has
none for ``lost_s`` raises ``captions_lost`` (open at the last text + ``lost_s``, closed at the
next text); a stream that never had text raises nothing: it reports "no captions".

The session reads cc_data from each video packet's own bytes (:func:`a53_from_packet`), not
from the decoded picture: PyAV's ``frame.side_data`` makes a reference cycle (the frame caches
its side-data container, which holds the frame), so every picture it is read from waits for the
cyclic garbage collector: measured, ~100 decoded 720p pictures alive at once and +186 MB of RSS
for 10 s of video. The bytes are the same (the decoder copies them from the SEI); the times are
the packet's presentation time.

Cost: a walk over the units before each video packet's first slice, and a scan of the cc_data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import av
from av.sidedata.sidedata import SideDataContainer, Type

from shared.models import DefectType as D
from worker.detectors.base import Finding, Severity

CAPTIONS_LOST_S = 10.0  # not a standard's: a programme may pause its captions for seconds


@dataclass(frozen=True, slots=True)
class CcCounts:
    """Triplets of one picture's cc_data: CEA-608 text pairs, DTVCC text pairs, padding."""

    cea608: int = 0
    cea708: int = 0
    padding: int = 0

    @property
    def text(self) -> bool:
        return bool(self.cea608 or self.cea708)


def parse_cc_data(data: bytes) -> CcCounts:
    """Count the triplets of ``data`` (a whole number of 3-byte cc_data triplets; a trailing
    partial one is ignored)."""
    c608 = c708 = pad = 0
    for i in range(0, len(data) - 2, 3):
        head, b1, b2 = data[i], data[i + 1], data[i + 2]
        valid, cc_type = head & 0x04, head & 0x03
        if not valid:
            pad += 1
        elif cc_type < 2:
            if (b1 & 0x7F) or (b2 & 0x7F):  # parity stripped: 0x80 0x80 is the null pair
                c608 += 1
            else:
                pad += 1
        elif b1 or b2:
            c708 += 1
        else:
            pad += 1
    return CcCounts(c608, c708, pad)


class CaptionTracker:
    """Caption presence of one video stream, from its pictures in presentation order."""

    def __init__(self, *, lost_s: float = CAPTIONS_LOST_S) -> None:
        if not 0.1 <= lost_s <= 3600.0:
            raise ValueError(f"lost_s = {lost_s}: must be within 0.1-3600 s")
        self.lost_s = lost_s
        self.ever = False  # caption text was seen at least once
        self.last_text_s: float | None = None
        self.pictures_with_text = 0
        self._lost_since: float | None = None  # start of the open captions_lost
        self._lost = False  # had text, none for lost_s (stays so after flush)

    @property
    def present(self) -> bool | None:
        """True: text within ``lost_s``; False: had text, now lost; None: never had captions."""
        if not self.ever:
            return None
        return not self._lost

    def picture(self, t_s: float, cc_data: bytes | None) -> list[Finding]:
        """One decoded picture at media time ``t_s`` (seconds) with its A53_CC side data bytes
        (None: none). Returns the findings it opens or closes."""
        out: list[Finding] = []
        if cc_data and parse_cc_data(cc_data).text:
            self.ever = True
            self.pictures_with_text += 1
            self.last_text_s = t_s
            self._lost = False
            if self._lost_since is not None:
                out.append(self._finding(self._lost_since, max(self._lost_since, t_s)))
                self._lost_since = None
            return out
        return self.tick(t_s)

    def tick(self, t_s: float) -> list[Finding]:
        """Judge the time without text at ``t_s`` (media seconds)."""
        if self.last_text_s is not None and not self._lost and t_s - self.last_text_s > self.lost_s:
            self._lost_since = self.last_text_s + self.lost_s
            self._lost = True
            return [self._finding(self._lost_since, None)]
        return []

    def flush(self, t_end: float) -> list[Finding]:
        """End of input: an open captions_lost closes at ``t_end``."""
        out = self.tick(t_end)
        if self._lost_since is not None:
            out.append(self._finding(self._lost_since, max(self._lost_since, t_end)))
            self._lost_since = None
        return out

    def _finding(self, start: float, end: float | None) -> Finding:
        return Finding(D.CAPTIONS_LOST.value, start, end, Severity.WARNING,
                       {"lost_after_s": self.lost_s})


A53_TAG = b"GA94\x03"  # ATSC A/53 user_identifier and user_data_type_code 3 (cc_data)
SCAN_BYTES = 4096  # captions precede the picture's slices: the head of a packet holds them
_CC_MAX = 2 + 31 * 3  # flags/cc_count, em_data, 31 triplets at most
_START = b"\0\0\1"


def _is_slice(codec: str, header: int) -> bool:
    """Whether the unit after a start code (its first byte ``header``) is picture data."""
    if codec == "hevc":
        return (header >> 1) & 0x3F < 32  # VCL NAL unit types 0-31
    if codec == "mpeg2video":
        return 0x01 <= header <= 0xAF  # slice start codes
    return 1 <= header & 0x1F <= 5  # H.264: coded slices


def _caption_region(head: bytes, codec: str) -> int:
    """How many bytes of ``head`` precede its first slice: where caption data can be. Annex B
    and MPEG-2 are walked by start code, length-prefixed NAL units (MP4) by their 4-byte sizes;
    a search of the whole picture would cost more than the rest of the per-picture work."""
    if codec in ("h264", "hevc") and not head.startswith((b"\0\0\1", b"\0\0\0\1")):
        i = 0
        while i + 5 <= len(head):
            if _is_slice(codec, head[i + 4]):
                return i
            i += 4 + int.from_bytes(head[i : i + 4], "big")
        return len(head)
    i = head.find(_START)
    while 0 <= i < len(head) - 3:
        if _is_slice(codec, head[i + 3]):
            return i
        i = head.find(_START, i + 3)
    return len(head)


def a53_from_packet(data: bytes | av.Packet[Any], codec: str = "h264") -> bytes | None:
    """The cc_data triplets of the A/53 caption data before the first slice of a video packet
    (its first ``SCAN_BYTES``) of ``codec`` (FFmpeg's name: h264, hevc, mpeg2video): an H.264 or
    HEVC SEI (user_data_registered_itu_t_t35, emulation prevention removed) or MPEG-2 picture
    user data. None when there is none."""
    try:
        head = memoryview(data)[:SCAN_BYTES].tobytes()
    except TypeError:  # a packet that wraps one (worker/dash/input.py)
        head = bytes(data)[:SCAN_BYTES]
    end = _caption_region(head, codec)
    k = head.find(A53_TAG, 0, end)
    if k < 0:
        return None
    out = b""
    while k >= 0:
        # Room for the emulation-prevention bytes a NAL payload may hold (one per two zeros).
        at = k + len(A53_TAG)
        body = head[at : at + _CC_MAX + _CC_MAX // 2].replace(b"\0\0\3", b"\0\0")
        if len(body) >= 2 and body[0] & 0x40:  # process_cc_data_flag
            out += body[2 : 2 + 3 * (body[0] & 0x1F)]
        k = head.find(A53_TAG, at, end)
    return out or None


def a53_cc(frame: av.VideoFrame) -> bytes | None:
    """The A53_CC side data bytes of a decoded PyAV picture, or None. (Not for a long-running
    loop: see the module's note on the reference cycle.)"""
    # PyAV's frame stub types side_data as a str mapping; at run time it is this container,
    # whose iteration yields the SideData themselves.
    for sd in cast(SideDataContainer, frame.side_data):
        if sd.type == Type.A53_CC:
            return bytes(sd)
    return None
