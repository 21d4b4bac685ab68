"""The incident rules (worker/notify/incidents.py) on a fake clock: no loop, no network, no sleep.

Media times (``start_s``/``end_s``) decide grouping and folding; the clock decides when a batch
or a held close is due.
"""

from __future__ import annotations

import pytest

from shared.models import Defect, DefectType, defect_id_for
from worker.notify.incidents import CLOSED, OPENED, Batch, IncidentTracker

BLACK, SILENCE, FREEZE = DefectType.BLACK, DefectType.SILENCE, DefectType.FREEZE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def tracker(clock: Clock, **options: float) -> IncidentTracker:
    return IncidentTracker(clock=clock, **{"coalesce_s": 1.0, "min_gap_s": 10.0, **options})


def record(kind: DefectType, start_s: float, end_s: float | None = None, *, stream: str = "cam") -> Defect:
    """The record the sink wrote: open while ``end_s`` is None."""
    return Defect.model_validate(
        {
            "stream_id": stream,
            "defect_id": defect_id_for(kind.value, start_s),
            "type": kind,
            "start_s": start_s,
            "end_s": end_s,
            "start_at": f"t+{start_s}",
            "end_at": None if end_s is None else f"t+{end_s}",
            "severity": "warning",
            "worker_id": "w",
        }
    )


def summary(batches: list[Batch]) -> list[tuple[str, str, list[str]]]:
    """(event, incident_id, [event_id...]) per batch, in the order they go out."""
    return [(b.event, b.incident.incident_id, [e.event_id for e in b.events]) for b in batches]


def did(kind: DefectType, start_s: float) -> str:
    return defect_id_for(kind.value, start_s)


# ------------------------------------------------------------------ opening and coalescing


def test_an_opened_defect_is_due_once_the_coalescing_wait_is_over(clock: Clock) -> None:
    t = tracker(clock)
    t.submit(record(BLACK, 12.0))
    assert t.due() == []
    assert t.next_deadline() == 1001.0
    clock.now = 1001.0
    assert summary(t.due()) == [(OPENED, f"inc-{did(BLACK, 12.0)}", [f"{did(BLACK, 12.0)}/{OPENED}"])]
    assert t.due() == [] and t.pending == 0


def test_the_same_record_written_twice_gives_one_event(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0)
    t.submit(record(BLACK, 12.0))
    t.submit(record(BLACK, 12.0))
    assert [len(b.events) for b in t.due()] == [1]
    t.submit(record(BLACK, 12.0))
    assert t.due() == [] and t.events == 1


def test_a_record_that_arrives_closed_gives_an_open_then_a_close(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=0.0)
    t.submit(record(BLACK, 12.0, 15.0))
    batches = t.due()
    assert [b.event for b in batches] == [OPENED, CLOSED]
    opened = batches[0].events[0].defect
    assert opened.end_s is None and opened.end_at is None  # an opened event never says its end
    assert batches[1].events[0].defect.end_s == 15.0


def test_black_and_silence_of_a_lost_feed_are_one_incident_in_one_message(clock: Clock) -> None:
    t = tracker(clock)
    t.submit(record(BLACK, 12.0))
    clock.now += 0.5
    t.submit(record(SILENCE, 12.3))
    clock.now += 0.5
    (batch,) = t.due()
    assert [e.defect.type for e in batch.events] == [BLACK, SILENCE]
    snapshot = batch.incident.snapshot()
    assert snapshot["title"] == "feed lost" and snapshot["state"] == "open"
    assert snapshot["types"] == ["black", "silence"]


def test_a_defect_starting_beyond_the_group_window_is_a_new_incident(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, group_window_s=2.0)
    t.submit(record(BLACK, 12.0))
    t.submit(record(SILENCE, 14.5))
    incidents = [b.incident.incident_id for b in t.due()]
    assert incidents == [f"inc-{did(BLACK, 12.0)}", f"inc-{did(SILENCE, 14.5)}"]


def test_a_late_member_gets_its_own_message_under_the_incident_with_the_new_title(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=1.0)
    t.submit(record(BLACK, 12.0))
    clock.now += 1.0
    (first,) = t.due()
    clock.now += 3.0  # wall clock: past the coalescing wait; media time: inside the window
    t.submit(record(FREEZE, 13.0))
    clock.now += 1.0
    (late,) = t.due()
    assert late.incident is first.incident
    assert [e.defect.type for e in late.events] == [FREEZE]
    assert late.incident.snapshot()["title"] == "black + freeze"


def test_streams_do_not_share_defect_ids_or_incidents(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0)
    t.submit(record(BLACK, 12.0, stream="a"))
    t.submit(record(BLACK, 12.0, stream="b"))
    assert [b.incident.stream_id for b in t.due()] == ["a", "b"]


# ------------------------------------------------------------------ closing, holding, folding


def test_a_close_is_held_for_the_minimum_gap_before_it_is_sent(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=10.0)
    t.submit(record(BLACK, 12.0))
    t.due()
    t.submit(record(BLACK, 12.0, 15.0))
    assert t.next_deadline() == 1010.0 and t.pending == 1
    clock.now = 1009.9
    assert t.due() == []
    clock.now = 1010.0
    (batch,) = t.due()
    assert batch.event == CLOSED
    snapshot = batch.incident.snapshot()
    assert snapshot["state"] == "closed" and snapshot["end_s"] == 15.0 and snapshot["end_at"] == "t+15.0"


def test_without_a_minimum_gap_a_close_is_not_held(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=0.0)
    t.submit(record(BLACK, 12.0))
    t.submit(record(BLACK, 12.0, 15.0))
    assert [b.event for b in t.due()] == [OPENED, CLOSED]


def test_a_flapping_defect_is_folded_into_one_open_and_one_close(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=10.0)
    t.submit(record(BLACK, 10.0))
    t.submit(record(BLACK, 10.0, 12.0))
    t.submit(record(BLACK, 15.0))  # 3 s of media after the held close ended: the same trouble
    t.submit(record(BLACK, 15.0, 16.0))
    t.submit(record(BLACK, 20.0))
    t.submit(record(BLACK, 20.0, 21.0))
    assert summary(t.due()) == [(OPENED, f"inc-{did(BLACK, 10.0)}", [f"{did(BLACK, 10.0)}/{OPENED}"])]
    clock.now += 10.0
    (batch,) = t.due()
    (close,) = batch.events
    assert close.event_id == f"{did(BLACK, 10.0)}/{CLOSED}"  # named after the episode's first defect
    assert close.flaps == 2 and close.folded_defect_ids == (did(BLACK, 15.0), did(BLACK, 20.0))
    assert close.defect.defect_id == did(BLACK, 10.0)
    assert (close.defect.end_s, close.defect.end_at) == (21.0, "t+21.0")  # the end of the last one
    assert t.folded == 2


def test_a_folded_episode_stays_open_until_its_last_member_closes(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=10.0)
    t.submit(record(BLACK, 10.0, 12.0))
    t.submit(record(BLACK, 15.0))  # folded, still open
    clock.now += 60.0
    assert [b.event for b in t.due()] == [OPENED]  # no close while a member is open
    t.submit(record(BLACK, 15.0, 18.0))
    clock.now += 10.0
    assert [b.event for b in t.due()] == [CLOSED]


def test_a_later_occurrence_of_the_same_type_releases_the_held_close_first(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=10.0, group_window_s=2.0)
    t.submit(record(BLACK, 10.0, 12.0))
    t.due()
    t.submit(record(BLACK, 40.0))  # 28 s after the end: a separate occurrence
    assert summary(t.due()) == [
        (CLOSED, f"inc-{did(BLACK, 10.0)}", [f"{did(BLACK, 10.0)}/{CLOSED}"]),
        (OPENED, f"inc-{did(BLACK, 40.0)}", [f"{did(BLACK, 40.0)}/{OPENED}"]),
    ]


def test_a_defect_joining_a_closed_incident_reopens_it(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=0.0)
    t.submit(record(BLACK, 12.0, 12.5))
    assert t.due()[-1].incident.snapshot()["state"] == "closed"
    t.submit(record(FREEZE, 13.0))
    (batch,) = t.due()
    assert batch.incident.snapshot()["state"] == "open"


def test_the_end_of_a_stream_releases_its_held_closes_at_once(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=10.0)
    t.submit(record(BLACK, 12.0, 15.0, stream="a"))
    t.submit(record(BLACK, 12.0, 15.0, stream="b"))
    t.due()
    t.end_stream("a")
    assert [(b.event, b.incident.stream_id) for b in t.due()] == [(CLOSED, "a")]
    assert t.pending == 1  # b's close is still held


def test_everything_takes_the_held_closes_and_the_waiting_batches(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=5.0, min_gap_s=10.0)
    t.submit(record(BLACK, 12.0, 15.0))
    assert [b.event for b in t.due(everything=True)] == [OPENED, CLOSED]
    assert t.pending == 0 and t.next_deadline() is None


# ------------------------------------------------------------------ acknowledgement


def test_an_acknowledged_episode_sends_nothing_more(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=10.0)
    t.submit(record(BLACK, 10.0))
    t.submit(record(SILENCE, 10.2))
    t.due()
    t.acknowledge("cam", [did(BLACK, 10.0), did(BLACK, 10.0)])
    t.submit(record(BLACK, 10.0, 12.0))
    t.submit(record(BLACK, 14.0))  # folded into the acknowledged episode: silent too
    t.submit(record(BLACK, 14.0, 15.0))
    t.submit(record(SILENCE, 10.2, 12.0))
    clock.now += 10.0
    assert [(b.event, [e.defect.type for e in b.events]) for b in t.due()] == [(CLOSED, [SILENCE])]
    assert t.acknowledged == 1


def test_acknowledging_an_unknown_defect_changes_nothing(clock: Clock) -> None:
    t = tracker(clock, coalesce_s=0.0, min_gap_s=0.0)
    t.submit(record(BLACK, 10.0))
    t.acknowledge("cam", ["no-such-defect"])
    t.acknowledge("other-stream", [did(BLACK, 10.0)])
    t.submit(record(BLACK, 10.0, 11.0))
    assert [b.event for b in t.due()] == [OPENED, CLOSED] and t.acknowledged == 0
