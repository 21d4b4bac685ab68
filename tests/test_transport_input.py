"""The transport analyser's input and rules beyond one fault each: any chunking, RTP, input that
is not TS or has no PAT, what continuity skips, hysteresis, the PID timeout, the counters."""

from __future__ import annotations

import numpy as np
import pytest

from avmon.tsfault import inject, parse_faults, read_pcr, write_pcr
from tests.media import mpts_source, transport_sources
from tests.support import needs_ffmpeg
from tests.transport_media import DATAGRAM, analyse
from worker.detectors.base import Finding
from worker.transport import TransportAnalyzer, TransportOptions, metrics
from worker.transport.packets import PACKET, Framer, parse_headers
from worker.transport.psi import SectionAssembler, crc32_mpeg2

pytestmark = needs_ffmpeg


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return transport_sources()


def summary(found: list[Finding]) -> list[tuple[str, float, float, str]]:
    """Sorted: within one batch, findings come out in the order the checks run."""
    return sorted((f.type, round(f.start_s, 6), round(f.end_s or -1, 6), f.key) for f in found)


def feed_in(data: bytes, size: int, a: TransportAnalyzer | None = None) -> list[Finding]:
    a = a or TransportAnalyzer()
    out: list[Finding] = []
    for i in range(0, len(data), size):
        out += a.feed(data[i : i + size])
    return out + a.flush(1e9)


def test_crc32_mpeg2_matches_the_standard_check_value() -> None:
    # CRC-32/MPEG-2's catalogued check value (the CRC of the ASCII digits 1 to 9).
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7


def test_every_pat_section_of_a_real_stream_checks_to_zero(sources: dict[str, bytes]) -> None:
    p = np.frombuffer(sources["vbr"], np.uint8).reshape(-1, PACKET)
    h = parse_headers(p)
    asm = SectionAssembler()
    sections = [
        s for i in np.flatnonzero(h.pid == 0).tolist()
        for s in asm.push(p[i, h.payload_start[i] :].tobytes(), bool(h.pusi[i]))
    ]
    assert len(sections) > 50
    assert all(s.crc_ok and crc32_mpeg2(s.data) == 0 for s in sections)


@pytest.mark.parametrize("size", [1000, 4099, 65536])
def test_findings_do_not_depend_on_how_the_bytes_are_chunked(sources: dict[str, bytes], size: int) -> None:
    data = inject(sources["cbr"], parse_faults("drop@2,tei@4,pat@6+1")).data
    whole = TransportAnalyzer()
    expected = whole.feed(data) + whole.flush(1e9)
    assert len(expected) == 6
    assert summary(feed_in(data, size)) == summary(expected)


def test_framer_keeps_a_partial_packet_for_the_next_call(sources: dict[str, bytes]) -> None:
    data = sources["vbr"][: 20 * PACKET]
    fr = Framer()
    first, _ = fr.push(data[:1000])
    second, _ = fr.push(data[1000:], final=True)
    got = np.concatenate([first.packets, second.packets]).tobytes()
    assert got == data


def test_rtp_wrapped_datagrams_give_the_same_findings(sources: dict[str, bytes]) -> None:
    inj = inject(sources["cbr"], parse_faults("drop@3"))
    plain = analyse(inj, "datagrams")
    a = TransportAnalyzer()
    out: list[Finding] = []
    for seq, i in enumerate(range(0, len(inj.data), DATAGRAM)):
        end = min(i + DATAGRAM, len(inj.data))
        # RFC 3550 header: V=2, one CSRC (16 bytes in all), PT 33 (MP2T, RFC 3551).
        header = bytes([0x81, 33]) + (seq & 0xFFFF).to_bytes(2, "big") + bytes(12)
        out += a.feed(header + inj.data[i:end], inj.arrival(end))
    out += a.flush(1e9)
    assert summary(out) == summary(plain)
    assert [f.type for f in plain] == ["continuity_count_error"] * 2


@pytest.mark.parametrize("mode", ["file", "datagrams"])
def test_bytes_that_are_not_ts_are_a_sync_loss_where_no_sync_was_ever_found(mode: str) -> None:
    junk = np.random.default_rng(1).integers(0, 256, 600_000, dtype=np.uint8)
    junk[junk == 0x47] = 0
    a = TransportAnalyzer()
    out: list[Finding] = []
    for i in range(0, junk.size, DATAGRAM):
        out += a.feed(junk[i : i + DATAGRAM].tobytes(), i / 1e6 if mode == "datagrams" else None)
    (opened,) = out
    assert opened.type == "ts_sync_loss"
    assert opened.end_s is None
    assert opened.metrics["sync_found"] == 0
    (closed,) = a.flush(1e9)
    assert closed.type == "ts_sync_loss"
    assert a.counters.bytes_discarded == junk.size


@pytest.mark.parametrize("mode", ["file", "datagrams"])
def test_a_ts_that_never_shows_a_pat_is_a_pat_error(sources: dict[str, bytes], mode: str) -> None:
    p = np.frombuffer(sources["cbr"], np.uint8).reshape(-1, PACKET)
    no_pat = p[parse_headers(p).pid != 0]
    inj = inject(no_pat.tobytes(), [])
    found = analyse(inj, mode)
    assert [f.type for f in found] == ["pat_error", "pat_error"]
    assert found[0].metrics["pat_seen"] == 0
    assert found[1].end_s is not None  # ends with the stream


def test_a_cc_jump_announced_by_the_discontinuity_indicator_is_no_error(sources: dict[str, bytes]) -> None:
    p = np.frombuffer(sources["cbr"], np.uint8).reshape(-1, PACKET).copy()
    h = parse_headers(p)
    # The first video packet with an adaptation field after 3 s (one that carries a PCR); drop
    # the video packet before it and let it announce the discontinuity.
    video = h.pid == 0x100
    pcr = h.pcr_index[(h.pid[h.pcr_index] == 0x100) & (h.pcr_index > p.shape[0] // 4)]
    pcr = pcr[h.has_payload[pcr]]  # not a PCR-only packet: its CC is the one that would jump
    i = int(pcr[0])
    before = int(np.flatnonzero(video[:i])[-1])
    assert h.has_payload[before]
    p[i, 5] |= 0x80  # discontinuity_indicator (ISO/IEC 13818-1 §2.4.3.5)
    stream = np.delete(p, before, axis=0).tobytes()
    assert feed_in(stream, 65536) == []
    p[i, 5] &= 0x7F  # without it, the same loss is an error
    assert [f.type for f in feed_in(np.delete(p, before, axis=0).tobytes(), 65536)] == [
        "continuity_count_error"
    ] * 2


def test_errors_closer_than_the_hold_time_are_one_finding(sources: dict[str, bytes]) -> None:
    found = analyse(inject(sources["cbr"], parse_faults("drop@3,drop@3.5")), "file")
    assert [f.type for f in found] == ["continuity_count_error"] * 2
    assert found[1].metrics["count"] == 2
    assert found[1].metrics["missing_packets"] == 2


def test_errors_further_apart_than_the_hold_time_are_two_findings(sources: dict[str, bytes]) -> None:
    found = analyse(inject(sources["cbr"], parse_faults("drop@3,drop@6")), "file")
    closed = [f for f in found if f.end_s is not None]
    assert [f.metrics["count"] for f in closed] == [1, 1]
    assert closed[1].start_s - closed[0].start_s == pytest.approx(3.0, abs=0.1)


def test_a_pid_gone_less_than_the_pid_timeout_is_a_pts_error(sources: dict[str, bytes]) -> None:
    inj = inject(sources["cbr"], parse_faults("pid@3+2"))
    assert inj.truth[0].type == "pts_error"
    assert {f.type for f in analyse(inj, "file")} == {"pts_error"}


def test_the_pid_timeout_is_the_users(sources: dict[str, bytes]) -> None:
    inj = inject(sources["cbr"], parse_faults("pid@3+2"))
    found = analyse(inj, "file", TransportOptions(pid_timeout_s=1.0))
    assert {f.type for f in found} == {"pid_error"}
    assert found[-1].start_s == pytest.approx(inj.truth[0].pcr_start_s + 1.0, abs=0.2)


def test_counters_count_each_indicator_and_pid(sources: dict[str, bytes]) -> None:
    inj = inject(sources["vbr"], parse_faults("drop@3,tei@5,duplicate2@7"))
    a = TransportAnalyzer()
    analyse(inj, "file", analyzer=a)
    c = a.counters
    assert c.indicators["continuity_count_error"] == 2
    assert c.indicators["transport_error"] == 1
    assert c.indicators["pat_error"] == 0
    assert c.per_pid[0x100]["continuity_count_error"] == 2
    assert sum(v["packets"] for v in c.per_pid.values()) == c.packets == len(inj.data) // PACKET


def test_a_flush_closes_a_condition_still_going_on(sources: dict[str, bytes]) -> None:
    inj = inject(sources["cbr"], parse_faults("pmt@10+5"))  # withheld to the end of the stream
    opened, closed = analyse(inj, "file")
    assert (opened.type, opened.end_s) == ("pmt_error", None)
    assert closed.type == "pmt_error"
    assert closed.end_s == pytest.approx(inj.truth[0].pcr_start_s + 2.0, abs=0.1)  # the last packet


def test_poll_judges_timeouts_when_datagrams_stop(sources: dict[str, bytes]) -> None:
    inj = inject(sources["cbr"], [])
    cut = len(inj.data) // 2 // DATAGRAM * DATAGRAM
    a = TransportAnalyzer()
    out: list[Finding] = []
    for i in range(0, cut, DATAGRAM):
        out += a.feed(inj.data[i : i + DATAGRAM], inj.arrival(i + DATAGRAM))
    last = inj.arrival(cut)
    assert out + a.poll(last + 0.3) == []  # within every limit
    raised = {f.type for f in a.poll(last + 1.5)}
    assert raised == {"pat_error", "pmt_error", "pcr_repetition_error"}
    assert {f.type for f in a.poll(last + 6.0)} == {"pid_error"}  # video and audio, 5 s


def test_a_scrambled_pat_is_a_pat_error(sources: dict[str, bytes]) -> None:
    p = np.frombuffer(sources["vbr"], np.uint8).reshape(-1, PACKET).copy()
    pat = np.flatnonzero(parse_headers(p).pid == 0)
    p[pat[30], 3] |= 0x80  # transport_scrambling_control '10'
    found = feed_in(p.tobytes(), 65536)
    assert [f.type for f in found] == ["pat_error"] * 2
    assert found[1].metrics["scrambled"] == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_damage_never_raises_and_every_finding_closes(sources: dict[str, bytes], seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = np.frombuffer(sources["testsrc"], np.uint8).copy()
    hits = rng.integers(0, data.size, 2000)
    data[hits] = rng.integers(0, 256, hits.size)  # bytes anywhere: headers, PSI, PES, sync
    cut = np.sort(rng.integers(0, data.size, 300))
    pieces = np.split(data, cut)
    a = TransportAnalyzer()
    out: list[Finding] = []
    for k, piece in enumerate(pieces):
        out += a.feed(piece.tobytes(), k * 0.04 if seed % 2 else None)
    out += a.flush(1e9)
    opened = sorted((f.type, f.key, f.start_s) for f in out if f.end_s is None)
    closed = sorted((f.type, f.key, f.start_s) for f in out if f.end_s is not None)
    assert opened == closed
    assert a.counters.indicators["continuity_count_error"] > 0


def test_counters_render_as_prometheus_families(sources: dict[str, bytes]) -> None:
    inj = inject(sources["cbr"], parse_faults("drop@3"))
    a = TransportAnalyzer()
    analyse(inj, "datagrams", analyzer=a)
    text = metrics.render({"s-1": a.counters})
    lines = text.splitlines()
    # As prometheus_client writes them: labels in name order, values as floats.
    cc = 'indicator="continuity_count_error"'
    assert f'avmon_ts_errors_total{{{cc},stream_id="s-1",tr101290="1.4"}} 1.0' in lines
    assert f'avmon_ts_pid_errors_total{{{cc},pid="256",stream_id="s-1"}} 1.0' in lines
    assert f'avmon_ts_packets_total{{stream_id="s-1"}} {float(len(inj.data) // PACKET)}' in lines
    samples = [x for x in lines if not x.startswith("#")]
    assert all(x.rsplit(" ", 1)[1].replace(".", "", 1).isdigit() for x in samples)
    assert any(x.startswith('avmon_mdi_delay_factor_ms{stream_id="s-1"}') for x in samples)


def test_pcr_accuracy_is_information_that_sees_a_2_us_error_on_cbr(sources: dict[str, bytes]) -> None:
    clean = TransportAnalyzer()
    feed_in(sources["cbr"], 65536, clean)
    assert clean.counters.pcr_accuracy_max_ns is not None
    assert clean.counters.pcr_accuracy_max_ns < 500  # TR 101 290 2.4: ±500 ns
    p = np.frombuffer(sources["cbr"], np.uint8).reshape(-1, PACKET).copy()
    h = parse_headers(p)
    i = int(h.pcr_index[h.pcr_index.size // 2])
    write_pcr(p[i], read_pcr(p[i]) + 54)  # 54 ticks of 27 MHz: 2 µs late
    late = TransportAnalyzer()
    assert feed_in(p.tobytes(), 65536, late) == []  # information, not a defect
    assert late.counters.pcr_accuracy_max_ns == pytest.approx(2000, rel=0.2)


@pytest.mark.parametrize("pid", [0x0000, 0x1000])  # the PAT and the PMT
def test_a_psi_packet_repeated_once_is_no_error(sources: dict[str, bytes], pid: int) -> None:
    p = np.frombuffer(sources["vbr"], np.uint8).reshape(-1, PACKET)
    i = int(np.flatnonzero(parse_headers(p).pid == pid)[20])
    stream = np.insert(p, i + 1, p[i], axis=0).tobytes()
    assert feed_in(stream, 65536) == []


@pytest.mark.parametrize("mode", ["file", "datagrams"])
def test_a_declared_discontinuity_starts_continuity_and_timing_afresh(
    sources: dict[str, bytes], mode: str
) -> None:
    # The head of one encode, then (after a reconnect) the tail of another with the same PIDs:
    # other continuity counters, another PCR base and, live, 20 s without a packet between.
    head = inject(sources["cbr"][: 1000 * DATAGRAM], [])
    tail = inject(sources["vbr"][len(sources["vbr"]) // 2 // DATAGRAM * DATAGRAM :], [])

    def run(declare: bool) -> set[str]:
        a = TransportAnalyzer()
        out: list[Finding] = []
        for part, shift in ((head, 0.0), (tail, 100.0)):
            if part is tail and declare:
                out += a.discontinuity()
            for i in range(0, len(part.data), DATAGRAM):
                end = min(i + DATAGRAM, len(part.data))
                t = part.arrival(end) + shift if mode == "datagrams" else None
                out += a.feed(part.data[i:end], t)
        return {f.type for f in out + a.flush(1e9)}

    assert run(declare=True) == set()
    assert "continuity_count_error" in run(declare=False)


@pytest.fixture(scope="session")
def mpts(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return mpts_source()


@pytest.mark.parametrize("mode", ["file", "datagrams"])
def test_a_clean_two_program_stream_raises_nothing(mpts: bytes, mode: str) -> None:
    a = TransportAnalyzer()
    assert analyse(inject(mpts, []), mode, analyzer=a) == []
    assert set(a.counters.per_pid) == {0, 0x11, 0x100, 0x101, 0x102, 0x103, 0x1000, 0x1001, 0x1FFF}


@pytest.mark.parametrize(
    ("script", "expected", "pid"),
    [("pcr@3+0.15:pid=258", "pcr_repetition_error", 0x102), ("pid@2+5.5:pid=259", "pid_error", 0x103)],
)
def test_the_second_programs_pcr_and_pids_are_judged_too(
    mpts: bytes, script: str, expected: str, pid: int
) -> None:
    found = analyse(inject(mpts, parse_faults(script)), "datagrams")
    assert [(f.type, f.key) for f in found] == [(expected, f"pid{pid}")] * 2


@pytest.mark.parametrize("bad", [{"pid_timeout_s": 0.0}, {"batch_bytes": 100}, {"clear_hold_s": -1.0}])
def test_options_out_of_range_are_refused_with_the_reason(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        TransportOptions(**bad)
