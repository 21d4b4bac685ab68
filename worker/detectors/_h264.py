"""Lost H.264 reference pictures, read from slice headers (ITU-T H.264 §7.4.3, ``frame_num``).

A whole picture missing from a stream without a transport layer to report it (a frame removed
from an MP4 or an HLS segment) leaves no corrupt packet and, in FFmpeg's H.264 decoder, no
corrupt picture: the decoder logs "Missing reference picture" and predicts from another one,
and the damage shows until the next IDR (measured on the generator's ``drop`` in MP4: a lost P
picture leaves the rest of its 2 s GOP 8-14 luma levels off, mean per pixel). The bitstream says
it outright: ``frame_num`` counts reference pictures, so the picture after a lost reference
carries a ``frame_num`` more than one past the previous reference's (a "frame num gap"), unless
the stream declares ``gaps_in_frame_num_value_allowed_flag``. Pictures an encoder or an edit
left out were never coded, so they leave no gap: this tells transmission loss from an encoder's
frame drop, which only ``stutter`` sees.

Pure and cheap: only the NAL headers, the parameter sets and the first bytes of a picture's
first slice are read (a few microseconds a packet). Both packagings: Annex B start codes
(MPEG-TS) and length-prefixed NAL units with an ``avcC`` record (MP4, Matroska).
"""

from __future__ import annotations

from dataclasses import dataclass

# profile_idc values whose SPS carries chroma_format_idc, bit depths and scaling lists (§7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_IDR, _SLICE, _SPS, _PPS = 5, 1, 7, 8
# A "gap" this long is not a loss but a new count: an mmco 5 (frame_num restarts at 0) or a
# splice into another encoder's stream. More than this many references lost in one go is a
# discontinuity the demuxer or the timestamps report.
MAX_GAP = 16
HEADER_BYTES = 48  # of a slice NAL: enough for frame_num with any pps_id


class _Bits:
    """Big-endian bit reader over an RBSP prefix (emulation prevention bytes removed)."""

    __slots__ = ("_n", "_pos", "_value")

    def __init__(self, rbsp: bytes) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._n = 8 * len(rbsp)
        self._pos = 0

    def u(self, bits: int) -> int:
        if self._pos + bits > self._n:
            raise ValueError("truncated")
        self._pos += bits
        return (self._value >> (self._n - self._pos)) & ((1 << bits) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """The payload after the NAL header byte, emulation prevention (00 00 03) undone."""
    return nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(frozen=True, slots=True)
class Sps:
    log2_max_frame_num: int
    separate_colour_plane: bool
    gaps_allowed: bool


def parse_sps(nal: bytes) -> tuple[int, Sps]:
    """(seq_parameter_set_id, what the slice headers need) of an SPS NAL unit."""
    b = _Bits(_rbsp(nal))
    profile = b.u(8)
    b.u(16)  # constraint flags, level_idc
    sps_id = b.ue()
    separate = False
    if profile in _HIGH_PROFILES:
        chroma = b.ue()
        if chroma == 3:
            separate = bool(b.u(1))
        b.ue(), b.ue(), b.u(1)  # bit depths, qpprime_y_zero_transform_bypass_flag
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma == 3 else 8):
                if b.u(1):
                    last = step = 8
                    for _ in range(16 if i < 6 else 64):
                        if step:
                            step = (last + b.se() + 256) % 256
                        last = step or last
    log2_max_frame_num = b.ue() + 4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1), b.se(), b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    return sps_id, Sps(log2_max_frame_num, separate, bool(b.u(1)))


def parse_pps(nal: bytes) -> tuple[int, int]:
    """(pic_parameter_set_id, seq_parameter_set_id) of a PPS NAL unit."""
    b = _Bits(_rbsp(nal[:16]))
    return b.ue(), b.ue()


class ReferenceLossCounter:
    """Counts reference pictures missing from an H.264 elementary stream, packet by packet.

    ``extradata`` is the stream's ``avcC`` record when its NAL units are length-prefixed (MP4),
    empty for Annex B (MPEG-TS: parameter sets come in band). :meth:`feed` takes one packet's
    bytes and returns how many reference pictures were lost just before it (0 almost always).
    """

    def __init__(self, extradata: bytes = b"") -> None:
        self._sps: dict[int, Sps] = {}
        self._pps: dict[int, int] = {}  # pps_id -> sps_id
        self._length_size = 0  # bytes of a NAL length prefix; 0: Annex B
        self._prev_ref: int | None = None  # frame_num of the previous reference picture
        self.lost = 0  # reference pictures lost, ever
        if len(extradata) > 6 and extradata[0] == 1:
            self._length_size = (extradata[4] & 3) + 1
            self._read_avcc(extradata)

    def reset(self) -> None:
        """A new connection or timeline: the count starts again at the next picture."""
        self._prev_ref = None

    def feed(self, data: bytes) -> int:
        try:
            for nal in self._nals(data):
                kind = nal[0] & 0x1F
                if kind == _SPS:
                    sps_id, sps = parse_sps(nal)
                    self._sps[sps_id] = sps
                elif kind == _PPS:
                    pps_id, sps_id = parse_pps(nal)
                    self._pps[pps_id] = sps_id
                elif kind in (_SLICE, _IDR):
                    return self._picture(nal, kind == _IDR)
        except (ValueError, IndexError):
            pass  # a damaged header: the demuxer or the decoder reports that damage
        return 0

    def _picture(self, nal: bytes, idr: bool) -> int:
        b = _Bits(_rbsp(nal[:HEADER_BYTES]))
        if b.ue() != 0:
            return 0  # not a picture's first slice (a packet starting mid-picture)
        b.ue()  # slice_type
        sps = self._sps.get(self._pps.get(b.ue(), -1))
        if sps is None:
            return 0  # parameter sets not seen yet
        if sps.separate_colour_plane:
            b.u(2)
        frame_num = b.u(sps.log2_max_frame_num)
        reference = bool(nal[0] & 0x60)
        prev, lost = self._prev_ref, 0
        if not idr and prev is not None and not sps.gaps_allowed:
            gap = (frame_num - prev - 1) % (1 << sps.log2_max_frame_num)
            # frame_num is the previous reference's (a non-reference picture, a second field)
            # or one more: anything else within MAX_GAP is references that never arrived.
            if frame_num != prev and 0 < gap <= MAX_GAP:
                lost = gap
                # The lost ones are counted: pictures after them that refer to the same
                # (missing) previous reference are not a loss again.
                self._prev_ref = (frame_num - 1) % (1 << sps.log2_max_frame_num)
        if idr or reference or prev is None:
            self._prev_ref = frame_num
        self.lost += lost
        return lost

    def _nals(self, data: bytes) -> list[bytes]:
        """NAL units of a packet, up to and including its first slice (its header bytes only)."""
        nals: list[bytes] = []
        if self._length_size:
            size, pos = self._length_size, 0
            while pos + size < len(data):
                n = int.from_bytes(data[pos : pos + size], "big")
                start = pos + size
                kind = data[start] & 0x1F
                nals.append(bytes(data[start : start + (HEADER_BYTES if kind in (_SLICE, _IDR) else n)]))
                if kind in (_SLICE, _IDR):
                    break
                pos = start + n
            return nals
        pos = data.find(b"\x00\x00\x01")
        while pos >= 0:
            start = pos + 3
            if start >= len(data):
                break
            kind = data[start] & 0x1F
            if kind in (_SLICE, _IDR):
                nals.append(bytes(data[start : start + HEADER_BYTES]))
                break
            end = data.find(b"\x00\x00\x01", start)
            nal = bytes(data[start : end if end >= 0 else len(data)])
            nals.append(nal.rstrip(b"\x00") if end >= 0 else nal)
            pos = end
        return nals

    def _read_avcc(self, avcc: bytes) -> None:
        pos, count = 6, avcc[5] & 0x1F
        for table in (_SPS, _PPS):
            for _ in range(count):
                n = int.from_bytes(avcc[pos : pos + 2], "big")
                nal = avcc[pos + 2 : pos + 2 + n]
                pos += 2 + n
                if table == _SPS:
                    sps_id, sps = parse_sps(nal)
                    self._sps[sps_id] = sps
                else:
                    pps_id, sps_id = parse_pps(nal)
                    self._pps[pps_id] = sps_id
            if pos < len(avcc):
                count, pos = avcc[pos], pos + 1
