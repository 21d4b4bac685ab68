"""The project's one backoff schedule (shared/retry.py): known answers on a seeded generator."""

from __future__ import annotations

import random
from typing import Any

import pytest

from shared import aws, store
from shared.models import Defect, DefectType, defect_id_for
from shared.retry import Backoff, backoff_delay, exponential_delay
from worker.sink import DefectWriter


def test_the_delay_doubles_from_the_base_until_the_cap() -> None:
    assert [exponential_delay(a, 1.0, 60.0) for a in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_source_down_for_days_does_not_overflow_the_schedule() -> None:
    assert exponential_delay(10**6, 0.5, 30.0) == 30.0
    assert backoff_delay(10**6, 0.5, 30.0, rng=random.Random(1)) <= 30.0


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        exponential_delay(0, 1.0, 60.0)


def test_jittered_delays_are_known_for_a_seeded_generator() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(a, 1.0, 60.0, rng=rng) for a in range(1, 9)]
    assert delays == pytest.approx(
        [0.6619164, 1.1508492, 3.3018689, 4.2897451, 12.2870560, 21.8510227, 31.7399677, 45.2230720]
    )


def test_jitter_stays_between_half_and_all_of_the_delay() -> None:
    rng = random.Random(3)
    for attempt in range(1, 12):
        full = exponential_delay(attempt, 0.25, 20.0)
        for _ in range(50):
            assert full / 2 <= backoff_delay(attempt, 0.25, 20.0, rng=rng) <= full


def test_without_jitter_the_delay_is_exact() -> None:
    assert [backoff_delay(a, 0.4, 10.0, jitter=False) for a in range(1, 8)] == [
        0.4,
        0.8,
        1.6,
        3.2,
        6.4,
        10.0,
        10.0,
    ]


def test_retry_after_is_honoured_when_longer_up_to_the_cap() -> None:
    assert backoff_delay(1, 1.0, 60.0, rng=random.Random(7), retry_after_s=30.0) == 30.0
    assert backoff_delay(1, 1.0, 60.0, rng=random.Random(7), retry_after_s=600.0) == 60.0
    # Shorter than the drawn wait: the draw stands (the receiver asked for at least that long).
    assert backoff_delay(3, 1.0, 60.0, rng=random.Random(7), retry_after_s=0.1) == pytest.approx(2.6476655)


def test_it_reproduces_the_notifier_formula_draw_for_draw() -> None:
    """What worker/notify.py computed inline before: min(cap, base·2^(n−1)), uniform(d/2, d),
    then Retry-After up to the cap."""
    old, new = random.Random(11), random.Random(11)
    for attempt in range(1, 9):
        for retry_after in (None, 3.0):
            d = min(60.0, 1.0 * 2 ** (attempt - 1))
            expected = old.uniform(d / 2, d)
            if retry_after is not None:
                expected = min(60.0, max(expected, retry_after))
            assert backoff_delay(attempt, 1.0, 60.0, rng=new, retry_after_s=retry_after) == expected


@pytest.mark.parametrize("cap_s", [30.0, 2000.0])
def test_it_reproduces_the_session_reconnect_formula_draw_for_draw(cap_s: float) -> None:
    """Source reconnects (worker/reader.py) used to wait uniform(d/2, d), d = min(cap,
    0.5·2^min(attempt, 10)): the same as backoff_delay(min(attempt, 10), 1.0, cap), the mapping
    its switch-over uses."""
    old, new = random.Random(5), random.Random(5)
    for attempt in range(1, 16):
        d = min(cap_s, 0.5 * 2 ** min(attempt, 10))
        assert backoff_delay(min(attempt, 10), 1.0, cap_s, rng=new) == old.uniform(d / 2, d)


def test_it_reproduces_the_sink_schedule() -> None:
    """worker/sink.py waited min(10, 0.2·2^failures), without jitter."""
    assert [backoff_delay(f, 0.4, 10.0, jitter=False) for f in range(1, 10)] == [
        min(10.0, 0.2 * 2**f) for f in range(1, 10)
    ]


def test_backoff_waits_after_a_failure_until_its_delay_has_passed() -> None:
    now = [100.0]
    backoff = Backoff(base_s=0.4, cap_s=10.0, jitter=False, clock=lambda: now[0])
    assert not backoff.waiting
    assert backoff.failed() == 0.4
    assert backoff.waiting
    now[0] += 0.39
    assert backoff.waiting
    now[0] += 0.01
    assert not backoff.waiting


def test_backoff_grows_with_consecutive_failures_and_starts_over_after_a_success() -> None:
    backoff = Backoff(base_s=0.4, cap_s=10.0, jitter=False, clock=lambda: 0.0)
    assert [backoff.failed() for _ in range(7)] == [0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    backoff.succeeded()
    assert backoff.failed() == 0.4


def test_a_success_does_not_cut_a_running_wait_short() -> None:
    backoff = Backoff(base_s=5.0, cap_s=10.0, jitter=False, clock=lambda: 0.0)
    backoff.failed()
    backoff.succeeded()
    assert backoff.waiting


def test_backoff_jitters_from_its_generator_and_honours_retry_after() -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, rng=random.Random(7), clock=lambda: 0.0)
    assert backoff.failed() == pytest.approx(0.6619164)
    assert backoff.failed(retry_after_s=9.0) == 9.0
    assert backoff.until == 9.0


class _DownStore:
    """A DynamoDB client whose transactions fail as an unreachable store's do."""

    def __init__(self) -> None:
        self.calls = 0

    async def transact_write_items(self, **_: Any) -> None:
        self.calls += 1
        raise aws.RetryableError("store down")


async def test_the_sink_leaves_an_unreachable_store_alone_for_its_backoff_and_keeps_the_records() -> None:
    now = [0.0]
    ddb = _DownStore()
    sink = DefectWriter(ddb, store.Tables(streams="s", defects="d"), "w1", ttl_days=1)
    sink._backoff.clock = lambda: now[0]  # the schedule's clock, faked: no sleeping
    sink.fence("s1", 1)
    sink.submit(
        Defect(
            stream_id="s1",
            defect_id=defect_id_for("black", 1.0),
            type=DefectType.BLACK,
            start_s=1.0,
            start_at="2026-01-01T00:00:01.000Z",
            severity="critical",
            worker_id="w1",
        )
    )
    assert not await sink.flush() and ddb.calls == 1
    now[0] = 0.39
    assert not await sink.flush() and ddb.calls == 1  # 0.4 s after the first failure: not yet
    now[0] = 0.4
    assert not await sink.flush() and ddb.calls == 2
    now[0] = 1.19
    assert not await sink.flush() and ddb.calls == 2  # then 0.8 s
    assert sink.buffered == 1
