"""Streams per worker, and memory per stream.

Each measurement runs in a fresh child process (``python -m bench.capacity``), as a worker does:
one thread per stream, each a ``StreamSession`` reading the clip paced in real time. The child
samples every session's ``figures.lag_s`` (how far behind real time it is) and the process's RSS
twice a second, and prints them as JSON.

* Capacity: N streams are *sustained* when, over the second half of the run, no stream's lag
  grows by more than ``MAX_SLOPE`` seconds per second and none ends more than ``MAX_LAG_S``
  behind. N is raised from an estimate (cores × the pipeline's real-time factor per core) until
  it fails; the largest sustained N is reported.
* Memory: RSS with N streams running (median over the second half) less the child's RSS before
  any stream started (modules imported, detectors built once), divided by N.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

MAX_SLOPE = 0.02  # s of lag gained per s of media: more is falling behind
MAX_LAG_S = 1.0
SAMPLE_S = 0.5


def busy_cores_s() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores; 0 where unknown)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / (os.sysconf("SC_CLK_TCK") or 100)


def rss_mb() -> float:
    """Resident set size of this process, MiB (from /proc; 0 where there is none)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@dataclass
class Run:
    """What one child process measured."""

    streams: int
    seconds: float
    baseline_mb: float
    rss_mb: list[float]
    lags: list[list[float]]  # per sample, every stream's lag (s)
    cpu_s: float
    others_cores: float  # CPU the rest of the machine used meanwhile, in cores (a noisy machine)
    errors: list[str] = field(default_factory=list)

    @property
    def rss_per_stream_mb(self) -> float:
        tail = self.rss_mb[len(self.rss_mb) // 2 :] or [self.baseline_mb]
        return (statistics.median(tail) - self.baseline_mb) / max(1, self.streams)

    def slopes(self) -> list[float]:
        """Per stream, the least-squares slope of its lag over the second half (s per s)."""
        tail = self.lags[len(self.lags) // 2 :]
        if len(tail) < 3:
            return [math.inf] * self.streams
        xs = [i * SAMPLE_S for i in range(len(tail))]
        mean_x = statistics.fmean(xs)
        var_x = sum((x - mean_x) ** 2 for x in xs)
        result = []
        for s in range(self.streams):
            ys = [sample[s] for sample in tail]
            mean_y = statistics.fmean(ys)
            result.append(sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var_x)
        return result

    @property
    def final_lag_s(self) -> float:
        return max(self.lags[-1]) if self.lags else math.inf

    @property
    def cpu_per_media_s(self) -> float:
        """CPU seconds per second of media analysed, per stream: the cost of one real-time
        stream in cores, whether or not the run kept up (a stream behind has analysed less)."""
        if not self.lags:
            return math.nan
        media = sum(max(0.0, self.seconds - lag) for lag in self.lags[-1])
        return self.cpu_s / media if media > 0 else math.nan

    def per_free_core(self, cores: int) -> float:
        """Streams per core left free by the rest of the machine during the run."""
        return self.streams / max(0.1, cores - self.others_cores)

    @property
    def sustained(self) -> bool:
        return not self.errors and max(self.slopes()) <= MAX_SLOPE and self.final_lag_s <= MAX_LAG_S


def child(url: str, streams: int, seconds: float) -> Run:
    """Run ``streams`` paced sessions of ``url`` in this process for ``seconds``."""
    from worker.session import SessionConfig, StreamSession

    # Imports and detector discovery first (a worker has done them before its first stream).
    StreamSession("warm-up", SessionConfig(url=url), lambda *_: None)
    baseline = rss_mb()
    stop = threading.Event()
    sessions = [
        StreamSession(
            f"s{i}", SessionConfig(url=url, realtime=True, reconnect=False), lambda *_: None, stop=stop
        )
        for i in range(streams)
    ]
    errors: list[str] = []

    def body(session: StreamSession) -> None:
        try:
            session.run()
        except Exception as exc:  # reported, and the run counts as failed
            errors.append(f"{session.stream_id}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=body, args=(s,), daemon=True) for s in sessions]
    cpu, busy, wall = time.process_time(), busy_cores_s(), time.monotonic()
    for thread in threads:
        thread.start()
        time.sleep(1.0 / streams)  # staggered over a second, as streams arrive in a worker
    rss: list[float] = []
    lags: list[list[float]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(SAMPLE_S)
        rss.append(rss_mb())
        lags.append([s.figures.lag_s or 0.0 for s in sessions])
    cpu = time.process_time() - cpu
    others = max(0.0, busy_cores_s() - busy - cpu) / (time.monotonic() - wall)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    return Run(streams, seconds, baseline, rss, lags, cpu, round(others, 2), errors)


def run_child(url: str, streams: int, seconds: float) -> Run:
    """:func:`child` in a fresh interpreter (a clean RSS baseline, no threads left over)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.capacity", url, str(streams), str(seconds)],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 120,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        return Run(streams, seconds, 0.0, [], [], 0.0, 0.0, [str(detail).strip()[-300:]])
    return Run(**data)


@dataclass
class Capacity:
    runs: list[Run]
    estimate: int

    @property
    def sustained(self) -> int:
        return max((r.streams for r in self.runs if r.sustained), default=0)

    def cpu_bound(self, cores: int) -> float:
        """Streams that ``cores`` idle cores could carry at the measured CPU per real-time stream
        (median over the runs): the figure other people's load on this machine does not move."""
        costs = [r.cpu_per_media_s for r in self.runs if math.isfinite(r.cpu_per_media_s)]
        return cores / statistics.median(costs) if costs else math.nan

    @property
    def best(self) -> Run | None:
        """The run of :attr:`sustained` streams."""
        return next((r for r in self.runs if r.sustained and r.streams == self.sustained), None)


def find_capacity(url: str, estimate: int, seconds: float, max_runs: int) -> Capacity:
    """Raise N from ``estimate`` by about a quarter until a run is not sustained; then, if the
    first run already failed, lower it instead. At most ``max_runs`` child runs."""
    runs: list[Run] = []
    n = max(1, estimate)
    for _ in range(max_runs):
        run = run_child(url, n, seconds)
        runs.append(run)
        passed = [r.streams for r in runs if r.sustained]
        failed = [r.streams for r in runs if not r.sustained]
        low, high = max(passed, default=0), min(failed, default=0)
        if high and low and high - low <= max(1, low // 10):
            break
        if not failed:
            n = max(n + 1, round(n * 1.25))
        elif not passed:
            n = max(1, round(n * 0.7))
            if n in [r.streams for r in runs]:
                break
        else:
            n = (low + high) // 2
            if n in (low, high):
                break
    return Capacity(runs, estimate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("streams", type=int)
    parser.add_argument("seconds", type=float)
    args = parser.parse_args()
    run = child(args.url, args.streams, args.seconds)
    print(json.dumps(run.__dict__))


if __name__ == "__main__":
    main()
