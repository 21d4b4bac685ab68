"""A/V sync on programme content (no marks): accuracy on a known-offset corpus, and its cost.

    python -m bench.accuracy_sync                    # the corpus, 30 min of clean content, cost
    python -m bench.accuracy_sync --clean-minutes 5  # less clean content
    python -m bench.accuracy_sync --quick            # one clip per negative, 2 min clean, short cost

The corpus (:mod:`bench.sync_corpus`, 320x180 H.264/AAC in MPEG-TS, encoded by the ffmpeg CLI):
scenes of discs that are hit (a white flash, a kick, a knock) at irregular times, cuts with a
change of ambience, over a scrolling background and ambience noise, with the sound shifted by
each of :data:`OFFSETS_MS` and by a drift from 0 to +250 ms; a talking face and a visible
syncopated rhythm (:data:`SCENES`); then unrelated audio, digital silence and a static picture.
Each clip goes through the real session (``av_sync`` only).

Scored per clip: the content windows that were confident, how many of them lie within one frame
(40 ms at 25 fps) of the truth at their centre, the largest error, and whether the clip was
reported: every offset outside BT.1359's detectability window (sound more than 45 ms early or
125 ms late) must be reported within 60 s of the start (for the drift: of the time it left the
window), the others not at all; the negatives must stay *unknown* (no confident window) and
give no defect. Clean content (in sync, other seeds) must give no defect.

Cost: a 720p25 clip of the generator is decoded once into memory; then, per round, it is decoded
again (decode only, the session's threads) as the yardstick, and the content measurement
(:class:`worker.sync_content.ContentSync`: its per-picture features, audio onsets and the
correlation of every hop) is fed the same pictures and blocks: CPU time, as a share of the
decode's. Also the whole ``av_sync`` detector with ``content`` on and off.

Writes ``accuracy_sync.md`` and ``accuracy_sync.json`` to ``--out`` (default ``bench/out``).
Clips are cached in ``<out>/sync/`` by their parameters and the corpus generator's source.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import sync_corpus
from bench.clips import OUT, decode, decode_to_memory, ensure_clip
from shared.models import Defect
from shared.urlpolicy import to_url
from worker.detectors.av_sync import PROGRAMME_KEY, AvSyncDetector, AvSyncOptions
from worker.session import SessionConfig, StreamSession
from worker.sync_content import ContentSync, Thresholds

OFFSETS_MS = (-200.0, -120.0, -80.0, -40.0, 0.0, 40.0, 80.0, 120.0, 200.0, 400.0)
DRIFT_TO_MS = 250.0
FPS = 25
FRAME_MS = 1000.0 / FPS
EARLY_MS, LATE_MS = 45.0, 125.0  # BT.1359 detectability, in our sign (positive: sound late)
REPORT_WITHIN_S = 60.0
NEGATIVE_SEEDS = 3  # clips of each negative kind
# Other scenes, with offsets inside and outside the window: a talking face, a visible rhythm.
SCENES = (
    ("speech", 0.0),
    ("speech", 200.0),
    ("speech", -80.0),
    ("music", 0.0),
    ("music", -120.0),
    ("music", 200.0),
)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    offset: Callable[[float], float]
    duration_s: float
    seed: int
    expect: str  # "defect", "none" (confident, no defect) or "unknown" (no confident window)
    leaves_at_s: float = 0.0  # media time at which the offset leaves the window (drift)


@dataclass
class Result:
    name: str
    expect: str
    windows: int
    confident: int
    within_frame: int
    max_error_ms: float
    median_offset_ms: float | None
    reported_at_s: float | None  # media time of the first open content finding
    defects: int
    defect_offset_ms: float | None
    defect_confidence: float | None
    ok: bool
    problems: list[str] = field(default_factory=list)


def corpus(duration_s: float, negative_seeds: int = NEGATIVE_SEEDS) -> list[Case]:
    cases = []
    for i, ms in enumerate(OFFSETS_MS):
        outside = ms < -EARLY_MS or ms > LATE_MS
        cases.append(
            Case(
                f"knocks {ms:+.0f} ms",
                "knocks",
                sync_corpus.constant(ms),
                duration_s,
                10 + i,
                "defect" if outside else "none",
            )
        )
    leaves = duration_s * LATE_MS / DRIFT_TO_MS
    cases.append(
        Case(
            f"drift 0 to {DRIFT_TO_MS:+.0f} ms",
            "knocks",
            sync_corpus.drift(DRIFT_TO_MS, duration_s),
            duration_s,
            30,
            "defect",
            leaves,
        )
    )
    for i, (kind, ms) in enumerate(SCENES):
        outside = ms < -EARLY_MS or ms > LATE_MS
        cases.append(
            Case(
                f"{kind} {ms:+.0f} ms",
                kind,
                sync_corpus.constant(ms),
                duration_s,
                60 + i,
                "defect" if outside else "none",
            )
        )
    for i, kind in enumerate(("unrelated", "silence", "static")):
        for seed in range(negative_seeds):
            cases.append(
                Case(
                    f"{kind} {seed + 1}",
                    kind,
                    sync_corpus.constant(0.0),
                    duration_s,
                    40 + 10 * i + seed,
                    "unknown",
                )
            )
    return cases


CLEAN_KINDS = ("knocks", "speech", "music")  # clean content cycles through these scenes


def clean_cases(minutes: float, clip_s: float = 300.0) -> list[Case]:
    """In-sync clips of about ``clip_s`` that add up to ``minutes``, of each of CLEAN_KINDS."""
    count = max(1, round(minutes * 60.0 / clip_s))
    clip_s = minutes * 60.0 / count
    kinds = [CLEAN_KINDS[i % len(CLEAN_KINDS)] for i in range(count)]
    return [
        Case(f"clean {i + 1} ({kind})", kind, sync_corpus.constant(0.0), clip_s, 100 + i, "none")
        for i, kind in enumerate(kinds)
    ]


def clip_path(case: Case, out: Path) -> Path:
    generator = Path(sync_corpus.__file__).read_bytes()
    # The offset function is part of the key through its values on a grid.
    probe = ",".join(f"{case.offset(t):.3f}" for t in range(0, int(case.duration_s) + 1, 5))
    key = hashlib.sha1(f"{case.kind}/{case.duration_s}/{case.seed}/{probe}".encode() + generator).hexdigest()[
        :10
    ]
    return out / "sync" / f"{case.kind}-{case.seed}-{case.duration_s:g}s-{key}.ts"


def ensure(case: Case, out: Path) -> Path:
    path = clip_path(case, out)
    if not path.exists():
        partial = path.with_name(path.stem + ".partial.ts")
        sync_corpus.make_clip(partial, case.kind, case.duration_s, case.offset, seed=case.seed, fps=FPS)
        partial.replace(path)
    return path


def analyse(path: Path) -> tuple[AvSyncDetector, list[Defect]]:
    """The real session on ``path``, ``av_sync`` only: the detector and its records."""
    records: list[Defect] = []
    config = SessionConfig(url=to_url(str(path)), reconnect=False, detectors=frozenset({"av_sync"}))
    session = StreamSession("bench", config, lambda defect, _: records.append(defect))
    session.run()
    [detector] = [d for d in session.detectors if isinstance(d, AvSyncDetector)]
    return detector, [r for r in records if r.type.value == "av_sync"]



def _number(value: object) -> float | None:
    return float(value) if isinstance(value, float | int) else None

def score(case: Case, detector: AvSyncDetector, records: list[Defect]) -> Result:
    windows = list(detector.content_windows)
    confident = [w for w in windows if w.offset_ms is not None]
    errors = [abs((w.offset_ms or 0.0) - case.offset(0.5 * (w.start_s + w.end_s))) for w in confident]
    opens = [(t, f) for t, f in detector.content_reports if f.end_s is None]
    content_records = [r for r in records if r.defect_id.endswith(PROGRAMME_KEY)]
    closes = [r for r in content_records if r.end_s is not None]
    final = closes[-1] if closes else (content_records[-1] if content_records else None)
    result = Result(
        name=case.name,
        expect=case.expect,
        windows=len(windows),
        confident=len(confident),
        within_frame=sum(e <= FRAME_MS for e in errors),
        max_error_ms=max(errors, default=0.0),
        median_offset_ms=statistics.median(w.offset_ms or 0.0 for w in confident) if confident else None,
        reported_at_s=opens[0][0] if opens else None,
        defects=len(opens),
        defect_offset_ms=_number(final.metrics.get("offset_ms")) if final else None,
        defect_confidence=_number(final.metrics.get("confidence")) if final else None,
        ok=True,
    )
    problems = result.problems
    if len(records) != len(content_records):
        problems.append(f"{len(records) - len(content_records)} av_sync records of another method")
    if case.expect == "unknown":
        if confident:
            problems.append(f"{len(confident)} confident windows on content that should be unknown")
        if opens:
            problems.append("a defect")
    else:
        if not confident:
            problems.append("no confident window")
        if result.within_frame < len(confident):
            problems.append(
                f"{len(confident) - result.within_frame} confident windows off by more than a frame"
            )
        if case.expect == "none" and opens:
            problems.append("a defect inside the window")
        if case.expect == "defect":
            if not opens:
                problems.append("not reported")
            elif opens[0][0] - case.leaves_at_s > REPORT_WITHIN_S:
                problems.append(f"reported {opens[0][0] - case.leaves_at_s:.0f} s after it left the window")
    result.ok = not problems
    return result


# ----------------------------------------------------------------------------- cost


def _cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


@dataclass
class Cost:
    clip: str
    seconds: float
    decode_cpu_s: list[float] = field(default_factory=list)  # per round, for the whole clip
    content_cpu_s: list[float] = field(default_factory=list)  # ContentSync alone, same media
    detector_on_cpu_s: list[float] = field(default_factory=list)  # av_sync, content on
    detector_off_cpu_s: list[float] = field(default_factory=list)  # av_sync, content off
    window_cpu_s: float = 0.0  # one window's correlation (the work of each hop), median
    hop_s: float = 5.0

    def share(self, values: list[float]) -> float:
        return statistics.median(v / d for v, d in zip(values, self.decode_cpu_s, strict=True))

    @property
    def window_share(self) -> float:
        """The correlation's share of decoding: one window per hop."""
        return self.window_cpu_s / self.hop_s / (statistics.median(self.decode_cpu_s) / self.seconds)


def measure_cost(seconds: float, repeats: int, out: Path) -> Cost:
    clip = ensure_clip("sync-cost", 1280, 720, seconds, healthy=True, out_dir=out)
    media = decode_to_memory(clip.url, seconds + 1.0)
    feed = sorted(
        [(f.t, 0, i) for i, f in enumerate(media.video)] + [(b.t, 1, i) for i, b in enumerate(media.audio)]
    )
    cost = Cost(f"{clip.width}x{clip.height}@{clip.fps} {seconds:g} s", seconds)

    def fed(sync: ContentSync, *, ask_ready: bool) -> ContentSync:
        """``sync`` fed the whole clip; ``ask_ready``: calling ``ready()`` after each item, as the
        detector does."""
        for _, kind, i in feed:
            if kind == 0:
                sync.feed_video(media.video[i].t, media.video[i].luma)
            else:
                block = media.audio[i]
                sync.feed_audio(block.t, block.samples, block.rate)
            if ask_ready:
                sync.ready()
        return sync

    def content() -> None:
        fed(ContentSync(20.0, 5.0, 1.0), ask_ready=True)

    def detector(on: bool) -> Callable[[], None]:
        def run() -> None:
            d = AvSyncDetector(AvSyncOptions(content=on))
            for _, kind, i in feed:
                if kind == 0:
                    d.feed_video(media.video[i])
                else:
                    d.feed_audio(media.audio[i])

        return run

    content()  # warm-up
    # The clip may end before a window does, and its few events would stop the estimate before
    # the correlation: time a full window's on its own, with no event minimum.
    sync = fed(ContentSync(20.0, 5.0, 1.0, Thresholds(min_events=0)), ask_ready=False)
    end = min(seconds, 20.0)
    cost.window_cpu_s = statistics.median(_cpu(lambda: sync._evaluate(end - 20.0, end)) for _ in range(21))
    for _ in range(repeats):
        cost.decode_cpu_s.append(_cpu(lambda: decode(clip.url, views=False)))
        cost.content_cpu_s.append(_cpu(content))
        cost.detector_on_cpu_s.append(_cpu(detector(True)))
        cost.detector_off_cpu_s.append(_cpu(detector(False)))
    return cost


# ----------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def markdown(results: list[Result], clean: list[Result], clean_minutes: float, cost: Cost | None) -> str:
    lines = [
        "| clip | expected | windows | confident | within 1 frame | max error ms | median ms | "
        "reported at s | defects | defect offset ms | confidence | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.expect} | {r.windows} | {r.confident} | {r.within_frame} | "
            f"{r.max_error_ms:.1f} | "
            f"{_ms(r.median_offset_ms)} | {'-' if r.reported_at_s is None else f'{r.reported_at_s:.0f}'} | "
            f"{r.defects} | {_ms(r.defect_offset_ms)} | "
            f"{'-' if r.defect_confidence is None else f'{r.defect_confidence:.2f}'} | "
            f"{'yes' if r.ok else 'NO: ' + '; '.join(r.problems)} |"
        )
    if clean:
        confident = sum(r.confident for r in clean)
        windows = sum(r.windows for r in clean)
        within = sum(r.within_frame for r in clean)
        defects = sum(r.defects for r in clean)
        lines += [
            "",
            f"Clean content, {clean_minutes:g} min in {len(clean)} clips: {defects} av_sync defects; "
            f"{confident} of {windows} windows confident, {within} of them within one frame of 0 ms, "
            f"largest error {max(r.max_error_ms for r in clean):.1f} ms.",
        ]
    if cost is not None:
        lines += [
            "",
            f"Cost on {cost.clip} (CPU time as a share of decode-only, "
            f"median of {len(cost.decode_cpu_s)} rounds): "
            f"content measurement alone {100 * cost.share(cost.content_cpu_s):.2f} % (per picture and "
            f"block) + {100 * cost.window_share:.2f} % (one window's correlation, "
            f"{cost.window_cpu_s * 1000:.1f} ms, every {cost.hop_s:g} s); the av_sync detector "
            f"{100 * cost.share(cost.detector_on_cpu_s):.2f} % with content, "
            f"{100 * cost.share(cost.detector_off_cpu_s):.2f} % without "
            f"(decode {statistics.median(cost.decode_cpu_s) / cost.seconds * 1000:.0f} ms CPU "
            "per media second).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy_sync", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one clip per negative, 2 min of clean content")
    parser.add_argument("--clean-minutes", type=float, default=None, help="clean content to run (default 30)")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost measurement")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    # Clips are 60 s even in a quick run: an offset must be reported within 60 s, and a drift
    # to +250 ms leaves the window only halfway.
    duration = 60.0
    minutes = args.clean_minutes if args.clean_minutes is not None else (2.0 if args.quick else 30.0)
    results, clean = [], []
    for case in corpus(duration, 1 if args.quick else NEGATIVE_SEEDS):
        detector, records = analyse(ensure(case, args.out))
        results.append(score(case, detector, records))
        print(f"{case.name}: {'ok' if results[-1].ok else results[-1].problems}", file=sys.stderr)
    for case in clean_cases(minutes) if minutes > 0 else []:
        detector, records = analyse(ensure(case, args.out))
        clean.append(score(case, detector, records))
        print(f"{case.name}: {'ok' if clean[-1].ok else clean[-1].problems}", file=sys.stderr)
    cost = (
        None if args.no_cost else measure_cost(10.0 if args.quick else 20.0, 3 if args.quick else 5, args.out)
    )
    text = markdown(results, clean, minutes, cost)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy_sync.md").write_text(text)
    data = {
        "corpus": [asdict(r) for r in results],
        "clean": [asdict(r) for r in clean],
        "cost": None if cost is None else asdict(cost),
    }
    (args.out / "accuracy_sync.json").write_text(json.dumps(data, indent=1))
    print(text)
    return 0 if all(r.ok for r in results + clean) else 1


if __name__ == "__main__":
    sys.exit(main())
