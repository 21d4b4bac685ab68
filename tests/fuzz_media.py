"""Fuzz the demux → decode → detect path with mutated real media (hypothesis).

Run as a program so that a native crash in FFmpeg ends this process, not the test session:

    python -m tests.fuzz_media --examples 150            # what CI runs (about a minute)
    python -m tests.fuzz_media --examples 20000          # a longer run

Exit status 0: every mutated input was either analysed or refused with an ordinary error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import av
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.models import Defect
from tests.media import make_testsrc
from worker.session import UnreadableSource, analyze

Mutation = tuple[str, int, int]


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    """Apply byte flips, zeroed runs, duplicated chunks and truncation at fractional positions."""
    buf = bytearray(data)
    for kind, pos_permille, arg in mutations:
        if not buf:
            break
        pos = pos_permille * (len(buf) - 1) // 1000
        if kind == "flip":
            buf[pos] ^= 1 + arg % 255
        elif kind == "zero":
            buf[pos : pos + 1 + arg % 2048] = bytes(min(len(buf) - pos, 1 + arg % 2048))
        elif kind == "dup":
            chunk = bytes(buf[pos : pos + 1 + arg % 4096])
            buf[pos:pos] = chunk
        elif kind == "cut":
            del buf[pos:]
    return bytes(buf)


def run(examples: int, seed_media: Path) -> int:
    original = seed_media.read_bytes()
    work = Path(tempfile.mkdtemp(prefix="avmon-fuzz-")) / "input.ts"
    counts = {"analysed": 0, "refused": 0}

    mutation = st.tuples(
        st.sampled_from(["flip", "flip", "flip", "zero", "dup", "cut"]),
        st.integers(0, 1000),
        st.integers(0, 1 << 16),
    )

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(mutation, min_size=1, max_size=40))
    def one(mutations: list[Mutation]) -> None:
        work.write_bytes(mutate(original, mutations))
        found: list[Defect] = []
        stop = threading.Event()
        timer = threading.Timer(20.0, stop.set)  # a hang is a failure too: bounded by the stop
        timer.start()
        try:
            analyze(str(work), found.append, stop=stop)
            counts["analysed"] += 1
        except (av.FFmpegError, UnreadableSource):  # unreadable input, refused with an ordinary error
            counts["refused"] += 1
        finally:
            timer.cancel()
        assert not stop.is_set(), "analysis hung for 20 s"
        for defect in found:
            assert defect.end_s is None or defect.end_s >= defect.start_s

    one()
    print(f"fuzz: {examples} examples, {counts['analysed']} analysed, {counts['refused']} refused")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=150)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="avmon-fuzz-seed-") as tmp:
        seed = Path(tmp) / "seed.ts"
        # 2 s is enough: two IDRs (gop_s 1) and a black that opens and closes; each example decodes
        # it all, so a short seed buys examples.
        make_testsrc(seed, duration_s=2.0, width=160, height=90, gop_s=1.0, script="black@0.5+1", seed=11)
        return run(args.examples, seed)


if __name__ == "__main__":
    sys.exit(main())
