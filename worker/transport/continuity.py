"""Continuity_count_error (TR 101 290 1.4) for one PID's packets of a batch, in numpy.

The rules are TSDuck's ``ContinuityAnalyzer``'s: the continuity_counter of a packet with payload
is the previous one's plus one (mod 16); packets without payload do not advance it and are not
judged; a packet with the ``discontinuity_indicator`` restarts the count; a packet identical to
the previous one (same counter, same bytes) is a duplicate, allowed once ("a packet occurs more
than twice" is the error); the null PID is never judged (the caller skips it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.transport.packets import Headers

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


@dataclass
class CcState:
    """What a PID's next batch needs of this one."""

    last_cc: int = -1  # -1: no packet with payload seen yet
    last_packet: bytes = b""  # the last packet with payload, for duplicate detection
    dup_run: int = 0  # duplicates in a row so far


def check_continuity(
    p: npt.NDArray[np.uint8], h: Headers, idx: I64, st: CcState
) -> tuple[I64, B, B, I64]:
    """Judge packets ``idx`` (one PID's, ascending) of batch ``p``, updating ``st``. Returns the
    packets with payload and, for each: a continuity error, a tolerated duplicate, and the
    number of packets missing before it."""
    pay = idx[h.has_payload[idx]]
    if pay.size == 0:
        empty = np.zeros(0, bool)
        return pay, empty, empty, np.zeros(0, np.int64)
    cc = h.cc[pay].astype(np.int16)
    prev = np.empty_like(cc)
    prev[0] = st.last_cc
    prev[1:] = cc[:-1]
    disc = h.discontinuity[pay]
    dup = np.zeros(pay.size, bool)
    cand = np.flatnonzero((cc == prev) & ~disc)
    if cand.size:  # byte comparisons only where the counter repeats: rare
        inner = cand[cand > 0]
        dup[inner] = (p[pay[inner]] == p[pay[inner - 1]]).all(axis=1)
        if cand[0] == 0 and st.last_packet:
            dup[0] = p[pay[0]].tobytes() == st.last_packet
    bad = (cc != ((prev + 1) & 0x0F)) & ~disc & ~dup
    if st.last_cc < 0:
        bad[0] = dup[0] = False
    # The length of each run of duplicates, carried over from the last batch: the second
    # duplicate in a row (a third occurrence) is the error.
    i = np.arange(pay.size)
    last_other = np.maximum.accumulate(np.where(dup, -1, i))
    run = np.where(dup, i - last_other + np.where(last_other < 0, st.dup_run, 0), 0)
    dup_err = run >= 2
    missing = np.where(bad & (cc != prev), (cc - prev - 1) & 0x0F, 0).astype(np.int64)
    st.last_cc = int(cc[-1])
    st.last_packet = p[pay[-1]].tobytes()
    st.dup_run = int(run[-1])
    return pay, bad | dup_err, dup & ~dup_err, missing
