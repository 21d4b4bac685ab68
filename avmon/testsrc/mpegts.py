"""MPEG-TS packet helpers (PID, random access, PES timestamps, reassembly into 188-byte packets)
and ``TsDrop``, the ``drop`` defect as a write filter on a TS byte stream."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avmon.testsrc.spec import SignalSpec

TS_PACKET = 188
TS_CLOCK = 90_000
VIDEO_PID, PMT_PID = 0x100, 0x1000  # set explicitly on every MPEG-TS muxer (mpegts_*start_pid)
PSI_PIDS = frozenset({0x0000, 0x0011, PMT_PID})  # PAT, SDT, PMT
TS_OPTIONS = {"mpegts_start_pid": str(VIDEO_PID), "mpegts_pmt_start_pid": str(PMT_PID)}


def ts_pid(p: bytes) -> int:
    return ((p[1] & 0x1F) << 8) | p[2]


def ts_random_access(p: bytes) -> bool:
    """The adaptation field's random_access_indicator: FFmpeg's muxer sets it on keyframes."""
    return bool(p[3] & 0x20) and p[4] > 0 and bool(p[5] & 0x40)


def ts_pes_pts(p: bytes) -> int | None:
    """PTS (90 kHz) of the PES that starts in TS packet p, if one starts there and carries one."""
    if not p[1] & 0x40 or not p[3] & 0x10:
        return None
    off = 4 + (1 + p[4] if p[3] & 0x20 else 0)
    if off + 14 > TS_PACKET or p[off : off + 3] != b"\x00\x00\x01" or not p[off + 7] & 0x80:
        return None
    x = p[off + 9 : off + 14]
    return ((x[0] >> 1) & 7) << 30 | x[1] << 22 | (x[2] >> 1) << 15 | x[3] << 7 | x[4] >> 1


class TsPackets:
    """Reassembles an MPEG-TS byte stream, written in arbitrary chunks, into 188-byte packets."""

    def __init__(self) -> None:
        self._pending = b""

    def split(self, data: bytes) -> list[bytes]:
        buf = self._pending + bytes(data)
        whole = len(buf) - len(buf) % TS_PACKET
        self._pending = buf[whole:]
        return [buf[i : i + TS_PACKET] for i in range(0, whole, TS_PACKET)]


class TsDrop:
    """Write filter for the ``drop`` defect on an MPEG-TS byte stream: inside a drop span, each of
    the video PID's packets is lost with probability ``rate`` (seeded), except the first of each
    PES (its timestamps survive) and the last (so the continuity error is seen within the damaged
    PES, not at the start of the next one). FFmpeg's demuxer flags the picture *before* the damaged
    one in decode order (its H.264 parser emits a picture when the next one begins), so a PES is
    only damaged if that one is in the span too. Each video packet waits for the next one to know
    whether it ends its PES; ``finish()`` writes what is still held."""

    def __init__(self, write: Callable[[bytes], object], spec: SignalSpec) -> None:
        self._write = write
        self._spec = spec
        self._spans = [(*spec.frames(d), d.params["rate"]) for d in spec.of("drop")]
        self._rng = np.random.default_rng([spec.seed, 8])
        self._packets = TsPackets()
        self._first_pts: int | None = None
        self._frames = (-1, -1)  # content frame index of the previous and the current video PES
        self._held: list[bytes] = []  # the latest video packet, and everything after it
        self._held_frames = self._frames
        self.dropped = 0

    def write(self, data: bytes) -> int:
        out: list[bytes] = []
        for p in self._packets.split(data):
            if ts_pid(p) != VIDEO_PID:
                (self._held if self._held else out).append(p)
                continue
            starts = bool(p[1] & 0x40)
            if self._held:
                if not starts and self._drops(self._held[0]):
                    del self._held[0]
                out += self._held
            pts = ts_pes_pts(p) if starts else None
            if pts is not None:
                self._first_pts = pts if self._first_pts is None else self._first_pts
                frame = round(self._spec.content_s((pts - self._first_pts) / TS_CLOCK) * self._spec.fps)
                self._frames = (self._frames[1], frame)
            self._held, self._held_frames = [p], self._frames
        if out:
            self._write(b"".join(out))
        return len(data)

    def _drops(self, p: bytes) -> bool:
        if p[1] & 0x40:
            return False
        before, frame = self._held_frames
        for a, b, rate in self._spans:
            if a <= before < b and a <= frame < b and self._rng.random() < rate:
                self.dropped += 1
                return True
        return False

    def finish(self) -> None:
        if self._held:
            self._write(b"".join(self._held))
            self._held = []
