"""The MediaReader on its own: what a stream's consumers are fed, and when."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from avmon.testsrc import generate
from shared.models import DefectType
from worker.detectors import AudioBlock, Finding, VideoFrame
from worker.dispatch import Dispatcher, feeds
from worker.evidence import EvidenceRecorder
from worker.reader import Demuxed, MediaReader, Opened
from worker.session_config import Outcome, SessionConfig


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reader") / "clip.ts"
    generate(path, duration_s=2.0, width=160, height=90, fps=25)
    return path


def read(url: str, **config: object) -> tuple[MediaReader, list[object]]:
    reader = MediaReader(SessionConfig(url=url, reconnect=False, **config))  # type: ignore[arg-type]
    events = list(reader.events())
    reader.close()
    return reader, events


def test_a_file_is_read_to_its_end_as_completed(clip: Path) -> None:
    reader, events = read(clip.as_uri())
    assert reader.outcome is Outcome.COMPLETED and reader.reason is None
    assert isinstance(events[0], Opened)
    assert sum(isinstance(e, VideoFrame) for e in events) == 50
    assert sum(e.duration for e in events if isinstance(e, AudioBlock)) == pytest.approx(2.0, abs=0.05)


def test_media_time_starts_at_zero_and_pictures_come_in_order(clip: Path) -> None:
    _, events = read(clip.as_uri())
    times = [e.t for e in events if isinstance(e, VideoFrame)]
    assert times[0] == pytest.approx(0.0, abs=0.05)
    assert times == sorted(times)
    assert times[-1] == pytest.approx(1.96, abs=0.05)


def test_each_packet_is_described_before_its_pictures(clip: Path) -> None:
    _, events = read(clip.as_uri())
    first_packet = next(i for i, e in enumerate(events) if isinstance(e, Demuxed) and e.video)
    first_picture = next(i for i, e in enumerate(events) if isinstance(e, VideoFrame))
    assert first_packet < first_picture


def test_a_source_that_never_answers_is_a_signal_loss_until_the_stop() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = SessionConfig(
        url=f"udp://127.0.0.1:{port}", open_timeout_s=0.2, read_timeout_s=0.2, signal_loss_after_s=0.3
    )
    reader = MediaReader(config)
    found: list[Finding] = []
    for event in reader.events():
        if isinstance(event, Finding):
            found.append(event)
            reader.stop.set()  # once the loss is reported, stop: it closes
    reader.close()
    assert [f.type for f in found] == [DefectType.SIGNAL_LOSS] * 2
    assert [f.end_s is None for f in found] == [True, False]  # opened, then closed by the stop
    assert reader.outcome is Outcome.STOPPED


def test_the_dispatcher_feeds_only_the_feeds_a_consumer_defines() -> None:
    recorder = EvidenceRecorder("s")
    assert feeds(recorder, "feed_video") and feeds(recorder, "feed_audio")
    assert not feeds(recorder, "feed_packet") and not feeds(recorder, "flush")
    recorded: list[list[Finding]] = []
    Dispatcher([recorder], recorded.append).flush(1.0)
    assert recorded == []
