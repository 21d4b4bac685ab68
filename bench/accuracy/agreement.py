"""Our black, freeze and silence boundaries against FFmpeg's own filters (blackdetect,
freezedetect, silencedetect through PyAV's libavfilter) on a few clips: where both must agree,
and where we differ on purpose."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from avmon import testsrc
from bench.accuracy.corpus import ClipPlan
from bench.accuracy.recipes import COMPARISON_RECIPES, RECIPES, Media, reencode
from bench.accuracy.run import find_defects, generator_options, media_path
from bench.accuracy.scoring import Found


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


# The clips compared: case -> (what it is, clip length s, seed, the clip: a generator script or
# "recipe:<name>" of a hard recipe re-encoded, GOP s, extra x264 params of the re-encode).
_CLIPS: dict[str, tuple[str, float, int, str, float, str]] = {
    "defaults": ("black and silence", 14.0, 11, "black@2+3, silence@8+3", 2.0, ""),
    "held_black": ("held black picture", 12.0, 13, "black@3+4", 2.0, ""),
    "slide_held": ("held slide (lossless)", 12.0, 15, "recipe:slide_held", 2.0, "qp=0"),
    "faint_noise": ("still picture with faint noise (lossless)", 12.0, 16, "recipe:faint_noise", 2.0, "qp=0"),
    "keyframes": ("keyframes inside a freeze", 14.0, 12, "freeze@3+7", 2.0, ""),
    "one_gop": ("freeze within one GOP (lossy)", 14.0, 14, "freeze@6.4+3", 5.0, ""),
    "fade": ("fade to black and back, 1.9 s", 12.0, 17, "recipe:fade", 2.0, ""),
    "quiet": ("quiet passage at -50 dBFS", 14.0, 18, "recipe:quiet", 2.0, ""),
    "hiss": ("dead air with hiss at -70 dBFS RMS", 14.0, 19, "silence@4+5:level_dbfs=-70", 2.0, ""),
}

# What each case shows, for the report: (what happens, why).
_VERDICTS: dict[str, tuple[str, str]] = {
    "defaults": (
        "agree (and see held black)",
        "blackdetect's and silencedetect's defaults and boundaries, on digital silence",
    ),
    "held_black": (
        "black agrees; FFmpeg also reports a freeze, we do not",
        "a held black picture is one defect, black: a second (freeze) record would page twice",
    ),
    "slide_held": (
        "freeze agrees; ours is a warning",
        "a bit-identical slide is frozen for both; the narration goes on, so ours is a warning",
    ),
    "faint_noise": (
        "FFmpeg reports a freeze (MAFD under -60 dB); we do not",
        "noise in every macroblock, however faint, is a live camera: a static slide, not a freeze",
    ),
    "keyframes": (
        "ends agree; FFmpeg's freeze starts at a keyframe inside it, or is split there",
        "each keyframe re-encodes the held picture (-50 to -30 dB to the one before) and x264 "
        "refines it in between: freezedetect restarts its reference, we accept re-encodings",
    ),
    "one_gop": (
        "FFmpeg misses it; we report it",
        "x264 keeps refining a held picture in P and B pictures, by more than -60 dB at times",
    ),
    "fade": (
        "agree: nothing",
        "a fade shorter than d=2 s is a transition for both (black pictures and quiet sound)",
    ),
    "quiet": (
        "agree: nothing",
        "-50 dBFS is above -60 dB for both, FFmpeg's sample peaks and our windowed RMS",
    ),
    "hiss": (
        "we report silence; FFmpeg does not",
        "silencedetect tests every sample's peak, and noise peaks cross -60 dB; dead air over a "
        "noisy line is silence by its energy",
    ),
}


def agreement_cases() -> list[AgreementCase]:
    """The FFmpeg comparison: defects on which both must agree, and the cases where we differ on
    purpose (keyframes inside freezes, held black, static slides, quiet passages) or agree on
    what is not a defect (fades)."""
    cases = []
    for key, (name, seconds, seed, clip, gop_s, x264) in _CLIPS.items():
        recipe = clip.removeprefix("recipe:") if clip.startswith("recipe:") else ""
        plan = ClipPlan(
            f"agree-{key.replace('_', '-')}",
            "hard" if recipe else "defects",
            seconds,
            seed,
            script="" if recipe else clip,
            recipe=recipe,
        )
        expect, why = _VERDICTS[key]
        cases.append(AgreementCase(key, name, plan, expect, why, gop_s=gop_s, x264=x264))
    return cases


def make_agreement_clip(case: AgreementCase, out_dir: Path) -> Path:
    """The clip of an agreement case (generated, or generated and re-encoded), cached."""
    plan = case.plan
    path = media_path(case, plan, out_dir)
    if path.exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {**generator_options(plan), "gop_s": case.gop_s}
    if plan.kind != "hard":
        testsrc.generate(path, defects=testsrc.parse_script(plan.script), **common)
        return path
    base = path.with_name(path.stem + "-base" + plan.ext)
    testsrc.generate(base, **common)
    recipe = {**RECIPES, **COMPARISON_RECIPES}[plan.recipe]
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
