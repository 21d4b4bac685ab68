"""Making a clip of the corpus (cached by its plan and the code that makes media), running the
worker's pipeline on it and matching what it found to the clip's truth."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import av

from avmon import testsrc
from bench.accuracy.corpus import ClipPlan
from bench.accuracy.encoders import ENCODERS, transcode
from bench.accuracy.ffmpeg_cli import make_cli_clip
from bench.accuracy.recipes import RECIPES, Media, reencode
from bench.accuracy.scoring import ClipResult, Found, Truth, match
from shared.models import Defect
from worker.session import analyze

MAKERS = ("run.py", "recipes.py", "encoders.py", "ffmpeg_cli.py")  # the modules that make media


def source_key() -> bytes:
    """What the media depend on besides their plan: the code of the generator and of the
    modules that make the corpus's media (this one, the recipes, the encoders, the ffmpeg CLI's)."""
    here = Path(__file__).parent
    return testsrc.generator_source() + b"".join((here / name).read_bytes() for name in MAKERS)


def media_path(what: object, plan: ClipPlan, out_dir: Path) -> Path:
    """Where the clip made for ``what`` (``plan``, or a case that holds it) is cached in
    ``out_dir``: named after the plan, keyed by ``what`` and the code that makes media."""
    key = hashlib.sha1(repr(what).encode() + source_key()).hexdigest()[:10]
    return out_dir / f"{plan.name}-{key}{plan.ext}"


def generator_options(plan: ClipPlan) -> dict[str, Any]:
    """The generator's (:func:`avmon.testsrc.generate`) arguments for ``plan``'s programme."""
    return {"duration_s": plan.duration_s, "seed": plan.seed, "width": plan.width, "height": plan.height}


def make_clip(plan: ClipPlan, out_dir: Path) -> tuple[Path, testsrc.GroundTruth]:
    """The clip of ``plan`` (generated once, then reused from ``out_dir``) and its truth."""
    if plan.kind == "user":
        path = Path(plan.path)
        return path, _empty_truth(path)
    path = media_path(plan, plan, out_dir)
    truth_file = testsrc.truth_path(path)
    if path.exists() and truth_file.exists():
        return path, testsrc.GroundTruth.load(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {**generator_options(plan), "sync_marks": plan.sync_marks}
    if plan.cli:
        truth = make_cli_clip(plan.cli, plan.duration_s, path)
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


def _empty_truth(path: Path) -> testsrc.GroundTruth:
    return testsrc.GroundTruth(
        source=str(path), duration_s=0.0, seed=0, width=0, height=0, fps=0, sample_rate=0,
        channels=0, gop_s=0.0, origin_s=0.0, audio_start_s=0.0, scene_cuts_s=[], defects=[],
    )  # fmt: skip


def find_defects(path: Path) -> list[Found]:
    """Run the worker's pipeline on ``path``; the final record of every defect, by start."""
    records: dict[str, Defect] = {}
    analyze(str(path), lambda d: records.__setitem__(d.defect_id, d))
    return sorted((Found.of(d) for d in records.values()), key=lambda f: (f.start_s, f.type))


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
