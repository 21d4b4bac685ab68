"""The transport analyser inside a monitored UDP stream: the session reads the socket itself and
the analyser sees the same bytes. Real ffmpeg-CLI TS with faults injected, paced over loopback."""

from __future__ import annotations

import pytest

from avmon import tsfault
from shared.models import Defect
from tests.media import TRANSPORT_SECONDS, transport_sources
from tests.support import needs_ffmpeg
from tests.transport_media import monitor_udp

TRANSPORT = {
    "ts_sync_loss", "sync_byte_error", "pat_error", "continuity_count_error", "pmt_error", "pid_error",
    "transport_error", "crc_error", "pcr_repetition_error", "pcr_discontinuity_error", "pts_error",
}  # fmt: skip


FAULT_RUN_S = 8.0  # the faults are at 4-6 s: 2 s of clean stream after the last is enough to close it


def _first(data: bytes, seconds: float) -> bytes:
    """The first ``seconds`` of the constant-rate (``-muxrate``) source, in whole packets."""
    return data[: int(len(data) * seconds / TRANSPORT_SECONDS) // 188 * 188]


def _monitor(data: bytes, injected: tsfault.Injected | None) -> list[Defect]:
    """Send ``data`` over UDP at its own pace to a session listening on loopback; its defects."""
    return monitor_udp(data, injected.arrival if injected is not None else None)[1]


@needs_ffmpeg
@pytest.mark.parametrize(
    ("script", "expected"),
    [("drop@4", "continuity_count_error"), ("pat@5+1", "pat_error"), ("tei@4", "transport_error")],
)
def test_a_transport_fault_in_a_live_udp_stream_is_reported_as_its_indicator(
    tmp_path_factory: pytest.TempPathFactory, script: str, expected: str
) -> None:
    clean = _first(transport_sources()["cbr"], FAULT_RUN_S)
    injected = tsfault.inject(clean, tsfault.parse_faults(script))
    found = _monitor(injected.data, injected)
    transport = {d.type.value for d in found if d.type.value in TRANSPORT}
    assert transport == {expected}, [(d.type, d.start_s, d.end_s) for d in found]
    (fault,) = injected.truth
    closed = [d for d in found if d.type.value == expected and d.end_s is not None]
    # On the stream's media timeline, within a second of where it was injected.
    assert closed and abs(closed[0].start_s - fault.start_s) <= 1.0, (closed, fault)


@needs_ffmpeg
def test_a_clean_live_udp_stream_raises_no_transport_indicator(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    clean = transport_sources()["cbr"]
    injected = tsfault.inject(clean, [])
    found = _monitor(injected.data, injected)
    assert [d.type for d in found if d.type.value in TRANSPORT] == []
