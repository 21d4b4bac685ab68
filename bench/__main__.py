"""``python -m bench``: every benchmark, a table on the console, and ``BENCHMARKS.md``.

    python -m bench            # the full run (about 5 minutes on 2 cores), rewrites BENCHMARKS.md
    python -m bench --quick    # short clips, fewer rounds: checks that everything runs (~2 minutes)
    python -m bench --only throughput,ffmpeg --no-write

Sections: throughput, detectors, ffmpeg, capacity, aws, per-frame, profile, live (the real
worker on live UDP: ``bench.live``, about 6 minutes, its own part of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import capacity, machine, report
from bench.aws_calls import count_calls
from bench.breakdown import measure_breakdown
from bench.clips import OUT, Clip, ensure_clip
from bench.detectors import measure_detectors
from bench.ffmpeg import compare_with_ffmpeg
from bench.per_frame import measure_per_frame
from bench.profile import profile_pipeline
from bench.throughput import PIPELINE, measure_throughput

SECTIONS = (
    "throughput", "breakdown", "detectors", "ffmpeg", "capacity", "aws", "per-frame", "profile", "live"
)
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


@dataclass(frozen=True)
class Plan:
    """How big each section's run is; the defaults are the full run's."""

    clip_s: float = 20.0  # length of the 720p and 1080p clips
    repeats: int = 5  # rounds of throughput and per-detector cost
    breakdown_repeats: int = 4
    ffmpeg_repeats: int = 3
    detector_s: float = 6.0  # media seconds each detector is fed
    capacity_s: float = 14.0  # seconds of each streams-per-worker run
    capacity_runs: int = 5
    rss_streams: int = 4
    rss_s: float = 10.0
    aws_streams: int = 4
    aws_s: float = 60.0  # steady state counted on the emulator
    per_frame_frames: int = 100
    per_frame_repeats: int = 3
    profile_runs: int = 2


FULL = Plan()
QUICK = Plan(
    clip_s=6.0,
    repeats=2,
    breakdown_repeats=1,
    ffmpeg_repeats=1,
    detector_s=2.0,
    capacity_s=4.0,
    capacity_runs=1,
    rss_streams=2,
    rss_s=4.0,
    aws_streams=2,
    aws_s=15.0,
    per_frame_frames=20,
    per_frame_repeats=1,
    profile_runs=1,
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(plan: Plan, sections: set[str], quick: bool, command: str) -> report.Results:
    started = time.monotonic()
    results = report.Results(machine=machine.describe(), quick=quick, command=command)
    say("generating (or reusing) test media in bench/out/ ...")
    clips = [
        ensure_clip("720p", 1280, 720, plan.clip_s),
        ensure_clip("1080p", 1920, 1080, plan.clip_s),
    ]
    hd: Clip = clips[0]

    def attempt(section: str, step: Callable[[], None]) -> None:
        """Run one section; a failure is reported in the results and the others still run."""
        began = time.monotonic()
        try:
            step()
        except Exception as exc:
            traceback.print_exc()
            results.failures[section] = f"{type(exc).__name__}: {exc}"[:300]
        say(f"  ({section}: {time.monotonic() - began:.0f} s)")

    def throughput() -> None:
        for clip in clips:
            say(f"throughput {clip.label} ({plan.repeats} rounds) ...")
            results.throughput.append(measure_throughput(clip, plan.repeats))

    def breakdown() -> None:
        say(f"pipeline breakdown {hd.label} ({plan.breakdown_repeats} rounds) ...")
        results.breakdown = measure_breakdown(hd, plan.breakdown_repeats)

    def detectors() -> None:
        for clip in clips:
            say(f"per-detector cost {clip.label} ...")
            results.detectors.append(measure_detectors(clip, plan.detector_s, plan.repeats))

    def ffmpeg() -> None:
        for clip in clips:
            say(f"FFmpeg filters {clip.label} ...")
            per_filter = clip is hd and not quick
            results.ffmpeg.append(compare_with_ffmpeg(clip, plan.ffmpeg_repeats, per_filter=per_filter))

    def streams() -> None:
        per_core = results.throughput[0].realtime_per_core(PIPELINE) if results.throughput else 10.0
        estimate = max(1, math.floor(results.machine.cores * per_core * 0.6))
        say(f"streams per worker, {hd.label} (from {estimate}) ...")
        results.capacity = capacity.find_capacity(hd.url, estimate, plan.capacity_s, plan.capacity_runs)
        results.capacity_clip = hd.label
        for clip in clips:
            say(f"memory per stream, {clip.label} ...")
            results.rss[clip.label] = capacity.run_child(clip.url, plan.rss_streams, plan.rss_s)

    def aws() -> None:
        healthy = ensure_clip("healthy", 320, 180, plan.aws_s + 45.0, healthy=True)
        say(f"AWS requests: {plan.aws_streams} streams for {plan.aws_s:g} s on the emulator ...")
        results.aws = count_calls(healthy, plan.aws_streams, plan.aws_s)

    def per_frame() -> None:
        say(f"per-frame design, {plan.per_frame_frames} frames ...")
        results.per_frame = measure_per_frame(hd, plan.per_frame_frames, plan.per_frame_repeats)

    def profile() -> None:
        say("profile ...")
        results.profile = profile_pipeline(hd, plan.profile_runs, OUT)

    if sections & {"throughput", "capacity", "per-frame"}:  # the others' yardstick
        attempt("throughput", throughput)
    steps = {
        "breakdown": breakdown,
        "detectors": detectors,
        "ffmpeg": ffmpeg,
        "capacity": streams,
        "aws": aws,
        "per-frame": per_frame,
        "profile": profile,
    }
    for section, step in steps.items():
        if section in sections:
            attempt(section, step)
    results.elapsed_s = time.monotonic() - started
    results.load_at_end = machine.load_average()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short clips and runs (not for the record)")
    parser.add_argument("--only", default="", help=f"comma list of sections: {', '.join(SECTIONS)}")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()} or set(SECTIONS)
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    command = (
        "python -m bench" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    )
    if sections - {"live"}:
        results = run(QUICK if args.quick else FULL, sections - {"live"}, args.quick, command)
        generated = report.render(results)
        print(generated)
        if not args.no_write:
            report.write(args.output, generated)
            say(f"wrote {args.output}")
    if "live" in sections and args.quick:
        say("live capacity: not in a quick run (python -m bench --only live)")
    elif "live" in sections:
        from bench import live  # the real worker on live UDP input (its own section)

        say("live capacity through the real worker (about 6 minutes) ...")
        section = live.full()
        print(section)
        if not args.no_write:
            live.write_section(section, args.output)
            say(f"wrote the live section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
