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
markdown. Media are cached in ``<out>/accuracy/`` by their parameters and the source of the code
that makes them.

The package, one concept a module, each importing only those above it:
:mod:`~bench.accuracy.recipes` (hard negatives and limits, re-encoded through PyAV),
:mod:`~bench.accuracy.encoders` (other encoders), :mod:`~bench.accuracy.ffmpeg_cli` (the ffmpeg
CLI's formats and cases), :mod:`~bench.accuracy.corpus` (which clips), :mod:`~bench.accuracy.scoring`
(matching and figures), :mod:`~bench.accuracy.run` (making and analysing a clip),
:mod:`~bench.accuracy.agreement` (FFmpeg's filters), :mod:`~bench.accuracy.render` (markdown and
JSON) and :mod:`~bench.accuracy.cli` (the arguments). Every name is re-exported here.
"""

from bench.accuracy.agreement import (
    AGREEMENT_S,
    COMPARED,
    FFMPEG_AUDIO,
    FFMPEG_VIDEO,
    AgreementCase,
    AgreementRow,
    FfmpegEvents,
    agreement_cases,
    compare_with_ffmpeg,
    ffmpeg_events,
    make_agreement_clip,
)
from bench.accuracy.cli import main
from bench.accuracy.corpus import (
    AUDIO_MARGIN_S,
    DRAWN,
    EDGE_S,
    LOUDNESS_TAIL_S,
    MARGIN_S,
    MEDIA_SUFFIXES,
    SAME_TYPE_GAP_S,
    SOUND_TYPES,
    ClipPlan,
    Kind,
    cli_clips,
    corpus,
    encoder_clips,
    place,
    user_clips,
)
from bench.accuracy.encoders import (
    CLIPS_PER_ENCODER,
    CONTENT_KINDS,
    ENCODERS,
    MAX_DEFECTS,
    Encoder,
    transcode,
)
from bench.accuracy.ffmpeg_cli import (
    CLEAN_CLIP_S,
    CLEAN_KINDS,
    CLI_CASES,
    CLI_FORMATS,
    CLI_PICTURES,
    CliCase,
    CliDefect,
    CliFormat,
    make_cli_clip,
)
from bench.accuracy.recipes import (
    CAMERA_GRAIN,
    FAINT_GRAIN,
    HARD_NEGATIVES,
    LIMITS,
    RECIPES,
    AudioFn,
    Media,
    Recipe,
    VideoFn,
    reencode,
    slide_picture,
)
from bench.accuracy.render import known_causes, render, render_agreement, to_json
from bench.accuracy.run import find_defects, make_clip, run_clip
from bench.accuracy.scoring import (
    REPORT_TYPES,
    TARGET_OFFSET_MS,
    TARGET_PRECISION,
    TARGET_RECALL,
    TARGET_START_ERROR_S,
    TOLERANCE_S,
    TRUTH_TYPES,
    ClipResult,
    Found,
    Match,
    Truth,
    TypeFigures,
    breakdown,
    by_cli_format,
    by_encoder,
    figures,
    match,
)

__all__ = [
    "AGREEMENT_S",
    "AUDIO_MARGIN_S",
    "CAMERA_GRAIN",
    "CLEAN_CLIP_S",
    "CLEAN_KINDS",
    "CLIPS_PER_ENCODER",
    "CLI_CASES",
    "CLI_FORMATS",
    "CLI_PICTURES",
    "COMPARED",
    "CONTENT_KINDS",
    "DRAWN",
    "EDGE_S",
    "ENCODERS",
    "FAINT_GRAIN",
    "FFMPEG_AUDIO",
    "FFMPEG_VIDEO",
    "HARD_NEGATIVES",
    "LIMITS",
    "LOUDNESS_TAIL_S",
    "MARGIN_S",
    "MAX_DEFECTS",
    "MEDIA_SUFFIXES",
    "RECIPES",
    "REPORT_TYPES",
    "SAME_TYPE_GAP_S",
    "SOUND_TYPES",
    "TARGET_OFFSET_MS",
    "TARGET_PRECISION",
    "TARGET_RECALL",
    "TARGET_START_ERROR_S",
    "TOLERANCE_S",
    "TRUTH_TYPES",
    "AgreementCase",
    "AgreementRow",
    "AudioFn",
    "CliCase",
    "CliDefect",
    "CliFormat",
    "ClipPlan",
    "ClipResult",
    "Encoder",
    "FfmpegEvents",
    "Found",
    "Kind",
    "Match",
    "Media",
    "Recipe",
    "Truth",
    "TypeFigures",
    "VideoFn",
    "agreement_cases",
    "breakdown",
    "by_cli_format",
    "by_encoder",
    "cli_clips",
    "compare_with_ffmpeg",
    "corpus",
    "encoder_clips",
    "ffmpeg_events",
    "figures",
    "find_defects",
    "known_causes",
    "main",
    "make_agreement_clip",
    "make_cli_clip",
    "make_clip",
    "match",
    "place",
    "reencode",
    "render",
    "render_agreement",
    "run_clip",
    "slide_picture",
    "to_json",
    "transcode",
    "user_clips",
]  # fmt: skip
