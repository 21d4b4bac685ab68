"""SCTE-35 cues injected into real FFmpeg-encoded MPEG-TS (``avmon.tscue``: the PMT rewritten with
a stream_type 0x86 PID and CUEI registration, one splice_info_section per cue) are found by the
transport analyser, decoded with the right splice times and durations, and judged: a short
pre-roll, a missing cue-in and cues that stop. Fed as a file (PCR clock) and as 1316-byte
datagrams stamped with their real-time send times."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import pytest

from avmon import tscue
from avmon.tscue import CUE_PID, CuedStream, inject_cues, parse_cues
from tests.media import transport_sources
from tests.support import needs_ffmpeg
from tests.transport_media import DATAGRAM
from worker.detectors.base import Finding
from worker.transport import TransportAnalyzer, TransportOptions
from worker.transport.cues import SpliceAligner
from worker.transport.psi import parse_pmt

pytestmark = needs_ffmpeg

MODES = ["file", "datagrams"]
TICK_S = 1 / 90_000
PREROLL_TOLERANCE_S = 0.05  # the STC at the cue's packet, interpolated from the PCRs around it


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return transport_sources()


def run(stream: CuedStream, mode: str, **options: float) -> tuple[TransportAnalyzer, list[Finding]]:
    a = TransportAnalyzer(TransportOptions(**options))  # type: ignore[arg-type]
    out: list[Finding] = []
    if mode == "file":
        out += a.feed(stream.data)
    else:
        for i in range(0, len(stream.data), DATAGRAM):
            end = min(i + DATAGRAM, len(stream.data))
            out += a.feed(stream.data[i:end], stream.arrival(end))
    return a, out + a.flush(float(stream.send_times[-1]) + 0.5)


def of_type(findings: list[Finding], type_: str) -> list[Finding]:
    return [f for f in findings if f.type == type_]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", ["cbr", "vbr", "testsrc"])
def test_cued_stream_is_clean_transport(sources: dict[str, bytes], source: str, mode: str) -> None:
    stream = inject_cues(sources[source], parse_cues("out@2:preroll=5:duration=3:id=7,in@6:preroll=5:id=7"))
    a, findings = run(stream, mode)
    assert findings == []
    assert a.cue_pids == {CUE_PID}
    assert [c.kind for c in a.cues] == ["out", "in"]


def test_rewritten_pmt_announces_cuei_and_stream_type_0x86(sources: dict[str, bytes]) -> None:
    stream = inject_cues(sources["vbr"], [])
    data = stream.data
    for k in range(0, len(data), 188):
        pkt = data[k : k + 188]
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        if pid == 0x1000 and pkt[1] & 0x40:  # FFmpeg's PMT PID, a section start
            pmt = parse_pmt(pkt[5 : 5 + 3 + (((pkt[6] & 0x0F) << 8) | pkt[7])])
            assert pmt is not None
            assert pmt.streams[CUE_PID] == 0x86
            assert b"CUEI" in pmt.registrations
            return
    pytest.fail("no PMT found")


@pytest.mark.parametrize("mode", MODES)
def test_splice_insert_splice_time_and_duration(sources: dict[str, bytes], mode: str) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("out@2:preroll=6:duration=30:id=77:auto_return=1"))
    (truth,) = stream.truth
    a, _ = run(stream, mode)
    (cue,) = a.cues
    assert (cue.command, cue.kind, cue.event_id) == ("splice_insert", "out", 77)
    assert truth.splice_pts_s is not None
    assert cue.splice_pts_s == pytest.approx(truth.splice_pts_s, abs=TICK_S)
    assert cue.duration_s == pytest.approx(30.0, abs=TICK_S)
    assert cue.auto_return
    assert cue.preroll_s == pytest.approx(6.0, abs=PREROLL_TOLERANCE_S)
    assert cue.arrival_s == pytest.approx(truth.pcr_send_s, abs=0.02)
    assert cue.splice_s == pytest.approx(truth.pcr_send_s + 6.0, abs=PREROLL_TOLERANCE_S)


@pytest.mark.parametrize("mode", MODES)
def test_time_signal_segmentation(sources: dict[str, bytes], mode: str) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("signal@3:preroll=5:duration=20:id=9:type=0x30"))
    (truth,) = stream.truth
    a, _ = run(stream, mode)
    (cue,) = a.cues
    assert (cue.command, cue.kind, cue.event_id) == ("time_signal", "out", 9)
    assert (cue.segmentation_type_id, cue.segmentation_type) == (0x30, "provider_advertisement_start")
    assert truth.splice_pts_s is not None
    assert cue.splice_pts_s == pytest.approx(truth.splice_pts_s, abs=TICK_S)
    assert cue.duration_s == pytest.approx(20.0, abs=TICK_S)
    assert cue.upid == b"avmon".hex()


def test_pts_adjustment_moves_the_splice_time(sources: dict[str, bytes]) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("out@2:preroll=5:adjust=100,in@4:preroll=5:adjust=95000"))
    a, _ = run(stream, "file")
    for cue, truth in zip(a.cues, stream.truth, strict=True):
        assert truth.splice_pts_s is not None
        assert cue.splice_pts_s == pytest.approx(truth.splice_pts_s, abs=TICK_S)
        assert cue.preroll_s == pytest.approx(5.0, abs=PREROLL_TOLERANCE_S)


@pytest.mark.parametrize("mode", MODES)
def test_short_preroll_is_reported(sources: dict[str, bytes], mode: str) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("out@2:preroll=2:id=5,in@6:preroll=4.5:id=5"))
    _, findings = run(stream, mode)
    (short,) = of_type(findings, "splice_preroll_short")
    assert short.start_s == pytest.approx(stream.truth[0].pcr_send_s, abs=0.02)
    assert short.metrics["preroll_s"] == pytest.approx(2.0, abs=PREROLL_TOLERANCE_S)
    assert short.metrics["event_id"] == 5


def test_immediate_splice_is_not_judged_for_preroll(sources: dict[str, bytes]) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("out@2:immediate=1:id=5"))
    a, findings = run(stream, "file")
    assert a.cues[0].immediate and a.cues[0].splice_pts_s is None
    assert findings == []


@pytest.mark.parametrize("mode", MODES)
def test_missing_cue_in_is_reported_after_break_and_tolerance(sources: dict[str, bytes], mode: str) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("out@1:preroll=4:duration=3:id=3"))
    _, findings = run(stream, mode, cue_in_tolerance_s=2.0)
    (missing,) = of_type(findings, "cue_in_missing")
    expected_return = stream.truth[0].pcr_send_s + 4 + 3
    assert missing.start_s == pytest.approx(expected_return, abs=PREROLL_TOLERANCE_S)
    assert missing.end_s == pytest.approx(expected_return + 2.0, abs=PREROLL_TOLERANCE_S)
    assert missing.metrics["event_id"] == 3


@pytest.mark.parametrize("script", [
    "out@1:preroll=4:duration=3:id=3,in@6:preroll=1.5:id=3",  # the cue-in in time (its own id)
    "out@1:preroll=4:duration=3:id=3,in@6:preroll=1.5:id=4",  # another id still ends the break
    "out@1:preroll=4:duration=3:id=3:auto_return=1",  # the splicer returns by itself
    "out@1:preroll=4:duration=3:id=3,cancel@2:id=3",  # the break withdrawn
    "signal@1:preroll=4:duration=3:id=8:type=0x34,signal@6:preroll=1.5:id=8:type=0x35",
])
def test_break_that_ends_raises_no_cue_in_missing(sources: dict[str, bytes], script: str) -> None:
    _, findings = run(inject_cues(sources["vbr"], parse_cues(script)), "file", cue_in_tolerance_s=1.0)
    assert of_type(findings, "cue_in_missing") == []


def test_segmentation_start_without_its_end_is_a_missing_cue_in(sources: dict[str, bytes]) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("signal@1:preroll=4:duration=3:id=8:type=0x34"))
    _, findings = run(stream, "file", cue_in_tolerance_s=1.0)
    assert len(of_type(findings, "cue_in_missing")) == 1


@pytest.mark.parametrize("mode", MODES)
def test_cues_stopping_is_cues_lost_until_they_return(sources: dict[str, bytes], mode: str) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("null@1,null@2,null@3,null@8,null@9"))
    _, findings = run(stream, mode, cues_lost_s=3.5)  # 5 s without, then 3 s to the end
    lost = of_type(findings, "cues_lost")
    opened = [f for f in lost if f.end_s is None]
    closed = [f for f in lost if f.end_s is not None]
    assert len(opened) == len(closed) == 1
    t3, t8 = stream.truth[2].pcr_send_s, stream.truth[3].pcr_send_s
    assert closed[0].start_s == pytest.approx(t3 + 3.5, abs=0.02)
    assert closed[0].end_s == pytest.approx(t8, abs=0.02)


def test_stream_without_cues_raises_no_cues_lost(sources: dict[str, bytes]) -> None:
    a, findings = run(inject_cues(sources["vbr"], []), "file", cues_lost_s=1.0)
    assert a.cue_pids == {CUE_PID}
    assert findings == [] and a.cues == []


def test_corrupted_cue_section_is_dropped_and_counted(sources: dict[str, bytes]) -> None:
    stream = inject_cues(sources["vbr"], parse_cues("out@2:preroll=5,null@3"))
    data = bytearray(stream.data)
    k = data.find(bytes([0x47, 0x40 | (CUE_PID >> 8), CUE_PID & 0xFF]))
    data[k + 20] ^= 0x01
    broken = CuedStream(bytes(data), stream.truth, stream.send_offsets, stream.send_times)
    a, findings = run(broken, "file")
    assert [c.command for c in a.cues] == ["splice_null"]
    assert a.cue_sections == (1, 1)
    assert findings == []


def test_cli_writes_stream_and_truth(sources: dict[str, bytes], tmp_path: Path) -> None:
    src, dst = tmp_path / "in.ts", tmp_path / "out.ts"
    src.write_bytes(sources["vbr"])
    assert tscue.main([str(src), str(dst), "--cues", "out@2:preroll=5:duration=10,in@8"]) == 0
    truth = json.loads((tmp_path / "out.ts.truth.json").read_text())
    assert [c["kind"] for c in truth["cues"]] == ["out", "in"]
    assert truth["cues"][0]["duration_s"] == 10.0
    assert dst.stat().st_size == src.stat().st_size + 2 * 188


def test_cli_refuses_a_bad_script(sources: dict[str, bytes], tmp_path: Path) -> None:
    src = tmp_path / "in.ts"
    src.write_bytes(sources["vbr"])
    assert tscue.main([str(src), str(tmp_path / "o.ts"), "--cues", "out@2:bogus=1"]) == 2


def _pictures(data: bytes) -> list[tuple[float, bool]]:
    """(PTS seconds, keyframe) of every decoded picture, by FFmpeg's decoder through PyAV."""
    with av.open(io.BytesIO(data), format="mpegts") as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        tb = float(stream.time_base)
        return [(f.pts * tb, bool(f.key_frame)) for f in container.decode(stream) if f.pts is not None]


def test_splice_at_an_idr_is_aligned_and_off_it_is_misaligned(sources: dict[str, bytes]) -> None:
    keys = [pts for pts, key in _pictures(sources["vbr"]) if key]
    assert len(keys) >= 4  # -g 50 at 25 fps: an IDR every 2 s
    aligned, off = keys[2], keys[3] + 0.52
    stream = inject_cues(sources["vbr"], parse_cues(
        f"out@1:pts={aligned}:duration=2:id=1,in@3:pts={off}:id=1"))
    a, _ = run(stream, "file")
    aligner = SpliceAligner()
    for cue in a.cues:
        aligner.cue(cue)
    findings = [f for pts, key in _pictures(stream.data) for f in aligner.picture(pts, key, pts)]
    assert aligner.judged == 2
    (bad,) = findings
    assert bad.type == "splice_misaligned"
    assert bad.metrics["event_id"] == 1
    assert bad.metrics["offset_s"] == pytest.approx(0.0, abs=0.002)  # a picture there, not an IDR
    assert bad.metrics["keyframe_offset_s"] == pytest.approx(-0.52, abs=0.002)
