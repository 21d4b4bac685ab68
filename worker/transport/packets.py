"""MPEG-TS packets from bytes as they arrive, in numpy batches.

:class:`Framer` finds the 188-byte packets in a byte stream (any chunking, a partial packet kept
for the next call), keeps and loses sync with the hysteresis ISO/IEC 13818-1 annex G.1 and
ETSI TR 101 290 §5.2.1 (1.1) recommend, and hands back whole packets as one ``(n, 188)`` uint8
array. :func:`parse_headers` reads every header field the analyser needs as arrays over that
batch: no Python loop per packet anywhere in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

PACKET = 188  # bytes (ISO/IEC 13818-1 §2.4.3.2)
SYNC = 0x47
NULL_PID = 0x1FFF
PAT_PID = 0x0000

# TR 101 290 1.1 note (after ISO/IEC 13818-1 G.1): "5 consecutive correct sync bytes should be
# sufficient to acquire sync; 2 or more consecutive corrupted sync bytes should indicate sync loss".
SYNC_ACQUIRE_COUNT = 5  # packets, the standard's 5
SYNC_LOSS_COUNT = 2  # packets, the standard's 2

RTP_HEADER = 12  # bytes without CSRCs or extension (RFC 3550 §5.1)

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


def rtp_payload_offset(data: bytes | bytearray | memoryview) -> int:
    """Bytes to skip at the start of a datagram: the RTP header's length when ``data`` is an RTP
    datagram carrying whole TS packets (RFC 2250: version 2, then TS packets), else 0."""
    n = len(data)
    if n < RTP_HEADER + PACKET or data[0] == SYNC or data[0] >> 6 != 2:
        return 0
    offset = RTP_HEADER + 4 * (data[0] & 0x0F)  # CSRC list
    if data[0] & 0x10 and n >= offset + 4:  # header extension: 4 bytes + length words
        offset += 4 + 4 * int.from_bytes(bytes(data[offset + 2 : offset + 4]), "big")
    if offset < n and data[offset] == SYNC and (n - offset) % PACKET == 0:
        return offset
    return 0


@dataclass
class Frames:
    """Whole packets found in one batch of bytes."""

    packets: U8  # (n, 188)
    ends: I64  # (n,) byte offset one past each packet's last byte, in the batch's own buffer
    bad_sync: B  # (n,) sync byte was not 0x47 although the stream stayed aligned (1.2)
    lost_at: list[int] = field(default_factory=list)  # packet index before which sync was lost
    acquired_at: list[int] = field(default_factory=list)  # packet index where sync was (re)gained
    discarded: int = 0  # bytes thrown away while out of sync
    discarded_end: int = 0  # byte offset where the last discarded run ended (for its time)


class Framer:
    """Keeps sync across batches; ``push`` returns the whole packets of the bytes so far."""

    def __init__(self) -> None:
        self._rest = b""
        self.synced = False
        self.ever_synced = False
        self.unsynced_bytes = 0  # bytes discarded since sync was last held

    @property
    def rest_len(self) -> int:
        return len(self._rest)

    def push(self, data: bytes, *, final: bool = False) -> tuple[Frames, int]:
        """Frame ``self._rest + data``. Returns the frames and the length of the kept rest's
        prefix (offsets in ``Frames.ends`` count from the start of the kept rest)."""
        head = len(self._rest)
        buf = self._rest + data if head else data
        arr = np.frombuffer(buf, np.uint8)
        n_bytes = arr.size
        runs: list[tuple[int, int]] = []  # (first byte, packet count) of aligned runs
        bad_runs: list[B] = []
        lost: list[int] = []
        acquired: list[int] = []
        discarded = 0
        discarded_end = 0
        count = 0
        pos = 0
        while True:
            if self.synced:
                n = (n_bytes - pos) // PACKET
                if n == 0:
                    break
                bad = arr[pos : pos + PACKET * n : PACKET] != SYNC
                if not bad.any():
                    runs.append((pos, n))
                    bad_runs.append(bad)
                    count += n
                    pos += PACKET * n
                    break
                # A run of SYNC_LOSS_COUNT bad sync bytes is a loss; a shorter one is a corrupted
                # byte in a stream that is still aligned (the packet is kept).
                run = bad[: n - SYNC_LOSS_COUNT + 1].copy()
                for k in range(1, SYNC_LOSS_COUNT):
                    run &= bad[k : n - SYNC_LOSS_COUNT + 1 + k]
                starts = np.flatnonzero(run)
                if starts.size:
                    j = int(starts[0])
                else:
                    # A bad byte in the last SYNC_LOSS_COUNT-1 packets may open a run the next
                    # batch completes: keep those packets until it does.
                    tail = bad[n - SYNC_LOSS_COUNT + 1 :]
                    j = n if final or not tail.any() else n - SYNC_LOSS_COUNT + 1 + int(np.argmax(tail))
                    if j == 0:
                        break
                runs.append((pos, j))
                bad_runs.append(bad[:j])
                count += j
                pos += PACKET * j
                if starts.size:
                    self.synced = False
                    lost.append(count)
                    continue
                break
            need = PACKET * (SYNC_ACQUIRE_COUNT - 1)
            limit = n_bytes - need
            if limit <= pos:
                if final and n_bytes > pos:
                    discarded += n_bytes - pos
                    discarded_end = n_bytes
                    pos = n_bytes
                break
            cand = pos + np.flatnonzero(arr[pos:limit] == SYNC)
            ok = np.ones(cand.size, bool)
            for k in range(1, SYNC_ACQUIRE_COUNT):
                ok &= arr[cand + PACKET * k] == SYNC
            hits = np.flatnonzero(ok)
            if hits.size == 0:
                discarded += limit - pos
                discarded_end = limit
                pos = limit
                continue
            p = int(cand[hits[0]])
            if p > pos:
                discarded += p - pos
                discarded_end = p
            pos = p
            self.synced = True
            self.ever_synced = True
            acquired.append(count)
        self._rest = buf[pos:]
        if discarded:
            self.unsynced_bytes += discarded
        elif count:
            self.unsynced_bytes = 0
        if len(runs) == 1:
            p0, n = runs[0]
            packets = arr[p0 : p0 + PACKET * n].reshape(-1, PACKET)
            ends = p0 + PACKET + PACKET * np.arange(n, dtype=np.int64)
        elif runs:
            packets = np.concatenate([arr[p0 : p0 + PACKET * n].reshape(-1, PACKET) for p0, n in runs])
            ends = np.concatenate(
                [p0 + PACKET + PACKET * np.arange(n, dtype=np.int64) for p0, n in runs]
            )
        else:
            packets = np.empty((0, PACKET), np.uint8)
            ends = np.empty(0, np.int64)
        bad_sync = np.concatenate(bad_runs) if bad_runs else np.zeros(0, bool)
        frames = Frames(packets, ends, bad_sync, lost, acquired, discarded, discarded_end)
        return frames, head


@dataclass
class Headers:
    """The header fields of a batch of packets, one array element per packet."""

    pid: npt.NDArray[np.int32]
    tei: B  # transport_error_indicator
    pusi: B  # payload_unit_start_indicator
    scrambled: B  # transport_scrambling_control != 00
    has_payload: B
    cc: npt.NDArray[np.uint8]
    discontinuity: B  # adaptation field discontinuity_indicator
    payload_start: npt.NDArray[np.int32]  # byte offset of the payload in the packet (188: none)
    pcr_index: I64  # packets carrying a PCR
    pcr: I64  # their PCR, in 27 MHz ticks (33-bit base × 300 + 9-bit extension)


def parse_headers(p: U8) -> Headers:
    """Header fields of ``p`` ((n, 188) uint8), ISO/IEC 13818-1 §2.4.3.2 and §2.4.3.4."""
    b1 = p[:, 1]
    b3 = p[:, 3]
    pid = ((b1 & 0x1F).astype(np.int32) << 8) | p[:, 2]
    afc = (b3 >> 4) & 3
    has_af = afc >= 2
    af_len = np.where(has_af, p[:, 4], 0).astype(np.int32)
    flags = np.where(has_af & (af_len > 0), p[:, 5], 0)
    payload_start = np.where(has_af, 5 + af_len, 4).astype(np.int32)
    has_payload = ((afc & 1) == 1) & (payload_start < PACKET)
    pcr_flag = ((flags & 0x10) != 0) & (af_len >= 7)
    pcr_index = np.flatnonzero(pcr_flag).astype(np.int64)
    if pcr_index.size:
        q = p[pcr_index, 6:12].astype(np.int64)
        base = (q[:, 0] << 25) | (q[:, 1] << 17) | (q[:, 2] << 9) | (q[:, 3] << 1) | (q[:, 4] >> 7)
        ext = ((q[:, 4] & 1) << 8) | q[:, 5]
        pcr = base * 300 + ext
    else:
        pcr = np.empty(0, np.int64)
    return Headers(
        pid=pid,
        tei=(b1 & 0x80) != 0,
        pusi=(b1 & 0x40) != 0,
        scrambled=(b3 >> 6) != 0,
        has_payload=has_payload,
        cc=(b3 & 0x0F).astype(np.uint8),
        discontinuity=(flags & 0x80) != 0,
        payload_start=payload_start,
        pcr_index=pcr_index,
        pcr=pcr,
    )


# PES stream_ids without the optional header that carries PTS (ISO/IEC 13818-1 table 2-21).
_NO_PES_HEADER = np.array([0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF], np.uint8)


def pts_present(p: U8, h: Headers, index: I64) -> B:
    """Whether each packet ``index`` (PUSI packets of PES PIDs) starts a PES packet with a PTS."""
    if index.size == 0:
        return np.zeros(0, bool)
    start = h.payload_start[index].astype(np.int64)
    ok = start + 9 <= PACKET
    rows = index[ok]
    cols = start[ok, None] + np.arange(9)
    head = p[rows[:, None], cols]
    pes = (head[:, 0] == 0) & (head[:, 1] == 0) & (head[:, 2] == 1)
    pes &= ~np.isin(head[:, 3], _NO_PES_HEADER)
    has = pes & ((head[:, 7] & 0x80) != 0)  # PTS_DTS_flags '10' or '11'
    out = np.zeros(index.size, bool)
    out[ok] = has
    return out
