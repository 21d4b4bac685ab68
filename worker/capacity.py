"""How many streams a worker takes, and which it hands back: by measured cost, not by count.

As in KCL 3.x's lease assignment, the measured numbers decide. A worker takes another stream only
while what its streams cost (each stream's own CPU, measured in its thread once it has run
``warmup_s``; before that, expected from its pixel rate) plus the expected cost of the new one
stays under ``target`` of the cores it may use. A stream's expected cost is its pixel rate
(width x height x fps) times the cores per pixel/s learned from the streams measured so far; a
stream not yet opened is expected to cost as much as the costliest one measured here (streams of
one deployment tend to be alike), or a 1080p30 one before any is measured, so that a burst of
assignments cannot overcommit a worker. ``max_streams`` is an upper bound, not the
density.

Whatever the CPU says, a worker whose streams are not at real time takes nothing more: while any
stream's lag has stayed beyond ``admit_lag_s`` (1 s) at every sample of the last ~16 s, there is
no room. (Its least lag, not its latest: an HLS stream is read a segment at a time, so the first
picture of a fresh segment was live a segment duration ago even when nothing is behind.) CPU is
not the only thing that runs out (a process's GIL, memory bandwidth, a noisy neighbour on the
host), and lag is what every one of them shows.

When the worker cannot keep up (a stream's lag behind its live edge is beyond ``shed_lag_s`` and
growing), it hands back one stream, the most recently taken, and waits ``recover_s`` before it
judges again: overload sheds the excess, one stream at a time, never everything.

Pure logic: the worker feeds it samples (monotonic seconds, CPU seconds) and asks.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

# Cores per megapixel/s of decoded picture before any stream is measured: 720p25 H.264 at
# 3-4 Mb/s costs ~0.05 cores on this project's bench machine (BENCHMARKS.md, live capacity);
# the prior is set above that so that a first burst of assignments cannot overcommit a worker.
PRIOR_CORES_PER_MPIX_S = 0.004
UNOPENED_PIXEL_RATE = 1920 * 1080 * 30  # a stream not yet probed: expect a 1080p30 one
AUDIO_ONLY_CORES = 0.01  # a stream without video (loudness, silence ... on 48 kHz audio)
LEARNING_RATE = 0.2  # weight of a new measurement in the learned cores per pixel/s
SAMPLE_WINDOW_S = 10.0
ADMIT_LAG_S = 1.0  # a stream this far behind real time: take no other (real time is the job)
LAGS_KEPT = 8  # lag samples remembered per stream: 16 s at the worker's 2 s, over an HLS segment


def available_cores() -> float:
    """CPU cores this process may use: its affinity mask, capped by its cgroup's CPU quota (ECS
    and Kubernetes limit a task's CPU that way; ``os.cpu_count`` sees the whole host). Reads the
    process's own cgroup, v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``)."""
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(0.05, min(cores, quota) if quota is not None else cores)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup, in cores (None: none set, or not readable)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        try:
            if controllers == "" and (root / rel / "cpu.max").exists():  # v2
                quota, period = (root / rel / "cpu.max").read_text().split()[:2]
                if quota != "max" and float(period) > 0:
                    return float(quota) / float(period)
            elif "cpu" in controllers.split(","):  # v1: cpu (often mounted as cpu,cpuacct)
                base = next((root / d for d in ("cpu", "cpu,cpuacct") if (root / d).is_dir()), None)
                if base is None:
                    continue
                quota_us = int((base / rel / "cpu.cfs_quota_us").read_text())
                period_us = int((base / rel / "cpu.cfs_period_us").read_text())
                if quota_us > 0 and period_us > 0:
                    return quota_us / period_us
        except (OSError, ValueError):
            continue
    return None


@dataclass
class StreamLoad:
    """What the worker knows of one stream's cost."""

    started: float  # monotonic s when taken
    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=64))  # (t, cpu s)
    pixel_rate: float | None = None  # pixels per second, once the source is probed
    has_video: bool = True
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=LAGS_KEPT))

    def observe(self, now: float, cpu_s: float, pixel_rate: float | None, lag_s: float | None) -> None:
        self.samples.append((now, cpu_s))
        if pixel_rate:
            self.pixel_rate = pixel_rate
        self.lags.append(lag_s if lag_s is not None else 0.0)

    def measured(self, warmup_s: float) -> float | None:
        """Cores it used over the recent window, once it has run ``warmup_s`` (None before)."""
        if not self.samples or self.samples[-1][0] - self.started < warmup_s:
            return None
        end_t, end_cpu = self.samples[-1]
        start = next(((t, c) for t, c in self.samples if end_t - t <= SAMPLE_WINDOW_S), self.samples[0])
        span = end_t - start[0]
        return (end_cpu - start[1]) / span if span >= 2.0 else None

    def behind(self, limit_s: float) -> bool:
        """Lag beyond ``limit_s`` at every sample remembered (a full set of them)."""
        return len(self.lags) == self.lags.maxlen and min(self.lags) > limit_s

    def falling_behind(self, limit_s: float) -> bool:
        """Lag beyond ``limit_s`` and grown at each of the last samples."""
        lags = list(self.lags)[-3:]
        return len(lags) >= 3 and lags[-1] > limit_s and all(a < b for a, b in itertools.pairwise(lags))


@dataclass
class Admission:
    """The worker's capacity rules (see the module docstring)."""

    cores: float
    target: float = 0.75
    max_streams: int = 64
    warmup_s: float = 12.0
    shed_lag_s: float = 10.0
    admit_lag_s: float = ADMIT_LAG_S
    recover_s: float = 20.0
    cores_per_pixel_s: float = PRIOR_CORES_PER_MPIX_S / 1e6
    last_shed: float = -math.inf

    def expected(self, load: StreamLoad | None) -> float:
        """Cores a stream is expected to cost before it is measured."""
        if load is not None and not load.has_video:
            return AUDIO_ONLY_CORES
        rate = load.pixel_rate if load is not None and load.pixel_rate else UNOPENED_PIXEL_RATE
        return rate * self.cores_per_pixel_s

    def cost(self, load: StreamLoad) -> float:
        measured = load.measured(self.warmup_s)
        return measured if measured is not None else self.expected(load)

    def learn(self, loads: list[StreamLoad]) -> None:
        """Fold the measured streams into the cores per pixel/s that new streams are expected at."""
        rates = [(m, ld.pixel_rate) for ld in loads if ld.pixel_rate and (m := ld.measured(self.warmup_s))]
        if rates:
            observed = sum(m for m, _ in rates) / sum(r for _, r in rates)
            self.cores_per_pixel_s += LEARNING_RATE * (observed - self.cores_per_pixel_s)

    def committed(self, loads: list[StreamLoad], process_cores: float | None = None) -> float:
        """Cores the worker's streams take (measured or expected), or what the process as a whole
        used recently if that is more (its own loops, the egress proxy, the sink)."""
        total = sum(self.cost(ld) for ld in loads)
        return max(total, process_cores or 0.0)

    def unopened(self, loads: list[StreamLoad]) -> float:
        """Cores a stream not yet probed is expected to cost: as the costliest this worker has
        measured (streams of one deployment tend to be alike), or a 1080p30 one before any."""
        measured = [m for ld in loads if (m := ld.measured(self.warmup_s)) is not None]
        return max(measured) if measured else self.expected(None)

    def free_slots(self, loads: list[StreamLoad], process_cores: float | None = None) -> int:
        """How many more unopened streams fit under the target (0 at the upper bound)."""
        if any(ld.behind(self.admit_lag_s) for ld in loads):
            return 0
        room = self.target * self.cores - self.committed(loads, process_cores)
        by_cpu = math.floor(room / self.unopened(loads)) if room > 0 else 0
        # A worker with nothing at all takes one stream whatever it may cost: it is the only way
        # to learn what this kind of stream costs here.
        if not loads:
            by_cpu = max(1, by_cpu)
        return max(0, min(by_cpu, self.max_streams - len(loads)))

    def to_shed(self, loads: dict[str, StreamLoad], now: float) -> str | None:
        """The one stream to hand back now, or None: only when a stream is falling behind, and
        not within ``recover_s`` of the last hand-back (the rest need time to catch up)."""
        if now - self.last_shed < self.recover_s or len(loads) < 1:
            return None
        if not any(ld.falling_behind(self.shed_lag_s) for ld in loads.values()):
            return None
        self.last_shed = now
        return max(loads, key=lambda sid: loads[sid].started)
