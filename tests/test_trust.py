"""Hostile input: broken and oversized media, and a fuzz run over demux → decode → detect."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest

from shared.models import Defect
from tests.conftest import Api, WorkerFactory
from tests.media import generated, remux
from tests.support import wait_for
from worker.media import Limits
from worker.session import Outcome, SessionConfig, StreamSession, analyze


@pytest.fixture(scope="module")
def clip() -> Path:
    return generated("ok.ts", duration_s=6.0, width=320, height=180, script="black@1+2.5")[0]


def _remux(src: Path, dst: Path, keep: str) -> Path:
    remux(src, dst, keep=keep)
    return dst


class ServiceSession:
    """A worker-style session (retrying) in its own thread, as the worker runs one."""

    def __init__(self, url: str) -> None:
        self.found: list[Defect] = []
        config = SessionConfig(url=url, reconnect_max_s=0.5, signal_loss_after_s=0.2)
        self.session = StreamSession("s-trust", config, lambda d, _: self.found.append(d))
        self.thread = threading.Thread(target=self.session.run)
        self.thread.start()

    def stop(self) -> None:
        self.session.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


def test_oversized_resolution_is_refused_with_the_reason(clip: Path) -> None:
    config = SessionConfig(url=clip.as_uri(), limits=Limits(max_width=160, max_height=90))
    session = StreamSession("s-big", config, lambda *_: None)
    outcome, reason = session.run()
    assert outcome is Outcome.REFUSED
    assert reason is not None and "320x180" in reason and "160x90" in reason


def test_a_scheme_this_ffmpeg_lacks_is_refused_with_the_reason_not_retried() -> None:
    # PyAV's bundled FFmpeg has no SRT: a deployment limit, not a lost signal.
    records: list[Defect] = []
    config = SessionConfig(url="srt://127.0.0.1:9", open_timeout_s=2.0)
    session = StreamSession("s-srt", config, lambda d, _: records.append(d))
    outcome, reason = session.run()
    assert outcome is Outcome.REFUSED and reason is not None and "srt://" in reason
    assert records == []


def test_a_dash_manifest_this_ffmpeg_cannot_read_is_refused_with_the_reason(
    clip: Path, tmp_path: Path
) -> None:
    # PyAV's FFmpeg writes DASH but cannot read it (no libxml2): a retry would never help.
    manifest = tmp_path / "manifest.mpd"
    remux(clip, manifest, format="dash")
    records: list[Defect] = []
    config = SessionConfig(url=manifest.as_uri(), open_timeout_s=2.0)
    outcome, reason = StreamSession("s-dash", config, lambda d, _: records.append(d)).run()
    assert outcome is Outcome.REFUSED and reason is not None and "DASH" in reason
    assert records == []


def test_truncated_file_is_analysed_up_to_the_cut(clip: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.ts"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    found: list[Defect] = []
    outcome, _ = analyze(str(cut), found.append)
    assert outcome is Outcome.COMPLETED
    closed = [d for d in found if d.end_s is not None]
    assert [d.type for d in closed if d.start_s < 2.5] == ["black"]
    # The damaged last picture at the cut may be reported too; nothing else before it.
    assert {d.type for d in closed if d.start_s >= 2.5} <= {"decode_error", "blockiness"}


def _not_media(kind: str, clip: Path, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.ts"
    if kind == "random":
        path.write_bytes(bytes(range(256)) * 4000)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a note, not a stream\n" * 50)
    else:  # the first 2 KB of a real MP4: its header promises what never comes
        mp4 = tmp_path / "whole.mp4"
        remux(clip, mp4, keep="video")
        path.write_bytes(mp4.read_bytes()[:2000])
    return path


@pytest.mark.parametrize("kind", ["random", "empty", "text", "truncated-mp4"])
def test_not_media_is_refused_with_the_reason_after_a_few_tries(
    clip: Path, tmp_path: Path, kind: str
) -> None:
    found: list[Defect] = []
    config = SessionConfig(
        url=_not_media(kind, clip, tmp_path).as_uri(), reconnect_max_s=0.5, signal_loss_after_s=0.2
    )
    session = StreamSession("s-junk", config, lambda d, _: found.append(d))
    outcome, reason = session.run()  # returns: no retrying for ever as RECONNECTING
    assert outcome is Outcome.REFUSED
    assert reason is not None and "not media" in reason and "Invalid data" in reason
    # A loss reported while it retried is closed, not left open.
    assert [d.end_s is None for d in found if d.type == "signal_loss"] in ([], [True, False])


def test_random_bytes_make_analyze_fail_cleanly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ts"
    junk.write_bytes(bytes(range(256)) * 4000)
    with pytest.raises(av.FFmpegError):
        analyze(str(junk), print)


def test_corrupted_ts_headers_are_survived_and_reported(clip: Path, tmp_path: Path) -> None:
    data = bytearray(clip.read_bytes())
    for offset in range(188 * 200, len(data) // 2, 188 * 37):
        data[offset : offset + 4] = b"\x00\x00\x00\x00"  # sync byte and PID of a TS packet gone
    broken = tmp_path / "broken.ts"
    broken.write_bytes(bytes(data))
    found: list[Defect] = []
    outcome, _ = analyze(str(broken), found.append)
    assert outcome is Outcome.COMPLETED
    assert {"decode_error"} & {d.type for d in found}


def test_video_only_stream_is_monitored(clip: Path, tmp_path: Path) -> None:
    found: list[Defect] = []
    outcome, _ = analyze(str(_remux(clip, tmp_path / "video.ts", "video")), found.append)
    assert outcome is Outcome.COMPLETED
    assert [d.type for d in found if d.end_s is not None] == ["black"]


def test_audio_only_stream_is_monitored(clip: Path, tmp_path: Path) -> None:
    found: list[Defect] = []
    outcome, _ = analyze(str(_remux(clip, tmp_path / "audio.ts", "audio")), found.append)
    assert outcome is Outcome.COMPLETED
    assert found == []


def test_a_broken_stream_does_not_disturb_the_workers_other_streams(
    router: Api, workers: WorkerFactory, clip: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"\x47" + bytes(100_000))
    workers("t1")
    _, bad = router.call("POST", "/streams", {"url": junk.as_uri()})
    _, good = router.call("POST", "/streams", {"url": clip.as_uri()})
    wait_for(lambda: router.call("GET", f"/streams/{good['stream_id']}")[1]["status"] == "COMPLETED", 60)
    _, defects = router.call("GET", f"/streams/{good['stream_id']}/defects")
    assert [d["type"] for d in defects["defects"]] == ["black"]
    state = wait_for(
        lambda: (
            (s := router.call("GET", f"/streams/{bad['stream_id']}")[1])["status"] == "RECONNECTING" and s
        ),
        10,
        what="the broken stream reported as reconnecting",
    )
    assert state["reason"] and state["owner"] == "t1"


def test_fuzzed_media_never_crashes_or_hangs_the_pipeline() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.fuzz_media", "--examples", "1500"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "1500 examples" in run.stdout
