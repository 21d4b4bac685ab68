"""The session (worker/session.py) reading a live source directly, without the system around it."""

from __future__ import annotations

import threading

from avmon.livesrc import LiveSource
from shared.models import Defect, DefectType
from tests.support import wait_for
from worker.session import SessionConfig, StreamSession

SECONDS = 12.0
FPS = 25


def test_hls_segments_longer_than_the_read_timeout_are_not_a_signal_loss() -> None:
    # 4 s segments published every 2 s (speed 2): once the session has caught up with the live
    # edge, FFmpeg waits about 2 s inside one read for the next segment, twice the read timeout.
    records: list[Defect] = []
    with LiveSource.start(
        "hls", duration_s=SECONDS, speed=2, gop_s=4.0, window=3, width=160, height=90, seed=4
    ) as source:
        config = SessionConfig(url=source.url, read_timeout_s=1.0, signal_loss_after_s=0.5)
        session = StreamSession("hls", config, lambda d, _: records.append(d))
        runner = threading.Thread(target=session.run)
        runner.start()
        try:
            assert source.wait(60)
            every = SECONDS * FPS
            wait_for(lambda: session.figures.frames_analysed >= every, 20, 0.1, what="every picture")
        finally:
            session.stop.set()
            runner.join(30)
    assert not runner.is_alive()
    assert session.figures.frames_analysed == SECONDS * FPS  # every picture, once
    # The playlist's end is a loss to a live monitor; nothing before it is.
    losses = [r.start_s for r in records if r.type == DefectType.SIGNAL_LOSS]
    assert [start for start in losses if start < SECONDS - 0.1] == []
