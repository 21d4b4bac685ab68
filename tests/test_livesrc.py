"""Tests of the live outputs: receive them as a monitor would (PyAV, raw sockets, HTTP)."""

from __future__ import annotations

import io
import itertools
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest

from avmon.testsrc import GroundTruth, LiveSource, parse_script

W, H = 160, 96
MEDIA: dict[str, Any] = {"width": W, "height": H, "seed": 2}


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_bound_udp(port: int, timeout_s: float = 5.0) -> None:
    """Until some socket has bound UDP ``port`` (Linux: /proc/net/udp), so no datagram is lost."""
    table = Path("/proc/net/udp")
    if not table.exists():
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout_s
    while f":{port:04X} " not in table.read_text():
        assert time.monotonic() < deadline, f"nothing bound UDP port {port}"
        time.sleep(0.01)


@dataclass
class Received:
    video: list[float] = field(default_factory=list)  # container seconds of each decoded picture
    audio_s: float = 0.0  # seconds of decoded audio
    corrupt_packets: list[float] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    error: str = ""


def receive(url: str, options: dict[str, str] | None = None, read_timeout_s: float = 1.0) -> Received:
    """Open ``url`` with PyAV and decode everything until the end, or until reads time out."""
    got = Received()
    try:
        with av.open(url, options=options or {}, timeout=(20.0, read_timeout_s)) as c:
            got.formats = [f"{s.type}:{s.codec_context.name}" for s in c.streams]
            for packet in c.demux():
                if packet.is_corrupt and packet.pts is not None and packet.time_base is not None:
                    got.corrupt_packets.append(float(packet.pts * packet.time_base))
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame) and frame.time is not None:
                        got.video.append(frame.time)
                    elif isinstance(frame, av.AudioFrame):
                        got.audio_s += frame.samples / frame.sample_rate
    except (av.FFmpegError, OSError) as exc:  # the end of a live stream: a read timeout or EIO
        got.error = type(exc).__name__
    return got


@dataclass
class Background:
    thread: threading.Thread
    result: list[Received]

    def join(self, timeout_s: float = 30.0) -> Received:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the receiver did not finish"
        return self.result[0]


def in_background(fn: Callable[[], Received]) -> Background:
    result: list[Received] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return Background(thread, result)


@pytest.fixture
def udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


# ------------------------------------------------------------------ UDP


def test_udp_source_is_received_by_pyav_and_decodes(udp_port: int) -> None:
    receiver = in_background(lambda: receive(f"udp://127.0.0.1:{udp_port}"))
    wait_bound_udp(udp_port)
    with LiveSource.start("udp", port=udp_port, duration_s=3, speed=3, **MEDIA) as source:
        assert source.url == f"udp://127.0.0.1:{udp_port}"
        assert source.wait(20)
    got = receiver.join()
    assert got.formats == ["video:h264", "audio:aac"]
    assert got.video[0] == pytest.approx(source.truth.origin_s) == pytest.approx(0.08)
    # The decoder still holds the last two pictures when the read times out (B-frame delay).
    assert len(got.video) >= 73 and got.audio_s == pytest.approx(3.0, abs=0.05)
    assert got.corrupt_packets == [] and got.error == "ExitError"


def receive_datagrams(port: int, idle_s: float) -> Iterator[tuple[float, bytes]]:
    """(arrival time, datagram) for every datagram to ``port``, until none came for ``idle_s``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", port))
        rx.settimeout(idle_s)
        yield (0.0, b"")  # bound: the caller may start the source now
        while True:
            try:
                data = rx.recv(2048)
            except TimeoutError:
                return
            yield time.monotonic(), data


def test_udp_is_paced_in_real_time_times_speed(udp_port: int) -> None:
    datagrams = receive_datagrams(udp_port, idle_s=1.0)
    next(datagrams)
    with LiveSource.start("udp", port=udp_port, duration_s=2, speed=2, **MEDIA):
        got = list(datagrams)
    arrivals, sizes = [t for t, _ in got], [len(d) for _, d in got]
    assert arrivals[-1] - arrivals[0] == pytest.approx(1.0, abs=0.2)
    assert set(sizes[:-1]) == {1316} and sizes[-1] % 188 == 0


def test_udp_signal_loss_sends_nothing_for_the_span(udp_port: int) -> None:
    datagrams = receive_datagrams(udp_port, idle_s=1.2)
    next(datagrams)
    with LiveSource.start(
        "udp", port=udp_port, duration_s=4, speed=2, defects=parse_script("signal_loss@1.5+1.5"), **MEDIA
    ) as source:
        arrivals = [t for t, _ in datagrams]
        assert source.done
    gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
    assert gaps[-1] == pytest.approx(1.5 / 2, abs=0.12)  # the span, at twice real time
    assert gaps[-2] < 0.4  # about 0.05 s between frames; the margin is for a busy machine


def test_udp_signal_loss_resumes_where_the_media_would_be(udp_port: int) -> None:
    receiver = in_background(lambda: receive(f"udp://127.0.0.1:{udp_port}", read_timeout_s=1.0))
    wait_bound_udp(udp_port)
    with LiveSource.start(
        "udp", port=udp_port, duration_s=4, speed=3, defects=parse_script("signal_loss@1.5+1.5"), **MEDIA
    ) as source:
        source.wait(20)
    got = receiver.join()
    t = [round(x - source.truth.origin_s, 2) for x in got.video]
    # The last picture before 1.5 s is at 1.48; the first after the loss, at 3.0.
    assert [(a, round(b - a, 2)) for a, b in itertools.pairwise(t) if b - a > 0.05] == [(1.48, 1.52)]
    assert t[0] == 0.0 and got.corrupt_packets == []
    assert source.truth.defects == [{"type": "signal_loss", "start_s": 1.5, "end_s": 3.0, "params": {}}]


def test_udp_drop_makes_the_receiver_see_corrupt_packets_in_the_span(udp_port: int) -> None:
    receiver = in_background(lambda: receive(f"udp://127.0.0.1:{udp_port}"))
    wait_bound_udp(udp_port)
    with LiveSource.start(
        "udp", port=udp_port, duration_s=3, speed=3, defects=parse_script("drop@1+1"), **MEDIA
    ) as source:
        source.wait(20)
    got = receiver.join()
    corrupt = [t - source.truth.origin_s for t in got.corrupt_packets]
    assert corrupt and all(1.0 <= t < 2.0 for t in corrupt), corrupt


def test_udp_source_needs_a_port_and_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="needs the receiver's port"):
        LiveSource.start("udp", duration_s=1)
    with pytest.raises(ValueError, match="unknown live output"):
        LiveSource.start("srt", duration_s=1)


# ------------------------------------------------------------------ HLS


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: bytes = response.read()
        return data


@dataclass
class Snapshot:
    at: float  # monotonic seconds
    sequence: int
    segments: list[str]
    durations: list[float]
    ended: bool


def snapshot(url: str) -> Snapshot:
    text = get(url).decode()
    assert text.startswith("#EXTM3U\n") and "#EXT-X-TARGETDURATION:1\n" in text
    m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    assert m is not None
    return Snapshot(
        time.monotonic(),
        int(m[1]),
        re.findall(r"^(seg\d+\.ts)$", text, re.M),
        [float(x) for x in re.findall(r"#EXTINF:([\d.]+),", text)],
        "#EXT-X-ENDLIST" in text,
    )


def watch(source: LiveSource) -> Iterator[Snapshot]:
    """Every change of the playlist, polled every 20 ms, until it ends."""
    last: tuple[int, int] | None = None
    while True:
        snap = snapshot(source.url)
        if (snap.sequence, len(snap.segments)) != last or snap.ended:
            last = (snap.sequence, len(snap.segments))
            yield snap
        if snap.ended:
            return
        time.sleep(0.02)


HLS: dict[str, Any] = {"gop_s": 1.0, "window": 3, **MEDIA}


def test_hls_playlist_slides_and_ends_with_endlist() -> None:
    with LiveSource.start("hls", duration_s=6, speed=4, **HLS) as source:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/live\.m3u8", source.url)
        snaps = list(watch(source))
    live, final = snaps[:-1], snaps[-1]
    assert not any(s.ended for s in live) and final.ended
    assert [s.sequence for s in snaps] == sorted(s.sequence for s in snaps) and final.sequence == 3
    assert max(len(s.segments) for s in snaps) == 3
    assert final.segments == ["seg3.ts", "seg4.ts", "seg5.ts"] and final.durations == [1.0, 1.0, 1.0]


def test_hls_segments_start_with_a_keyframe_and_decode_alone() -> None:
    with LiveSource.start("hls", duration_s=3, speed=4, gop_s=1.0, window=5, **MEDIA) as source:
        source.wait(20)
        base = source.url.rsplit("/", 1)[0]
        segments = [get(f"{base}/{name}") for name in snapshot(source.url).segments]
        with pytest.raises(urllib.error.HTTPError):
            get(f"{base}/seg99.ts")
    assert len(segments) == 3
    for i, data in enumerate(segments):
        with av.open(io.BytesIO(data), "r", format="mpegts") as c:
            frames = list(c.decode(video=0))
        assert frames[0].key_frame and len(frames) == 25
        assert frames[0].time == pytest.approx(i + source.truth.origin_s)
    with av.open(io.BytesIO(b"".join(segments)), "r", format="mpegts") as c:  # counters run on
        assert not any(p.is_corrupt for p in c.demux())


def test_hls_source_is_read_by_pyav_to_the_end() -> None:
    with LiveSource.start("hls", duration_s=4, speed=4, **HLS) as source:
        got = receive(source.url, read_timeout_s=5)
    assert got.formats == ["video:h264", "audio:aac"] and got.error == ""
    assert len(got.video) == 100 and got.video[0] == pytest.approx(source.truth.origin_s)


def test_hls_signal_loss_publishes_no_segment_for_the_span() -> None:
    with LiveSource.start(
        "hls", duration_s=6, speed=3, defects=parse_script("signal_loss@2+2"), **HLS
    ) as source:
        receiver = in_background(lambda: receive(source.url, read_timeout_s=5))
        snaps = list(watch(source))
        got = receiver.join()
    appeared = [s.at for s in snaps if not s.ended]
    gaps = sorted(b - a for a, b in itertools.pairwise(appeared))
    # Segment [1, 2) goes out when the loss starts; the next one, [4, 5), once it is complete.
    # Wall-clock gaps: loose enough for a loaded CI machine, tight enough to tell 1 s from 1/3 s.
    assert gaps[-1] == pytest.approx(3 / 3, abs=0.35) and gaps[-2] < 0.7  # 1/3 s per segment
    assert snaps[-1].durations == [1.0, 1.0, 1.0]
    t = [round(x - source.truth.origin_s, 2) for x in got.video]
    assert len(t) == 100 and [(a, round(b - a, 2)) for a, b in itertools.pairwise(t) if b - a > 0.05] == [
        (1.96, 2.04)
    ]


def test_stop_ends_a_live_source_early_and_closes_its_server() -> None:
    source = LiveSource.start("hls", duration_s=30, speed=1, **HLS)
    started = time.monotonic()
    source.stop()
    assert source.done and time.monotonic() - started < 5
    with pytest.raises(OSError):
        get(source.url)


# ------------------------------------------------------------------ RTMP and the command line


def test_rtmp_push_from_the_cli_reaches_a_listening_receiver(tmp_path: Path) -> None:
    # Sender and listener in one process hang (PyAV connects holding the GIL): the CLI sends.
    url = f"rtmp://127.0.0.1:{free_port(socket.SOCK_STREAM)}/live/test"
    receiver = in_background(lambda: receive(url, options={"listen": "1"}, read_timeout_s=5))
    time.sleep(0.3)  # the listener is up (FFmpeg opens it at once; the sender does not retry)
    truth = tmp_path / "rtmp.truth.json"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "avmon",
            "testsrc",
            "--rtmp",
            url,
            "--duration",
            "3",
            "--size",
            f"{W}x{H}",
            "--speed",
            "3",
            "--sync-marks",
            "--truth",
            str(truth),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith(f"sending {url}: 3 s {W}x{H}@25 h264/aac")
    got = receiver.join()
    assert got.formats == ["video:h264", "audio:aac"]
    assert len(got.video) >= 73 and got.video[0] == pytest.approx(GroundTruth.load(truth).origin_s)
    assert GroundTruth.load(truth).sync_marks_s == [0.52, 1.52, 2.52]


def test_rtmp_without_a_listener_fails_with_a_message() -> None:
    url = f"rtmp://127.0.0.1:{free_port(socket.SOCK_STREAM)}/live/test"
    cli = subprocess.run(
        [sys.executable, "-m", "avmon", "testsrc", "--rtmp", url, "--duration", "1", "--size", "64x48"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1 and "cannot send rtmp" in cli.stderr


def test_cli_udp_writes_the_truth_and_sends(tmp_path: Path, udp_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", udp_port))
        rx.settimeout(5)
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "avmon",
                "testsrc",
                "--udp",
                f"127.0.0.1:{udp_port}",
                "--duration",
                "1",
                "--size",
                "64x48",
                "--speed",
                "4",
                "--defects",
                "signal_loss@0.5+0.2",
                "--truth",
                str(tmp_path / "u.truth.json"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert len(rx.recv(2048)) == 1316
        out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert GroundTruth.load(tmp_path / "u.truth.json").defects[0]["type"] == "signal_loss"
    assert out.count("\n") == 2 and f"udp://127.0.0.1:{udp_port}" in out
