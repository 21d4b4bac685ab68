"""The worker's load: what its streams cost, how many more it can take, which one it hands back.

The rules are worker/capacity.py's (pure); this module feeds them: every ``LOAD_SAMPLE_S`` the
worker calls :meth:`Load.sample` with its streams, which samples the process's and each stream's
CPU and lag, learns what a stream costs, marks the streams overloaded while one falls behind,
and names the one stream to hand back (the most recently taken), which the worker then leaves to
other workers for ``shed_cooldown_s``. Time is the worker's clock (monotonic seconds).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping

from shared.settings import WorkerSettings
from worker.capacity import Admission
from worker.running import Running

log = logging.getLogger("avmon.worker")

CORES_EVERY_S = 10.0  # how often the cores it may use are read again (affinity, cgroup quota)
LOAD_SAMPLE_S = 2.0  # CPU and lag sampling period of the admission and shedding rules


class Load:
    """``cores``: the cores the worker may use now; ``cpu_s``: CPU seconds its process (and its
    media processes) used so far; ``clock``: monotonic seconds."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        cores: Callable[[], float],
        cpu_s: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self.settings, self._cores, self._cpu_s, self._clock = settings, cores, cpu_s, clock
        self.admission = Admission(
            cores=cores(),
            target=settings.cpu_target,
            max_streams=settings.worker_capacity,
            shed_lag_s=settings.shed_lag_s,
            recover_s=settings.shed_recover_s,
        )
        self._cpu: deque[tuple[float, float]] = deque(maxlen=16)  # (monotonic, process CPU s)
        self._next_cores = clock() + CORES_EVERY_S
        self._shed: dict[str, float] = {}  # stream id → monotonic time until which we leave it alone

    def _process_cores(self) -> float | None:
        """Cores the whole process used over the last ~10 s (None until it has 2 s of samples)."""
        if len(self._cpu) < 2 or self._cpu[-1][0] - self._cpu[0][0] < 2.0:
            return None
        (t0, c0), (t1, c1) = self._cpu[0], self._cpu[-1]
        return (c1 - c0) / (t1 - t0)

    def free(self, running: Mapping[str, Running]) -> int:
        """Streams the worker can take now: by their measured cost (worker.capacity)."""
        loads = [r.load for r in running.values()]
        return self.admission.free_slots(loads, self._process_cores())

    def committed(self, running: Mapping[str, Running]) -> float:
        return self.admission.committed([r.load for r in running.values()])

    def shed_recently(self, stream_id: str) -> bool:
        """This worker handed the stream back lately: it is for a worker that can keep up."""
        return self._shed.get(stream_id, 0.0) > self._clock()

    def sample(self, running: Mapping[str, Running]) -> str | None:
        """One sample of every stream; the stream to hand back now, or None."""
        now = self._clock()
        if now >= self._next_cores:  # a task's CPU quota can be changed under it (docker update)
            self.admission.cores, self._next_cores = self._cores(), now + CORES_EVERY_S
        self._cpu.append((now, self._cpu_s()))
        for r in list(running.values()):
            f = r.session.figures
            r.load.has_video = r.session.ctx.has_video
            r.load.observe(now, f.cpu_s, f.pixel_rate, f.lag_s)
        loads = {sid: r.load for sid, r in running.items() if not r.stop.is_set()}
        self.admission.learn(list(loads.values()))
        behind = any(ld.falling_behind(self.admission.shed_lag_s) for ld in loads.values())
        for r in running.values():
            r.session.mark_overloaded(behind)
        victim = self.admission.to_shed(loads, now)
        if victim is not None:
            log.warning(
                "streams are falling behind real time (worst %.1f s): handing back %s, the most "
                "recently taken",
                max((ld.lags[-1] for ld in loads.values() if ld.lags), default=0.0),
                victim,
            )
            self._shed[victim] = now + self.settings.shed_cooldown_s
        return victim
