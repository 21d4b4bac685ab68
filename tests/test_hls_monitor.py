"""The HLS playlist monitor (worker/hls_monitor.py) on live HLS served over local HTTP through a
fault-injecting origin (tests/hls_origin.py): the ffmpeg CLI's hls muxer's two-rendition ladder,
driven one segment per round with the test's own clock; then the monitor in a stream session on
`avmon testsrc --hls`, and once through the API and a real worker."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from avmon import tscue
from avmon.livesrc import LiveSource
from shared.models import Defect, Event
from tests.conftest import Api, WorkerFactory
from tests.hls_origin import LadderOrigin, ffmpeg_ladder
from tests.support import wait_for
from worker import egress
from worker.detectors.base import Finding
from worker.hls_monitor import HlsMonitor
from worker.session import SessionConfig, StreamSession

T0 = 1_000_000.0  # the driven monitor's clock at its first round (s)
LADDER_S = 20.0
DELIVERY = {"manifest_stale", "manifest_error", "segment_error", "rendition_mismatch"}


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ladder")
    ffmpeg_ladder(root, LADDER_S)
    return root


@pytest.fixture
def origin(ladder: Path) -> Iterator[LadderOrigin]:
    served = LadderOrigin(ladder, window=4)
    yield served
    served.close()


def monitor(url: str) -> HlsMonitor:
    return HlsMonitor(url, egress.shared_proxy(True).url)


def drive(
    origin: LadderOrigin,
    mon: HlsMonitor,
    steps: int,
    faults: dict[int, Callable[[], None]] | None = None,
) -> list[Finding]:
    """A round, then ``steps`` times: the step's fault, one new segment, a round 1 s (one target
    duration) later; every finding, then the monitor closed (open findings end)."""
    found = mon.poll(T0)
    for k in range(steps):
        (faults or {}).get(k, lambda: None)()
        origin.advance()
        found += mon.poll(T0 + k + 1.0)
    return found


def kinds(found: list[Finding]) -> list[tuple[str, str, str, bool]]:
    """(type, rule, key, closed) of each finding."""
    return [(f.type, f.labels.get("rule", ""), f.key, f.end_s is not None) for f in found]


def test_a_clean_ladder_raises_nothing(origin: LadderOrigin) -> None:
    mon = monitor(origin.master_url)
    assert drive(origin, mon, 10) == []
    assert mon.health.renditions.keys() == {origin.url("r0"), origin.url("r1")}
    # Every new segment of both renditions was checked with a ranged GET: the newest of the first
    # window, then the one each round brought.
    checked = {name: sum(1 for p in origin.requests if p.startswith(f"/{name}_")) for name in ("r0", "r1")}
    assert checked == {"r0": 11, "r1": 11}


def test_a_playlist_that_stops_updating_is_manifest_stale_until_it_moves(origin: LadderOrigin) -> None:
    mon = monitor(origin.url("r0"))
    found = drive(origin, mon, 9, {3: lambda: origin.stall("r0"), 7: lambda: origin.stall("r0", False)})
    assert kinds(found) == [("manifest_stale", "", "media", False), ("manifest_stale", "", "media", True)]
    # Its last new segment came at T0 + 3; at T0 + 7 none had come for more than 3 target durations.
    assert found[0].start_s == T0 + 3.0 and found[1].end_s == T0 + 8.0
    assert found[0].labels["uri"] == origin.url("r0")


def test_a_media_sequence_going_back_is_one_manifest_error(origin: LadderOrigin) -> None:
    found = drive(origin, monitor(origin.url("r0")), 8, {5: lambda: origin.rewind("r0", 3)})
    assert kinds(found) == [
        ("manifest_error", "media_sequence_decreased", "media-media_sequence_decreased", True)
    ]
    assert found[0].metrics == {"previous": 5.0, "media_sequence": 3.0}


def test_a_discontinuity_sequence_not_counting_a_tag_that_left_is_one_manifest_error(
    origin: LadderOrigin,
) -> None:
    origin.discontinuities.add(3)
    origin.count_discontinuities = False
    found = drive(origin, monitor(origin.url("r0")), 8)
    assert kinds(found) == [
        ("manifest_error", "discontinuity_sequence", "media-discontinuity_sequence", True)
    ]
    assert found[0].start_s == T0 + 4.0  # the reload on which segment 3 had left


def test_an_extinf_above_the_target_duration_is_one_manifest_error(origin: LadderOrigin) -> None:
    origin.extinf[("r0", 6)] = 2.6  # target 1 s
    found = drive(origin, monitor(origin.url("r0")), 9)
    assert kinds(found) == [
        ("manifest_error", "extinf_exceeds_target", "media-extinf_exceeds_target", False),
        ("manifest_error", "extinf_exceeds_target", "media-extinf_exceeds_target", True),
    ]
    assert (found[1].start_s, found[1].end_s) == (T0 + 3.0, T0 + 7.0)  # segment 6 in the window
    assert found[0].metrics["extinf_s"] == 2.6


def test_a_segment_that_answers_404_is_one_segment_error(origin: LadderOrigin) -> None:
    origin.missing.add(("r0", 7))
    found = drive(origin, monitor(origin.url("r0")), 8)
    assert kinds(found) == [("segment_error", "", "media", False), ("segment_error", "", "media", True)]
    assert found[0].metrics == {"status": 404.0, "media_sequence": 7.0}
    assert found[0].labels["uri"] == f"{origin.base}/r0_007.ts"


def test_a_ladder_whose_second_rendition_stalls_raises_manifest_stale_for_it_alone(
    origin: LadderOrigin,
) -> None:
    mon = monitor(origin.master_url)
    found = drive(origin, mon, 10, {2: lambda: origin.stall("r1")}) + mon.close()
    assert kinds(found) == [("manifest_stale", "", "v1", False), ("manifest_stale", "", "v1", True)]
    assert found[0].labels["uri"] == origin.url("r1")


def test_the_decoded_variant_leaving_the_master_is_one_manifest_error(origin: LadderOrigin) -> None:
    mon = monitor(origin.master_url)
    found = drive(origin, mon, 6, {2: lambda: origin.dropped.add("r0.m3u8"), 4: origin.dropped.clear})
    assert kinds(found) == [
        ("manifest_error", "variant_missing", "master", False),
        ("manifest_error", "variant_missing", "master", True),
    ]
    assert (found[1].start_s, found[1].end_s) == (T0 + 3.0, T0 + 5.0)
    assert found[0].labels["uri"] == origin.url("r0")


def test_cue_tags_of_a_live_playlist_are_read_as_cues(origin: LadderOrigin) -> None:
    section = tscue.splice_info_section(5, tscue.splice_insert(42, out=True, pts=None, duration=360_000))
    origin.tags[6] = ["#EXT-X-CUE-OUT:DURATION=4"]
    origin.tags[8] = [
        f'#EXT-X-DATERANGE:ID="b42",START-DATE="2030-01-01T00:00:00Z",SCTE35-OUT=0x{section.hex()}'
    ]
    origin.tags[10] = ["#EXT-X-CUE-IN"]
    mon = monitor(origin.master_url)
    assert drive(origin, mon, 8) == []
    cues = mon.drain_cues()
    assert [(c.pid, c.command, c.kind, c.event_id, c.duration_s) for c in cues] == [
        (-1, "EXT-X-CUE-OUT", "out", None, 4.0),
        (-1, "splice_insert", "out", 42, 4.0),
        (-1, "EXT-X-CUE-IN", "in", None, None),
    ]
    assert [c.arrival_s for c in cues] == [T0 + 3.0, T0 + 5.0, T0 + 7.0]  # the rounds that first showed them
    assert mon.drain_cues() == []


def test_a_source_that_is_no_playlist_ends_the_monitor(origin: LadderOrigin) -> None:
    mon = monitor(f"{origin.base}/r0_000.ts")
    assert mon.poll(T0) == []
    assert (mon.is_hls, mon.finished) == (False, True)


# ------------------------------------------------------------ in a session, and through the API


class Recorder:
    """A session's defects as they are emitted (from the decoding and the monitor's threads)."""

    def __init__(self) -> None:
        self.records: list[Defect] = []
        self._lock = threading.Lock()

    def __call__(self, defect: Defect, _evidence: object = None) -> None:
        with self._lock:
            self.records.append(defect)

    def of(self, kind: str) -> list[Defect]:
        with self._lock:
            return [r for r in self.records if r.type == kind]


def test_a_clean_live_testsrc_stream_raises_no_delivery_defect_in_the_session() -> None:
    recorder = Recorder()
    # Long enough to be live throughout, however slowly a loaded machine starts it; stopped early.
    with LiveSource.start("hls", duration_s=30.0, width=160, height=90, gop_s=1.0) as source:
        session = StreamSession("hls", SessionConfig(url=source.url), recorder)
        runner = threading.Thread(target=session.run)
        runner.start()
        wait_for(
            lambda: session.hls is not None and session.hls.polls >= 3, 30, what="three rounds of reloads"
        )
        session.stop.set()
        runner.join(30)
    assert not runner.is_alive()
    assert session.hls is not None and session.hls.fetches >= 6  # playlists and segment checks
    assert {r.type for r in recorder.records} & DELIVERY == set()


def test_a_playlist_that_stops_updating_is_manifest_stale_on_the_session_timeline(
    origin: LadderOrigin,
) -> None:
    recorder = Recorder()
    origin.advance(2)
    origin.run_live(1.0)
    session = StreamSession("hls", SessionConfig(url=origin.url("r0"), read_timeout_s=2.0), recorder)
    runner = threading.Thread(target=session.run)
    runner.start()
    wait_for(lambda: session.figures.frames_analysed > 25, 30, what="decoding")
    origin.stall("r0")
    at_stall = session.figures.media_time_s or 0.0
    wait_for(lambda: recorder.of("manifest_stale"), 20, what="manifest_stale")
    origin.stall("r0", False)
    wait_for(lambda: [r for r in recorder.of("manifest_stale") if r.end_s is not None], 20, what="its end")
    session.stop.set()
    runner.join(30)
    assert not runner.is_alive()
    opened, closed = recorder.of("manifest_stale")
    assert (opened.defect_id, opened.end_s) == (closed.defect_id, None)
    assert closed.metrics["uri"] == origin.url("r0") and closed.metrics["limit_s"] == 3.0
    # On the media timeline: about where the live edge was when the playlist stopped (the
    # decoding is behind it by FFmpeg's three segments of live delay, at most).
    assert at_stall - 1.0 <= closed.start_s <= at_stall + 4.0, (at_stall, closed)
    assert {r.type for r in recorder.records} & DELIVERY == {"manifest_stale"}


def test_the_playlist_cues_become_events_on_the_media_timeline(origin: LadderOrigin) -> None:
    origin.advance(2)
    origin.run_live(1.0)
    events: list[Event] = []
    session = StreamSession("hls", SessionConfig(url=origin.master_url), Recorder(), emit_event=events.append)
    runner = threading.Thread(target=session.run)
    runner.start()
    wait_for(lambda: session.figures.frames_analysed > 25, 30, what="decoding")
    with origin.lock:
        coming = origin.tracks["r0"].position + origin.window + 1  # two segments from now
        origin.tags[coming] = ["#EXT-X-CUE-OUT:DURATION=4"]
    wait_for(lambda: events, 20, what="the cue-out")
    media_time = session.figures.media_time_s or 0.0
    session.stop.set()
    runner.join(30)
    assert [(e.source, e.kind, e.duration_s) for e in events] == [("hls", "out", 4.0)]
    # Seen at the live edge (ahead of what is decoded by FFmpeg's live delay at most), its splice
    # the start of its segment: one segment (1 s) before that edge.
    (event,) = events
    assert event.splice_s is not None and abs(event.start_s - event.splice_s - 1.0) <= 0.1, event
    assert media_time - 1.0 <= event.start_s <= media_time + 5.0, (event, media_time)


def test_a_ladder_whose_second_rendition_stalls_is_reported_through_the_api(
    origin: LadderOrigin, router: Api, workers: WorkerFactory
) -> None:
    workers("hls1", AVMON_READ_TIMEOUT_S="2", AVMON_SIGNAL_LOSS_AFTER_S="1")
    origin.advance(2)
    origin.run_live(1.0)
    status, stream = router.call("POST", "/streams", {"url": origin.master_url, "name": "ladder"})
    assert status == 201
    sid = stream["stream_id"]
    wait_for(lambda: router.call("GET", f"/streams/{sid}")[1]["frames_analysed"] > 50, 30, what="decoding")
    origin.stall("r1")

    def stale() -> list[dict[str, object]]:
        return [
            d
            for d in router.call("GET", f"/streams/{sid}/defects")[1]["defects"]
            if d["type"] == "manifest_stale"
        ]

    found = wait_for(stale, 20, what="manifest_stale of the stalled rendition")
    router.call("DELETE", f"/streams/{sid}")
    assert [d["metrics"]["uri"] for d in found] == [origin.url("r1")]  # type: ignore[index]
    others = {d["type"] for d in router.call("GET", f"/streams/{sid}/defects")[1]["defects"]} & DELIVERY
    assert others == {"manifest_stale"}
