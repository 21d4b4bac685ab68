"""SCTE-35 cues in a live UDP stream, end to end: injected into real FFmpeg MPEG-TS by
``avmon.tscue`` (PMT rewritten), sent paced over loopback to a session (one 12 s run for the
module), then written by the worker's sink to the emulator and read through the API: the cues as
events with their splice times and durations, and the ad-marker defects (short pre-roll, a splice
off its IDR, a missing cue-in, cues that stop)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import av
import pytest

from avmon.tscue import CueTruth, inject_cues, parse_cues
from router.handler import lambda_handler
from router.local import LambdaContext
from shared import aws, store
from shared.models import Defect, Event
from tests.conftest import Stack, load_event
from tests.media import transport_sources
from tests.support import needs_ffmpeg
from tests.transport_media import monitor_udp
from worker.cue_events import CueEvents, EventLimits
from worker.leases import LeaseTable
from worker.sink import DefectWriter
from worker.transport import TransportOptions
from worker.transport.cues import Cue

pytestmark = needs_ffmpeg
CUES_LOST_S = 3.0
SPLICE_TOLERANCE_S = 0.002  # splice times come from the section's PTS: exact to the tick


@dataclass
class Run:
    origin_s: float  # the source PTS (s) at media time 0: its earliest first timestamp
    truth: list[CueTruth]
    defects: list[Defect]
    events: list[Event]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    source = transport_sources()["vbr"]  # -g 50 at 25 fps: an IDR every 2 s
    with av.open(io.BytesIO(source), format="mpegts") as container:
        video = container.streams.video[0]
        assert video.time_base is not None
        keys = [p.pts * float(video.time_base) for p in container.demux(video) if p.is_keyframe and p.pts]
        origin = min(float(s.start_time * s.time_base) for s in container.streams if s.time_base)
    # A cue-out on an IDR sent 3.7 s ahead (short), whose cue-in never comes; a time_signal
    # 5 s ahead whose splice time falls between IDRs; then nothing: cues stop.
    cued = inject_cues(source, parse_cues(
        f"out@1:pts={keys[2]}:duration=2:id=1,signal@2:preroll=5:duration=20:id=9:type=0x30"))
    options = TransportOptions(cues_lost_s=CUES_LOST_S)
    _, defects, events = monitor_udp(cued.data, cued.arrival, transport=options)
    return Run(origin, cued.truth, defects, events)


def closed(run: Run, type_: str) -> list[Defect]:
    return [d for d in run.defects if d.type == type_ and d.end_s is not None]


def test_splice_insert_is_an_event_with_its_splice_time_and_duration(run: Run) -> None:
    (event,) = [e for e in run.events if e.type == "splice_insert"]
    truth = run.truth[0]
    assert truth.splice_pts_s is not None and event.splice_s is not None
    assert (event.kind, event.splice_event_id, event.duration_s) == ("out", 1, 2.0)
    assert event.splice_s == pytest.approx(truth.splice_pts_s - run.origin_s, abs=SPLICE_TOLERANCE_S)
    # Its arrival on the media timeline: the media time of what came with it, which the mux sent
    # ahead of the clock (PCR) the pre-roll is measured on, by under a second.
    assert 0.0 <= truth.preroll_s - (event.splice_s - event.start_s) <= 1.0


def test_time_signal_is_an_event_with_its_segmentation(run: Run) -> None:
    (event,) = [e for e in run.events if e.type == "time_signal"]
    truth = run.truth[1]
    assert truth.splice_pts_s is not None and event.splice_s is not None
    assert (event.kind, event.splice_event_id, event.duration_s) == ("out", 9, 20.0)
    assert (event.segmentation_type_id, event.segmentation_type) == (0x30, "provider_advertisement_start")
    assert event.splice_s == pytest.approx(truth.splice_pts_s - run.origin_s, abs=SPLICE_TOLERANCE_S)


def test_short_preroll_is_a_defect_of_the_session(run: Run) -> None:
    (short,) = closed(run, "splice_preroll_short")
    assert short.metrics["preroll_s"] == pytest.approx(run.truth[0].preroll_s, abs=0.05)


def test_splice_between_idrs_is_misaligned_and_one_on_an_idr_is_not(run: Run) -> None:
    (bad,) = closed(run, "splice_misaligned")
    assert bad.metrics["event_id"] == 9
    assert bad.metrics["keyframe_offset_s"] == pytest.approx(-0.3, abs=0.002)
    truth = run.truth[1]
    assert truth.splice_pts_s is not None
    assert bad.start_s == pytest.approx(truth.splice_pts_s - run.origin_s, abs=0.05)  # the picture there


def test_cue_out_without_cue_in_is_cue_in_missing(run: Run) -> None:
    (missing,) = closed(run, "cue_in_missing")
    assert missing.metrics["event_id"] == 1
    # Judged on the arrival clock, as the cue's own arrival (its event's start_s) is.
    (cue_out,) = [e for e in run.events if e.splice_event_id == 1]
    expected_return = cue_out.start_s + run.truth[0].preroll_s + 2.0
    assert missing.start_s == pytest.approx(expected_return, abs=0.3)


def test_cues_stopping_is_cues_lost(run: Run) -> None:
    lost = [d for d in run.defects if d.type == "cues_lost"]
    assert [d.end_s is None for d in lost] == [True, False]  # opened, closed when the stream stopped
    last_cue = max(e.start_s for e in run.events)
    assert lost[0].start_s == pytest.approx(last_cue + CUES_LOST_S, abs=0.5)


# -- the worker's sink, DynamoDB, the API


@pytest.fixture
async def ddb(stack: Stack) -> AsyncIterator[Any]:
    async with aws.async_session().client("dynamodb", config=aws.CLIENT_CONFIG) as client:
        yield client


def api_get(path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
    event = load_event("function_url_get_streams.json", rawPath=path, queryStringParameters=query)
    event["requestContext"]["http"]["path"] = path
    result = lambda_handler(event, LambdaContext())
    return result["statusCode"], json.loads(result["body"])


async def written(ddb: Any, stack: Stack, run: Run, told: list[Event] | None = None) -> str:
    """A stream whose lease a writer holds, with the run's defects and events written by it
    (``told``: the events its ``on_event_written`` was called with, for the notifier)."""
    tables = store.Tables(streams=f"{stack.prefix}-streams", defects=f"{stack.prefix}-defects")
    sid = "s-cue000000001"
    await ddb.put_item(**store.put_new_stream(tables, stream_id=sid, url="udp://@:5000", name=None,
                                              realtime=False, client_token=None, now=time.time()))
    lease = await LeaseTable(ddb, tables, "w", 10).claim(sid, 1)
    assert lease is not None
    on_event = None if told is None else told.append
    writer = DefectWriter(ddb, tables, "w", ttl_days=1, on_event_written=on_event)
    writer.fence(sid, lease.counter)
    for d in run.defects:
        writer.submit(d.model_copy(update={"stream_id": sid}))
    for e in run.events:
        writer.submit_event(e.model_copy(update={"stream_id": sid}))
    assert await writer.flush()
    return sid


async def test_events_are_read_through_the_api_in_media_time_order(ddb: Any, stack: Stack, run: Run) -> None:
    sid = await written(ddb, stack, run)
    status, body = api_get(f"/streams/{sid}/events")
    assert status == 200, body
    assert [(e["type"], e["splice_s"], e["duration_s"]) for e in body["events"]] == [
        (e.type, e.splice_s, e.duration_s) for e in sorted(run.events, key=lambda e: e.start_s)
    ]
    status, body = api_get(f"/streams/{sid}/events", {"type": "time_signal"})
    assert [e["segmentation_type"] for e in body["events"]] == ["provider_advertisement_start"]


async def test_each_written_event_is_handed_on_once_for_notification(
    ddb: Any, stack: Stack, run: Run
) -> None:
    told: list[Event] = []
    await written(ddb, stack, run, told)
    assert sorted(e.event_id for e in told) == sorted(e.event_id for e in run.events)


async def test_events_page_and_a_defect_token_is_refused(ddb: Any, stack: Stack, run: Run) -> None:
    sid = await written(ddb, stack, run)
    status, first = api_get(f"/streams/{sid}/events", {"limit": "1"})
    assert status == 200 and len(first["events"]) == 1 and first["next_token"]
    _, second = api_get(f"/streams/{sid}/events", {"limit": "1", "next_token": first["next_token"]})
    paged = [e["event_id"] for e in first["events"] + second["events"]]
    assert paged == sorted(e.event_id for e in run.events)
    token = store.encode_page_token(store.marshal({"stream_id": sid, "defect_id": "000000001.000-black"}))
    assert token is not None
    status, _ = api_get(f"/streams/{sid}/events", {"next_token": token})
    assert status == 400


async def test_ad_marker_defects_are_read_through_the_api_without_the_events(
    ddb: Any, stack: Stack, run: Run
) -> None:
    sid = await written(ddb, stack, run)
    status, body = api_get(f"/streams/{sid}/defects")
    assert status == 200, body
    types = {d["type"] for d in body["defects"]}
    assert {"splice_preroll_short", "splice_misaligned", "cue_in_missing", "cues_lost"} <= types
    assert all(d["defect_id"][0].isdigit() for d in body["defects"])


# -- the bound on events (pure)


def cue(arrival_s: float, command: str = "splice_insert", event_id: int = 1, splice_pts_s: float = 10) -> Cue:
    return Cue(arrival_s, 500, command, "out", event_id, splice_pts_s, splice_pts_s - arrival_s, None, 30.0)


def test_heartbeats_are_not_events() -> None:
    assert not CueEvents().admit(cue(0.0, "splice_null"))


def test_a_repeated_cue_is_one_event_and_another_splice_is_another() -> None:
    events = CueEvents()
    assert [events.admit(cue(t)) for t in (1.0, 2.0, 3.0)] == [True, False, False]  # sent 3 times
    assert events.admit(cue(4.0, splice_pts_s=40.0))
    assert (events.admitted, events.repeats) == (2, 2)


def test_a_flood_of_cues_is_bounded() -> None:
    now = [0.0]
    events = CueEvents(EventLimits(burst=5, per_minute=60), clock=lambda: now[0])
    admitted = sum(events.admit(cue(i * 0.001, event_id=i)) for i in range(1000))
    assert admitted == 5 and events.dropped == 995
    now[0] += 2.0  # two seconds later: two more
    assert sum(events.admit(cue(10 + i, event_id=2000 + i)) for i in range(10)) == 2
