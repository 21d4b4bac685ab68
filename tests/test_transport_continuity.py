"""Continuity rules on synthetic packet sequences with known answers, across batch boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from worker.transport.continuity import CcState, check_continuity
from worker.transport.packets import PACKET, parse_headers


def packet(cc: int, *, payload: bool = True, disc: bool = False, fill: int = 0) -> bytes:
    """A packet of PID 0x100: payload only, or an adaptation field (with the discontinuity
    indicator if ``disc``) and payload, or an adaptation field alone."""
    afc = (3 if payload else 2) if disc or not payload else 1
    head = bytes([0x47, 0x01, 0x00, (afc << 4) | cc])
    if afc == 1:
        return head + bytes([fill]) * (PACKET - 4)
    af_len = 1 if payload else PACKET - 5
    af = bytes([af_len, 0x80 if disc else 0x00]) + b"\xff" * (af_len - 1)
    return head + af + bytes([fill]) * (PACKET - 4 - len(af))


def judge(batches: list[list[bytes]]) -> tuple[list[bool], list[bool], list[int]]:
    st = CcState()
    bad: list[bool] = []
    dup: list[bool] = []
    lost: list[int] = []
    for batch in batches:
        p = np.frombuffer(b"".join(batch), np.uint8).reshape(-1, PACKET)
        h = parse_headers(p)
        pay, b, d, m = check_continuity(p, h, np.arange(p.shape[0], dtype=np.int64), st)
        full_b = np.zeros(p.shape[0], bool)
        full_d = np.zeros(p.shape[0], bool)
        full_m = np.zeros(p.shape[0], np.int64)
        full_b[pay], full_d[pay], full_m[pay] = b, d, m
        bad += full_b.tolist()
        dup += full_d.tolist()
        lost += full_m.tolist()
    return bad, dup, lost


def test_an_unbroken_count_wrapping_at_16_has_no_error() -> None:
    bad, dup, _ = judge([[packet(k % 16, fill=k) for k in range(40)]])
    assert not any(bad) and not any(dup)


def test_a_gap_is_an_error_counting_the_missing_packets() -> None:
    bad, _, lost = judge([[packet(0), packet(1), packet(5), packet(6)]])
    assert bad == [False, False, True, False]
    assert lost == [0, 0, 3, 0]


@pytest.mark.parametrize("split", [None, 2, 3])
def test_one_repeat_is_allowed_and_a_second_is_an_error_across_batches(split: int | None) -> None:
    seq = [packet(0, fill=1), packet(1, fill=2), packet(1, fill=2), packet(1, fill=2), packet(2, fill=3)]
    batches = [seq] if split is None else [seq[:split], seq[split:]]
    bad, dup, _ = judge(batches)
    assert dup == [False, False, True, False, False]
    assert bad == [False, False, False, True, False]


def test_the_same_count_with_other_bytes_is_an_error() -> None:
    bad, dup, _ = judge([[packet(0, fill=1), packet(0, fill=9)]])
    assert bad == [False, True] and dup == [False, False]


def test_adaptation_only_packets_do_not_advance_the_count_and_are_not_judged() -> None:
    bad, _, _ = judge([[packet(0), packet(0, payload=False), packet(7, payload=False), packet(1)]])
    assert not any(bad)


def test_the_discontinuity_indicator_restarts_the_count() -> None:
    bad, _, _ = judge([[packet(0), packet(1), packet(9, disc=True), packet(10)]])
    assert not any(bad)
