"""``python -m bench.transport``: the TR 101 290 analyser's CPU at 20 Mb/s, as a share of one core.

Method: FFmpeg's CLI encodes 10 s of 1280x720 H.264 (libx264, 17 Mb/s) and AAC into a constant
20 Mb/s MPEG-TS (``-muxrate 20M``: ~13,300 packets a second, video, audio, PSI, PCR-only and null
packets), cached under ``bench/out``. Then, per round, in one process and one thread:

* **datagrams**: the stream as 1316-byte datagrams (7 packets, what a UDP source delivers), each
  handed to ``TransportAnalyzer.feed`` with an arrival time, as the worker's socket reader does;
* **file**: the same bytes in 64 KiB reads without arrival times (the PCR is the clock);
* **copy only** (the yardstick): the same datagram loop doing only the one copy of each datagram
  that ``feed`` makes; what any Python reader of the socket pays before analysing anything.

CPU time (``process_time``) of each variant over the stream's 10 s gives the share of one core;
the median over the rounds is reported, rounds alternating the variants' order.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.clips import OUT
from bench.timing import median
from worker.transport import TransportAnalyzer

RATE_BPS = 20_000_000
SECONDS = 10.0
DATAGRAM = 7 * 188
READ = 64 * 1024
TARGET_SHARE = 0.02  # issue 22: ≤ 2% of one core at 20 Mb/s


def ensure_stream(seconds: float = SECONDS) -> Path:
    path = OUT / f"transport_20M_{seconds:g}s.ts"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", f"{seconds:g}", "-c:v", "libx264", "-preset", "ultrafast",
             "-b:v", "17M", "-maxrate", "17M", "-bufsize", "8M", "-c:a", "aac", "-b:a", "128k",
             "-muxrate", "20M", "-f", "mpegts", str(path)],
            check=True,
        )
    return path


@dataclass
class TransportCost:
    media_s: float
    packets: int
    datagram_share: float  # CPU s per media s, datagram feed
    file_share: float
    copy_share: float  # the yardstick
    us_per_datagram: float
    findings: int  # on the clean stream: must be 0

    @property
    def met(self) -> bool:
        return self.datagram_share <= TARGET_SHARE

    def markdown(self) -> str:
        return (
            f"| input | CPU, share of one core at {RATE_BPS / 1e6:g} Mb/s |\n|---|---|\n"
            f"| 1316-byte datagrams with arrival times | {100 * self.datagram_share:.2f}% "
            f"({self.us_per_datagram:.1f} µs a datagram) |\n"
            f"| 64 KiB file reads, PCR clock | {100 * self.file_share:.2f}% |\n"
            f"| yardstick: the datagram loop with only its copy | {100 * self.copy_share:.2f}% |\n\n"
            f"Target ≤ {100 * TARGET_SHARE:g}% of one core: **{'met' if self.met else 'NOT met'}**. "
            f"{self.packets:,} packets over {self.media_s:g} s; {self.findings} finding(s) on the "
            "clean stream."
        )


def _cpu(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def measure_transport(rounds: int = 5, seconds: float = SECONDS) -> TransportCost:
    data = ensure_stream(seconds).read_bytes()
    datagrams = [data[i : i + DATAGRAM] for i in range(0, len(data), DATAGRAM)]
    step = DATAGRAM * 8 / RATE_BPS
    found: list[int] = []

    def live() -> None:
        a = TransportAnalyzer()
        n = 0
        for k, d in enumerate(datagrams):
            n += len(a.feed(d, k * step))
        n += len(a.flush(len(datagrams) * step))
        found.append(n)

    def file() -> None:
        a = TransportAnalyzer()
        n = 0
        for i in range(0, len(data), READ):
            n += len(a.feed(data[i : i + READ]))
        found.append(n + len(a.flush(0.0)))

    def copy() -> None:
        kept = []
        for d in datagrams:
            kept.append(bytes(memoryview(d)))
            if len(kept) > 64:
                kept.clear()

    variants = {"live": live, "file": file, "copy": copy}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            cpu[name].append(_cpu(variants[name]))
    media_s = len(data) * 8 / RATE_BPS
    return TransportCost(
        media_s=media_s,
        packets=len(data) // 188,
        datagram_share=median(cpu["live"]) / media_s,
        file_share=median(cpu["file"]) / media_s,
        copy_share=median(cpu["copy"]) / media_s,
        us_per_datagram=1e6 * median(cpu["live"]) / len(datagrams),
        findings=max(found),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    cost = measure_transport(args.rounds)
    print(cost.markdown())
    return 0 if cost.met and cost.findings == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
