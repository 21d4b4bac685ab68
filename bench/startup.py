"""`avmon analyze` as a user runs it: the whole process (interpreter, imports, open, decode,
detectors, exit) against decoding alone in a process of its own, in paired rounds.

* speed: whole ``avmon analyze`` ÷ whole decode-only process on one clip (DESIGN.md §9: the
  file analysis target is ≥ 0.8× decode-only speed, i.e. a wall ratio ≤ 1.25);
* start-up: on a 1 s clip, ``avmon analyze``'s wall time less the decode-only process's (what is
  not decoding: imports, detector set-up, summary), and the imports alone
  (``python -X importtime``, the heaviest top-level modules).

Fair to decoding: the decode-only process demuxes both streams and decodes them with the video
decoder on the thread setting ``avmon analyze`` uses (``worker.session.analyze_decode_threads``,
frame threads), in PyAV as the session does. A ``python -c pass`` process in the same rounds is
the interpreter's own floor. Children run niced (``nice -n 19``, as everything CPU-heavy on a
shared machine) with Python's bytecode cache on, as a user's install has it (an environment's
``PYTHONDONTWRITEBYTECODE`` would make every run compile the project's modules again), after one
warm-up run of each.

``python -m bench.startup [--seconds 60] [--repeats 3]``; not part of ``python -m bench`` (yet).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.clips import Clip, ensure_clip

# Decoding alone, as the session decodes: both streams demuxed, video on argv[2] frame threads.
DECODE_ONLY = """
import sys, av
with av.open(sys.argv[1]) as c:
    streams = [s for s in (c.streams.video[:1] + c.streams.audio[:1])]
    if c.streams.video:
        c.streams.video[0].thread_type = "AUTO"
        c.streams.video[0].codec_context.thread_count = int(sys.argv[2])
    for packet in c.demux(streams):
        for frame in packet.decode():
            pass
"""
NICE = ["nice", "-n", "19"]


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system of the child process


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str]) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [*NICE, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu)


def analyze_cmd(path: Path) -> list[str]:
    return [sys.executable, "-m", "avmon", "analyze", str(path)]


def decode_cmd(path: Path) -> list[str]:
    from worker.session import analyze_decode_threads

    return [sys.executable, "-c", DECODE_ONLY, str(path), str(analyze_decode_threads())]


def pass_cmd() -> list[str]:
    return [sys.executable, "-c", "pass"]


@dataclass(frozen=True)
class Paired:
    analyze: list[Run]
    decode: list[Run]
    interpreter: list[Run]  # ``python -c pass``

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
    commands = {"analyze": analyze_cmd(clip.path), "decode": decode_cmd(clip.path), "pass": pass_cmd()}
    for cmd in commands.values():  # warm-up: bytecode written, files in the page cache
        run(cmd)
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for r in range(repeats):
        for name in commands if r % 2 == 0 else reversed(commands):
            runs[name].append(run(commands[name]))
    return Paired(runs["analyze"], runs["decode"], runs["pass"])


def _median(runs: list[Run], what: str = "wall_s") -> float:
    return float(statistics.median(float(getattr(r, what)) for r in runs))


def heaviest_imports(clip: Clip, top: int = 6) -> list[tuple[str, float]]:
    """Top-level modules by cumulative import time (s) in one ``avmon analyze`` run."""
    done = subprocess.run(
        [*NICE, sys.executable, "-X", "importtime", *analyze_cmd(clip.path)[1:]],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
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
    from worker.session import analyze_decode_threads

    print(
        f"decoder: {analyze_decode_threads()} frame threads in both; python -c pass "
        f"{_median(one.interpreter):.3f} s wall, {_median(one.interpreter, 'cpu_s'):.3f} s CPU; "
        f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"1 s 720p25 clip: avmon analyze {_median(one.analyze):.2f} s "
        f"({_median(one.analyze, 'cpu_s'):.2f} s CPU), decode-only {_median(one.decode):.2f} s "
        f"({_median(one.decode, 'cpu_s'):.2f} s CPU): start-up {one.extra_s:.2f} s (target ≤ 0.6 s)"
    )
    print(
        f"{args.seconds:g} s 720p25 clip: avmon analyze {_median(whole.analyze):.2f} s "
        f"({_median(whole.analyze, 'cpu_s'):.2f} s CPU), decode-only {_median(whole.decode):.2f} s "
        f"({_median(whole.decode, 'cpu_s'):.2f} s CPU): {whole.speed:.2f}× decode-only speed, whole "
        "process (target ≥ 0.8×)"
    )
    for name, p in (("1 s", one), (f"{args.seconds:g} s", whole)):
        rounds = ", ".join(f"{a.wall_s:.2f}/{d.wall_s:.2f}" for a, d in zip(p.analyze, p.decode, strict=True))
        print(f"  {name} rounds, analyze/decode-only wall s: {rounds}")
    print(
        "heaviest imports of avmon analyze: "
        + ", ".join(f"{m} {s:.2f} s" for m, s in heaviest_imports(short))
    )


if __name__ == "__main__":
    main()
