"""Cost of the per-channel audio checks on 5.1: ``silence`` and ``clipping`` on all six channels,
as a share of decoding the same media, A/B against another revision in alternating processes.

    python -m bench.channels                     # this tree only, 6 rounds
    python -m bench.channels --against HEAD~1    # this tree (B) against a revision (A)

The clip: 20 s of 1280x720 25p H.264 (libx264 veryfast, ffmpeg CLI's ``testsrc2``) with AC-3
5.1(side) at 384 kb/s, a different tone in every channel (made once, cached in ``--out``). A
round is one fresh process that decodes the clip with the session's thread settings (CPU time
of the process: the yardstick), decodes its audio once more into the session's analysis blocks
(float32 at the analysis rate, the layout's names), then feeds each detector alone, in a fresh
instance, three times; the best of three counts. Rounds alternate between the two trees (A, B,
A, B...) so that a machine whose load drifts (this one is shared) drifts under both alike; the
report gives each tree's median share and the spread of its rounds.

``--against REV`` exports ``worker/`` and ``shared/`` of that revision (``git archive``) to a
temporary folder and runs its rounds with that folder first on ``sys.path``; the round itself is
this file, so it must only use what both trees have (``worker.media``, ``worker.detectors``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DETECTORS = ("silence", "clipping")
SECONDS = 20.0
TONES = ("440", "550", "330", "50", "770", "880")  # FL FR FC LFE SL SR, Hz


def make_clip(out: Path) -> Path:
    path = out / "channels-720p25-ac3-5.1.ts"
    if path.exists():
        return path
    out.mkdir(parents=True, exist_ok=True)
    sound = "|".join(f"0.05*sin(2*PI*{hz}*t)" for hz in TONES)
    partial = path.with_suffix(".part.ts")
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={SECONDS}",
            "-f", "lavfi", "-i", f"aevalsrc='{sound}':s=48000:d={SECONDS}:c=5.1(side)",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-c:a", "ac3", "-b:a", "384k", "-f", "mpegts", str(partial),
        ],
        check=True,
    )  # fmt: skip
    partial.rename(path)
    return path


def one_round(clip: str) -> dict[str, float]:
    """CPU seconds of decoding ``clip`` and of each detector on its audio (best of three)."""
    import av

    from worker.decoded import ANALYSIS_RATE, AudioBatcher, AudioConverter
    from worker.detectors import StreamContext, registry

    def cpu_of_decode() -> float:
        start = time.process_time()
        with av.open(clip) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            video.thread_type = "AUTO"
            for packet in container.demux(video, audio):
                packet.decode()
        return time.process_time() - start

    blocks: list[Any] = []
    with av.open(clip) as container:
        audio = container.streams.audio[0]
        converter = AudioConverter(audio.codec_context.channels or 2)
        batcher = AudioBatcher()
        for frame in container.decode(audio):
            if frame.pts is None or frame.time_base is None:
                continue
            t = float(frame.pts * frame.time_base)
            for samples in converter.convert(frame):
                blocks += batcher.add(t, samples, converter.names)
                t += samples.shape[1] / ANALYSIS_RATE
    cpu_of_decode()  # warm-up: the decoder's and numpy's first calls
    result = {"decode": cpu_of_decode()}
    for name in DETECTORS:
        cls = registry()[name]
        best = float("inf")
        for _ in range(4):  # the first is a warm-up
            detector = cls(ctx=StreamContext())
            start = time.process_time()
            for block in blocks:
                detector.feed_audio(block)
            detector.flush(SECONDS)
            best = min(best, time.process_time() - start)
        result[name] = best
    return result


def run_round(tree: Path, clip: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        ["nice", "-n", "19", sys.executable, str(Path(__file__).resolve()), "--round", str(clip)],
        env=env,
        capture_output=True,
        check=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def export(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "worker", "shared"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def shares(rounds: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per detector (and their sum, ``both``): its share of decoding, % per round."""
    out = {name: [100.0 * r[name] / r["decode"] for r in rounds] for name in DETECTORS}
    out["both"] = [sum(values) for values in zip(*(out[n] for n in DETECTORS), strict=True)]
    return out


def render(trees: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| tree | rounds | decode CPU s (median) | "
        + " | ".join(f"{n} % of decode" for n in (*DETECTORS, "both"))
        + " |",
        "|---|---:|---:|" + "---:|" * (len(DETECTORS) + 1),
    ]
    for label, rounds in trees.items():
        cells = []
        for values in shares(rounds).values():
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        decode = statistics.median(r["decode"] for r in rounds)
        lines.append(f"| {label} | {len(rounds)} | {decode:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.channels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", metavar="REV", help="A/B: also run a git revision's worker/")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per tree (default 6)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the clip is cached")
    parser.add_argument("--round", metavar="CLIP", help=argparse.SUPPRESS)  # one round, JSON out
    args = parser.parse_args(argv)
    if args.round:
        # Run as a file: its own folder (bench/, with modules named like the standard library's)
        # must not shadow anything; worker/ comes from PYTHONPATH, the tree under test.
        here = Path(__file__).resolve().parent
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
        print(json.dumps(one_round(args.round)))
        return 0
    clip = make_clip(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT}
        if args.against:
            trees = {f"A: {args.against}": export(args.against, Path(tmp)), "B: this tree": ROOT}
        results: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
        for _ in range(args.rounds):
            for label, tree in trees.items():
                results[label].append(run_round(tree, clip))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
