"""RFC 4445 Media Delivery Index: the delay factor on synthetic arrivals with known answers, and
the media loss rate and delay factor of a real stream fed as timed datagrams."""

from __future__ import annotations

import numpy as np
import pytest

from avmon.tsfault import inject, parse_faults
from tests.media import transport_sources
from tests.support import needs_ffmpeg
from tests.transport_media import analyse
from worker.transport import TransportAnalyzer
from worker.transport.mdi import MdiMeter, delay_factor_s

DATAGRAM = 1316  # bytes
RATE = 2_000_000 / 8  # bytes/s


def paced(n: int) -> np.ndarray:
    return np.arange(n) * DATAGRAM / RATE


def test_evenly_paced_datagrams_have_a_delay_factor_of_one_datagram() -> None:
    df, rate = delay_factor_s(paced(1000), np.full(1000, DATAGRAM, float))
    assert rate == pytest.approx(RATE)
    assert df == pytest.approx(DATAGRAM / RATE)


def test_a_burst_after_a_stall_adds_the_stall_to_the_delay_factor() -> None:
    t = paced(1000)
    held = (t >= 0.3) & (t < 0.35)
    t[held] = 0.35  # 50 ms of datagrams held back, then sent at once
    df, _ = delay_factor_s(t, np.full(1000, DATAGRAM, float))
    assert df == pytest.approx(0.05 + DATAGRAM / RATE, abs=0.002)


def test_the_meter_closes_one_sample_per_interval() -> None:
    m = MdiMeter(interval_s=1.0)
    t = paced(2000)  # 10.5 s
    for a in range(0, 2000, 100):
        m.add(t[a : a + 100], np.full(t[a : a + 100].size, DATAGRAM, float), lost_packets=0)
    assert len(m.history) == 10
    assert all(s.delay_factor_ms == pytest.approx(1000 * DATAGRAM / RATE, rel=0.01) for s in m.history)
    assert all(s.rate_bps == pytest.approx(8 * RATE, rel=0.01) for s in m.history)


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return transport_sources()


@needs_ffmpeg
def test_a_lost_packet_shows_in_the_media_loss_rate_of_its_interval(sources: dict[str, bytes]) -> None:
    inj = inject(sources["cbr"], parse_faults("drop@3"))
    a = TransportAnalyzer()
    analyse(inj, "datagrams", analyzer=a)
    lossy = [s for s in a.mdi if s.media_loss_rate > 0]
    (s,) = lossy
    assert s.t_start <= inj.truth[0].pcr_start_s <= s.t_end
    assert s.media_loss_rate == pytest.approx(1 / (s.t_end - s.t_start))
    assert len(a.mdi) >= 10


@needs_ffmpeg
def test_a_paced_cbr_stream_has_a_small_delay_factor(sources: dict[str, bytes]) -> None:
    a = TransportAnalyzer()
    analyse(inject(sources["cbr"], []), "datagrams", analyzer=a)
    # 1.5 Mb/s in 1316-byte datagrams: 7 ms between datagrams; the sender's clock is the PCR.
    assert a.counters.mdi_max_delay_factor_ms is not None
    assert a.counters.mdi_max_delay_factor_ms < 15
    assert all(s.rate_bps == pytest.approx(1_500_000, rel=0.05) for s in a.mdi)
