"""Lag behind the live edge (worker/timeline.py): probing and start-up are not lag."""

from __future__ import annotations

import pytest

from worker.timeline import LiveEdge, Timeline


def test_packets_read_late_at_start_do_not_count_as_lag() -> None:
    # Probing buffered 2 s: the first packets are read 2 s after they arrived, then it keeps up.
    edge = LiveEdge()
    wall0 = 1000.0
    for i in range(50):
        t = i * 0.04
        edge.observe(arrival=wall0 + t, t=t)  # kernel arrival times: at the source's pace
    assert edge.lag(now=wall0 + 2.0 + 0.05, t=2.0) == pytest.approx(0.05)


def test_a_stream_behind_from_the_first_packet_shows_its_lag() -> None:
    edge = LiveEdge()
    for i in range(100):
        t = i * 0.04
        edge.observe(arrival=1000.0 + t, t=t)
    # Four seconds of media arrived, only the first one analysed by now.
    assert edge.lag(now=1004.0, t=1.0) == pytest.approx(3.0)


def test_waiting_for_the_first_keyframe_is_not_lag() -> None:
    edge = LiveEdge()
    edge.observe(arrival=1000.0, t=0.0)  # packets before the keyframe arrive on time
    edge.observe(arrival=1001.9, t=1.9)
    assert edge.lag(now=1002.0, t=1.96) == pytest.approx(0.04)


def test_a_windowed_edge_follows_a_source_clock_slower_than_ours() -> None:
    edge = LiveEdge(window_s=60.0, bucket_s=10.0)
    drift = 1e-3  # its second lasts 1.001 of ours: arrival - t grows by 1 ms a second
    for i in range(0, 3600 * 25, 25):
        t = i / 25
        edge.observe(arrival=1000.0 + t * (1 + drift), t=t)
    t_end = 3599.0
    assert edge.lag(now=1000.0 + t_end * (1 + drift), t=t_end) < 0.1  # not 3.6 s


def test_no_packet_no_lag() -> None:
    assert LiveEdge().lag(now=5.0, t=1.0) is None


def test_a_published_timeline_round_trips_through_the_streams_item() -> None:
    timeline = Timeline(origin_s=1.458667, media_time_s=120.5, wall=1_796_000_000.25)
    item: dict[str, object] = dict(timeline.figures())
    assert Timeline.from_item(item) == timeline
    assert Timeline.from_item({"timeline_origin_s": "x"}) is None
