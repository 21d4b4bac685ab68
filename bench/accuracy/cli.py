"""Detector accuracy: recall, precision and boundary errors per defect type, on generated media.

    python -m bench.accuracy                 # the full corpus (about 3-4 minutes on 2 cores)
    python -m bench.accuracy --quick         # a smaller corpus (about 1 minute)
    python -m bench.accuracy --clean DIR     # also: every clip in DIR must give zero defects
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av

from bench.accuracy.agreement import agreement_cases, compare_with_ffmpeg
from bench.accuracy.corpus import ClipPlan, cli_clips, corpus, user_clips
from bench.accuracy.render import render, to_json
from bench.accuracy.run import run_clip
from bench.accuracy.scoring import ClipResult
from bench.clips import OUT


def _run_one(args: tuple[ClipPlan, Path]) -> ClipResult:
    return run_clip(*args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller corpus (under 2 minutes)")
    parser.add_argument("--clean", type=Path, metavar="DIR", help="real clips that must give zero defects")
    parser.add_argument(
        "--out", type=Path, default=OUT, help="where accuracy.md/.json go (default bench/out)"
    )
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="clips in parallel")
    parser.add_argument("--no-ffmpeg", action="store_true", help="skip the comparison with FFmpeg's filters")
    parser.add_argument("--no-cli", action="store_true", help="skip the clips the ffmpeg CLI encodes")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    plans = corpus(quick=args.quick, seed=args.seed)
    if not args.no_cli:
        plans += cli_clips(quick=args.quick)
    if args.clean is not None:
        plans += user_clips(args.clean)
    media_dir = args.out / "accuracy"
    jobs = [(p, media_dir) for p in plans]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(_run_one, jobs))
    else:
        results = [_run_one(j) for j in jobs]
    agreement = [] if args.no_ffmpeg else [compare_with_ffmpeg(c, media_dir) for c in agreement_cases()]
    flags = "".join(
        f" {flag}" for flag, on in (("--quick", args.quick), (f"--clean {args.clean}", args.clean)) if on
    )
    meta = {
        "args": flags,
        "seed": args.seed,
        "wall_s": time.perf_counter() - started,
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, PyAV {av.__version__}",
    }
    text = render(results, meta, agreement)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.md").write_text(text)
    (args.out / "accuracy.json").write_text(to_json(results, meta, agreement))
    print(text)
    return 0
