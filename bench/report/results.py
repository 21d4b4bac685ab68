"""What ``python -m bench`` measured (:class:`Results`), and the figures derived from it that
several sections quote (streams per worker, cost per stream-hour)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench import prices, throughput
from bench.aws_calls import AwsCalls
from bench.breakdown import Breakdown
from bench.capacity import Capacity, Run
from bench.detectors import DetectorCosts
from bench.ffmpeg import FfmpegComparison
from bench.machine import Machine
from bench.per_frame import PerFrame
from bench.profile import ProfileResult
from bench.throughput import Throughput
from bench.timing import median


@dataclass
class Results:
    machine: Machine
    quick: bool
    command: str
    throughput: list[Throughput] = field(default_factory=list)
    breakdown: Breakdown | None = None
    detectors: list[DetectorCosts] = field(default_factory=list)
    ffmpeg: list[FfmpegComparison] = field(default_factory=list)
    capacity: Capacity | None = None
    capacity_clip: str = ""
    rss: dict[str, Run] = field(default_factory=dict)
    aws: AwsCalls | None = None
    per_frame: PerFrame | None = None
    profile: ProfileResult | None = None
    failures: dict[str, str] = field(default_factory=dict)  # section → what went wrong
    elapsed_s: float = 0.0
    load_at_end: tuple[float, float, float] = (0.0, 0.0, 0.0)


def capacity_text(r: Results) -> str:
    assert r.capacity is not None
    best, cores = r.capacity.best, r.machine.cores
    bound = (
        f"CPU-bound estimate from the same runs: ~{r.capacity.cpu_bound(cores):.0f} on {cores} idle "
        f"cores; decode alone: ~{decode_bound(r):.0f}"
    )
    if best is None:
        return f"none sustained (other processes took {others_cores(r.capacity):.2f} cores); {bound}"
    per_core = best.per_free_core(cores)
    return (
        f"{best.streams} sustained, other processes taking {best.others_cores:.2f} cores "
        f"({per_core:.1f} per free core: ~{per_core * cores:.0f} on {cores} idle cores); {bound}"
    )


def others_cores(c: Capacity) -> float:
    return median([run.others_cores for run in c.runs])


def throughput_of(r: Results, label: str) -> Throughput | None:
    return next((t for t in r.throughput if t.clip.label == label), None)


def decode_bound(r: Results) -> float:
    t = throughput_of(r, r.capacity_clip)
    return r.machine.cores * t.realtime_per_core(throughput.DECODE) if t is not None else math.nan


def streams_per_worker(r: Results) -> int:
    """The measured capacity; when the machine was too busy for any run to keep up, the CPU-bound
    estimate of the same runs."""
    if r.capacity is not None and r.capacity.sustained > 0:
        return r.capacity.sustained
    if r.capacity is not None and math.isfinite(r.capacity.cpu_bound(r.machine.cores)):
        return max(1, math.floor(r.capacity.cpu_bound(r.machine.cores)))
    return r.aws.streams if r.aws is not None else 1


def stream_hour_costs(r: Results) -> tuple[prices.StreamHourCost, prices.StreamHourCost]:
    assert r.aws is not None and r.per_frame is not None
    p = r.per_frame
    t = throughput_of(r, p.clip.label)
    rss = r.rss.get(p.clip.label)
    memory_gb = (rss.rss_per_stream_mb if rss is not None else 0.0) / 1024
    cpu_per_s = t.cpu_s(throughput.PIPELINE) / t.clip.duration_s if t is not None else 0.0
    ours_requests = {key.split(" ", 1)[1]: n for key, n in r.aws.at(streams_per_worker(r)).items()}
    merged: dict[str, float] = {}
    for op, n in ours_requests.items():
        merged[op] = merged.get(op, 0.0) + n
    frames_per_hour = p.clip.fps * 3600
    theirs_requests = {op: n / p.frames * frames_per_hour for op, n in p.calls.items()}
    ours = prices.stream_hour_cost(merged, cpu_per_s, memory_gb)
    theirs = prices.stream_hour_cost(theirs_requests, p.handoff_cpu_s / p.frames * p.clip.fps, memory_gb)
    return ours, theirs
