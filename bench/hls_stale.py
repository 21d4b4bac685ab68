"""``python -m bench.hls_stale``: how soon after its limit a stale HLS playlist is reported, and
what the playlist monitor costs per round.

Method: the ffmpeg CLI's hls muxer makes a two-rendition ladder with 2 s segments (target
duration 2 s), served live by the tests' fault-injecting origin (``tests/hls_origin.py``: one new
segment every 2 s). A :class:`worker.hls_monitor.HlsMonitor` runs in its own thread on the real
clock, as in the worker, through the egress proxy. Each round, after a few reloads, the origin
stops one rendition at a random moment; the latency is the time from the staleness limit
(its last new segment's publication + 3 target durations) to the moment ``manifest_stale``
reaches ``on_findings``. The issue's target: within one target duration.

Cost: CPU time of one round in the thread that runs it (master, two media playlists, the new
segments' ranged GETs; the origin and the egress proxy run in other threads and are not
counted), over 12 rounds driven one new segment apart.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from worker import egress
from worker.detectors.base import Finding
from worker.hls_monitor import HlsMonitor

TARGET_S = 2
STALE_TARGETS = 3.0


def _stale_latency(root: Path, rng: random.Random) -> float | None:
    """One round: the time (s) from the staleness limit to the report, None if not reported."""
    from tests.hls_origin import LadderOrigin

    origin = LadderOrigin(root, window=4)
    reported = threading.Event()
    at: list[float] = []

    def found(findings: list[Finding]) -> None:
        if any(f.type == "manifest_stale" and f.end_s is None for f in findings):
            at.append(time.time())
            reported.set()

    origin.run_live(TARGET_S)
    mon = HlsMonitor(origin.master_url, egress.shared_proxy(True).url, on_findings=found)
    mon.start()
    time.sleep(3 * TARGET_S + rng.uniform(0, TARGET_S))
    origin.stall("r1")
    moved_at = origin.tracks["r1"].moved_at
    reported.wait(6 * TARGET_S)
    mon.close()
    origin.close()
    return at[0] - (moved_at + STALE_TARGETS * TARGET_S) if at else None


def _round_cpu_ms(root: Path, rounds: int = 12) -> list[float]:
    """CPU (ms) of rounds driven in this thread, one new segment before each."""
    from tests.hls_origin import LadderOrigin

    origin = LadderOrigin(root, window=4)
    mon = HlsMonitor(origin.master_url, egress.shared_proxy(True).url)
    out = []
    for k in range(rounds):
        origin.advance()
        started = time.thread_time()
        mon.poll(1000.0 + k)
        out.append((time.thread_time() - started) * 1000)
    origin.close()
    return out


def measure(rounds: int, seed: int = 1) -> dict[str, float]:
    from tests.hls_origin import ffmpeg_ladder  # the tests' ladder

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = ffmpeg_ladder(Path(tmp), 40.0, segment_s=TARGET_S).parent
        got = [_stale_latency(root, rng) for _ in range(rounds)]
        cpu_ms = _round_cpu_ms(root)
    latencies = [g for g in got if g is not None]
    return {
        "rounds": float(rounds),
        "reported": float(len(latencies)),
        "latency_median_s": statistics.median(latencies) if latencies else float("nan"),
        "latency_max_s": max(latencies, default=float("nan")),
        "latency_min_s": min(latencies, default=float("nan")),
        "cpu_ms_per_round": statistics.median(cpu_ms),
        "target_s": float(TARGET_S),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hls_stale", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    got = measure(args.rounds)
    print(
        f"manifest_stale after its limit (target duration {got['target_s']:.0f} s, limit 3 targets): "
        f"{got['reported']:.0f}/{got['rounds']:.0f} reported, median {got['latency_median_s']:.2f} s, "
        f"min {got['latency_min_s']:.2f} s, max {got['latency_max_s']:.2f} s; "
        f"monitor CPU {got['cpu_ms_per_round']:.2f} ms per round (2 renditions)"
    )
    return 0 if got["reported"] == got["rounds"] and got["latency_max_s"] <= got["target_s"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
