"""The worker's loop in process: claim, renew, shed and stop.

Real AWS APIs (aioboto3) against the emulator over HTTP, sessions that decode nothing, and a
clock the test moves: a rule that waits 20 s is tested without waiting. The multi-process fault
tests (tests/test_faults.py) keep what needs real processes: SIGKILL, SIGTERM, real media.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from shared import store
from shared.models import Desired, StreamStatus
from shared.settings import WorkerSettings
from tests.conftest import Stack
from tests.support import wait_for_async
from tests.test_leases import new_stream
from worker.admission import LOAD_SAMPLE_S
from worker.assignments import AssignmentQueue
from worker.clients import Clients
from worker.detectors import StreamContext
from worker.main import Worker
from worker.session import Figures, Outcome, SessionConfig

WORKER = "w1"
LEASE_PERIOD_S = 3.0  # renewed every 1 s of the test's clock


class SteppedClock:
    """Monotonic seconds that move only when the test says so; ``sleep`` waits for them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: dict[asyncio.Future[None], tuple[float, asyncio.Task[Any] | None]] = {}

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        if delay_s <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers[wake] = (self.now + delay_s, asyncio.current_task())
        try:
            await wake
        finally:
            self._sleepers.pop(wake, None)

    def _settled(self, tasks: list[asyncio.Task[Any]]) -> bool:
        """Every task in ``tasks`` has ended or sleeps again."""
        asleep = {id(t) for _, t in self._sleepers.values()}
        return all(t.done() or id(t) in asleep for t in tasks)

    async def advance(self, seconds: float) -> None:
        """Move on by ``seconds``: each sleeper is woken at its time, in order, and runs (its
        AWS calls included) until it sleeps again or ends, before time moves on."""
        end = self.now + seconds
        while due := [at for at, _ in self._sleepers.values() if at <= end]:
            self.now = max(self.now, min(due))
            woken = [(w, task) for w, (at, task) in self._sleepers.items() if at <= self.now]
            for wake, _ in woken:
                del self._sleepers[wake]
                wake.set_result(None)
            tasks = [task for _, task in woken if task is not None]
            await wait_for_async(partial(self._settled, tasks), interval_s=0.002, what="the woken loops")
        self.now = end


class FakeSession:
    """A session that decodes nothing: it runs until stopped, or ends with the outcome the test
    gives it. Its figures are the test's to set; its CPU grows at 0.05 cores on the test's clock."""

    def __init__(self, stream_id: str, stop: threading.Event, clock: SteppedClock) -> None:
        self.stream_id, self.stop, self._clock = stream_id, stop, clock
        self._figures = Figures(pixel_rate=640 * 360 * 25, lag_s=0.0)
        self._t0 = clock()
        self.ctx = StreamContext()
        self.recorder = None
        self._ended: tuple[Outcome, str | None] | None = None

    @property
    def figures(self) -> Figures:
        self._figures.cpu_s = 0.05 * (self._clock() - self._t0)
        return self._figures

    def end(self, outcome: Outcome, reason: str | None = None) -> None:
        self._ended = (outcome, reason)

    def run(self) -> tuple[Outcome, str | None]:
        while self._ended is None and not self.stop.wait(0.002):
            pass
        return self._ended or (Outcome.STOPPED, None)

    def mark_overloaded(self, flag: bool) -> None:
        self._figures.overloaded = flag

    def timeline(self) -> None:
        return None

    def transport_counters(self) -> None:
        return None


class Sessions:
    """The test's session factory: every session it made, in order; ``outcome``: each session
    ends by itself with it (None: runs until the worker stops it)."""

    def __init__(self, clock: SteppedClock, outcome: Outcome | None = None) -> None:
        self.clock, self.outcome = clock, outcome
        self.made: list[FakeSession] = []

    def __call__(self, stream_id: str, config: SessionConfig, **wiring: Any) -> FakeSession:
        session = FakeSession(stream_id, wiring["stop"], self.clock)
        if self.outcome is not None:
            session.end(self.outcome)
        self.made.append(session)
        return session

    def of(self, stream_id: str) -> FakeSession:
        (session,) = [s for s in self.made if s.stream_id == stream_id]
        return session


class World:
    """The test's stack as the worker sees it, with the test's clock and sessions."""

    def __init__(self, stack: Stack, clients: Clients, tmp_path: Path) -> None:
        self.stack, self.clients, self.tmp_path = stack, clients, tmp_path
        self.clock = SteppedClock()
        self.sessions = Sessions(self.clock)
        self.tables = store.Tables.from_settings(WorkerSettings())
        self.queue = AssignmentQueue(clients.sqs, stack.queue_url)

    def worker(self, *, burst: bool = False, **settings: Any) -> Worker:
        settings.setdefault("lease_period_s", LEASE_PERIOD_S)
        s = WorkerSettings(worker_id=WORKER, health_file=str(self.tmp_path / "health"), **settings)
        return Worker(
            s,
            clients=self.clients,
            queue_url=self.stack.queue_url,
            clock=self.clock,
            sleep=self.clock.sleep,
            sessions=self.sessions,
            cores=lambda: 2.0,
            burst=burst,
        )

    async def submit(self, stream_id: str, *, deliveries: int = 1) -> None:
        """A stream to run (as ``POST /streams`` writes it) and its assignment message."""
        await new_stream(self.clients.ddb, self.tables, stream_id)
        for _ in range(deliveries):
            await self.queue.send(stream_id, 1)

    async def item(self, stream_id: str) -> dict[str, Any]:
        reply = await self.clients.ddb.get_item(**store.get_stream(self.tables, stream_id))
        return store.unmarshal(reply["Item"])

    async def state(self, stream_id: str) -> tuple[str | None, str, str]:
        """The stream's owner, status and desired state."""
        item = await self.item(stream_id)
        return item.get("owner"), item["status"], item["desired"]

    async def queued_is(self, count: int) -> bool:
        return await self.queued() == count

    async def queued(self) -> int:
        """Messages in the assignment queue, visible or not."""
        reply = await self.clients.sqs.get_queue_attributes(
            QueueUrl=self.stack.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return sum(int(v) for v in reply["Attributes"].values())


@pytest.fixture
def world(stack: Stack, worker_clients: Clients, tmp_path: Path) -> World:
    return World(stack, worker_clients, tmp_path)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """The worker's loop in a task; stopped (its leases handed back) after the block."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 5.0)


async def taken(world: World, worker: Worker, stream_id: str) -> None:
    """``stream_id`` submitted and taken by ``worker``."""
    await world.submit(stream_id)
    await wait_for_async(lambda: stream_id in worker.running, what=f"{stream_id} taken")


# ------------------------------------------------------------------ claim


async def test_a_burst_worker_takes_the_queued_streams_and_returns_once_they_are_done(world: World) -> None:
    world.sessions.outcome = Outcome.COMPLETED
    await world.submit("s-000001")
    await world.submit("s-000002")

    await asyncio.wait_for(world.worker(burst=True).run(), 5.0)

    assert sorted(s.stream_id for s in world.sessions.made) == ["s-000001", "s-000002"]
    for sid in ("s-000001", "s-000002"):
        assert await world.state(sid) == (None, StreamStatus.COMPLETED, Desired.STOPPED)
    assert await world.queued() == 0


async def test_a_queued_stream_is_claimed_under_a_lease_once_however_often_it_is_delivered(
    world: World,
) -> None:
    worker = world.worker(poll_wait_s=1)
    async with running(worker):
        await world.submit("s-000001", deliveries=2)
        await wait_for_async(lambda: "s-000001" in worker.running, what="the claim")
        claimed_at = time.time()
        item = await world.item("s-000001")
        assert (item["owner"], item["lease_counter"], item["status"]) == (WORKER, 1, StreamStatus.MONITORING)
        assert claimed_at < float(item["lease_expires_at"]) <= claimed_at + LEASE_PERIOD_S
        await wait_for_async(lambda: world.queued_is(0), what="both commands spent")
        assert [s.stream_id for s in world.sessions.made] == ["s-000001"]
        assert (await world.item("s-000001"))["lease_counter"] == 1


# ------------------------------------------------------------------ renew


async def test_the_lease_is_renewed_every_third_of_its_period_with_the_streams_figures(world: World) -> None:
    worker = world.worker(poll_wait_s=1)
    async with running(worker):
        await taken(world, worker, "s-000001")
        world.sessions.of("s-000001").figures.frames_analysed = 42
        first = await world.item("s-000001")

        await world.clock.advance(LEASE_PERIOD_S / 3 - 0.1)
        assert (await world.item("s-000001")).get("frames_analysed") is None  # not yet renewed

        await world.clock.advance(0.1)
        renewed = await world.item("s-000001")
        assert renewed["frames_analysed"] == 42
        assert float(renewed["lease_expires_at"]) > float(first["lease_expires_at"])
        assert (renewed["owner"], renewed["lease_counter"]) == (WORKER, 1)
        assert not world.sessions.of("s-000001").stop.is_set()


async def test_a_lost_lease_stops_its_session_at_the_next_renewal_and_is_not_released(world: World) -> None:
    worker = world.worker(poll_wait_s=1)
    async with running(worker):
        await taken(world, worker, "s-000001")
        steal = store.steal_lease(
            world.tables, "s-000001", 1, worker_id="w2", victim=WORKER, victim_counter=1,
            now=time.time(), period_s=30,
        )  # fmt: skip
        await world.clients.ddb.update_item(**steal)

        await world.clock.advance(LEASE_PERIOD_S / 3)

        assert world.sessions.of("s-000001").stop.is_set()
        assert "s-000001" not in worker.running
        await asyncio.sleep(0.05)  # the session's end, had it released anything
        item = await world.item("s-000001")
        assert (item["owner"], item["lease_counter"]) == ("w2", 2)


# ------------------------------------------------------------------ shed


async def test_over_capacity_the_most_recently_taken_stream_is_handed_back_one_at_a_time(
    world: World,
) -> None:
    recover_s = 6.0
    worker = world.worker(poll_wait_s=1, lease_period_s=30, takeover_scan_s=600, shed_recover_s=recover_s)
    async with running(worker):
        for sid in ("s-000001", "s-000002", "s-000003"):  # taken 1 s apart: s-3 is the most recent
            await taken(world, worker, sid)
            await world.clock.advance(1.0)
        sessions = [world.sessions.of(sid) for sid in ("s-000001", "s-000002", "s-000003")]

        stopped_at: dict[str, float] = {}  # stream → the test's clock when its session was stopped
        for step in range(1, 12):  # every stream falls further behind its live edge
            for session in sessions:
                session.figures.lag_s = 10.0 + step
            await world.clock.advance(LOAD_SAMPLE_S)
            for session in sessions:
                if session.stop.is_set():
                    stopped_at.setdefault(session.stream_id, world.clock())
            if len(stopped_at) == 2:
                break

        assert list(stopped_at) == ["s-000003", "s-000002"]
        assert stopped_at["s-000002"] - stopped_at["s-000003"] == pytest.approx(recover_s)
        assert not sessions[0].stop.is_set()
        assert sessions[0].figures.overloaded  # what it finds now is marked monitor_overloaded
        await wait_for_async(lambda: set(worker.running) == {"s-000001"}, what="the hand-backs settled")
        for sid in ("s-000002", "s-000003"):
            assert await world.state(sid) == (None, StreamStatus.PENDING, Desired.RUNNING)
        assert await world.queued() == 2  # re-enqueued, for a worker that can keep up


# ------------------------------------------------------------------ stop


async def test_a_stop_request_stops_the_stream_and_releases_its_lease(world: World) -> None:
    worker = world.worker(poll_wait_s=1)
    async with running(worker):
        await taken(world, worker, "s-000001")
        await world.clients.ddb.update_item(**store.stop_stream(world.tables, "s-000001", time.time()))

        await world.clock.advance(LEASE_PERIOD_S / 3)

        assert world.sessions.of("s-000001").stop.is_set()
        await wait_for_async(lambda: not worker.running, what="the release")
        assert await world.state("s-000001") == (None, StreamStatus.STOPPED, Desired.STOPPED)


async def test_shutdown_hands_every_stream_back_to_the_queue(world: World) -> None:
    worker = world.worker(poll_wait_s=1)
    async with running(worker) as task:
        await taken(world, worker, "s-000001")
        await taken(world, worker, "s-000002")
        await wait_for_async(lambda: world.queued_is(0), what="both commands spent")

        worker.request_stop()
        await asyncio.wait_for(task, 5.0)

    assert all(s.stop.is_set() for s in world.sessions.made)
    for sid in ("s-000001", "s-000002"):
        assert await world.state(sid) == (None, StreamStatus.PENDING, Desired.RUNNING)
        assert (await world.item(sid))["reason"] == "handed back by its worker"
    assert await world.queued() == 2  # others take them at once
