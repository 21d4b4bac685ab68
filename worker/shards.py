"""Media processes: a worker's streams decoded and analysed in a few child processes.

One Python process has one GIL. A stream thread gives it up for every decode call, every
datagram it reads and every large NumPy or OpenCV call, and takes it back after: with a dozen
such threads in one process each of those hand-offs becomes a wait. Measured on 2 cores (live
720p25 UDP, BENCHMARKS.md "Live capacity"): 16 streams in one process fell 4.5 s behind real time
and kept falling, with a third of a core idle and the GIL's hand-off delay at 1 ms (p50) and 7 ms
(p90); the same 16 in two processes of 8 stayed within 0.3 s. The work is the same; only the
queue at the lock is shorter. Through the whole worker (`python -m bench.live`) it holds 16-18
such streams within 0.3 s, against 13-15 within 0.6 s with every stream in its own process.

So the worker's own process keeps what is one per worker (the event loop: leases, the queue, the
defect sink, notifications, metrics) and hands each stream to one of ``processes`` media
processes (one per core it may use, by default). There a :class:`~worker.session.StreamSession`
runs in a thread exactly as it would in process; what it reports travels back over one pipe per
media process, in the order it was sent:

    worker -> media   ("start", stream_id, SessionConfig, worker_id)
                      ("stop", stream_id)
                      ("overloaded", stream_id, bool)      the worker's shedding rule said so
    media -> worker   ("emit", stream_id, Defect)
                      ("evidence", stream_id, Defect, item) before the defect's "emit"
                      ("live", stream_id, item)             the wall's live picture
                      ("event", stream_id, Event)           an SCTE-35 cue, as an event
                      ("state", stream_id, State)           every STATE_S, and once at the end
                      ("done", stream_id, Outcome, reason)

:class:`RemoteSession` is what the worker holds for such a stream: the same figures, context,
timeline, transport counters and ``run()`` as a session, from the latest state. A media process
that dies ends its streams as an internal error (their leases are released, so the streams are
offered again) and the next stream starts a new one: a crash costs its streams a reconnect,
never the worker.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from shared.models import Defect, Event
from worker.detectors.base import StreamContext
from worker.session import Emit, Figures, Outcome, SessionConfig, StreamSession
from worker.timeline import Timeline
from worker.transport import TransportCounters

log = logging.getLogger(__name__)

STATE_S = 1.0  # how often a media process sends each stream's figures
START_WAIT_S = 2.0  # the worker waits this long at most for a media process to take a stream
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# StreamContext.extra entries the worker reads (metrics, figures): plain values only travel.
_PLAIN = (int, float, str, bool, type(None))


@dataclass
class State:
    """What the worker reads of a stream running in a media process."""

    figures: Figures
    has_video: bool
    has_audio: bool
    extra: dict[str, Any]
    timeline: Timeline | None
    transport: TransportCounters | None


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and isinstance(v, _PLAIN) for k, v in value.items())
    return False


def _state(session: StreamSession) -> State:
    try:
        transport = copy.deepcopy(session.transport_counters())
    except RuntimeError:  # counted on while copied (a dict grew): the next state has it
        transport = None
    items = list(session.ctx.extra.items())
    extra = {k: dict(v) if isinstance(v, dict) else v for k, v in items if _plain(v)}
    return State(
        figures=dataclasses.replace(session.figures),
        has_video=session.ctx.has_video,
        has_audio=session.ctx.has_audio,
        extra=extra,
        timeline=session.timeline(),
        transport=transport,
    )


# ---------------------------------------------------------------- the media process


@dataclass(frozen=True)
class _Forward:
    """A session's callbacks, as messages to the worker."""

    send: Callable[[tuple[Any, ...]], None]
    stream_id: str

    def emit(self, defect: Defect, evidence: dict[str, Any] | None) -> None:
        self.send(("emit", self.stream_id, defect, evidence))

    def live(self, item: dict[str, Any]) -> None:
        self.send(("live", self.stream_id, item))

    def event(self, event: Event) -> None:
        self.send(("event", self.stream_id, event))


def media_main(conn: Connection, switch_interval_s: float, log_level: int) -> None:
    """A media process: sessions in threads, on the worker's orders, until the pipe closes."""
    sys.setswitchinterval(switch_interval_s)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lock = threading.Lock()
    sessions: dict[str, StreamSession] = {}
    threads: list[threading.Thread] = []

    def send(message: tuple[Any, ...]) -> None:
        with lock, contextlib.suppress(OSError, ValueError):
            conn.send(message)

    def run(sid: str, session: StreamSession) -> None:
        try:
            outcome, reason = session.run()
        except Exception as exc:  # a bug in a detector must not take the other streams down
            log.exception("stream %s: session failed", sid)
            outcome, reason = Outcome.STOPPED, f"internal error: {type(exc).__name__}"
        send(("state", sid, _state(session)))
        sessions.pop(sid, None)
        send(("done", sid, outcome, reason))

    def report() -> None:
        while True:
            time.sleep(STATE_S)
            for sid, session in list(sessions.items()):
                send(("state", sid, _state(session)))

    threading.Thread(target=report, name="media-state", daemon=True).start()
    send(("ready", ""))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the worker is gone: so are its leases
        kind, sid = message[0], message[1]
        if kind == "start":
            _, _, config, worker_id = message
            if sid in sessions:
                send(("started", sid))
                continue
            forward = _Forward(send, sid)
            session = StreamSession(
                sid, config, forward.emit, worker_id=worker_id, evidence=True, emit_event=forward.event,
            )  # fmt: skip
            if session.recorder is not None:
                session.recorder.publish_live(forward.live)
            sessions[sid] = session
            send(("started", sid))  # its UDP socket is bound: a sender may start
            thread = threading.Thread(target=run, args=(sid, session), name=f"stream-{sid}", daemon=True)
            threads.append(thread)
            thread.start()
        elif kind == "stop" and sid in sessions:
            sessions[sid].stop.set()
        elif kind == "overloaded" and sid in sessions:
            sessions[sid].figures.overloaded = bool(message[2])
        elif kind == "exit":
            break
    for session in list(sessions.values()):
        session.stop.set()
    for thread in threads:
        thread.join(timeout=5.0)
    os._exit(0)  # FFmpeg threads must not keep a dead worker's media process alive


# ---------------------------------------------------------------- the worker's side


class _Recorder:
    """Stands for the session's EvidenceRecorder where the worker asks for the live picture."""

    def __init__(self) -> None:
        self.live: Callable[[dict[str, Any]], object] | None = None

    def publish_live(self, callback: Callable[[dict[str, Any]], object]) -> None:
        self.live = callback


class RemoteSession:
    """A stream running in a media process, as the worker sees it (see the module docstring)."""

    def __init__(
        self,
        stream_id: str,
        shard: _Shard,
        config: SessionConfig,
        emit: Emit,
        *,
        worker_id: str,
        stop: threading.Event,
        emit_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.config = config
        self.emit = emit
        self.emit_event = emit_event
        self.stop = stop
        self.worker_id = worker_id
        self.figures = Figures()
        self.ctx = StreamContext()
        self.recorder = _Recorder()
        self._shard = shard
        self._timeline: Timeline | None = None
        self._transport: TransportCounters | None = None
        self._done = threading.Event()
        self._result: tuple[Outcome, str | None] = (Outcome.STOPPED, None)
        self._overloaded = False

    # What the media process tells (its reader thread calls these).
    def _on_state(self, state: State) -> None:
        overloaded = self.figures.overloaded
        self.figures = state.figures
        self.figures.overloaded = overloaded  # the worker's own word, not the last echo of it
        self.ctx.has_video, self.ctx.has_audio = state.has_video, state.has_audio
        self.ctx.extra = state.extra
        self._timeline = state.timeline
        self._transport = state.transport

    def _on_done(self, outcome: Outcome, reason: str | None) -> None:
        self._result = (outcome, reason)
        self._done.set()

    # What the worker asks.
    def timeline(self) -> Timeline | None:
        return self._timeline

    def transport_counters(self) -> TransportCounters | None:
        return self._transport

    def mark_overloaded(self, flag: bool) -> None:
        self.figures.overloaded = flag
        if flag != self._overloaded:
            self._overloaded = flag
            self._shard.send(("overloaded", self.stream_id, flag))

    def run(self) -> tuple[Outcome, str | None]:
        """Until the media process says the stream ended; a stop is passed on to it."""
        asked = False
        while not self._done.wait(0.1):
            if self.stop.is_set() and not asked:
                asked = True
                self._shard.send(("stop", self.stream_id))
        return self._result


@dataclass
class _Shard:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    sessions: dict[str, RemoteSession] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    alive: bool = True
    ready: threading.Event = field(default_factory=threading.Event)
    started: dict[str, threading.Event] = field(default_factory=dict)

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(message)


class MediaPool:
    """The worker's media processes, started on demand (see the module docstring)."""

    def __init__(self, processes: int, *, switch_interval_s: float) -> None:
        self.processes = max(1, processes)
        self.switch_interval_s = switch_interval_s
        self._shards: list[_Shard] = []
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # never fork a process with threads

    def _spawn(self) -> _Shard:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=media_main,
            args=(theirs, self.switch_interval_s, logging.getLogger().getEffectiveLevel()),
            name="avmon-media",
            daemon=True,
        )
        process.start()
        theirs.close()
        shard = _Shard(process=process, conn=ours)
        threading.Thread(target=self._read, args=(shard,), name="media-reader", daemon=True).start()
        return shard

    def start(self, timeout_s: float = 60.0) -> None:
        """All media processes started, and ready (their imports done): the worker calls this
        before it takes a stream, so that a stream starts in milliseconds."""
        with self._lock:
            self._shards = [s for s in self._shards if s.alive]
            while len(self._shards) < self.processes:
                self._shards.append(self._spawn())
            shards = list(self._shards)
        deadline = time.monotonic() + timeout_s
        for shard in shards:
            shard.ready.wait(max(0.0, deadline - time.monotonic()))

    def _pick(self) -> _Shard:
        if len([s for s in self._shards if s.alive]) < self.processes:
            self.start()  # one ended: its replacement (streams only wait on a crash)
        with self._lock:
            alive = [s for s in self._shards if s.alive]
            if not alive:
                raise RuntimeError("no media process could be started")
            return min(alive, key=lambda s: len(s.sessions))

    def session(
        self,
        stream_id: str,
        config: SessionConfig,
        emit: Emit,
        *,
        worker_id: str,
        stop: threading.Event,
        emit_event: Callable[[Event], None] | None = None,
    ) -> RemoteSession:
        """The stream started in the media process with the fewest streams. Returns once that
        process has made the session (its UDP socket bound: a sender that starts as soon as the
        stream is taken loses nothing), or after START_WAIT_S."""
        shard = self._pick()
        remote = RemoteSession(
            stream_id, shard, config, emit, worker_id=worker_id, stop=stop, emit_event=emit_event,
        )  # fmt: skip
        shard.sessions[stream_id] = remote
        started = shard.started[stream_id] = threading.Event()
        shard.send(("start", stream_id, config, worker_id))
        started.wait(START_WAIT_S)
        return remote

    def _read(self, shard: _Shard) -> None:
        while True:
            try:
                message = shard.conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a message that would not unpickle: drop it, keep the pipe
                log.exception("media process message")
                continue
            kind, sid = message[0], message[1]
            if kind == "ready":
                shard.ready.set()
                continue
            if kind == "started":
                if (event := shard.started.pop(sid, None)) is not None:
                    event.set()
                continue
            remote = shard.sessions.get(sid)
            if remote is None:
                continue
            if kind == "emit":
                remote.emit(message[2], message[3])
            elif kind == "live" and remote.recorder.live is not None:
                remote.recorder.live(message[2])
            elif kind == "event" and remote.emit_event is not None:
                remote.emit_event(message[2])
            elif kind == "state":
                remote._on_state(message[2])
            elif kind == "done":
                shard.sessions.pop(sid, None)
                remote._on_done(message[2], message[3])
        shard.alive = False
        shard.ready.set()
        for event in list(shard.started.values()):
            event.set()
        code = shard.process.exitcode
        if shard.sessions:
            log.error("a media process ended (exit code %s) with %d streams", code, len(shard.sessions))
        for sid, remote in list(shard.sessions.items()):
            shard.sessions.pop(sid, None)
            remote._on_done(Outcome.STOPPED, "internal error: the media process ended")

    def cpu_s(self) -> float:
        """CPU time (user + system) the media processes have used, from /proc (Linux)."""
        total = 0.0
        for shard in list(self._shards):
            pid = shard.process.pid
            if pid is None:
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / _TICKS
            except (OSError, IndexError, ValueError):
                continue
        return total

    def close(self, timeout_s: float = 10.0) -> None:
        """Every media process told to end (closing its pipe), then waited for."""
        for shard in self._shards:
            shard.send(("exit", ""))  # (closing our end alone would not wake its reader)
        deadline = time.monotonic() + timeout_s
        for shard in self._shards:
            shard.process.join(max(0.0, deadline - time.monotonic()))
            if shard.process.is_alive():
                shard.process.kill()
                shard.process.join(2.0)
            with contextlib.suppress(OSError):
                shard.conn.close()
        self._shards = []
