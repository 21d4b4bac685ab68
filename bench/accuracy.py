"""Detector accuracy: recall, precision and boundary errors per defect type, on generated media.

    python -m bench.accuracy                 # the full corpus (about 3-4 minutes on 2 cores)
    python -m bench.accuracy --quick         # a smaller corpus (about 1 minute)
    python -m bench.accuracy --clean DIR     # also: every clip in DIR must give zero defects

The corpus, drawn from ``--seed``:

* **defect clips**: ``avmon.testsrc`` media (H.264/AAC, MPEG-TS and MP4, 320x180 and 640x360)
  with 2-4 defects each, of random types at random times: black, freeze, silence, clipping,
  loudness, av_offset (with sync marks), corrupt and drop (truth ``decode_error``),
  timestamp_jump. Defects never overlap: any two are at least :data:`MARGIN_S` apart
  (:data:`AUDIO_MARGIN_S` between loudness and another sound defect, the span of short-term
  loudness), two of one type at least :data:`SAME_TYPE_GAP_S`;
* **other encoders** (:data:`ENCODERS`, full corpus only): defect clips of the content types
  (black, freeze, silence, clipping, loudness, av_offset) decoded and encoded again by FFmpeg's
  MPEG-2 (with and without B pictures) and MPEG-4 Part 2, x265 and libvpx VP9, with MP2, AC-3,
  Opus and MP3 sound, in MPEG-TS, Matroska and WebM, every picture and sample kept at its time;
* **the ffmpeg CLI corpus** (:data:`CLI_FORMATS` x :data:`CLI_CASES`): clips encoded by Debian's
  ffmpeg, an encoder independent of ours, from its lavfi sources, in H.264/AAC 25p, H.264 59.94p
  with AC-3, HEVC Main with AC-3 5.1(side), HEVC Main10 50p full range with AAC, and MPEG-2
  576i25 (top field first) with MP2, all in MPEG-TS. Defects placed by FFmpeg's filters at known
  times: black, freeze, a freeze under a burned-in running clock, stutter (pictures removed,
  timestamps kept), silence, a +10 LU loudness step, phase inversion (stereo) and a lost centre
  channel (5.1); and clean programme of six kinds per format (graphics, a zooming fractal, sharp
  graphics over a gradient, grain, a dark scene, fast cellular motion), 60 s each: 30 minutes
  (20 s of one kind per format with ``--quick``). The report has a table per format;
* **clean clips**: the generator's programme with no defect, some with sync marks;
* **documented limits** (:data:`LIMITS`): content a detector's docs say it reports although a
  person would not call it a defect; run and shown, not counted;
* **hard negatives**: generator media re-encoded through PyAV with content that is not a defect
  but looks like one to a naive detector (:data:`HARD_NEGATIVES`): a fade to black and back
  shorter than 2 s, a dark grainy scene, a grainy static card and a slide under narration, a
  quiet passage at -50 dBFS, percussive peaks at -1 dBFS, rapid scene cuts, flashes.

Matching, per clip and type: a found defect matches a truth of the same type whose start is
within :data:`TOLERANCE_S` (transport damage, ``corrupt`` and ``drop``, is lost at random over
its span and shows until the next keyframe: a record starting anywhere in that is a match);
pairs are made one to one, closest first. A ``decode_error`` truth
also accepts a ``blockiness`` record (``params.expect``). Further records of the type whose start
is within the tolerance of a matched truth are *duplicates*, not false positives: detectors key
findings by stream or channel (``timestamp_jump`` reports the video and the audio timeline of one
jump; corruption gives ``decode_error`` and ``blockiness``). Precision counts every record of the
whole corpus (clean and hard clips included). End errors are against the truth's end, except
``decode_error`` (damage lasts until the next keyframe: ``params.recovers_by_s``) and
``timestamp_jump`` (the detector's end is the first time after the jump: start + ``jump_s``).
``av_sync`` matches also compare the found ``offset_ms`` with the injected one.

Real footage: none was available where this suite was written (no network). ``--clean DIR``
adds a folder of real clips (any container FFmpeg reads): each must yield zero defects, and
any defect it yields counts as a false positive of its type.

The report also compares our black, freeze and silence boundaries with FFmpeg's own filters on
a few clips (:func:`agreement_cases`: where both must agree, and where we differ on purpose).

Writes ``accuracy.md`` and ``accuracy.json`` to ``--out`` (default ``bench/out``) and prints the
markdown. Media are cached in ``<out>/accuracy/`` by their parameters and the generator's source.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import numpy.typing as npt

from avmon import testsrc
from shared.models import Defect
from worker.session import analyze

OUT = Path(__file__).resolve().parent / "out"

TOLERANCE_S = 0.5  # a found start within this of the truth's start matches
TARGET_RECALL = 0.98
TARGET_PRECISION = 0.98
TARGET_START_ERROR_S = 0.2  # mean |start error| of the matches
TARGET_OFFSET_MS = 20.0  # |found offset_ms - injected offset_ms| on sync marks

MARGIN_S = 2.0  # between any two defects of a clip
AUDIO_MARGIN_S = 3.0  # between loudness and another sound defect: short-term loudness spans 3 s
SAME_TYPE_GAP_S = 10.0  # between two defects of one type
EDGE_S = 2.0  # no defect in the first or last EDGE_S of a clip
# ... and loudness this much more before the end: short-term loudness (3 s) must clear the
# excursion and stay in range for gap_s (1 s), or the excursion ends with the clip.
LOUDNESS_TAIL_S = 4.0

# Defect types as the truth names them, in report order; blockiness and signal_loss have no
# truth of their own here (blockiness may stand for decode_error) but can be false positives.
TRUTH_TYPES = (
    "black",
    "freeze",
    "silence",
    "clipping",
    "loudness",
    "av_sync",
    "decode_error",
    "timestamp_jump",
    "stutter",
    "phase_inversion",
)
REPORT_TYPES = (*TRUTH_TYPES, "blockiness", "signal_loss", "stereo_collapsed")
SOUND_TYPES = frozenset({"silence", "clipping", "loudness"})
MEDIA_SUFFIXES = frozenset({".ts", ".m2ts", ".mts", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".flv", ".mxf"})

Kind = Literal["defects", "clean", "hard", "limit", "user"]
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


# ------------------------------------------------------------------ corpus


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
            return f"ffmpeg CLI {CLI_FORMATS[fmt].what}: {_cli_case(case).what}"
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


# ------------------------------------------------------------------ hard negatives


@dataclass(frozen=True)
class Media:
    """Decoded media to transform: the pictures' times and the whole sound track."""

    fps: int
    width: int
    height: int
    rate: int
    duration_s: float
    seed: int


VideoFn = Callable[[int, float, U8], U8]  # (frame index, t s, yuv420p (h*3/2, w)) -> picture
AudioFn = Callable[[F32], F32]  # (channels, n) at Media.rate, sample n at n / rate s -> samples


@dataclass(frozen=True)
class Recipe:
    """A hard negative: generator media (clean, or with ``base``) re-encoded through ``build``."""

    what: str  # what the clip is, for the report
    why: str  # why it is not a defect
    build: Callable[[Media, Path], tuple[VideoFn | None, AudioFn | None]]
    sync_marks: bool = False


def _planes(buf: U8, h: int) -> tuple[U8, U8]:
    return buf[:h], buf[h:]


def _scaled(buf: U8, h: int, gain: float, luma_add: float = 0.0) -> U8:
    """A picture faded towards black by ``gain`` (1: unchanged, 0: black) in limited range."""
    y, c = _planes(buf, h)
    faded = [16 + (y - 16.0) * gain + luma_add, 128 + (c - 128.0) * gain]
    out: U8 = np.clip(np.rint(np.concatenate(faded)), 16, 240).astype(np.uint8)
    return out


def _grain(seed: int, i: int, shape: tuple[int, int], sigma: float) -> npt.NDArray[np.int16]:
    """Fresh Gaussian grain of ``sigma`` codes in every frame (the generator's own grain, uniform
    ±3 codes, has sigma 2)."""
    noise = np.random.default_rng([seed, 77, i]).normal(0.0, sigma, shape)
    return np.rint(noise).astype(np.int16)


def _with_luma(buf: U8, h: int, y: npt.NDArray[np.int16]) -> U8:
    out = buf.copy()
    out[:h] = np.clip(y, 16, 235).astype(np.uint8)
    return out


def _envelope(t: F64, start: float, fall: float, hold: float, rise: float) -> F64:
    """Gain 1 → 0 over ``fall`` s from ``start``, 0 for ``hold`` s, back to 1 over ``rise`` s."""
    down = np.clip((t - start) / fall, 0.0, 1.0)
    up = np.clip((t - start - fall - hold) / rise, 0.0, 1.0)
    return np.asarray(np.where(t < start + fall + hold, 1.0 - down, up), np.float64)


def _fade(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # Picture and sound dip together, 1.9 s in all (an ad-break transition); the variant's seed
    # picks the shape: a quick cut to black or a longer ramp.
    rng = np.random.default_rng([media.seed, 1])
    fall, hold = (0.7, 0.5) if rng.random() < 0.5 else (1.0, 0.0)
    rise = 1.9 - fall - hold
    start = media.duration_s / 2 - 1.0

    def video(i: int, t: float, buf: U8) -> U8:
        gain = float(_envelope(np.array([t]), start, fall, hold, rise)[0])
        return buf if gain >= 1.0 else _scaled(buf, media.height, gain)

    def audio(x: F32) -> F32:
        t = np.arange(x.shape[1]) / media.rate
        return (x * _envelope(t, start, fall, hold, rise)).astype(np.float32)

    return video, audio


def _dark(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # A night scene: a quarter of the contrast, lifted a little, with grain on top (the
    # generator's grain shrinks with the contrast): mean luma about 40, well under mid-grey but
    # far from 98 % of pixels under blackdetect's threshold (code 37).
    def video(i: int, t: float, buf: U8) -> U8:
        h = media.height
        dark = _scaled(buf, h, 0.25, 4.0)
        return _with_luma(dark, h, dark[:h].astype(np.int16) + _grain(media.seed, i, dark[:h].shape, 2.0))

    return video, None


def _held(media: Media, picture: Callable[[U8], U8], sigma: float) -> VideoFn:
    """A still picture (``picture`` of the first frame) with fresh grain of ``sigma`` codes."""
    held: list[U8] = []

    def video(i: int, t: float, buf: U8) -> U8:
        if not held:
            held.append(picture(buf))
        h = media.height
        grain = _grain(media.seed, i, (h, media.width), sigma)
        return _with_luma(held[0], h, held[0][:h].astype(np.int16) + grain)

    return video


# Camera grain of 3 codes (sigma) survives x264 at CRF 23 in every macroblock of a still picture;
# the generator's 2 codes on a still picture mostly do not (see LIMITS).
CAMERA_GRAIN = 3.0
FAINT_GRAIN = 2.0


def _static_card(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # A camera on a still scene: the programme's first picture, held, with grain; sound goes on.
    return _held(media, lambda buf: buf.copy(), CAMERA_GRAIN), None


def _faint_card(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    return _held(media, lambda buf: buf.copy(), FAINT_GRAIN), None


def slide_picture(width: int, height: int, seed: int) -> U8:
    """A presentation slide (yuv420p, (h*3/2, w)): a light background, a coloured title bar and
    lines of "text"."""
    h, w = height, width
    rng = np.random.default_rng([seed, 5])
    yy, xx = np.mgrid[0:h, 0:w]
    y = 190 - 25 * yy / h + 6 * np.sin(xx / w * 3.1)
    y[: h // 6] = 70  # title bar
    for row in range(h // 4, h - h // 10, max(6, h // 14)):
        length = int(rng.uniform(0.3, 0.85) * w)
        for x0 in range(w // 12, w // 12 + length, max(8, w // 20)):
            y[row : row + max(2, h // 40), x0 : x0 + max(5, w // 28)] = rng.uniform(30, 60)
    c = np.full((h // 2, w), 128.0)
    c[: h // 12, :] = 150  # the title bar's U (4:2:0 planes are packed two rows to a row)
    c[h // 4 : h // 4 + h // 12, :] = 100  # its V
    out: U8 = np.clip(np.rint(np.concatenate([y, c])), 16, 240).astype(np.uint8)
    return out


def _slide(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # A presentation slide filmed under narration, with grain; the speech-like sound goes on.
    picture = slide_picture(media.width, media.height, media.seed)
    return _held(media, lambda buf: picture, CAMERA_GRAIN), None


def _quiet(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # 6 s of programme at -50 dBFS RMS (not silence: the threshold is -60), 50 ms ramps; shorter
    # than the loudness detector's 10 s, so a quiet passage, not a loudness defect.
    start, length, ramp = media.duration_s / 2 - 3.0, 6.0, 0.05

    def audio(x: F32) -> F32:
        a, b = int(start * media.rate), int((start + length) * media.rate)
        rms = float(np.sqrt(np.mean(x[:, a:b].astype(np.float64) ** 2)))
        gain = 10 ** (-50 / 20) / max(rms, 1e-9)
        t = np.arange(x.shape[1]) / media.rate
        dip = _envelope(t, start - ramp, ramp, length, ramp)
        return (x * (gain + (1 - gain) * dip)).astype(np.float32)

    return None, audio


def _peaks(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # Percussion over the programme, a hit every 0.6-1.2 s, the mix scaled so that its sample
    # peak is -1 dBFS: loud, unclipped transients.
    def audio(x: F32) -> F32:
        rng = np.random.default_rng([media.seed, 6])
        n = x.shape[1]
        hits = np.zeros(n)
        at = 1.0
        k = np.arange(int(0.25 * media.rate)) / media.rate
        while at < media.duration_s - 0.5:
            f0 = rng.uniform(60, 120)
            body = np.sin(2 * np.pi * f0 * k * (1 + 0.5 * np.exp(-k / 0.02))) * np.exp(-k / 0.06)
            click = rng.standard_normal(k.size) * np.exp(-k / 0.004) * 0.5
            i = int(at * media.rate)
            hits[i : i + k.size] += (body + click)[: n - i]
            at += rng.uniform(0.6, 1.2)
        mix = x + 0.5 * hits[None, :]
        peak = float(np.abs(mix).max())
        return np.asarray(mix * (10 ** (-1 / 20) / peak), np.float32)

    return None, audio


def _montage(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # Rapid hard cuts (every 0.5-2 s) between two programmes: cuts, not defects.
    other = src.with_name(src.stem + "-b" + src.suffix)
    testsrc.generate(
        other, duration_s=media.duration_s, seed=media.seed + 1, width=media.width, height=media.height
    )
    frames = _decode_video(other)
    rng = np.random.default_rng([media.seed, 3])
    cuts: list[float] = [0.0]
    while cuts[-1] < media.duration_s:
        cuts.append(cuts[-1] + float(rng.uniform(0.5, 2.0)))

    def video(i: int, t: float, buf: U8) -> U8:
        alt = next(frames, None)
        shot = int(np.searchsorted(cuts, t, side="right")) - 1
        return alt if shot % 2 and alt is not None else buf

    return video, None


def _flashes(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # On top of the sync marks (a white frame and a beep once a second), camera flashes: two or
    # three frames pushed most of the way to white, five times.
    rng = np.random.default_rng([media.seed, 4])
    starts = sorted(int(s) for s in rng.uniform(1, media.duration_s - 1, 5) * media.fps)
    lit = {s + k: 0.8 - 0.25 * k for s in starts for k in range(int(rng.integers(2, 4)))}

    def video(i: int, t: float, buf: U8) -> U8:
        if i not in lit:
            return buf
        h = media.height
        y = buf[:h].astype(np.float32)
        return _with_luma(buf, h, np.rint(y + (235 - y) * lit[i]).astype(np.int16))

    return video, None


HARD_NEGATIVES: dict[str, Recipe] = {
    "fade": Recipe(
        "fade to black and back with the sound, 1.9 s in all",
        "a programme transition: black pictures and quiet sound last less than the 2 s minimum",
        _fade,
    ),
    "dark": Recipe(
        "dark scene with grain (mean luma about 40)",
        "dark but not black (blackdetect's 98 % of pixels at most code 37), and moving",
        _dark,
    ),
    "static_card": Recipe(
        f"still scene with camera grain (sigma {CAMERA_GRAIN:g} codes) under live sound",
        "the grain survives the encoder in every macroblock of every picture: the picture is live",
        _static_card,
    ),
    "slide": Recipe(
        f"presentation slide with camera grain (sigma {CAMERA_GRAIN:g} codes) under narration",
        "as the still scene: a filmed slide is live; only a held (bit-identical) one is frozen",
        _slide,
    ),
    "quiet": Recipe(
        "6 s quiet passage at -50 dBFS RMS",
        "above the -60 dBFS silence threshold, and shorter than loudness's 10 s minimum",
        _quiet,
    ),
    "peaks": Recipe(
        "percussive hits peaking at -1 dBFS",
        "isolated transients, unclipped: no dense clipping, no 0.2 s of true peaks over -1 dBTP",
        _peaks,
    ),
    "montage": Recipe(
        "hard scene cuts every 0.5-2 s",
        "cuts change the whole picture at once: neither frozen nor black nor blocky",
        _montage,
    ),
    "flashes": Recipe(
        "sync-mark flashes and beeps, plus camera flashes",
        "one to three bright frames: not black, not frozen; beeps are far below clipping",
        _flashes,
        sync_marks=True,
    ),
}


# Documented limits: run and shown, but not counted as false positives (the detector's docs say
# that it reports them, and so does FFmpeg).
LIMITS: dict[str, Recipe] = {
    "faint_card": Recipe(
        f"still scene with faint grain (sigma {FAINT_GRAIN:g} codes, the generator's) under live sound",
        "x264 at CRF 23 leaves most of such grain uncoded between keyframes: decoded pictures are "
        "half bit-identical macroblocks, -67 to -78 dB apart, i.e. a held picture being refined. "
        "freeze.py documents this limit (reported frozen, a warning under live sound); FFmpeg's "
        "freezedetect calls it frozen too",
        _faint_card,
    ),
}
RECIPES: dict[str, Recipe] = {**HARD_NEGATIVES, **LIMITS}


def _decode_video(path: Path) -> Iterator[U8]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)


def _decode_audio(path: Path) -> tuple[F32, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        return np.concatenate(chunks, axis=1).astype(np.float32), int(stream.codec_context.sample_rate)


def reencode(
    src: Path,
    dst: Path,
    video_fn: VideoFn | None,
    audio_fn: AudioFn | None,
    *,
    gop_s: float = 2.0,
    x264: str = "",
) -> None:
    """Decode ``src``, pass its pictures through ``video_fn`` and its whole sound track through
    ``audio_fn`` (None: unchanged), and encode H.264/AAC to ``dst`` (.ts or .mp4) as the generator
    does (x264 veryfast, a keyframe every ``gop_s``; ``x264`` adds x264 params, e.g. ``qp=0``)."""
    sound, rate = _decode_audio(src)
    if audio_fn is not None:
        sound = np.ascontiguousarray(audio_fn(sound), dtype=np.float32)
    fmt = {".ts": "mpegts", ".mp4": "mp4"}[dst.suffix]
    options = testsrc.TS_OPTIONS if fmt == "mpegts" else {}
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt, container_options=options) as out:
        vin = inp.streams.video[0]
        fps = round(float(vin.average_rate or 25))
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        cc = vs.codec_context
        cc.time_base = Fraction(1, fps)
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1, 1
        cc.thread_count = 2
        gop = max(1, round(gop_s * fps))
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:mbtree=0" + (f":{x264}" if x264 else "")
        vs.options = {"preset": "veryfast", "x264-params": params}
        aus = out.add_stream("aac", rate=rate)
        aus.layout = "stereo" if sound.shape[0] == 2 else "mono"
        layout = aus.layout.name
        sent = 0
        for i, frame in enumerate(inp.decode(vin)):
            buf = np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)
            if video_fn is not None:
                buf = video_fn(i, i / fps, buf)
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(buf), format="yuv420p")
            picture.pts = i
            picture.color_range = 1
            out.mux(vs.encode(picture))
            upto = min(sound.shape[1], round((i + 1) / fps * rate))
            while sent + 1024 <= upto or (upto == sound.shape[1] and sent < upto):
                n = min(1024, sound.shape[1] - sent)
                block = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(sound[:, sent : sent + n]), format="fltp", layout=layout
                )
                block.sample_rate, block.pts, block.time_base = rate, sent, Fraction(1, rate)
                out.mux(aus.encode(block))
                sent += n
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))


@dataclass(frozen=True)
class Encoder:
    """Another encoder than the generator's, and the sound codec and container that go with it."""

    what: str
    ext: str
    video: str
    audio: str
    options: tuple[tuple[str, str], ...] = ()
    bit_rate: int = 0  # bits/s for 640x360 (scaled by area), for encoders without a quality mode
    b_frames: int = -1  # -1: the encoder's default
    gop: int = 0  # pictures; 0: the encoder's default


ENCODERS: dict[str, Encoder] = {
    "mpeg2": Encoder("FFmpeg's MPEG-2 (its defaults: GOP 12, no B pictures), 3 Mbit/s, MP2, MPEG-TS",
                     ".ts", "mpeg2video", "mp2", bit_rate=3_000_000),
    "mpeg2b": Encoder("FFmpeg's MPEG-2, 3 Mbit/s, GOP 15 with B pictures, MP2, MPEG-TS", ".ts",
                      "mpeg2video", "mp2", bit_rate=3_000_000, b_frames=2, gop=15),
    "hevc": Encoder("x265 (default CRF 28), AC-3, Matroska", ".mkv", "libx265", "ac3",
                    (("x265-params", "log-level=error"),)),
    "vp9": Encoder("libvpx VP9 (realtime), Opus, WebM", ".webm", "libvpx-vp9", "libopus",
                   (("deadline", "realtime"), ("cpu-used", "8"))),
    "mpeg4": Encoder("FFmpeg's MPEG-4 Part 2, 2 Mbit/s, MP3, Matroska", ".mkv", "mpeg4", "libmp3lame",
                     bit_rate=2_000_000),
}  # fmt: skip
CONTENT_KINDS = ("black", "freeze", "silence", "clipping", "loudness", "av_offset")
CLIPS_PER_ENCODER = 2
MAX_DEFECTS = 4  # per clip, as the generator's defect clips


def transcode(src: Path, dst: Path, encoder: Encoder) -> None:
    """Decode ``src`` and encode it again with ``encoder``, every picture and sample at its own
    time (times from the first picture), so that the truth of ``src`` holds for ``dst``."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        fps = Fraction(round(float(vin.average_rate or 25)))
        # Any: PyAV types a stream opened by codec name as video, audio or subtitles.
        vs: Any = out.add_stream(encoder.video, rate=fps, options=dict(encoder.options))
        width, height = vin.codec_context.width, vin.codec_context.height
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        cc = vs.codec_context
        cc.time_base = 1 / fps
        if encoder.bit_rate:
            cc.bit_rate = round(encoder.bit_rate * width * height / (640 * 360))
        if encoder.b_frames >= 0:
            cc.max_b_frames = encoder.b_frames
        if encoder.gop:
            cc.gop_size = encoder.gop
        rate = int(ain.codec_context.sample_rate)
        aus: Any = out.add_stream(encoder.audio, rate=rate, layout="stereo")
        formats = aus.codec_context.codec.audio_formats or ()
        sample_format = formats[0].name if formats else "fltp"
        resampler = av.AudioResampler(format=sample_format, layout="stereo", rate=rate)
        origin: float | None = None
        frame: Any
        for frame in inp.decode(vin, ain):
            if frame.pts is None or frame.time_base is None:
                continue
            t = float(frame.pts * frame.time_base)
            origin = t if origin is None else origin
            if isinstance(frame, av.VideoFrame):
                picture = frame.reformat(format="yuv420p")
                picture.pts, picture.time_base = round((t - origin) * fps), cc.time_base
                out.mux(vs.encode(picture))
                continue
            first = max(0, round((t - origin) * rate))
            for chunk in resampler.resample(frame):
                chunk.pts, chunk.time_base = first, Fraction(1, rate)
                first += chunk.samples
                out.mux(aus.encode(chunk))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))


# ------------------------------------------------------------------ making and analysing clips


def _source_key() -> bytes:
    """What the media depend on besides their plan: the generator's and this module's code."""
    return testsrc.generator_source() + Path(__file__).read_bytes()


def make_clip(plan: ClipPlan, out_dir: Path) -> tuple[Path, testsrc.GroundTruth]:
    """The clip of ``plan`` (generated once, then reused from ``out_dir``) and its truth."""
    if plan.kind == "user":
        path = Path(plan.path)
        return path, _empty_truth(path)
    key = hashlib.sha1(repr(plan).encode() + _source_key()).hexdigest()[:10]
    path = out_dir / f"{plan.name}-{key}{plan.ext}"
    truth_file = testsrc.truth_path(path)
    if path.exists() and truth_file.exists():
        return path, testsrc.GroundTruth.load(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "duration_s": plan.duration_s,
        "seed": plan.seed,
        "width": plan.width,
        "height": plan.height,
        "sync_marks": plan.sync_marks,
    }
    if plan.cli:
        truth = make_cli_clip(plan, path)
        truth_file.write_text(truth.to_json())
        return path, truth
    if plan.kind not in ("hard", "limit") and not plan.encoder:
        truth = testsrc.generate(path, defects=testsrc.parse_script(plan.script), **common)
        return path, truth
    if plan.encoder:
        base = path.with_name(path.stem + "-base.ts")
        base_truth = testsrc.generate(base, defects=testsrc.parse_script(plan.script), **common)
        transcode(base, path, ENCODERS[plan.encoder])
        for used in out_dir.glob(f"{base.stem}*"):
            used.unlink()
        truth = replace(base_truth, source=str(path))
        truth_file.write_text(truth.to_json())
        return path, truth
    base = path.with_name(path.stem + "-base" + plan.ext)
    base_truth = testsrc.generate(base, **common)
    media = Media(25, plan.width, plan.height, base_truth.sample_rate, plan.duration_s, plan.seed)
    video_fn, audio_fn = RECIPES[plan.recipe].build(media, base)
    reencode(base, path, video_fn, audio_fn)
    for used in out_dir.glob(f"{base.stem}*"):  # the base, its truth, a montage's second programme
        used.unlink()
    truth = replace(base_truth, source=str(path), defects=[], sync_marks_s=[])
    truth_file.write_text(truth.to_json())
    return path, truth


# ------------------------------------------------------------------ the ffmpeg CLI corpus


@dataclass(frozen=True)
class CliFormat:
    """A broadcast format the ffmpeg CLI encodes (Debian's ffmpeg: an encoder independent of ours)."""

    what: str
    video: tuple[str, ...]  # encoder options
    audio: tuple[str, ...]
    size: str = "320x180"
    rate: float = 25.0  # pictures per second (frames; an interlaced format weaves 2 fields each)
    interlaced: bool = False
    channels: int = 2  # 2: stereo, 6: 5.1(side)
    full_range: bool = False

    @property
    def audio_frame(self) -> int:
        """Samples per frame the sound encoder takes (filter_complex does not adapt to it)."""
        codec = self.audio[self.audio.index("-c:a") + 1]
        return {"ac3": 1536, "mp2": 1152}.get(codec, 1024)


_X265 = ("-x265-params", "log-level=error")
CLI_FORMATS: dict[str, CliFormat] = {
    "h264-aac": CliFormat(
        "H.264 High (libx264) + AAC stereo, 25p",
        ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        ("-c:a", "aac", "-b:a", "160k"),
    ),
    "h264-5994-ac3": CliFormat(
        "H.264 (libx264) 59.94p + AC-3 stereo",
        ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        ("-c:a", "ac3", "-b:a", "192k"),
        rate=60000 / 1001,
    ),
    "hevc-ac3-51": CliFormat(
        "HEVC Main (libx265) + AC-3 5.1(side)",
        ("-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *_X265),
        ("-c:a", "ac3", "-b:a", "384k"),
        channels=6,
    ),
    "hevc10-aac-50p": CliFormat(
        "HEVC Main10 (libx265) 50p, full range + AAC stereo",
        ("-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", *_X265),
        ("-c:a", "aac", "-b:a", "160k"),
        rate=50.0,
        full_range=True,
    ),
    "mpeg2i-mp2": CliFormat(
        "MPEG-2 video 576i25 (top field first) + MP2 stereo",
        ("-c:v", "mpeg2video", "-b:v", "5M", "-flags", "+ilme+ildct", "-top", "1", "-pix_fmt", "yuv420p"),
        ("-c:a", "mp2", "-b:a", "192k"),
        size="720x576",
        interlaced=True,
    ),
}


@dataclass(frozen=True)
class CliDefect:
    """One defect placed in a CLI clip: ``kind`` over [start, end) s."""

    kind: str  # black, freeze, freeze_overlay, silence, centre_lost, loudness, stutter, phase_inversion
    start: float
    end: float


@dataclass(frozen=True)
class CliCase:
    what: str
    duration_s: float
    defects: tuple[CliDefect, ...] = ()
    picture: str = "testsrc2"  # a key of CLI_PICTURES
    clock: bool = False  # a burned-in running clock over the whole clip
    stereo_only: bool = False  # needs a stereo pair of its own (phase inversion)
    surround_only: bool = False  # needs 5.1 (a centre channel)


# Moving programme pictures of different kinds (lavfi sources, then filters).
CLI_PICTURES: dict[str, str] = {
    "testsrc2": "testsrc2=size={size}:rate={rate}",  # graphics: bars, moving shapes, a counter
    "mandelbrot": "mandelbrot=size={size}:rate={rate}",  # zooming fractal: fine, sharp detail
    "lower_third": (  # sharp graphics over a smooth, slowly panning gradient (blockiness bait)
        "gradients=size={size}:rate={rate}:speed=0.02:c0=0x203060:c1=0x80a0c0,"
        "drawbox=x=iw/20:y=ih*0.72:w=iw*0.9:h=ih/8:color=white:t=fill,"
        "drawbox=x=iw/20:y=ih*0.66:w=iw*0.4:h=ih/16:color=0x102040:t=fill"
    ),
    "grain": "testsrc2=size={size}:rate={rate},noise=alls=12:allf=t",  # camera-like grain
    "dark": "testsrc2=size={size}:rate={rate},eq=brightness=-0.35:contrast=0.5",  # a dark scene
    "sport": "life=size={size}:rate={rate}:ratio=0.3:death_color=0x206020:life_color=0xe0e0e0:mold=10",
}

CLI_CASES: dict[str, CliCase] = {
    "picture": CliCase(
        "black, freeze, stutter",
        30.0,
        (CliDefect("black", 4.0, 8.0), CliDefect("freeze", 12.0, 16.0), CliDefect("stutter", 22.0, 22.2)),
    ),
    "overlay": CliCase(
        "freeze under a burned-in running clock, black",
        24.0,
        (CliDefect("freeze_overlay", 4.0, 10.0), CliDefect("black", 15.0, 19.0)),
        clock=True,
    ),
    "sound": CliCase(
        "silence, a loudness step of +10 LU",
        40.0,
        (CliDefect("silence", 4.0, 8.0), CliDefect("loudness", 14.0, 34.0)),
    ),
    "stereo": CliCase(
        "phase inversion, silence",
        30.0,
        (CliDefect("phase_inversion", 4.0, 14.0), CliDefect("silence", 20.0, 24.0)),
        stereo_only=True,
    ),
    "dialogue": CliCase(
        "centre channel lost (dialogue), silence",
        30.0,
        (CliDefect("centre_lost", 4.0, 14.0), CliDefect("silence", 20.0, 24.0)),
        surround_only=True,
    ),
}
CLEAN_KINDS = tuple(CLI_PICTURES)
CLEAN_CLIP_S = 60.0  # 5 formats x 6 kinds x 60 s: 30 minutes of clean content

# Programme sound (measured with FFmpeg's ebur128): stereo at -23 LUFS, a chord whose 660 Hz
# note is common to both channels (correlation about 0.9, like centred dialogue) and the rest
# not; 5.1 at about -24.5 LUFS, the chord in the front pair, a syllabic tone in the centre (its
# loss leaves the loudness in range: that is silence's defect, not loudness's), 50 Hz in the LFE
# and quieter tones in the surrounds.
_CHORD = (
    "0.024*sin(2*PI*440*t)*(1+0.5*sin(2*PI*0.3*t))+0.071*sin(2*PI*660*t)",
    "0.024*sin(2*PI*550*t)*(1+0.5*sin(2*PI*0.2*t))+0.071*sin(2*PI*660*t)",
)
_SURROUND = (
    "0.8*(" + _CHORD[0] + ")",
    "0.8*(" + _CHORD[1] + ")",
    "0.04*sin(2*PI*330*t)*(0.6+0.4*sin(2*PI*3*t))",
    "0.1*sin(2*PI*50*t)",
    "0.012*sin(2*PI*770*t)",
    "0.012*sin(2*PI*880*t)",
)


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


def _cli_case(name: str) -> CliCase:
    if name.startswith("clean-"):
        kind = name.removeprefix("clean-")
        return CliCase(f"clean programme: {kind}", 0.0, picture=kind)
    return CLI_CASES[name]


def _within(d: CliDefect) -> str:
    return f"between(t,{d.start},{d.end - 1e-6})"


def make_cli_clip(plan: ClipPlan, path: Path) -> testsrc.GroundTruth:
    """Encode ``plan``'s clip with the ffmpeg CLI (MPEG-TS), defects placed by FFmpeg's filters
    where the case says; returns its truth."""
    from tests.ffmpeg_media import ffmpeg  # the CLI runner the tests use

    fmt_name, case_name = plan.cli.split("/")
    fmt, case = CLI_FORMATS[fmt_name], _cli_case(case_name)
    seconds = plan.duration_s
    rate = 2 * fmt.rate if fmt.interlaced else fmt.rate  # the source weaves two pictures a frame
    video = CLI_PICTURES[case.picture].format(size=fmt.size, rate=f"{rate:.6f}") + f",trim=duration={seconds}"
    truths: list[dict[str, Any]] = []
    dropped: list[str] = []
    for d in case.defects:
        if d.kind in ("freeze", "freeze_overlay"):
            first, last = round(d.start * rate), round(d.end * rate) - 1
            a, b = f"fa{first}", f"fb{first}"
            video += f",split[{a}][{b}];[{a}][{b}]freezeframes=first={first}:last={last}:replace={first}"
            truths.append(
                {"type": "freeze", "start_s": d.start, "end_s": d.end, "params": {"injected": d.kind}}
            )
        elif d.kind == "black":
            video += f",drawbox=color=black:t=fill:enable='{_within(d)}'"
            truths.append({"type": "black", "start_s": d.start, "end_s": d.end, "params": {}})
        elif d.kind == "stutter":
            first, last = round(d.start * rate), round(d.end * rate) - 1
            dropped.append(f"not(between(n,{first},{last}))")
            truths.append(
                {
                    "type": "stutter",
                    "start_s": d.start,
                    "end_s": (last + 1) / rate,
                    "params": {"frames": last - first + 1},
                }
            )
    if case.clock:
        video += (
            ",drawtext=text='%{pts\\:hms}':fontsize=h/12:fontcolor=white:box=1:boxcolor=black:x=w/40:y=h/30"
        )
    if dropped:
        video += ",select='" + "*".join(dropped).replace(",", "\\,") + "'"
    if fmt.interlaced:
        video += ",tinterlace=mode=interleave_top,setfield=tff"
    if fmt.full_range:
        video += ",scale=out_range=full"
    channels = list(_SURROUND if fmt.channels == 6 else _CHORD)
    for d in case.defects:
        if d.kind == "silence":
            channels = [f"({c})*not({_within(d)})" for c in channels]
            truths.append({"type": "silence", "start_s": d.start, "end_s": d.end, "params": {}})
        elif d.kind == "loudness":
            channels = [f"({c})*if({_within(d)},3.1623,1)" for c in channels]
            truths.append(
                {"type": "loudness", "start_s": d.start, "end_s": d.end, "params": {"gain_db": 10.0}}
            )
        elif d.kind == "phase_inversion":
            channels[1] = f"({channels[1]})*if({_within(d)},-1,1)"
            truths.append({"type": "phase_inversion", "start_s": d.start, "end_s": d.end, "params": {}})
        elif d.kind == "centre_lost":
            channels[2] = f"({channels[2]})*not({_within(d)})"
            truths.append(
                {"type": "silence", "start_s": d.start, "end_s": d.end, "params": {"channel": "FC"}}
            )
    layout = "5.1(side)" if fmt.channels == 6 else "stereo"
    sound = f"aevalsrc='{'|'.join(channels)}':s=48000:d={seconds}:c={layout}:n={fmt.audio_frame}"
    sound = sound.replace(",", "\\,")
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-filter_complex", f"{video}[v];{sound}[a]",
        "-map", "[v]", "-map", "[a]", "-fps_mode", "passthrough", *fmt.video,
        *(("-color_range", "pc") if fmt.full_range else ()), *fmt.audio, "-f", "mpegts", str(path),
    )  # fmt: skip
    w, h = (int(x) for x in fmt.size.split("x"))
    return testsrc.GroundTruth(
        source=str(path), duration_s=seconds, seed=0, width=w, height=h, fps=round(fmt.rate),
        sample_rate=48_000, channels=fmt.channels, gop_s=0.0, origin_s=0.0, audio_start_s=0.0,
        scene_cuts_s=[], defects=sorted(truths, key=lambda t: t["start_s"]),
    )  # fmt: skip


def by_cli_format(results: Sequence[ClipResult]) -> list[tuple[str, str, TypeFigures]]:
    """(format, defect type, figures) of the ffmpeg CLI corpus, clean clips included."""
    rows: list[tuple[str, str, TypeFigures]] = []
    for fmt_name, fmt in CLI_FORMATS.items():
        mine = [r for r in results if r.plan.cli.split("/")[0] == fmt_name]
        for name, fig in figures(mine).items():
            if fig.truths or fig.found:
                rows.append((fmt.what, name, fig))
    return rows


def _empty_truth(path: Path) -> testsrc.GroundTruth:
    return testsrc.GroundTruth(
        source=str(path), duration_s=0.0, seed=0, width=0, height=0, fps=0, sample_rate=0,
        channels=0, gop_s=0.0, origin_s=0.0, audio_start_s=0.0, scene_cuts_s=[], defects=[],
    )  # fmt: skip


@dataclass(frozen=True)
class Found:
    """A defect the pipeline reported (its final record)."""

    type: str
    start_s: float
    end_s: float | None
    key: str
    severity: str
    metrics: dict[str, float]

    @classmethod
    def of(cls, d: Defect) -> Found:
        prefix = f"{max(d.start_s, 0.0):013.3f}-{d.type.value}"
        key = d.defect_id[len(prefix) + 1 :] if d.defect_id.startswith(prefix + "-") else ""
        numbers = {k: float(v) for k, v in d.metrics.items() if isinstance(v, float | int)}
        return cls(d.type.value, d.start_s, d.end_s, key, d.severity, numbers)

    def label(self) -> str:
        end = "open" if self.end_s is None else f"{self.end_s:.2f}"
        key = f"[{self.key}]" if self.key else ""
        return f"{self.type}{key}@{self.start_s:.2f}-{end}"


def find_defects(path: Path) -> list[Found]:
    """Run the worker's pipeline on ``path``; the final record of every defect, by start."""
    records: dict[str, Defect] = {}
    analyze(str(path), lambda d: records.__setitem__(d.defect_id, d))
    return sorted((Found.of(d) for d in records.values()), key=lambda f: (f.start_s, f.type))


# ------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Truth:
    type: str
    start_s: float
    end_s: float  # what the detector's end should be (see the module docstring)
    params: dict[str, Any]

    @classmethod
    def of(cls, d: dict[str, Any]) -> Truth:
        params = dict(d.get("params", {}))
        end = float(d["end_s"])
        if d["type"] == "decode_error":
            end = float(params.get("recovers_by_s", end))
        elif d["type"] == "timestamp_jump":
            end = float(d["start_s"]) + float(params["jump_s"])
        return cls(d["type"], float(d["start_s"]), end, params)

    @property
    def accepts(self) -> tuple[str, ...]:
        accepted = tuple(self.params.get("expect", [self.type]))
        if self.params.get("injected") == "drop":
            # Whole frames removed (MP4: no transport packets to lose): lost references are
            # decode_error's (frame_num gaps), missing pictures also stutter's.
            accepted = (*accepted, "stutter")
        return accepted

    def admits(self, start_s: float, tolerance: float) -> bool:
        """Whether a record starting at ``start_s`` may be this truth: within the tolerance of
        its start, or, for transport damage (lost at random over a span, shown until the next
        keyframe), anywhere the damage can be on screen."""
        if self.type == "decode_error":
            return self.start_s - tolerance <= start_s <= max(self.end_s, self.start_s + tolerance)
        return abs(start_s - self.start_s) <= tolerance

    def label(self) -> str:
        injected = self.params.get("injected", self.type)
        extra = {
            k: v for k, v in self.params.items() if k in ("offset_ms", "gain_db", "jump_s", "level_dbfs")
        }
        detail = ",".join(f"{k}={v:g}" for k, v in extra.items())
        return f"{injected}@{self.start_s:.2f}-{self.end_s:.2f}" + (f"({detail})" if detail else "")


@dataclass(frozen=True)
class Match:
    truth: Truth
    found: Found

    @property
    def start_error(self) -> float:
        return self.found.start_s - self.truth.start_s

    @property
    def end_error(self) -> float | None:
        return None if self.found.end_s is None else self.found.end_s - self.truth.end_s

    @property
    def offset_error_ms(self) -> float | None:
        want, got = self.truth.params.get("offset_ms"), self.found.metrics.get("offset_ms")
        return None if want is None or got is None else float(got) - float(want)


@dataclass
class ClipResult:
    plan: ClipPlan
    media: str  # the file
    truths: list[Truth]
    found: list[Found]
    matches: list[Match] = field(default_factory=list)
    missed: list[Truth] = field(default_factory=list)
    false: list[Found] = field(default_factory=list)
    duplicates: list[tuple[Found, Truth]] = field(default_factory=list)
    seconds: float = 0.0  # analysis time (wall)
    media_s: float = 0.0


def match(truths: Sequence[Truth], found: Sequence[Found], tolerance: float = TOLERANCE_S) -> ClipResult:
    """Pair found defects with truths one to one, closest start first (see the module docstring)."""
    pairs = sorted(
        (abs(f.start_s - t.start_s), ti, fi)
        for ti, t in enumerate(truths)
        for fi, f in enumerate(found)
        if f.type in t.accepts and t.admits(f.start_s, tolerance)
    )
    # Prefer the truth's own type (decode_error over blockiness) when both are in tolerance.
    pairs.sort(key=lambda p: (found[p[2]].type != truths[p[1]].type, p[0]))
    used_t: set[int] = set()
    used_f: set[int] = set()
    result = ClipResult(ClipPlan("", "defects"), "", list(truths), list(found))
    for _, ti, fi in pairs:
        if ti in used_t or fi in used_f:
            continue
        used_t.add(ti)
        used_f.add(fi)
        result.matches.append(Match(truths[ti], found[fi]))
    result.missed = [t for i, t in enumerate(truths) if i not in used_t]
    for fi, f in enumerate(found):
        if fi in used_f:
            continue
        twin = next(
            (
                truths[ti]
                for ti in sorted(used_t)
                if f.type in truths[ti].accepts and truths[ti].admits(f.start_s, tolerance)
            ),
            None,
        )
        if twin is not None:
            result.duplicates.append((f, twin))
        else:
            result.false.append(f)
    result.matches.sort(key=lambda m: m.truth.start_s)
    return result


def run_clip(plan: ClipPlan, out_dir: Path) -> ClipResult:
    """Make (or reuse) the clip, analyse it and match what was found against its truth."""
    path, truth = make_clip(plan, out_dir)
    started = time.perf_counter()
    found = find_defects(path)
    seconds = time.perf_counter() - started
    result = match([Truth.of(d) for d in truth.defects], found)
    result.plan, result.media, result.seconds = plan, str(path), seconds
    result.media_s = truth.duration_s or _media_duration(path)
    return result


def _media_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1e6


# ------------------------------------------------------------------ figures


@dataclass
class TypeFigures:
    type: str
    truths: int = 0
    found: int = 0
    tp: int = 0
    fp: int = 0
    duplicates: int = 0
    start_errors: list[float] = field(default_factory=list)
    end_errors: list[float] = field(default_factory=list)
    offset_errors_ms: list[float] = field(default_factory=list)

    @property
    def fn(self) -> int:
        return self.truths - self.tp

    @property
    def recall(self) -> float | None:
        return self.tp / self.truths if self.truths else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def mean_start_error(self) -> float | None:
        return statistics.fmean(abs(e) for e in self.start_errors) if self.start_errors else None

    @property
    def max_start_error(self) -> float | None:
        return max(abs(e) for e in self.start_errors) if self.start_errors else None

    @property
    def mean_end_error(self) -> float | None:
        return statistics.fmean(abs(e) for e in self.end_errors) if self.end_errors else None

    def targets(self) -> dict[str, bool | None]:
        """Which of the issue's targets this type meets (None: nothing to judge)."""
        r, p, e = self.recall, self.precision, self.mean_start_error
        met: dict[str, bool | None] = {
            "recall": None if r is None else r >= TARGET_RECALL,
            "precision": None if p is None else p >= TARGET_PRECISION,
            "start_error": None if e is None else e <= TARGET_START_ERROR_S,
        }
        if self.offset_errors_ms:
            met["offset"] = max(abs(x) for x in self.offset_errors_ms) <= TARGET_OFFSET_MS
        if self.truths == 0:
            met = {"precision": self.fp == 0}  # a type with no truth here: only false alarms count
        return met


def figures(results: Sequence[ClipResult]) -> dict[str, TypeFigures]:
    table = {t: TypeFigures(t) for t in REPORT_TYPES}

    def row(name: str) -> TypeFigures:
        return table.setdefault(name, TypeFigures(name))

    for r in results:
        if r.plan.kind == "limit":
            continue  # shown, not counted: see LIMITS
        for t in r.truths:
            row(t.type).truths += 1
        for f in r.found:
            row(f.type).found += 1
        for m in r.matches:
            fig = row(m.truth.type)
            fig.tp += 1
            fig.start_errors.append(m.start_error)
            if m.end_error is not None:
                fig.end_errors.append(m.end_error)
            if m.offset_error_ms is not None:
                fig.offset_errors_ms.append(m.offset_error_ms)
        for f in r.false:
            row(f.type).fp += 1
        for _, t in r.duplicates:
            row(t.type).duplicates += 1
    return table


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _ok(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "**no**")


def breakdown(results: Sequence[ClipResult]) -> list[tuple[str, int, int, list[float]]]:
    """(injected type + container, truths, matched, start errors) for the transport defects,
    whose detection depends on the container."""
    rows: dict[str, tuple[int, int, list[float]]] = {}
    for r in results:
        matched = {id(m.truth): m for m in r.matches}
        for t in r.truths:
            if t.type != "decode_error":
                continue
            label = f"{t.params.get('injected')} in {r.plan.ext.lstrip('.').upper()}"
            n, k, errs = rows.get(label, (0, 0, []))
            m = matched.get(id(t))
            rows[label] = (n + 1, k + (m is not None), [*errs, *([m.start_error] if m else [])])
    return [(label, n, k, errs) for label, (n, k, errs) in sorted(rows.items())]


def by_encoder(results: Sequence[ClipResult]) -> list[tuple[str, int, int, int, list[float]]]:
    """(encoder, truths, matched, false positives, start errors) of the re-encoded defect clips."""
    rows: dict[str, tuple[int, int, int, list[float]]] = {}
    for r in results:
        if not r.plan.encoder:
            continue
        n, k, fp, errs = rows.get(r.plan.encoder, (0, 0, 0, []))
        rows[r.plan.encoder] = (
            n + len(r.truths),
            k + len(r.matches),
            fp + len(r.false),
            [*errs, *(m.start_error for m in r.matches)],
        )
    return [(ENCODERS[name].what, *rows[name]) for name in ENCODERS if name in rows]


def known_causes(
    table: dict[str, TypeFigures], transport: Sequence[tuple[str, int, int, list[float]]]
) -> list[str]:
    """Explanations of missed targets whose cause is known (each only when its symptom shows)."""
    notes = []
    if any(label == "drop in MP4" and found == 0 for label, _, found, _ in transport):
        notes.append(
            "`decode_error`: `drop` in MP4 is never reported. The generator removes whole video frames "
            "there (MP4 has no transport packets to lose): the demuxer flags no packet and the decoder "
            "marks no picture corrupt. A lost reference picture shows as a gap in the next picture's "
            "H.264 `frame_num` (`lost_references`); lost non-reference pictures only as missing "
            "pictures, a `stutter` when 3 go in a row or within 5 s. In MPEG-TS, drop is found."
        )
    damage = table.get("decode_error")
    if damage is not None and damage.fp:
        notes.append(
            "`decode_error` false positives: the truth starts where the damage was injected, the "
            "damage itself later. `drop` loses TS packets at random, never the first or last of a "
            "picture nor any of the first picture of the span, so on small pictures the first "
            "packet lost can come half a second into the span (seed 1: defects-27, injected at "
            "26.01 s, first corrupt packet at 26.52 s); a record that starts there is outside the "
            "tolerance, though it reports real damage."
        )
    sync = table.get("av_sync")
    error = None if sync is None else sync.mean_start_error
    if error is not None and error > TARGET_START_ERROR_S:
        notes.append(
            f"`av_sync` start error ({error:.2f} s): a change of offset can only be seen at a sync "
            "mark, once a second, and the detector puts the start between the last good mark and "
            "the first bad one (its documented rule), so a start anywhere between two marks is up "
            "to 0.5 s off, 0.25 s on average. When the sound is early, the first mark inside the "
            "span loses its beep (the generator skips that much sound at the span's edge), which "
            "can push the start one mark later. The offsets themselves are exact."
        )
    return notes


def render(
    results: Sequence[ClipResult], meta: dict[str, Any], agreement: Sequence[AgreementRow] = ()
) -> str:
    """The markdown report."""
    table = figures(results)
    media_s = sum(r.media_s for r in results)
    lines = [
        "## Detector accuracy",
        "",
        f"`python -m bench.accuracy{meta['args']}`: {len(results)} clips, {media_s / 60:.1f} min of media "
        f"(seed {meta['seed']}; {meta['wall_s']:.0f} s on {meta['machine']}). A found defect matches a truth "
        f"of its type whose start is within ±{TOLERANCE_S} s (transport damage: anywhere from its "
        "injection to the next keyframe, as it is lost at random over its span), one to one; "
        "precision counts every record of the corpus, clean and hard clips included.",
        "",
        "> **Real footage was not available** where these figures were made (no network access): the "
        "clean and hard-negative cases below are synthesized from the project's generator and re-encoded "
        "through PyAV. To add real footage, put openly licensed clips in a folder and run "
        "`python -m bench.accuracy --clean DIR`: every clip in it must yield zero defects, and any "
        "defect it yields counts as a false positive of its type.",
        "",
        "| type | truth | found | TP | FN | FP | dup | recall | precision | mean \\|Δstart\\| s "
        "| max \\|Δstart\\| s | mean \\|Δend\\| s | targets met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, fig in table.items():
        if fig.truths == 0 and fig.found == 0:
            continue
        met = fig.targets()
        verdict = ", ".join(f"{k} {_ok(v)}" for k, v in met.items() if v is not None) or "-"
        lines.append(
            f"| {name} | {fig.truths} | {fig.found} | {fig.tp} | {fig.fn} | {fig.fp} | {fig.duplicates} "
            f"| {_num(fig.recall, '.2f')} | {_num(fig.precision, '.2f')} | {_num(fig.mean_start_error)} "
            f"| {_num(fig.max_start_error)} | {_num(fig.mean_end_error)} | {verdict} |"
        )
    lines += [
        "",
        f"Targets: recall ≥ {TARGET_RECALL}, precision ≥ {TARGET_PRECISION}, mean |Δstart| ≤ "
        f"{TARGET_START_ERROR_S} s; A/V offset within {TARGET_OFFSET_MS:g} ms. *dup*: further records of "
        "a matched defect (a timestamp jump is reported per stream, video and audio; corruption as "
        "`decode_error` and `blockiness`): neither hits nor false positives. Ends are compared with the "
        "truth's end; for `decode_error` with the next keyframe (damage shows until then), for "
        "`timestamp_jump` with the first time after the jump.",
    ]
    sync = table["av_sync"]
    if sync.offset_errors_ms:
        errs = [abs(x) for x in sync.offset_errors_ms]
        lines += [
            "",
            f"**A/V offset on sync marks**: {len(errs)} offsets of 60-450 ms, early and late; |found - "
            f"injected| mean {statistics.fmean(errs):.2f} ms, max {max(errs):.2f} ms "
            f"(target ≤ {TARGET_OFFSET_MS:g} ms: {_ok(max(errs) <= TARGET_OFFSET_MS)}).",
        ]
    rows = breakdown(results)
    if rows:
        lines += ["", "Transport damage by container (truth `decode_error`):", ""]
        lines += ["| injected | truth | found | recall | mean \\|Δstart\\| s |", "|---|---:|---:|---:|---:|"]
        for label, n, k, errs in rows:
            mean = statistics.fmean(abs(e) for e in errs) if errs else None
            lines.append(f"| {label} | {n} | {k} | {k / n:.2f} | {_num(mean)} |")
    encoded = by_encoder(results)
    if encoded:
        lines += ["", "Content defects in media re-encoded by other encoders (in the table above too):", ""]
        lines += [
            "| encoder | truth | found | false | recall | mean \\|Δstart\\| s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for what, n, k, fp, errs in encoded:
            mean = statistics.fmean(abs(e) for e in errs) if errs else None
            lines.append(f"| {what} | {n} | {k} | {fp} | {k / n:.2f} | {_num(mean)} |")
    cli = by_cli_format(results)
    if cli:
        clean_s = sum(r.media_s for r in results if r.plan.cli and r.plan.kind == "clean")
        clean_found = sum(len(r.found) for r in results if r.plan.cli and r.plan.kind == "clean")
        lines += [
            "",
            f"### Formats encoded by the ffmpeg CLI (in the tables above too): {clean_found} defect(s) on "
            f"{clean_s / 60:.1f} min of clean programme",
            "",
            "| format | type | truth | found | FP | recall | precision | mean \\|Δstart\\| s "
            "| max \\|Δstart\\| s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for what, name, fig in cli:
            lines.append(
                f"| {what} | {name} | {fig.truths} | {fig.found} | {fig.fp} | {_num(fig.recall, '.2f')} "
                f"| {_num(fig.precision, '.2f')} | {_num(fig.mean_start_error)} "
                f"| {_num(fig.max_start_error)} |"
            )
    negatives = [r for r in results if r.plan.kind in ("clean", "hard", "user")]
    if negatives:
        fps = sum(len(r.found) for r in negatives)
        lines += [
            "",
            f"### Clean clips and hard negatives: {fps} defect(s) on {len(negatives)} clips",
            "",
            "| clip | what it is | why it is not a defect | defects found |",
            "|---|---|---|---|",
        ]
        for r in negatives:
            why = RECIPES[r.plan.recipe].why if r.plan.kind in ("hard", "limit") else "-"
            what = f"{r.plan.note} ({r.plan.width}x{r.plan.height} {r.plan.ext})"
            if r.plan.kind == "user":
                what = f"{r.plan.note}: {r.plan.path}"
            got = ", ".join(f.label() for f in r.found) or "none"
            lines.append(f"| {r.plan.name} | {what} | {why} | {got} |")
    limits = [r for r in results if r.plan.kind == "limit"]
    if limits:
        lines += [
            "",
            "Documented limits, shown but not counted (the detector's docs say it reports them):",
            "",
            "| clip | what it is | why it is reported | defects found |",
            "|---|---|---|---|",
        ]
        for r in limits:
            got = ", ".join(f"{f.label()} ({f.severity})" for f in r.found) or "none"
            lines.append(f"| {r.plan.name} | {r.plan.note} | {RECIPES[r.plan.recipe].why} | {got} |")
    misses = [(r, t) for r in results for t in r.missed]
    false = [(r, f) for r in results if r.plan.kind == "defects" for f in r.false]
    if misses or false:
        lines += ["", "### Misses and false positives on defect clips", ""]
        lines += [
            "| clip (seed, container) | truth missed / record unmatched | found nearby |",
            "|---|---|---|",
        ]
        for r, t in misses:
            near = [f.label() for f in r.found if f.type in t.accepts and abs(f.start_s - t.start_s) < 5]
            where = f"{r.plan.name} ({r.plan.seed}, {r.plan.ext})"
            lines.append(f"| {where} | missed {t.label()} | {', '.join(near) or 'none'} |")
        for r, f in false:
            near = [t.label() for t in r.truths if abs(f.start_s - t.start_s) < 5]
            where = f"{r.plan.name} ({r.plan.seed}, {r.plan.ext})"
            lines.append(f"| {where} | false {f.label()} | {', '.join(near) or 'none'} |")
    notes = known_causes(table, rows)
    if notes:
        lines += ["", "### Why targets are missed", "", *(f"- {note}" for note in notes)]
    if agreement:
        lines += ["", *render_agreement(agreement)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ FFmpeg's filters


@dataclass(frozen=True)
class FfmpegEvents:
    """FFmpeg's detections on a file, as (start, end) media times (s): blackdetect (d=2,
    pic_th=0.98, pix_th=0.10), freezedetect (n=-60dB, d=2), silencedetect (n=-60dB, d=2)."""

    black: list[tuple[float, float]]
    freeze: list[tuple[float, float]]
    silence: list[tuple[float, float]]


FFMPEG_VIDEO = (("blackdetect", "d=2:pic_th=0.98:pix_th=0.10"), ("freezedetect", "n=-60dB:d=2"))
FFMPEG_AUDIO = (("silencedetect", "n=-60dB:d=2"),)


def _start_s(stream: Any) -> float:
    """Container time (s) of a stream's first frame."""
    if stream.start_time is None or stream.time_base is None:
        raise ValueError(f"{stream.type} stream has no start time")
    return float(stream.start_time * stream.time_base)


def ffmpeg_events(path: Path) -> FfmpegEvents:
    """Run FFmpeg's blackdetect, freezedetect and silencedetect (PyAV's libavfilter) over ``path``
    and read their events from the frames' metadata (``lavfi.black_start`` ...). Times are media
    times like the monitor's: container time minus the earliest first timestamp. A run still
    going at the end ends at the last frame's end. blackdetect tags every run of black pictures,
    so its minimum duration is applied here (it only filters what it logs)."""
    marks: list[tuple[str, float]] = []
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        origin = min(_start_s(s) for s in (video, audio))
        graph = av.filter.Graph()
        chains: dict[Any, tuple[Any, Any]] = {}
        for stream, filters, source, sink in (
            (video, FFMPEG_VIDEO, graph.add_buffer(template=video), "buffersink"),
            (audio, FFMPEG_AUDIO, graph.add_abuffer(template=audio), "abuffersink"),
        ):
            nodes = [source, *(graph.add(name, args) for name, args in filters), graph.add(sink)]
            graph.link_nodes(*nodes)
            chains[stream] = (source, nodes[-1])
        graph.configure()
        ends = {"video": 0.0, "audio": 0.0}

        def drain(sink: Any, kind: str) -> None:
            while True:
                try:
                    frame = sink.pull()
                except (av.BlockingIOError, av.EOFError):
                    return
                duration = (
                    frame.samples / frame.sample_rate
                    if kind == "audio"
                    else 1 / float(video.average_rate or 25)
                )
                ends[kind] = max(ends[kind], float(frame.pts * frame.time_base) + duration - origin)
                for k, v in frame.metadata.items():
                    if k.endswith(("_start", "_end")):
                        marks.append(
                            (k.removeprefix("lavfi.").removeprefix("freezedetect."), float(v) - origin)
                        )

        for packet in container.demux(video, audio):
            source, sink = chains[packet.stream]
            for frame in packet.decode():
                source.push(frame)
                drain(sink, packet.stream.type)
        for stream, (source, sink) in chains.items():
            source.push(None)
            drain(sink, stream.type)

    def runs(name: str, end_at: float, min_s: float = 0.0) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        start: float | None = None
        for key, t in marks:
            if key == f"{name}_start" and start is None:
                start = t
            elif key == f"{name}_end" and start is not None:
                out.append((start, t))
                start = None
        if start is not None:
            out.append((start, end_at))
        return [(a, b) for a, b in out if b - a >= min_s - 1e-6]

    return FfmpegEvents(
        black=runs("black", ends["video"], 2.0),
        freeze=runs("freeze", ends["video"]),
        silence=runs("silence", ends["audio"]),
    )


AGREEMENT_S = 0.1  # our boundaries and FFmpeg's agree within this
COMPARED = ("black", "freeze", "silence")


@dataclass(frozen=True)
class AgreementCase:
    """A clip on which our black, freeze and silence boundaries are compared with FFmpeg's."""

    key: str  # a short name, for tests
    name: str
    plan: ClipPlan
    expect: str  # what happens, for the report
    why: str
    gop_s: float = 2.0
    x264: str = ""  # extra x264 params of the re-encode (hard recipes only), e.g. "qp=0"


@dataclass(frozen=True)
class AgreementRow:
    case: AgreementCase
    ours: dict[str, list[tuple[float, float]]]
    ffmpeg: dict[str, list[tuple[float, float]]]
    found: list[Found]  # everything the pipeline reported

    def agrees(self, kind: str, tolerance: float = AGREEMENT_S) -> bool:
        """Same number of runs, every start and end within ``tolerance``."""
        a, b = self.ours[kind], self.ffmpeg[kind]
        return len(a) == len(b) and all(
            abs(x0 - y0) <= tolerance and abs(x1 - y1) <= tolerance
            for (x0, x1), (y0, y1) in zip(a, b, strict=True)
        )


def agreement_cases() -> list[AgreementCase]:
    """The FFmpeg comparison: defects on which both must agree, and the cases where we differ on
    purpose (keyframes inside freezes, held black, static slides, quiet passages) or agree on
    what is not a defect (fades)."""
    return [
        AgreementCase(
            "defaults",
            "black and silence",
            ClipPlan("agree-defaults", "defects", 14.0, 11, script="black@2+3, silence@8+3"),
            "agree (and see held black)",
            "blackdetect's and silencedetect's defaults and boundaries, on digital silence",
        ),
        AgreementCase(
            "held_black",
            "held black picture",
            ClipPlan("agree-held-black", "defects", 12.0, 13, script="black@3+4"),
            "black agrees; FFmpeg also reports a freeze, we do not",
            "a held black picture is one defect, black: a second (freeze) record would page twice",
        ),
        AgreementCase(
            "slide_held",
            "held slide (lossless)",
            ClipPlan("agree-slide-held", "hard", 12.0, 15, recipe="slide_held"),
            "freeze agrees; ours is a warning",
            "a bit-identical slide is frozen for both; the narration goes on, so ours is a warning",
            x264="qp=0",
        ),
        AgreementCase(
            "faint_noise",
            "still picture with faint noise (lossless)",
            ClipPlan("agree-faint-noise", "hard", 12.0, 16, recipe="faint_noise"),
            "FFmpeg reports a freeze (MAFD under -60 dB); we do not",
            "noise in every macroblock, however faint, is a live camera: a static slide, not a freeze",
            x264="qp=0",
        ),
        AgreementCase(
            "keyframes",
            "keyframes inside a freeze",
            ClipPlan("agree-keyframes", "defects", 14.0, 12, script="freeze@3+7"),
            "ends agree; FFmpeg's freeze starts at a keyframe inside it, or is split there",
            "each keyframe re-encodes the held picture (-50 to -30 dB to the one before) and x264 "
            "refines it in between: freezedetect restarts its reference, we accept re-encodings",
        ),
        AgreementCase(
            "one_gop",
            "freeze within one GOP (lossy)",
            ClipPlan("agree-one-gop", "defects", 14.0, 14, script="freeze@6.4+3"),
            "FFmpeg misses it; we report it",
            "x264 keeps refining a held picture in P and B pictures, by more than -60 dB at times",
            gop_s=5.0,
        ),
        AgreementCase(
            "fade",
            "fade to black and back, 1.9 s",
            ClipPlan("agree-fade", "hard", 12.0, 17, recipe="fade"),
            "agree: nothing",
            "a fade shorter than d=2 s is a transition for both (black pictures and quiet sound)",
        ),
        AgreementCase(
            "quiet",
            "quiet passage at -50 dBFS",
            ClipPlan("agree-quiet", "hard", 14.0, 18, recipe="quiet"),
            "agree: nothing",
            "-50 dBFS is above -60 dB for both, FFmpeg's sample peaks and our windowed RMS",
        ),
        AgreementCase(
            "hiss",
            "dead air with hiss at -70 dBFS RMS",
            ClipPlan("agree-hiss", "defects", 14.0, 19, script="silence@4+5:level_dbfs=-70"),
            "we report silence; FFmpeg does not",
            "silencedetect tests every sample's peak, and noise peaks cross -60 dB; dead air over a "
            "noisy line is silence by its energy",
        ),
    ]


# Recipes used only by the FFmpeg comparison (the programme around a held span, 4 to 8 s).
HELD_FROM_S, HELD_UNTIL_S = 4.0, 8.0


def _slide_held(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # The programme cuts to a slide held bit-identical (no grain) under the sound, then back.
    picture = slide_picture(media.width, media.height, media.seed)

    def video(i: int, t: float, buf: U8) -> U8:
        return picture if HELD_FROM_S <= t < HELD_UNTIL_S else buf

    return video, None


def _faint_noise(media: Media, src: Path) -> tuple[VideoFn | None, AudioFn | None]:
    # The first picture of the span held with faint sensor noise: a tenth of the pixels one code
    # up or down, fresh every frame. MAFD between two such pictures is about -63 dB on luma and
    # -66 dB over the three planes (freezedetect's measure): under the -60 dB threshold.
    held: list[U8] = []

    def video(i: int, t: float, buf: U8) -> U8:
        if not HELD_FROM_S <= t < HELD_UNTIL_S:
            return buf
        if not held:
            held.append(buf.copy())
        h = media.height
        rng = np.random.default_rng([media.seed, 9, i])
        shape = (h, media.width)
        noise = (rng.random(shape) < 0.1) * rng.choice(np.array([-1, 1], np.int16), shape)
        return _with_luma(held[0], h, held[0][:h].astype(np.int16) + noise)

    return video, None


_FFMPEG_ONLY: dict[str, Recipe] = {
    "slide_held": Recipe("slide held 4-8 s", "a held picture", _slide_held),
    "faint_noise": Recipe("still picture 4-8 s with faint noise", "live", _faint_noise),
}


def make_agreement_clip(case: AgreementCase, out_dir: Path) -> Path:
    """The clip of an agreement case (generated, or generated and re-encoded), cached."""
    plan = case.plan
    key = hashlib.sha1(repr(case).encode() + _source_key()).hexdigest()[:10]
    path = out_dir / f"{plan.name}-{key}{plan.ext}"
    if path.exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "duration_s": plan.duration_s,
        "seed": plan.seed,
        "width": plan.width,
        "height": plan.height,
        "gop_s": case.gop_s,
    }
    if plan.kind != "hard":
        testsrc.generate(path, defects=testsrc.parse_script(plan.script), **common)
        return path
    base = path.with_name(path.stem + "-base" + plan.ext)
    testsrc.generate(base, **common)
    recipe = {**RECIPES, **_FFMPEG_ONLY}[plan.recipe]
    media = Media(25, plan.width, plan.height, 48000, plan.duration_s, plan.seed)
    video_fn, audio_fn = recipe.build(media, base)
    partial = path.with_name(path.stem + "-partial" + plan.ext)
    reencode(base, partial, video_fn, audio_fn, gop_s=case.gop_s, x264=case.x264)
    for used in out_dir.glob(f"{base.stem}*"):
        used.unlink()
    partial.replace(path)
    return path


def compare_with_ffmpeg(case: AgreementCase, out_dir: Path) -> AgreementRow:
    """Our defects and FFmpeg's filters' events on the case's clip."""
    path = make_agreement_clip(case, out_dir)
    events = ffmpeg_events(path)
    found = find_defects(path)
    ours = {
        kind: [(f.start_s, f.end_s if f.end_s is not None else math.inf) for f in found if f.type == kind]
        for kind in COMPARED
    }
    theirs = {"black": events.black, "freeze": events.freeze, "silence": events.silence}
    return AgreementRow(case, ours, theirs, found)


def render_agreement(rows: Sequence[AgreementRow]) -> list[str]:
    def spans(items: list[tuple[float, float]]) -> str:
        return ", ".join(f"{a:.2f}-{b:.2f}" for a, b in items) or "none"

    lines = [
        "### Agreement with FFmpeg's filters",
        "",
        "The same media through FFmpeg's blackdetect (d=2, pic_th=0.98, pix_th=0.10), freezedetect "
        "(n=-60dB, d=2) and silencedetect (n=-60dB, d=2), run by PyAV's libavfilter; media times in s. "
        f"*Agree*: same runs, starts and ends within {AGREEMENT_S} s "
        "(`tests/test_ffmpeg_agreement.py` asserts each row).",
        "",
        "| case | type | ours | FFmpeg | agree | expected | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        kinds = [k for k in COMPARED if row.ours[k] or row.ffmpeg[k]]
        for kind in kinds or ["any"]:
            ours, theirs = (row.ours[kind], row.ffmpeg[kind]) if kinds else ([], [])
            agree = row.agrees(kind) if kinds else True
            lines.append(
                f"| {row.case.name} | {kind} | {spans(ours)} | {spans(theirs)} | {'yes' if agree else 'no'} "
                f"| {row.case.expect} | {row.case.why} |"
            )
    return lines


# ------------------------------------------------------------------ command line


def _run_one(args: tuple[ClipPlan, Path]) -> ClipResult:
    return run_clip(*args)


def user_clips(folder: Path) -> list[ClipPlan]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    if not files:
        raise SystemExit(f"--clean {folder}: no media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
    return [ClipPlan(f"real-{i:02d}-{p.stem}"[:40], "user", path=str(p)) for i, p in enumerate(files)]


def to_json(results: Sequence[ClipResult], meta: dict[str, Any], agreement: Sequence[AgreementRow]) -> str:
    table = figures(results)
    doc = {
        "meta": meta,
        "tolerance_s": TOLERANCE_S,
        "types": {
            name: {
                "truths": f.truths,
                "found": f.found,
                "tp": f.tp,
                "fn": f.fn,
                "fp": f.fp,
                "duplicates": f.duplicates,
                "recall": f.recall,
                "precision": f.precision,
                "mean_start_error_s": f.mean_start_error,
                "max_start_error_s": f.max_start_error,
                "mean_end_error_s": f.mean_end_error,
                "offset_errors_ms": f.offset_errors_ms,
                "targets": f.targets(),
            }
            for name, f in table.items()
        },
        "clips": [
            {
                "plan": asdict(r.plan),
                "media": Path(r.media).name,
                "analysis_s": round(r.seconds, 3),
                "truths": [t.label() for t in r.truths],
                "found": [f.label() for f in r.found],
                "matches": [
                    {
                        "truth": m.truth.label(),
                        "found": m.found.label(),
                        "start_error_s": round(m.start_error, 4),
                    }
                    for m in r.matches
                ],
                "missed": [t.label() for t in r.missed],
                "false": [f.label() for f in r.false],
                "duplicates": [f.label() for f, _ in r.duplicates],
            }
            for r in results
        ],
        "ffmpeg_agreement": [
            {"case": a.case.name, "expect": a.case.expect, "ours": a.ours, "ffmpeg": a.ffmpeg}
            for a in agreement
        ],
    }
    return json.dumps(doc, indent=2, default=str)


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


if __name__ == "__main__":
    sys.exit(main())
