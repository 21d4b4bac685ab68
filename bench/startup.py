"""`avmon analyze` as a user runs it: the whole process (interpreter, imports, open, decode,
detectors, exit) against decoding alone in a process of its own, in paired rounds.

* speed: whole ``avmon analyze`` ÷ whole decode-only process on one clip (DESIGN.md §9: the
  file analysis target is ≥ 0.8× decode-only speed, i.e. a wall ratio ≤ 1.25);
* start-up: on a 1 s clip, ``avmon analyze``'s wall time less the decode-only process's (what is
  not decoding: imports, detector set-up, summary), and the imports alone
  (``python -X importtime``, the heaviest top-level modules).

``python -m bench.startup [--seconds 60] [--repeats 3]``; not part of ``python -m bench`` (yet).
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.clips import Clip, ensure_clip

# Decoding alone, as the session decodes: both streams demuxed, video with frame threads.
DECODE_ONLY = """
import sys, av
with av.open(sys.argv[1]) as c:
    streams = [s for s in (c.streams.video[:1] + c.streams.audio[:1])]
    if c.streams.video:
        c.streams.video[0].thread_type = "AUTO"
    for packet in c.demux(streams):
        for frame in packet.decode():
            pass
"""


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system of the child process


def run(cmd: list[str]) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu)


def analyze_cmd(path: Path) -> list[str]:
    return [sys.executable, "-m", "avmon", "analyze", str(path)]


def decode_cmd(path: Path) -> list[str]:
    return [sys.executable, "-c", DECODE_ONLY, str(path)]


@dataclass(frozen=True)
class Paired:
    analyze: list[Run]
    decode: list[Run]

    @property
    def wall_ratio(self) -> float:
        """Median of analyze ÷ decode-only wall time, round by round (≤ 1.25 meets 0.8×)."""
        return statistics.median(a.wall_s / d.wall_s for a, d in zip(self.analyze, self.decode, strict=True))

    @property
    def speed(self) -> float:
        """Decode-only speed ÷ analyze speed as DESIGN.md states it (≥ 0.8 is the target)."""
        return 1.0 / self.wall_ratio

    @property
    def extra_s(self) -> float:
        return statistics.median(a.wall_s - d.wall_s for a, d in zip(self.analyze, self.decode, strict=True))


def paired(clip: Clip, repeats: int) -> Paired:
    analyze, decode = [], []
    for r in range(repeats):
        for which in ("analyze", "decode") if r % 2 == 0 else ("decode", "analyze"):
            if which == "analyze":
                analyze.append(run(analyze_cmd(clip.path)))
            else:
                decode.append(run(decode_cmd(clip.path)))
    return Paired(analyze, decode)


def heaviest_imports(clip: Clip, top: int = 6) -> list[tuple[str, float]]:
    """Top-level modules by cumulative import time (s) in one ``avmon analyze`` run."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *analyze_cmd(clip.path)[1:]],
        capture_output=True,
        text=True,
        check=True,
    )
    found = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ([\w.]+)$", line)  # top level only
        if m:
            found.append((m.group(2), int(m.group(1)) / 1e6))
    return sorted(found, key=lambda kv: -kv[1])[:top]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="the long clip (default 60 s, 720p25)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    short = ensure_clip("healthy", 1280, 720, 1.0, healthy=True)
    long = ensure_clip("healthy", 1280, 720, args.seconds, healthy=True)
    one = paired(short, args.repeats)
    whole = paired(long, args.repeats)
    print(
        f"1 s 720p25 clip: avmon analyze {statistics.median(r.wall_s for r in one.analyze):.2f} s, "
        f"decode-only {statistics.median(r.wall_s for r in one.decode):.2f} s: "
        f"start-up {one.extra_s:.2f} s (target ≤ 0.6 s)"
    )
    print(
        f"{args.seconds:g} s 720p25 clip: avmon analyze "
        f"{statistics.median(r.wall_s for r in whole.analyze):.2f} s, decode-only "
        f"{statistics.median(r.wall_s for r in whole.decode):.2f} s: {whole.speed:.2f}× decode-only "
        "speed, whole process (target ≥ 0.8×)"
    )
    print(
        "heaviest imports of avmon analyze: "
        + ", ".join(f"{m} {s:.2f} s" for m, s in heaviest_imports(short))
    )


if __name__ == "__main__":
    main()
