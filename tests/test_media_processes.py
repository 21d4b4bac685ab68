"""Streams in media processes (worker/shards.py): what a session reports reaches the worker's side
in order, stops are passed on, and a media process that dies ends its streams, not the worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.models import Defect, DefectType
from tests.media import make_testsrc
from worker.session import Outcome, SessionConfig
from worker.shards import MediaPool, RemoteSession


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shards") / "clip.ts"
    make_testsrc(path, duration_s=5.0, script="black@1+2.5", seed=3, width=160, height=90)
    return path


@pytest.fixture(scope="module")
def pool() -> Iterator[MediaPool]:
    media = MediaPool(2, switch_interval_s=0.001)
    media.start()
    yield media
    media.close()


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def emit(self, defect: Defect, evidence: dict[str, Any] | None) -> None:
        self.calls.append(("emit", defect, evidence))


def start(pool: MediaPool, url: str, rec: Recorded, **config: Any) -> tuple[RemoteSession, threading.Event]:
    stop = threading.Event()
    session = pool.session(
        "s-" + os.urandom(4).hex(),
        SessionConfig(url=url, **config),
        rec.emit,
        worker_id="w",
        stop=stop,
    )
    return session, stop


def test_a_file_in_a_media_process_reports_each_defect_with_its_evidence(
    pool: MediaPool, clip: Path
) -> None:
    rec = Recorded()
    session, _ = start(pool, clip.as_uri(), rec)
    outcome, _reason = session.run()
    assert outcome is Outcome.COMPLETED
    blacks = [(d, evidence) for _, d, evidence in rec.calls if d.type is DefectType.BLACK]
    assert all(evidence is not None for _, evidence in blacks)  # each record comes with its evidence
    final = blacks[-1][0]
    assert final.start_s == pytest.approx(1.0, abs=0.1) and final.end_s == pytest.approx(3.5, abs=0.1)
    assert session.figures.frames_analysed == 125  # the last state, sent before "done"
    assert session.ctx.has_video and session.timeline() is not None


def test_a_stop_reaches_the_session_in_its_media_process(pool: MediaPool, clip: Path) -> None:
    rec = Recorded()
    session, stop = start(pool, clip.as_uri(), rec, realtime=True)  # 5 s at its own pace
    result: list[tuple[Outcome, str | None]] = []
    runner = threading.Thread(target=lambda: result.append(session.run()))
    runner.start()
    time.sleep(1.5)
    stop.set()
    runner.join(10)
    assert result and result[0][0] is Outcome.STOPPED
    assert 0 < session.figures.frames_analysed < 125


def test_streams_go_to_the_media_process_with_fewest(pool: MediaPool, clip: Path) -> None:
    a, stop_a = start(pool, clip.as_uri(), Recorded(), realtime=True)
    b, stop_b = start(pool, clip.as_uri(), Recorded(), realtime=True)
    try:
        assert a._shard is not b._shard
    finally:
        stop_a.set()
        stop_b.set()
        a.run()
        b.run()


def test_a_media_process_that_dies_ends_its_streams_as_an_internal_error(clip: Path) -> None:
    media = MediaPool(2, switch_interval_s=0.001)
    try:
        media.start()
        session, _ = start(media, clip.as_uri(), Recorded(), realtime=True)
        pid = session._shard.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        outcome, reason = session.run()
        assert outcome is Outcome.STOPPED and reason is not None and "media process" in reason
        # The next stream gets a new media process.
        again, _ = start(media, clip.as_uri(), Recorded())
        assert again.run()[0] is Outcome.COMPLETED
    finally:
        media.close()
