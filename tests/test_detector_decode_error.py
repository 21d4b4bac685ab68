"""The decode_error detector: grouping of error reports into events, and real damaged MPEG-TS
(garbled AAC frames the decoder refuses, lost video transport packets) fed by the session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from shared.models import Defect
from tests.media import ffmpeg, moving_noise_ts, remux, transport_packets
from worker.detectors._h264 import ReferenceLossCounter
from worker.detectors.base import AudioBlock, Finding, PacketInfo, Severity, StreamContext, VideoFrame
from worker.detectors.decode_error import DecodeErrorDetector, DecodeErrorOptions

FPS = 25
LUMA = np.full((16, 16), 100, np.uint8)
SILENCE = np.zeros((1, 1920), np.float32)  # 40 ms at 48 kHz


def frame(t: float, corrupt: bool = False) -> VideoFrame:
    return VideoFrame(t=t, luma=LUMA, corrupt=corrupt)


def packet(t: float | None, kind: str = "video", corrupt: bool = False) -> PacketInfo:
    return PacketInfo(t=t, kind=kind, size=100, key=False, corrupt=corrupt)


def pictures(detector: DecodeErrorDetector, first: int, last: int, errors: dict[int, str]) -> list[Finding]:
    """Feed pictures ``first..last-1`` (25 fps); a decode error of kind ``errors[i]`` comes
    instead of picture i."""
    findings: list[Finding] = []
    for i in range(first, last):
        t = i / FPS
        if i in errors:
            findings += detector.feed_decode_error(t, errors[i], "Invalid data found when processing input")
        else:
            findings += detector.feed_video(frame(t))
    return findings


def closed(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.end_s is not None]


def test_one_error_opens_at_once_and_closes_after_a_quiet_window() -> None:
    detector = DecodeErrorDetector()
    assert pictures(detector, 0, 50, {}) == []
    [opened] = detector.feed_decode_error(2.0, "video", "Invalid data")
    assert opened.end_s is None and opened.start_s == 2.0 and opened.key == "video"
    assert opened.metrics["errors"] == 1.0
    findings = pictures(detector, 51, 100, {})
    [closing] = findings
    assert closing.start_s == 2.0 and closing.key == "video"
    assert closing.end_s == pytest.approx(51 / FPS)  # the first clean picture after the error
    assert closing.metrics["errors"] == 1.0 and closing.metrics["decode_errors"] == 1.0
    assert closing.severity is Severity.WARNING


def test_close_is_reported_one_window_after_the_last_error() -> None:
    detector = DecodeErrorDetector()
    detector.feed_decode_error(2.0, "video", "")
    closed_at = None
    for i in range(51, 100):
        if detector.feed_video(frame(i / FPS)):
            closed_at = i / FPS
            break
    assert closed_at == pytest.approx(3.0)


def test_errors_within_the_window_are_one_defect() -> None:
    detector = DecodeErrorDetector()
    findings = pictures(detector, 0, 150, {50: "video", 60: "video", 80: "video", 100: "video"})
    opened, closing = findings
    assert (opened.start_s, closing.start_s) == (2.0, 2.0)
    assert closing.end_s == pytest.approx(101 / FPS)
    assert closing.metrics["errors"] == 4.0


def test_errors_further_apart_than_the_window_are_two_defects() -> None:
    findings = pictures(DecodeErrorDetector(), 0, 150, {25: "video", 75: "video"})
    assert [f.start_s for f in closed(findings)] == [1.0, 3.0]


def test_kinds_are_separate_defects() -> None:
    findings = pictures(DecodeErrorDetector(), 0, 100, {25: "video", 26: "audio"})
    assert sorted(f.key for f in closed(findings)) == ["audio", "video"]


def test_audio_defect_ends_at_the_first_clean_audio_block() -> None:
    detector = DecodeErrorDetector()
    detector.feed_decode_error(1.0, "audio", "")
    findings: list[Finding] = []
    for i in range(10):
        findings += detector.feed_video(frame(1.0 + i / FPS))  # video does not end audio errors
    for i in range(1, 60):
        findings += detector.feed_audio(AudioBlock(t=1.2 + i * 0.04, samples=SILENCE, rate=48_000))
    [closing] = findings
    assert closing.key == "audio" and closing.end_s == pytest.approx(1.24)


def test_corrupt_packets_and_pictures_are_errors() -> None:
    detector = DecodeErrorDetector()
    findings = detector.feed_packet(packet(2.0, corrupt=True))
    findings += detector.feed_video(frame(1.9, corrupt=True))  # decoded before, reported after
    findings += detector.feed_packet(packet(2.04))
    findings += detector.feed_video(frame(1.94))
    findings += detector.flush(2.5)
    opened, closing = findings
    assert opened.start_s == closing.start_s == 2.0  # the first report
    assert closing.metrics["corrupt_packets"] == 1.0 and closing.metrics["corrupt_frames"] == 1.0
    assert closing.metrics["errors"] == 2.0


def test_packet_without_timestamp_is_placed_at_the_clock() -> None:
    detector = DecodeErrorDetector()
    detector.feed_video(frame(3.0))
    [opened] = detector.feed_packet(packet(None, "audio", corrupt=True))
    assert opened.start_s == 3.0 and opened.key == "audio"


def test_persistent_errors_make_the_close_critical() -> None:
    detector = DecodeErrorDetector(DecodeErrorOptions(critical_errors=5))
    errors = dict.fromkeys(range(50, 56), "video")
    findings = pictures(detector, 0, 100, errors)
    opened, closing = findings
    assert opened.severity is Severity.WARNING
    assert closing.severity is Severity.CRITICAL and closing.metrics["errors"] == 6.0


def test_errors_until_the_end_are_closed_by_flush_at_the_end() -> None:
    detector = DecodeErrorDetector()
    detector.feed_decode_error(2.0, "audio", "")
    detector.feed_decode_error(2.5, "audio", "")
    [closing] = detector.flush(2.8)
    assert (closing.start_s, closing.end_s) == (2.0, 2.8)


def test_time_going_back_starts_a_new_defect() -> None:
    detector = DecodeErrorDetector()
    detector.feed_decode_error(10.0, "video", "")
    findings = detector.feed_decode_error(2.0, "video", "")
    closing, opened = findings
    assert closing.start_s == 10.0 and closing.end_s == 10.0
    assert opened.start_s == 2.0 and opened.end_s is None


def feed_times(detector: DecodeErrorDetector, times: list[float]) -> list[Finding]:
    findings: list[Finding] = []
    for t in times:
        findings += detector.feed_video(frame(t))
    return findings


def test_pictures_missing_from_a_steady_rate_are_not_a_decode_error() -> None:
    # A timestamp step of two frame durations (and one of four): stutter's, not a decoding error.
    times = [i / FPS for i in range(100) if i not in (30, 60, 61, 62)]
    detector = DecodeErrorDetector()
    assert feed_times(detector, times) + detector.flush(100 / FPS) == []


def test_video_errors_are_published_for_stutter() -> None:
    ctx = StreamContext()
    detector = DecodeErrorDetector(ctx=ctx)
    detector.feed_decode_error(1.0, "audio", "")
    assert ctx.extra.get("video_errors", 0) == 0
    detector.feed_video(frame(1.0, corrupt=True))
    detector.feed_packet(packet(1.04, corrupt=True))
    assert ctx.extra["video_errors"] == 2


def test_invalid_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="window"):
        DecodeErrorOptions(window=0.0)


# ------------------------------------------------------------------ real MPEG-TS


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("decode_error") / "clip.ts"
    moving_noise_ts(path, 4.0)
    return path


def packets_of(path: Path, kind: str) -> tuple[list[tuple[int, int, float]], float]:
    """(pos, size, media seconds) of every packet of ``kind``, and the origin used."""
    with av.open(str(path)) as container:
        streams = [container.streams.video[0], container.streams.audio[0]]
        origin = min(float(s.start_time * s.time_base) for s in streams if s.start_time and s.time_base)
        stream = streams[0] if kind == "video" else streams[1]
        found = [
            (p.pos, p.size, float(p.pts * p.time_base) - origin)
            for p in container.demux(stream)
            if p.size and p.pos is not None and p.pts is not None and p.time_base is not None
        ]
    return found, origin


def monitor(path: Path) -> list[Defect]:
    from worker.session import SessionConfig, StreamSession

    records: list[Defect] = []
    config = SessionConfig(
        url=path.resolve().as_uri(), reconnect=False, detectors=frozenset({"decode_error"})
    )
    StreamSession("test", config, lambda d, _: records.append(d)).run()
    return records


def key_of(record: Defect) -> str:
    return record.defect_id.rsplit("-", 1)[1]


def test_clean_clip_has_no_decode_error(clip: Path) -> None:
    assert monitor(clip) == []


def test_garbled_aac_frames_are_one_audio_decode_error(clip: Path, tmp_path: Path) -> None:
    # AAC has no concealment to hide behind: FFmpeg refuses the frame and PyAV raises
    # InvalidDataError from packet.decode(), which the session reports as a decode error.
    audio, _ = packets_of(clip, "audio")
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(1)
    garbled = audio[80:84]  # four consecutive frames, about 85 ms, 1.7 s in
    for pos, _, _ in garbled:
        # Past the transport, PES and ADTS headers, inside the first transport packet.
        data[pos + 40 : pos + 120] = rng.integers(0, 256, 80, dtype=np.uint8).tobytes()
    (tmp_path / "aac.ts").write_bytes(bytes(data))

    records = monitor(tmp_path / "aac.ts")
    opened, closing = records
    assert key_of(opened) == key_of(closing) == "audio"
    assert opened.end_s is None and closing.start_s == opened.start_s
    assert abs(closing.start_s - garbled[0][2]) <= 0.5
    assert closing.end_s is not None and closing.end_s - closing.start_s < 0.5
    assert closing.metrics["decode_errors"] == 4.0


def test_lost_video_transport_packets_are_a_video_decode_error(clip: Path, tmp_path: Path) -> None:
    video, _ = packets_of(clip, "video")
    data = clip.read_bytes()
    pos, _, t = next(p for p in video[40:] if p[1] > 3 * 184)
    # A transport packet from the middle of the picture: a continuity-counter gap.
    lost = transport_packets(data, pos)[1]
    (tmp_path / "lost.ts").write_bytes(data[:lost] + data[lost + 188 :])

    records = monitor(tmp_path / "lost.ts")
    closes = [r for r in records if r.end_s is not None]
    assert [key_of(r) for r in closes] == ["video"]
    assert abs(closes[0].start_s - t) <= 0.5
    assert closes[0].metrics["corrupt_packets"] >= 1.0


# ------------------------------------------------------------------ whole pictures lost (MP4)


def h264_mp4(path: Path, vf: str = "") -> None:
    """4 s of libx264 (1 s GOP, B pictures as x264 places them) in MP4, no sound."""
    chain = "testsrc2=size=320x180:rate=25:duration=4" + (f",{vf}" if vf else "")
    ffmpeg(
        "-f", "lavfi", "-i", chain, "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast",
        "-g", "25", "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip


def without_packet(source: Path, target: Path, pick: int) -> float:
    """Copy ``source`` to ``target`` leaving out the ``pick``-th P picture after 1.5 s (in
    decode order): a whole reference picture lost, as a segment or a file loses one. Returns
    its media time."""
    seen, lost_at = 0, -1.0

    def leave_out(packet: av.Packet[Any]) -> bool:
        nonlocal seen, lost_at
        if packet.dts is None or packet.pts is None or packet.time_base is None:
            return False
        t = float(packet.pts * packet.time_base)
        # A reference picture that is not a keyframe: a P picture, or a B used as one.
        if lost_at < 0 and t > 1.5 and not packet.is_keyframe and _is_reference(packet):
            seen += 1
            if seen == pick:
                lost_at = t
                return False
        return True

    remux(source, target, leave_out, keep="video")
    return lost_at


def _is_reference(packet: av.Packet) -> bool:
    """nal_ref_idc of the packet's first slice (length-prefixed NAL units, as MP4 has them)."""
    data = bytes(packet)
    pos = 0
    while pos + 4 < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        header = data[pos + 4]
        if header & 0x1F in (1, 5):
            return bool(header & 0x60)
        pos += 4 + size
    return False


def test_a_reference_picture_lost_from_an_mp4_is_a_video_decode_error(tmp_path: Path) -> None:
    # FFmpeg conceals the missing reference (no corrupt picture, nothing raised) and the rest
    # of the GOP is predicted from the wrong picture: the next picture's frame_num says so.
    h264_mp4(tmp_path / "clean.mp4")
    lost_at = without_packet(tmp_path / "clean.mp4", tmp_path / "lost.mp4", pick=1)
    assert lost_at > 0
    records = monitor(tmp_path / "lost.mp4")
    closes = [r for r in records if r.end_s is not None]
    assert [key_of(r) for r in closes] == ["video"]
    assert abs(closes[0].start_s - lost_at) <= 0.2
    assert closes[0].metrics["lost_references"] == 1.0


def test_a_picture_left_out_before_encoding_is_not_a_decode_error(tmp_path: Path) -> None:
    # An edit or an encoder's drop: the timestamps step over it, the bitstream is whole.
    h264_mp4(tmp_path / "edited.mp4", vf="select='not(eq(n\\,50))'")
    assert monitor(tmp_path / "edited.mp4") == []


def test_frame_num_gaps_are_read_from_annex_b_as_in_mpeg_ts(clip: Path) -> None:
    # The MPEG-TS clip's H.264 (parameter sets in band) packet by packet: whole, no loss; with
    # the second reference picture after the first second left out, exactly one.
    with av.open(str(clip)) as container:
        packets = [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]
    assert packets[0].startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
    whole = ReferenceLossCounter()
    assert sum(whole.feed(p) for p in packets) == 0
    references = [i for i, p in enumerate(packets) if i > 25 and _annex_b_reference(p)]
    lossy = ReferenceLossCounter()
    assert sum(lossy.feed(p) for i, p in enumerate(packets) if i != references[1]) == 1


def _annex_b_reference(data: bytes) -> bool:
    """nal_ref_idc of the first slice of an Annex B packet that is not an IDR."""
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        header = data[pos + 3]
        if header & 0x1F in (1, 5):
            return header & 0x1F == 1 and bool(header & 0x60)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return False
