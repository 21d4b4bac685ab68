"""The worker process: take streams as capacity allows, hold their leases, run their sessions.

asyncio at the edges (SQS, DynamoDB, timers); one thread per stream for open → decode → detect.
SIGTERM (ECS) and SIGINT only set an event: the worker stops taking work, stops its sessions,
flushes defects, releases the leases and re-enqueues the streams so other workers take them at
once, within ``stop_grace_s`` (shorter than ECS's 30 s ``stopTimeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from shared import aws, store
from shared.models import Defect, Event, StreamStatus
from shared.settings import WorkerSettings
from worker import metrics
from worker.admission import LOAD_SAMPLE_S, Load
from worker.alerts import Alerts
from worker.assignments import AssignmentQueue
from worker.balance import balance_round
from worker.capacity import StreamLoad, available_cores
from worker.clients import Clients, aws_clients, queue_url
from worker.detectors import check_detector_options, layered
from worker.hls_monitor import HlsOptions
from worker.leases import Lease, LeaseTable, Renewal
from worker.running import Running, Session, SessionFactory
from worker.session import Outcome, SessionConfig, StreamSession
from worker.shards import MediaPool
from worker.sink import DefectWriter
from worker.transport import TransportOptions

log = logging.getLogger("avmon.worker")

LEAVE_SHED_S = 20  # an assignment for a stream this worker shed is hidden this long (s) for others


class Worker:
    """Takes streams as its capacity allows, holds their leases and runs their sessions.

    ``clients`` and ``queue_url`` (the assignment queue) are open AWS clients (:func:`serve` builds
    them from the settings); ``clock`` (monotonic seconds) and ``sleep`` time every rule and
    loop; ``sessions`` makes a taken stream's session (None: a StreamSession in a media process
    when the settings ask for more than one, else in a thread of this one); ``cores``: the CPU
    cores the worker may use. ``burst``: return once every taken stream has finished and the
    queue is empty.
    """

    def __init__(
        self,
        settings: WorkerSettings | None = None,
        *,
        clients: Clients,
        queue_url: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sessions: SessionFactory | None = None,
        cores: Callable[[], float] = available_cores,
        burst: bool = False,
    ) -> None:
        self.settings = s = settings or WorkerSettings()
        check_detector_options(s.detector_options)  # refuse to start on a typo
        self.burst = burst
        self._clock, self._sleep = clock, sleep
        self.tables = store.Tables.from_settings(s)
        self.running: dict[str, Running] = {}
        self.stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._claiming: set[str] = set()
        self._beat = clock()
        self.load = Load(s, cores=cores, cpu_s=self._cpu_s, clock=clock)
        self.admission = self.load.admission
        self.pool: MediaPool | None = None
        if sessions is None:
            processes = s.media_processes or max(1, round(self.admission.cores))
            # Streams in child processes, a GIL each (worker/shards.py); 1: in this process, threads.
            if processes > 1:
                self.pool = MediaPool(processes, switch_interval_s=GIL_SWITCH_INTERVAL_S)
        self.sessions: SessionFactory = sessions or self._media_session
        self.clients = clients
        self.queue = AssignmentQueue(clients.sqs, queue_url)
        self.leases = LeaseTable(clients.ddb, self.tables, s.worker_id, s.lease_period_s)
        self.alerts = Alerts(s, self.tables, clients.ddb, clients.sns, self._webhook_of)
        self.notifier = self.alerts.notifier
        self.sink = DefectWriter(
            clients.ddb,
            self.tables,
            s.worker_id,
            ttl_days=s.defect_ttl_days,
            on_written=self.alerts.defect_written,
            on_event_written=self.alerts.cue_written,
        )

    def _cpu_s(self) -> float:
        """CPU time of this process and its media processes."""
        return time.process_time() + (self.pool.cpu_s() if self.pool is not None else 0.0)

    @property
    def free(self) -> int:
        """Streams this worker can take now: by their measured cost (worker.capacity)."""
        return self.load.free(self.running)

    @property
    def capacity(self) -> int:
        """What it holds plus what it can take now (published in the registry and metrics)."""
        return len(self.running) + self.free

    def request_stop(self) -> None:
        self.stopping.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A background task, referenced until it ends (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(self, event: asyncio.Event, timeout_s: float) -> None:
        """Until ``event`` is set, or for ``timeout_s`` on the worker's clock."""
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._sleep(timeout_s))]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # ------------------------------------------------------------ the process

    async def run(self) -> None:
        """Until :meth:`request_stop` (or, in burst mode, until there is nothing left to do)."""
        self._loop = asyncio.get_running_loop()
        if self.pool is not None:
            await asyncio.to_thread(self.pool.start)
        log.info(
            "worker %s up: %.1f cores, streams taken up to %.0f%% of them (at most %d), "
            "in %d media processes",
            self.settings.worker_id,
            self.admission.cores,
            100 * self.admission.target,
            self.settings.worker_capacity,
            self.pool.processes if self.pool is not None else 1,
        )
        tasks = [
            asyncio.create_task(self._poll_loop(), name="poll"),
            asyncio.create_task(self._renew_loop(), name="renew"),
            asyncio.create_task(self._balance_loop(), name="balance"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._load_loop(), name="load"),
            asyncio.create_task(self._metrics(), name="metrics"),
            asyncio.create_task(self.notifier.run(self.stopping), name="notifier"),
            asyncio.create_task(self.sink.run(self.settings.flush_interval_s, self.stopping), name="sink"),
        ]
        try:
            await self.stopping.wait()
        finally:
            for task in tasks[:6]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self._shutdown()
            finally:
                if self.pool is not None:
                    await asyncio.to_thread(self.pool.close)
        log.info("worker %s stopped", self.settings.worker_id)

    async def _shutdown(self) -> None:
        """Hand every stream back, with its defects written, before the grace period ends."""
        deadline = self._clock() + self.settings.stop_grace_s
        for running in self.running.values():
            running.handed_back = True
            running.stop.set()
        if self.running:
            pending = [r.done for r in self.running.values()]
            await asyncio.wait(pending, timeout=max(0.1, deadline - self._clock() - 3.0))
        for stream_id, running in list(self.running.items()):
            await self._finish(stream_id, running, deadline)
        while self.sink.buffered and self._clock() < deadline:
            if not await self.sink.flush():
                await self._sleep(0.2)
        await self.notifier.drain(max(0.5, deadline - self._clock()))
        await self.notifier.aclose()
        with contextlib.suppress(aws.AvmonError):
            await self.leases.goodbye()

    # ------------------------------------------------------------ taking work

    async def _poll_loop(self) -> None:
        while not self.stopping.is_set():
            if self.free <= 0:
                self._slot_freed.clear()
                await self._wait(self._slot_freed, 5.0)
                continue
            wait_s = 0 if self.burst else self.settings.poll_wait_s
            try:
                received = await self.queue.receive(self.free, wait_s)
            except aws.AvmonError as exc:
                log.warning("assignment queue unavailable: %s", exc)
                await self._sleep(2.0)
                continue
            for message in received:
                await self._handle(message)
            if self.burst and not received:
                if not self.running:  # every taken stream has finished and the queue is empty
                    self.request_stop()
                    return
                self._slot_freed.clear()  # rather than poll an empty queue in a tight loop
                await self._wait(self._slot_freed, 5.0)

    async def _handle(self, message: Any) -> None:
        assignment = message.assignment
        try:
            if assignment is None:
                await self.queue.reject(message)
                return
            if self.load.shed_recently(assignment.stream_id):
                # For a worker that can keep up with it; hidden a while, or this one would
                # receive it again at once, and again.
                await self.queue.leave(message.receipt, delay_s=LEAVE_SHED_S)
                return
            if assignment.stream_id not in self.running and self.free > 0:
                await self._take(assignment.stream_id, assignment.generation)
            # Claimed, stale, duplicate or held by someone: the command is spent either way.
            await self.queue.delete(message.receipt)
        except aws.AvmonError as exc:
            log.warning("assignment %s not handled (%s); it will be redelivered", message.body[:100], exc)

    async def _take(self, stream_id: str, generation: int) -> bool:
        # The assignment path and the balance loop run concurrently: one claim at a time per
        # stream, or a worker could claim a stream twice and lose the first claim to itself.
        if stream_id in self.running or stream_id in self._claiming:
            return False
        self._claiming.add(stream_id)
        try:
            lease = await self.leases.claim(stream_id, generation)
        finally:
            self._claiming.discard(stream_id)
        if lease is None:
            return False
        self._start(lease)
        return True

    async def _balance_loop(self) -> None:
        """With room to spare, a balance round (worker/balance.py: failover, then scale-out) every
        ``takeover_scan_s``. A full worker never scans."""
        while not self.stopping.is_set():
            await self._sleep(self.settings.takeover_scan_s)
            if self.free <= 0 or self.stopping.is_set():
                continue
            try:
                await balance_round(
                    self.leases, room=lambda: self.free, skip=self._leave, take=self._take, start=self._start
                )
            except aws.AvmonError as exc:
                log.warning("balance scan failed: %s", exc)

    def _leave(self, stream_id: str) -> bool:
        """Not to adopt: held here already, or handed back lately (for a worker that keeps up)."""
        return stream_id in self.running or self.load.shed_recently(stream_id)

    def _webhook_of(self, stream_id: str) -> str | None:
        running = self.running.get(stream_id)
        return running.lease.webhook_url if running is not None else None

    # ------------------------------------------------------------ one stream

    def _media_session(self, stream_id: str, config: SessionConfig, **wiring: Any) -> Session:
        """The default sessions: in the media process with the fewest streams, else in a thread
        of this process."""
        if self.pool is not None:
            try:
                return self.pool.session(stream_id, config, **wiring)
            except RuntimeError as exc:  # then in this process, as with one media process
                log.error("stream %s runs in the worker's own process: %s", stream_id, exc)
        return StreamSession(stream_id, config, evidence=True, **wiring)

    def _start(self, lease: Lease) -> None:
        assert self._loop is not None
        current = self.running.get(lease.stream_id)
        if current is not None:  # already ours: keep the session, hold the newer lease
            current.lease = lease
            self.sink.fence(lease.stream_id, lease.counter)
            return
        loop = self._loop
        stop = threading.Event()
        s = self.settings
        config = SessionConfig(
            url=lease.url,
            realtime=lease.realtime,
            loudness_profile=lease.loudness_profile,
            detectors=lease.detectors,
            detector_options=layered(s.detector_options, lease.detector_options),
            open_timeout_s=s.open_timeout_s,
            read_timeout_s=s.read_timeout_s,
            reconnect_max_s=s.reconnect_max_s,
            signal_loss_after_s=s.signal_loss_after_s,
            schemes=s.schemes,
            allow_private=s.allow_private_hosts,
            decode_threads=s.decode_threads,
            resume=lease.timeline,
            captions_lost_s=s.captions_lost_s,
            transport=TransportOptions(cues_lost_s=s.cues_lost_s),
            hls=HlsOptions.from_settings(s),
        )

        def emit(defect: Defect, evidence: dict[str, Any] | None) -> None:
            loop.call_soon_threadsafe(self.sink.submit, defect, evidence)

        def emit_event(event: Event) -> None:
            loop.call_soon_threadsafe(self.sink.submit_event, event)

        session = self.sessions(
            lease.stream_id, config, emit=emit, worker_id=s.worker_id, stop=stop, emit_event=emit_event,
        )  # fmt: skip
        if session.recorder is not None:  # the wall's live picture (worker/picture.py), written by the sink
            offer, sid = self.sink.offer_live, lease.stream_id
            session.recorder.publish_live(lambda item: loop.call_soon_threadsafe(offer, sid, item))
        done: asyncio.Future[tuple[Outcome, str | None]] = loop.create_future()

        def body() -> None:
            try:
                result: tuple[Outcome, str | None] = session.run()
            except Exception as exc:  # a bug in a detector must not take the worker down
                log.exception("stream %s: session failed", lease.stream_id)
                result = (Outcome.STOPPED, f"internal error: {type(exc).__name__}")

            def settle() -> None:
                if not done.done():
                    done.set_result(result)

            loop.call_soon_threadsafe(settle)

        thread = threading.Thread(target=body, name=f"stream-{lease.stream_id}", daemon=True)
        self.sink.fence(lease.stream_id, lease.counter)
        self.running[lease.stream_id] = Running(
            lease=lease, session=session, thread=thread, stop=stop, done=done, load=StreamLoad(self._clock())
        )
        done.add_done_callback(lambda _: self._spawn(self._ended(lease.stream_id)))
        thread.start()
        log.info("opening %s (%s)", lease.stream_id, lease.url)  # the outcome is logged by _finish

    async def _ended(self, stream_id: str) -> None:
        running = self.running.get(stream_id)
        if running is None or self.stopping.is_set():
            return  # shutdown finishes it
        try:
            await self._finish(stream_id, running, self._clock() + self.settings.stop_grace_s)
        except Exception:  # a bug here must not leak the slot: the lease lapses, others take it
            log.exception("finishing %s failed", stream_id)
            self.running.pop(stream_id, None)
            self._slot_freed.set()

    async def _finish(self, stream_id: str, running: Running, deadline: float) -> None:
        """The session is over (or being abandoned): write its defects, then settle the lease."""
        outcome, reason = running.done.result() if running.done.done() else (Outcome.STOPPED, None)
        while self.sink.pending_for(stream_id) and self._clock() < deadline:
            if not await self.sink.flush(only=stream_id):
                await self._sleep(0.2)
        self.notifier.end_stream(stream_id)  # its records are written: send held closes now
        lease = running.lease
        figures = running.figures()
        try:
            if running.handed_back:
                released = await self.leases.release(
                    lease, StreamStatus.PENDING, reason="handed back by its worker", figures=figures
                )
                if released:
                    await self.queue.send(stream_id, lease.generation)
            elif outcome is Outcome.COMPLETED:
                await self.leases.release(lease, StreamStatus.COMPLETED, finished=True, figures=figures)
            elif outcome is Outcome.REFUSED:
                log.warning("refused %s (%s): %s", stream_id, lease.url, reason)
                await self.leases.release(
                    lease, StreamStatus.REFUSED, finished=True, reason=reason, figures=figures
                )
            else:
                await self.leases.release(lease, StreamStatus.STOPPED, reason=reason, figures=figures)
        except aws.AvmonError as exc:
            log.warning("could not release %s (%s): it will lapse", stream_id, exc)
        self.running.pop(stream_id, None)
        self._slot_freed.set()  # a burst worker's poll loop looks again: it may be done

    async def _renew_loop(self) -> None:
        period = self.settings.lease_period_s / 3
        while not self.stopping.is_set():
            await self._sleep(period)
            # Concurrently: one slow answer must not let the other leases lapse.
            await asyncio.gather(
                *(self._renew(sid, r) for sid, r in list(self.running.items()) if not r.stop.is_set())
            )

    async def _renew(self, stream_id: str, running: Running) -> None:
        figures = running.session.figures
        try:
            result = await self.leases.renew(running.lease, figures.status, running.figures(), figures.reason)
        except aws.AvmonError as exc:
            # Keep monitoring: if the store is away for everyone, nobody can take the lease; if
            # only for us, the fencing token keeps our writes out once someone does.
            log.warning("renewal of %s failed (%s); retrying next period", stream_id, exc)
            return
        if result is Renewal.LOST:
            log.warning("lease on %s lost: stopping it now", stream_id)
            running.stop.set()
            self.sink.fence(stream_id, -1)  # nothing more may be written for it
            self.running.pop(stream_id, None)
            self._slot_freed.set()
        elif result is Renewal.STOPPED:
            log.info("%s stopped by request", stream_id)
            running.stop.set()
        if running.lease.acknowledged:
            self.notifier.acknowledge(stream_id, running.lease.acknowledged)

    async def _load_loop(self) -> None:
        """Every LOAD_SAMPLE_S: sample the load (worker/admission.py); hand back the stream it names."""
        while not self.stopping.is_set():
            victim = self.load.sample(self.running)
            if victim is not None:
                running = self.running[victim]
                running.handed_back = True
                running.stop.set()
            await self._sleep(LOAD_SAMPLE_S)

    async def _metrics(self) -> None:
        if self.settings.metrics_port:
            await metrics.serve(
                self.settings.metrics_port, self.sample, self.settings.health_max_age_s, self.stopping
            )

    def sample(self) -> metrics.WorkerSample:
        now = time.time()
        return metrics.WorkerSample(
            worker_id=self.settings.worker_id,
            capacity=self.capacity,
            streams=[r.sample(sid, now, self.admission.warmup_s) for sid, r in list(self.running.items())],
            cores=self.admission.cores,
            committed_cores=self.load.committed(self.running),
            cpu_target=self.admission.target,
            transport={sid: c for sid, r in list(self.running.items()) if (c := r.transport())},
            defects_written=self.sink.written,
            defects_dropped=self.sink.dropped,
            defects_buffered=self.sink.buffered,
            heartbeat_age_s=self._clock() - self._beat,
        )

    async def _heartbeat_loop(self) -> None:
        path = Path(self.settings.health_file)
        next_registry = 0.0
        while not self.stopping.is_set():
            self._beat = self._clock()
            if self._beat >= next_registry:
                next_registry = self._beat + self.settings.lease_period_s
                try:
                    await self.leases.heartbeat(self.capacity, len(self.running))
                except aws.AvmonError as exc:
                    log.warning("registry heartbeat failed: %s", exc)
            beat = f"{time.time():.3f} {self.settings.worker_id} {len(self.running)}\n"
            with contextlib.suppress(OSError):
                await asyncio.to_thread(path.write_text, beat)
            await self._sleep(5.0)


def healthy(settings: WorkerSettings | None = None) -> bool:
    """The worker's event loop wrote its heartbeat recently (`avmon health`, ECS health check)."""
    settings = settings or WorkerSettings()
    try:
        stamp = float(Path(settings.health_file).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return time.time() - stamp < settings.health_max_age_s


# The GIL's switch interval (s) in a worker process. A stream thread gives the GIL up for every
# decode call and every datagram it reads, and with a dozen such threads each one then waits for
# it to come back: at Python's default of 5 ms, one 720p stream in a dozen fell 2-4 s behind at
# times while the process used 73% of 2 cores; at 1 ms the worst lag was 0.5 s, at the same CPU
# (BENCHMARKS.md, live capacity).
GIL_SWITCH_INTERVAL_S = 0.001


async def serve(settings: WorkerSettings | None = None) -> None:
    """One worker on AWS clients built from the settings, until SIGTERM or SIGINT (ECS, Ctrl-C)."""
    settings = settings or WorkerSettings()
    loop = asyncio.get_running_loop()
    worker: Worker | None = None
    early = asyncio.Event()  # a signal before the worker exists (its clients): it starts stopped

    def request_stop() -> None:
        if worker is not None:
            worker.request_stop()
        else:
            early.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, request_stop)
    async with aws_clients() as clients:
        url = await queue_url(clients.sqs, settings.assignment_queue)
        worker = Worker(settings, clients=clients, queue_url=url)
        if early.is_set():
            worker.request_stop()
        await worker.run()


def main(settings: WorkerSettings | None = None) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    asyncio.run(serve(settings))
