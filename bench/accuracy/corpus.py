"""Which clips the accuracy corpus holds: seeded defect clips, clean clips, hard negatives,
documented limits, re-encoded clips, the ffmpeg CLI's formats and a folder of real footage.

A :class:`ClipPlan` says how to make a clip (or where it is); the recipes, encoders and the
ffmpeg CLI's formats it names are in :mod:`bench.accuracy.recipes`,
:mod:`bench.accuracy.encoders` and :mod:`bench.accuracy.ffmpeg_cli`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from avmon import testsrc
from bench.accuracy.encoders import CLIPS_PER_ENCODER, CONTENT_KINDS, ENCODERS, MAX_DEFECTS
from bench.accuracy.ffmpeg_cli import CLEAN_CLIP_S, CLEAN_KINDS, CLI_CASES, CLI_FORMATS, cli_case
from bench.accuracy.recipes import HARD_NEGATIVES, LIMITS, RECIPES

MARGIN_S = 2.0  # between any two defects of a clip
AUDIO_MARGIN_S = 3.0  # between loudness and another sound defect: short-term loudness spans 3 s
SAME_TYPE_GAP_S = 10.0  # between two defects of one type
EDGE_S = 2.0  # no defect in the first or last EDGE_S of a clip
# ... and loudness this much more before the end: short-term loudness (3 s) must clear the
# excursion and stay in range for gap_s (1 s), or the excursion ends with the clip.
LOUDNESS_TAIL_S = 4.0
SOUND_TYPES = frozenset({"silence", "clipping", "loudness"})
# What --clean takes from a folder.
MEDIA_SUFFIXES = frozenset({".ts", ".m2ts", ".mts", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".flv", ".mxf"})

Kind = Literal["defects", "clean", "hard", "limit", "user"]


@dataclass(frozen=True)
class ClipPlan:
    """One clip of the corpus: how to make it (or, for ``user`` clips, where it is)."""

    name: str
    kind: Kind
    duration_s: float = 20.0
    seed: int = 0
    width: int = 320
    height: int = 180
    ext: str = ".ts"
    script: str = ""  # defects in ``avmon testsrc`` syntax
    sync_marks: bool = False
    recipe: str = ""  # hard negatives: a key of HARD_NEGATIVES
    path: str = ""  # user clips: the file
    encoder: str = ""  # defect clips re-encoded by another encoder: a key of ENCODERS
    cli: str = ""  # clips the ffmpeg CLI encodes: "<format>/<case>", keys of CLI_FORMATS and CLI_CASES

    @property
    def note(self) -> str:
        if self.kind in ("hard", "limit"):
            return RECIPES[self.recipe].what
        if self.kind == "user":
            return "real footage (--clean)"
        if self.cli:
            fmt, case = self.cli.split("/")
            return f"ffmpeg CLI {CLI_FORMATS[fmt].what}: {cli_case(case).what}"
        if self.kind == "clean":
            return "generator programme, no defect" + (", sync marks" if self.sync_marks else "")
        if self.encoder:
            return f"{self.script} (re-encoded: {ENCODERS[self.encoder].what})"
        return self.script


@dataclass(frozen=True)
class _Kind:
    """How the corpus draws one scripted defect type: duration range (s) and parameters."""

    min_s: float
    max_s: float
    params: Callable[[np.random.Generator], str] = lambda rng: ""


def _offset(rng: np.random.Generator) -> str:
    # Outside BT.1359's detectability window (45 ms early, 125 ms late) and inside ±500 ms,
    # beyond which a mark once a second pairs with its neighbour's flash.
    late = bool(rng.random() < 0.5)
    ms = rng.uniform(150, 450) if late else -rng.uniform(60, 400)
    return f"offset_ms={ms:.0f}"


DRAWN: dict[str, _Kind] = {
    "black": _Kind(2.5, 6.0),
    "freeze": _Kind(2.5, 6.0),
    "silence": _Kind(
        2.5, 6.0, lambda rng: f"level_dbfs={rng.uniform(-90, -70):.0f}" if rng.random() < 0.3 else ""
    ),
    "clipping": _Kind(0.5, 3.0, lambda rng: f"gain_db={rng.uniform(18, 30):.0f}"),
    "loudness": _Kind(11.0, 15.0, lambda rng: f"gain_db={rng.choice([-1, 1]) * rng.uniform(12, 20):.0f}"),
    "av_offset": _Kind(6.0, 10.0, _offset),
    "corrupt": _Kind(1.0, 3.0),
    "drop": _Kind(1.0, 3.0),
    "timestamp_jump": _Kind(0.0, 0.0, lambda rng: f"jump_s={rng.uniform(2, 30):.0f}"),
}


def _group(kind: str) -> str:
    return testsrc.TRUTH_TYPES.get(kind, kind)


def _fits(kind: str, start: float, end: float, placed: list[tuple[str, float, float]]) -> bool:
    for other, a, b in placed:
        margin = MARGIN_S
        if {kind, other} & {"loudness"} and {kind, other} <= SOUND_TYPES:
            margin = AUDIO_MARGIN_S
        if _group(kind) == _group(other):
            margin = max(margin, SAME_TYPE_GAP_S)
        if start < b + margin and a < end + margin:
            return False
    return True


def place(
    rng: np.random.Generator, kind: str, duration_s: float, placed: list[tuple[str, float, float]]
) -> str | None:
    """A script item for ``kind`` at a random time that keeps the corpus's distances to
    ``placed`` (and is added to it), or None if none was found."""
    spec = DRAWN[kind]
    for _ in range(50):
        length = round(float(rng.uniform(spec.min_s, spec.max_s)), 2)
        latest = duration_s - EDGE_S - length - (LOUDNESS_TAIL_S if kind == "loudness" else 0.0)
        if latest < EDGE_S:
            return None
        start = round(float(rng.uniform(EDGE_S, latest)), 2)
        if _fits(kind, start, start + length, placed):
            placed.append((kind, start, start + length))
            params = spec.params(rng)
            span = f"@{start:g}" if length == 0 else f"@{start:g}+{length:g}"
            return f"{kind}{span}" + (f":{params}" if params else "")
    return None


def corpus(*, quick: bool, seed: int) -> list[ClipPlan]:
    """The seeded corpus: defect clips, clean clips, the hard negatives and the documented limits."""
    rng = np.random.default_rng([seed, 0xACC])
    n_defect, n_clean = (10, 2) if quick else (90, 8)
    plans: list[ClipPlan] = []
    # Types are dealt from shuffled decks so that every type gets about the same share; a card
    # that does not fit the clip goes back under the deck.
    deck: list[str] = []
    for i in range(n_defect):
        want = int(rng.integers(2, 5))
        duration = 20.0 if quick else float(rng.choice([20.0, 25.0, 30.0]))
        placed: list[tuple[str, float, float]] = []
        items: list[str] = []
        failed: set[str] = set()  # kinds that did not fit this clip
        while len(items) < want:
            fresh = [k for k in reversed(deck) if k not in failed]
            if not fresh:
                if len(items) >= 2 or len(failed) == len(DRAWN):
                    break
                more = list(DRAWN)
                rng.shuffle(more)
                deck = more + deck
                continue
            kind = fresh[0]
            deck.remove(kind)
            if kind == "loudness" and not placed:
                duration = 30.0  # 11-15 s of loudness: room for others only in a 30 s clip
            item = place(rng, kind, duration, placed)
            if item is not None:
                items.append(item)
                continue
            deck.insert(0, kind)  # back under the deck, for a later clip
            failed.add(kind)
            if len(items) < 2 and duration < 30.0:
                duration, failed = 30.0, set()  # a 20 s clip can be too full for a second defect
        big = not quick and rng.random() < 0.3
        plans.append(
            ClipPlan(
                name=f"defects-{i:02d}",
                kind="defects",
                duration_s=duration,
                seed=seed * 1000 + i,
                width=640 if big else 320,
                height=360 if big else 180,
                ext=".mp4" if i % 5 in (1, 3) else ".ts",
                script=", ".join(
                    sorted(items, key=lambda item: float(item.split("@")[1].split("+")[0].split(":")[0]))
                ),
                sync_marks=any(k.startswith("av_offset") for k in items) or bool(rng.random() < 0.3),
            )
        )
    for i in range(n_clean):
        big = i % 3 == 2
        plans.append(
            ClipPlan(
                name=f"clean-{i:02d}",
                kind="clean",
                duration_s=20.0 if quick else 30.0,
                seed=seed * 1000 + 500 + i,
                width=640 if big else 320,
                height=360 if big else 180,
                ext=".mp4" if i % 2 else ".ts",
                sync_marks=i % 4 == 1,
            )
        )
    variants = 1 if quick else 2
    for recipe in HARD_NEGATIVES:
        for v in range(variants):
            plans.append(
                ClipPlan(
                    name=f"hard-{recipe}-{v}",
                    kind="hard",
                    duration_s=20.0,
                    seed=seed * 1000 + 800 + 10 * v + list(HARD_NEGATIVES).index(recipe),
                    width=320 if v == 0 else 640,
                    height=180 if v == 0 else 360,
                    ext=".ts" if v == 0 else ".mp4",
                    recipe=recipe,
                    sync_marks=HARD_NEGATIVES[recipe].sync_marks,
                )
            )
    for k, recipe in enumerate(LIMITS):
        plans.append(ClipPlan(f"limit-{recipe}", "limit", 20.0, seed * 1000 + 900 + k, recipe=recipe))
    if not quick:
        plans += encoder_clips(seed)
    return plans


def encoder_clips(seed: int) -> list[ClipPlan]:
    """Defect clips re-encoded by other encoders than the generator's x264 (MPEG-2, HEVC, VP9,
    MPEG-4 Part 2, with their usual sound codecs): the content defects, which survive decoding
    and encoding again (transport damage and timestamp jumps do not)."""
    rng = np.random.default_rng([seed, 0xC0DEC])  # apart: the rest of the corpus stays as it was
    plans: list[ClipPlan] = []
    for k, encoder in enumerate(ENCODERS):
        for v in range(CLIPS_PER_ENCODER):
            kinds = list(CONTENT_KINDS)
            rng.shuffle(kinds)
            placed: list[tuple[str, float, float]] = []
            items: list[str] = []
            for kind in kinds:
                item = place(rng, kind, 30.0, placed) if len(items) < MAX_DEFECTS else None
                if item is not None:
                    items.append(item)
            items.sort(key=lambda item: float(item.split("@")[1].split("+")[0].split(":")[0]))
            plans.append(
                ClipPlan(
                    name=f"encoder-{encoder}-{v}",
                    kind="defects",
                    duration_s=30.0,
                    seed=seed * 1000 + 700 + 10 * k + v,
                    width=640 if v % 2 else 320,
                    height=360 if v % 2 else 180,
                    ext=ENCODERS[encoder].ext,
                    script=", ".join(items),
                    sync_marks=any(item.startswith("av_offset") for item in items),
                    encoder=encoder,
                )
            )
    return plans


def cli_clips(*, quick: bool) -> list[ClipPlan]:
    """The ffmpeg CLI corpus: every defect case in every format it fits, and clean programme of
    every picture kind in every format (quick: one clean kind per format, 20 s)."""
    plans: list[ClipPlan] = []
    for fmt_name, fmt in CLI_FORMATS.items():
        for case_name, case in CLI_CASES.items():
            if (case.stereo_only and fmt.channels != 2) or (case.surround_only and fmt.channels != 6):
                continue
            plans.append(
                ClipPlan(
                    f"cli-{fmt_name}-{case_name}", "defects", case.duration_s, cli=f"{fmt_name}/{case_name}"
                )
            )
        kinds = (
            CLEAN_KINDS[list(CLI_FORMATS).index(fmt_name) % len(CLEAN_KINDS) :][:1] if quick else CLEAN_KINDS
        )
        for kind in kinds:
            plans.append(
                ClipPlan(
                    f"cli-{fmt_name}-clean-{kind}",
                    "clean",
                    20.0 if quick else CLEAN_CLIP_S,
                    cli=f"{fmt_name}/clean-{kind}",
                )
            )
    return plans


def user_clips(folder: Path) -> list[ClipPlan]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    if not files:
        raise SystemExit(f"--clean {folder}: no media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
    return [ClipPlan(f"real-{i:02d}-{p.stem}"[:40], "user", path=str(p)) for i, p in enumerate(files)]
