"""Test-signal generator: real H.264/AAC media with scripted defects and a JSON ground truth.

``generate()`` encodes a moving, TV-like picture (scrolling fractal texture, drifting light,
moving discs, film grain, a scene cut every 5-8 s) and a speech/music-like tone (harmonic notes
changing pitch every ~0.5 s, about -23 LUFS) into MPEG-TS or MP4, injecting defects at
scripted times, and writes ``<output>.truth.json`` beside it. ``LiveSource`` (``live``) sends
the same media live (MPEG-TS over UDP, HLS over local HTTP, RTMP push), paced in real time.

Timing model. Media time t (seconds) is measured from the container's earliest first timestamp,
as the monitor does; ``GroundTruth.origin_s`` is that container timestamp. Video frame i is at
t = i / fps, audio sample n at t = n / sample_rate. A defect covers the frames/samples with
``start_s <= t < end_s``. The AAC encoder emits 1024 priming samples before the first input
sample and MPEG-TS cannot trim them, so the audio input starts at sample 1024: the priming
packet then starts exactly at t = 0, together with video frame 0, in both TS and MP4. The
generated audio therefore begins at ``audio_start_s`` (21.3 ms at 48 kHz); before that the
decoder outputs near-silence. Through the library API the MPEG-TS muxer adds no 1.4 s offset (that
is the ffmpeg CLI's -muxdelay); ``origin_s`` is 2 frames there, the H.264 B-frame reorder delay.

Sync marks (``sync_marks=True``). Once a second, on the first frame at or after k + 0.5 s
(k + 0.52 s at 25 fps), the whole picture is white (Y=235) for that one frame, and a 40 ms 1 kHz
beep (-12 dBFS peak) starts at that frame's time: its envelope (2 ms raised-cosine edges, centred)
crosses half amplitude exactly there, and 40 ms later. The tone bed is ducked by 12 dB from
100 ms before to 100 ms after the beep, so that the onset stands out. ``GroundTruth.sync_marks_s``
lists the flash times. A flash is one bright frame (not black, not a freeze) and the beep peaks far
below full scale, so the marks trip no other detector. Marks are content: black and freeze hide
the flash, silence hides the beep, gains apply to the beep.

A/V sync. ``av_offset`` (offset_ms) and ``av_drift`` (ms_per_s, growing from 0 at the span's start)
delay the audio *content* within their span; the container timestamps stay aligned. Positive =
audio late, as in DESIGN.md §4: a monitor sees each beep offset_ms after its flash; at the span's
edges the sound jumps (a short repeat or skip). A drift resamples the sound (20 ms/s lowers its
pitch by 2 %). Nothing else in the content ties sound to picture, so these types need sync marks;
beyond ±500 ms a mark pairs with its neighbour's flash.

Transport defects act on the encoded stream. ``corrupt`` overwrites bytes inside the slice data of
a seeded fraction of the video frames (keyframes too): decoders conceal the damage, which then
propagates until the next keyframe (truth ``recovers_by_s``). FFmpeg's H.264 decoder never raises
on it; it marks the concealed pictures ``is_corrupt`` once ``thread_type`` and ``thread_count``
are set, as the worker sets them (with PyAV's defaults, no picture was marked: measured).
``drop`` removes a seeded fraction of the video PID's 188-byte TS packets, keeping PES headers:
continuity-counter errors that FFmpeg's demuxer flags as corrupt packets, like IP packet loss. In
MP4 it removes whole video frames, which leaves gaps in the video timestamps and decoder warnings
in the log only. Both are truth type ``decode_error``, ``params.expect = ["decode_error",
"blockiness"]``. ``timestamp_jump`` adds jump_s (rounded to whole frames) to every pts/dts from its
start on, both streams; an IDR is forced there. ``signal_loss`` (live outputs only) sends nothing
for its span and then resumes with the media time the source would have had; IDRs are forced at
both ends.

Timeline after a timestamp jump: truth times are media times as a monitor that trusts the
timestamps measures them, so every defect, mark and scene cut after a jump at J is reported at its
content time + jump_s; the jump itself is at J (start_s = end_s).

Overlaps: black wins over freeze (a freeze holds the scene picture of its first frame, never
black); silence wins over gain changes; clipping and loudness gains multiply. Defects that a
monitor reports as one type (av_offset/av_drift, corrupt/drop) may not overlap; nothing may overlap
a signal_loss, and no jump may fall inside another defect. Everything is a pure function of (seed,
frame or sample index, packet index), so output is deterministic for a seed.

Modules, each importing only the ones above it: ``script`` (the defect script and the ground
truth file), ``spec`` (``SignalSpec``: the media's parameters and timing), ``picture`` and
``sound`` (content as pure functions of frame and sample index), ``mpegts`` (TS packet helpers,
the ``drop`` filter), ``encoder`` (H.264/AAC packets with transport defects, pacing, the truth,
``generate``), ``hls`` and ``live`` (live outputs), ``cli`` (``avmon testsrc``).
"""

from __future__ import annotations

from pathlib import Path

from avmon.testsrc.cli import add_arguments, host_port, run
from avmon.testsrc.encoder import Muxable, Pacer, build_truth, encode, generate
from avmon.testsrc.live import LiveSource
from avmon.testsrc.mpegts import (
    PMT_PID,
    PSI_PIDS,
    TS_CLOCK,
    TS_OPTIONS,
    TS_PACKET,
    VIDEO_PID,
    TsDrop,
    TsPackets,
    ts_pes_pts,
    ts_pid,
    ts_random_access,
)
from avmon.testsrc.script import (
    AUDIO_TYPES,
    DEFECT_TYPES,
    INSTANT_TYPES,
    LIVE_ONLY_TYPES,
    MAX_SYNC_OFFSET_MS,
    SYNC_TYPES,
    TRANSPORT_TYPES,
    TRUTH_TYPES,
    VIDEO_TYPES,
    DefectSpec,
    GroundTruth,
    parse_script,
    truth_path,
    validate_defects,
)
from avmon.testsrc.spec import Media, SignalSpec, first_index


def generator_source() -> bytes:
    """The code of every module of this package, in name order: what generated media depend on
    besides their parameters, for caches of generated clips."""
    return b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))


__all__ = [
    "AUDIO_TYPES",
    "DEFECT_TYPES",
    "INSTANT_TYPES",
    "LIVE_ONLY_TYPES",
    "MAX_SYNC_OFFSET_MS",
    "PMT_PID",
    "PSI_PIDS",
    "SYNC_TYPES",
    "TRANSPORT_TYPES",
    "TRUTH_TYPES",
    "TS_CLOCK",
    "TS_OPTIONS",
    "TS_PACKET",
    "VIDEO_PID",
    "VIDEO_TYPES",
    "DefectSpec",
    "GroundTruth",
    "LiveSource",
    "Media",
    "Muxable",
    "Pacer",
    "SignalSpec",
    "TsDrop",
    "TsPackets",
    "add_arguments",
    "build_truth",
    "encode",
    "first_index",
    "generate",
    "generator_source",
    "host_port",
    "parse_script",
    "run",
    "truth_path",
    "ts_pes_pts",
    "ts_pid",
    "ts_random_access",
    "validate_defects",
]
