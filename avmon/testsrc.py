"""Test-signal generator: real H.264/AAC media with scripted defects and a JSON ground truth.

``generate()`` encodes a moving, TV-like picture (scrolling fractal texture, drifting light,
moving discs, film grain, a scene cut every 5-8 s) and a speech/music-like tone (harmonic notes
changing pitch every ~0.5 s, about -23 LUFS) into MPEG-TS or MP4, injecting defects at
scripted times, and writes ``<output>.truth.json`` beside it. ``avmon.livesrc.LiveSource`` sends
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
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]

VIDEO_TYPES = frozenset({"black", "freeze"})
AUDIO_TYPES = frozenset({"silence", "clipping", "loudness"})
SYNC_TYPES = frozenset({"av_offset", "av_drift"})
TRANSPORT_TYPES = frozenset({"corrupt", "drop", "timestamp_jump", "signal_loss"})
DEFECT_TYPES = VIDEO_TYPES | AUDIO_TYPES | SYNC_TYPES | TRANSPORT_TYPES
LIVE_ONLY_TYPES = frozenset({"signal_loss"})
INSTANT_TYPES = frozenset({"timestamp_jump"})  # a point in time: duration 0
# What a monitor reports (DESIGN.md §4) for a scripted type, where the names differ.
TRUTH_TYPES = {
    "av_offset": "av_sync",
    "av_drift": "av_sync",
    "corrupt": "decode_error",
    "drop": "decode_error",
}
# Allowed params per type, with defaults (None: required or "absent means default behaviour").
_PARAMS: dict[str, dict[str, float | None]] = {
    "black": {},
    "freeze": {},
    "silence": {"level_dbfs": None},
    "clipping": {"gain_db": 26.0},
    "loudness": {"gain_db": None},
    "av_offset": {"offset_ms": None},
    "av_drift": {"ms_per_s": None},
    "corrupt": {"rate": 0.3},
    "drop": {"rate": 0.1},
    "timestamp_jump": {"jump_s": 10.0},
    "signal_loss": {},
}
_FORMATS = {".ts": "mpegts", ".mp4": "mp4"}
_AAC_PRIMING = 1024  # samples FFmpeg's native AAC encoder emits before the first input sample
_LIMIT = 10 ** (-1.5 / 20)  # loudness limiter ceiling: -1.5 dBFS leaves room for AAC overshoot
_BLACK_Y, _NEUTRAL_C = 16, 128  # limited ("MPEG") range, which the stream signals
_WHITE_Y = 235
_NOTE_SCALE = 0.125  # tone amplitude: the programme measures about -23 LUFS (EBU R128 target)
_NOISE_RMS = 0.003  # "a little noise" (-50 dBFS) under the tone
_MARK_PHASE_S = 0.5  # sync marks at the first frame at or after k + 0.5 s
_BEEP_S, _BEEP_HZ, _BEEP_AMP = 0.04, 1000.0, 10 ** (-12 / 20)
# Beep edges: raised cosines of 2 ms centred on the nominal start and end. A hard edge makes the
# AAC encoder's pre-echo move the measured onset by up to 2.4 ms (measured); 2 ms edges keep it
# under 0.7 ms, and the envelope still crosses half amplitude exactly at the flash time.
_BEEP_EDGE_S = 0.002
_DUCK_GAIN, _DUCK_S, _DUCK_RAMP_S = 10 ** (-12 / 20), 0.1, 0.01  # bed -12 dB, 100 ms each side
MAX_SYNC_OFFSET_MS = 1000.0
TS_PACKET = 188
TS_CLOCK = 90_000
VIDEO_PID, PMT_PID = 0x100, 0x1000  # set explicitly on every MPEG-TS muxer (mpegts_*start_pid)
PSI_PIDS = frozenset({0x0000, 0x0011, PMT_PID})  # PAT, SDT, PMT
TS_OPTIONS = {"mpegts_start_pid": str(VIDEO_PID), "mpegts_pmt_start_pid": str(PMT_PID)}


@dataclass(frozen=True)
class DefectSpec:
    """One scripted defect: ``type`` from DEFECT_TYPES, media times in seconds."""

    type: str
    start_s: float
    duration_s: float  # 0 for INSTANT_TYPES
    params: dict[str, float] = field(default_factory=dict)  # e.g. {"gain_db": -20} for loudness

    @property
    def end_s(self) -> float:
        # Rounded so that 0.1 + 0.2 is 0.3: the truth and the frame selection use this value.
        return round(self.start_s + self.duration_s, 9)


@dataclass
class GroundTruth:
    """What ``generate`` put in the media. Times are media seconds (see module docstring)."""

    source: str  # the file, or the URL of a live source
    duration_s: float
    seed: int
    width: int
    height: int
    fps: int
    sample_rate: int
    channels: int
    gop_s: float
    origin_s: float  # container timestamp (s) of media time 0, e.g. 0.08 for TS (B-frame delay)
    audio_start_s: float  # media time (s) of the first generated sample; AAC priming before it
    scene_cuts_s: list[float]  # media times (s) of the content's own scene cuts (not defects)
    defects: list[dict[str, Any]]  # {"type", "start_s", "end_s", "params"}
    sync_marks_s: list[float] = field(default_factory=list)  # flash (and beep) times, if marks are on

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        return cls(**json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        """Read the truth of a media file, given the media path or the truth path itself."""
        p = Path(path)
        if not p.name.endswith(".truth.json"):
            p = truth_path(p)
        return cls.from_json(p.read_text())


def truth_path(media_path: str | Path) -> Path:
    """``clip.ts`` → ``clip.ts.truth.json``."""
    p = Path(media_path)
    return p.with_name(p.name + ".truth.json")


_ITEM_RE = re.compile(r"^(?P<type>[a-z_]+)@(?P<start>[^+:]+)(?:\+(?P<dur>[^:]+))?(?::(?P<params>.*))?$")


def _number(text: str, what: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"defect {item!r}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"defect {item!r}: {what} must be finite")
    return value


def parse_script(script: str) -> list[DefectSpec]:
    """Parse ``TYPE@START+DURATION[:k=v[:k=v]]`` items separated by commas (seconds), e.g.
    ``'black@5+3, freeze@12+4, silence@20+3, loudness@30+12:gain_db=-20'``. Empty → [].
    Instantaneous types may leave the duration out: ``timestamp_jump@20:jump_s=5``.
    Raises ValueError on unknown types or params, negative times, overlapping same-type defects."""
    if not script.strip():
        return []
    specs = []
    for raw in script.split(","):
        item = raw.strip()
        m = _ITEM_RE.match(item.replace(" ", ""))
        if not m or (m["dur"] is None and m["type"] not in INSTANT_TYPES):
            raise ValueError(
                f"bad defect {item!r}: expected TYPE@START+DURATION[:key=value...], "
                "e.g. black@5+3 or loudness@30+12:gain_db=-20"
            )
        params: dict[str, float] = {}
        for kv in m["params"].split(":") if m["params"] is not None else []:
            key, sep, val = kv.partition("=")
            if not sep or not key:
                raise ValueError(f"defect {item!r}: parameter {kv!r} is not key=value")
            if key in params:
                raise ValueError(f"defect {item!r}: parameter {key!r} given twice")
            params[key] = _number(val, f"parameter {key}", item)
        duration = 0.0 if m["dur"] is None else _number(m["dur"], "duration", item)
        specs.append(DefectSpec(m["type"], _number(m["start"], "start", item), duration, params))
    return validate_defects(specs)


def _check_params(s: DefectSpec, label: str, params: dict[str, float]) -> None:
    """Range checks of each type's parameters (defaults already filled in)."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"defect {label}: {what}")

    if s.type == "loudness":
        need(
            "gain_db" in params and -60 <= params["gain_db"] <= 30 and params["gain_db"] != 0,
            "loudness needs gain_db in [-60, 30], non-zero",
        )
    elif s.type == "clipping":
        need(18 <= params["gain_db"] <= 60, "clipping gain_db must be in [18, 60] to clip for sure")
    elif s.type == "silence":
        need(params.get("level_dbfs", -120) <= -70, "silence level_dbfs must be <= -70")
    elif s.type == "av_offset":
        need(
            "offset_ms" in params and 0 < abs(params["offset_ms"]) <= MAX_SYNC_OFFSET_MS,
            f"av_offset needs offset_ms, non-zero, within ±{MAX_SYNC_OFFSET_MS:g}",
        )
    elif s.type == "av_drift":
        need(
            "ms_per_s" in params
            and params["ms_per_s"] != 0
            and abs(params["ms_per_s"]) * s.duration_s <= MAX_SYNC_OFFSET_MS,
            f"av_drift needs ms_per_s, non-zero, reaching at most ±{MAX_SYNC_OFFSET_MS:g} ms",
        )
    elif s.type in ("corrupt", "drop"):
        need(0 < params["rate"] <= 1, f"{s.type} rate must be in (0, 1]")
    elif s.type == "timestamp_jump":
        need(
            0 < params["jump_s"] <= 3600,
            "timestamp_jump jump_s must be in (0, 3600] (muxers refuse timestamps that go back)",
        )


def _label(d: DefectSpec) -> str:
    return f"{d.type}@{d.start_s:g}+{d.duration_s:g}"


def validate_defects(specs: Sequence[DefectSpec], duration_s: float | None = None) -> list[DefectSpec]:
    """Check specs and return them sorted by start with default params filled in.
    With ``duration_s``, also require every defect to end within the media."""
    out = []
    for s in specs:
        label = _label(s)
        if s.type not in DEFECT_TYPES:
            raise ValueError(
                f"defect {label}: unknown type {s.type!r} (expected one of {', '.join(sorted(DEFECT_TYPES))})"
            )
        if s.start_s < 0 or not math.isfinite(s.start_s):
            raise ValueError(f"defect {label}: start must be >= 0 s")
        if s.type in INSTANT_TYPES:
            if s.duration_s != 0:
                raise ValueError(
                    f"defect {label}: {s.type} is instantaneous: duration must be 0 "
                    f"(write {s.type}@{s.start_s:g})"
                )
            if s.start_s == 0:
                raise ValueError(f"defect {label}: {s.type} needs a start > 0 s")
        elif s.duration_s <= 0 or not math.isfinite(s.duration_s):
            raise ValueError(f"defect {label}: duration must be > 0 s")
        if duration_s is not None and (s.end_s > duration_s or s.start_s >= duration_s):
            raise ValueError(f"defect {label}: ends at {s.end_s:g} s, after the media ({duration_s:g} s)")
        allowed = _PARAMS[s.type]
        unknown = set(s.params) - set(allowed)
        if unknown:
            raise ValueError(
                f"defect {label}: unknown parameter(s) {sorted(unknown)} "
                f"(allowed: {sorted(allowed) or 'none'})"
            )
        params = {k: float(v) for k, v in allowed.items() if v is not None} | dict(s.params)
        _check_params(s, label, params)
        out.append(DefectSpec(s.type, float(s.start_s), float(s.duration_s), params))

    def group(d: DefectSpec) -> str:
        return TRUTH_TYPES.get(d.type, d.type)

    out.sort(key=lambda s: (group(s), s.start_s))
    for a, b in itertools.pairwise(out):
        # Abutting defects of one type are rejected too: the media could not tell them apart.
        if group(a) == group(b) and b.start_s <= a.end_s:
            raise ValueError(f"defects {_label(a)} and {_label(b)} overlap or touch")
    for a, b in itertools.permutations(out, 2):
        if a.type == "signal_loss" and b.start_s < a.end_s and a.start_s < b.end_s:
            raise ValueError(f"defect {_label(b)} overlaps {_label(a)}: nothing is sent then")
        if a.type in INSTANT_TYPES and b.start_s < a.start_s < b.end_s:
            raise ValueError(f"defect {_label(a)} falls inside {_label(b)}")
    out.sort(key=lambda s: (s.start_s, s.type))
    return out


def first_index(t: float, rate: int) -> int:
    """Smallest index n (frame or sample) whose time n / rate is >= t seconds."""
    n = math.ceil(t * rate)
    # n / rate is correctly rounded, so these compare exactly against t as given.
    while n > 0 and (n - 1) / rate >= t:
        n -= 1
    while n / rate < t:
        n += 1
    return n


def _fractal_noise(rng: np.random.Generator, h: int, w: int, beta: float) -> F32:
    """Periodic 1/f^beta noise (zero mean, unit std): natural-looking and tileable, via FFT."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    spectrum = amp * np.exp(2j * np.pi * rng.random(amp.shape))
    img: F64 = np.fft.irfft2(spectrum, s=(h, w))
    return np.asarray((img - img.mean()) / img.std(), dtype=np.float32)


def _wrap_pad(img: F32, pad_y: int, pad_x: int) -> I16:
    return np.pad(np.rint(img).astype(np.int16), ((0, pad_y), (0, pad_x)), mode="wrap")


class _Scene:
    """One shot: a scrolling texture twice the frame size, moving discs and a light sweep."""

    def __init__(self, seed: int, index: int, start_s: float, width: int, height: int, fps: int) -> None:
        rng = np.random.default_rng([seed, 1, index])
        self.start_s, self.w, self.h = start_s, width, height
        self.th, self.tw = 2 * height, 2 * width  # texture period: large, so no visible repeats
        luma = rng.uniform(100, 135) + rng.uniform(25, 38) * _fractal_noise(
            rng, self.th, self.tw, rng.uniform(2.6, 3.2)
        )
        self.y_ext = _wrap_pad(np.clip(luma, 24, 226), height, width)
        # Chroma at 4:2:0 resolution: a half-size texture with the same (halved) period.
        self.c_ext = [
            _wrap_pad(
                128 + rng.uniform(-20, 20) + rng.uniform(8, 16) * _fractal_noise(rng, height, width, 3.0),
                height // 2,
                width // 2,
            )
            for _ in range(2)
        ]
        # Scroll by whole pixels, at least one per frame along the main axis: slower pans would
        # leave frames where nothing but grain moves, and the encoder flattens grain.
        angle = rng.uniform(0, 2 * np.pi)
        main_axis = max(abs(math.sin(angle)), abs(math.cos(angle)))
        speed = rng.uniform(1.05, 2.0) * fps / main_axis  # px/s
        self.vel = (speed * math.sin(angle), speed * math.cos(angle))
        self.off0 = (rng.uniform(0, self.th), rng.uniform(0, self.tw))
        self.sweep = (rng.uniform(6, 14), rng.uniform(0.6, 1.8) * width, rng.uniform(0.05, 0.3))
        n = int(rng.integers(3, 6))
        # Each disc: centre, Lissajous amplitude, angular speed (rad/s), phase, radius, Y, U, V.
        self.discs = np.column_stack(
            [
                rng.uniform(0.2, 0.8, n) * width,
                rng.uniform(0.2, 0.8, n) * height,
                rng.uniform(0.1, 0.3, n) * width,
                rng.uniform(0.1, 0.3, n) * height,
                rng.uniform(0.3, 1.5, n),
                rng.uniform(0.3, 1.5, n),
                rng.uniform(0, 6.3, n),
                rng.uniform(0.04, 0.12, n) * height,
                rng.uniform(40, 210, n),
                rng.uniform(80, 176, n),
                rng.uniform(80, 176, n),
            ]
        )

    def render(self, t: float) -> tuple[I16, I16, I16]:
        """Y, U, V planes (int16, before grain and clipping) at media time t seconds."""
        tau = t - self.start_s
        oy = math.floor(self.off0[0] + self.vel[0] * tau) % self.th
        ox = math.floor(self.off0[1] + self.vel[1] * tau) % self.tw
        h, w = self.h, self.w
        amp, wavelength, hz = self.sweep
        cols = np.arange(w, dtype=np.float32)
        sweep = (amp * np.sin(2 * np.pi * (cols / wavelength - hz * tau))).astype(np.int16)
        y = self.y_ext[oy : oy + h, ox : ox + w] + sweep
        cy, cx = oy // 2, ox // 2  # chroma texture period is exactly half the luma one
        u = self.c_ext[0][cy : cy + h // 2, cx : cx + w // 2].copy()
        v = self.c_ext[1][cy : cy + h // 2, cx : cx + w // 2].copy()
        for x0, y0, ax, ay, wx, wy, ph, r, dy, du, dv in self.discs:
            px, py = x0 + ax * math.sin(wx * tau + ph), y0 + ay * math.sin(wy * tau + 2 * ph)
            _disc(y, px, py, r, dy)
            _disc(u, px / 2, py / 2, r / 2, du)
            _disc(v, px / 2, py / 2, r / 2, dv)
        return y, u, v


def _disc(plane: I16, cx: float, cy: float, r: float, value: float) -> None:
    """Blend an anti-aliased disc into plane in place, touching only its bounding box."""
    h, w = plane.shape
    y0, y1 = max(0, int(cy - r - 1)), min(h, int(cy + r + 2))
    x0, x1 = max(0, int(cx - r - 1)), min(w, int(cx + r + 2))
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    alpha = np.clip(r + 0.5 - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2), 0.0, 1.0)
    region = plane[y0:y1, x0:x1]
    region[...] = np.rint(region + alpha * (value - region)).astype(np.int16)


@dataclass(frozen=True)
class SignalSpec:
    """Everything that determines the media; checked on construction, defects normalised."""

    duration_s: float = 30.0
    defects: tuple[DefectSpec, ...] = ()
    seed: int = 0
    width: int = 640
    height: int = 360
    fps: int = 25
    sample_rate: int = 48000
    channels: int = 2
    gop_s: float = 2.0
    sync_marks: bool = False

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError(f"size {self.width}x{self.height}: width and height must be even and >= 16")
        if self.fps <= 0 or self.sample_rate < 8000 or self.channels not in (1, 2) or self.gop_s <= 0:
            raise ValueError("fps must be > 0, sample_rate >= 8000, channels 1 or 2, gop_s > 0")
        if not self.duration_s >= 0.5:
            raise ValueError("duration_s must be >= 0.5")
        defects = tuple(validate_defects(self.defects, self.duration_s))
        object.__setattr__(self, "defects", defects)
        if not self.sync_marks and any(d.type in SYNC_TYPES for d in defects):
            raise ValueError(
                "av_offset and av_drift need sync marks (--sync-marks): nothing else in the "
                "content ties the sound to the picture"
            )

    def check_output(self, *, live: bool) -> None:
        if not live and any(d.type in LIVE_ONLY_TYPES for d in self.defects):
            raise ValueError("signal_loss needs a live output (--udp, --hls, --rtmp): a file cannot pause")

    def of(self, *types: str) -> list[DefectSpec]:
        return [d for d in self.defects if d.type in types]

    def frames(self, d: DefectSpec) -> tuple[int, int]:
        """Frame range [a, b) a defect covers."""
        return first_index(d.start_s, self.fps), first_index(d.end_s, self.fps)

    @property
    def n_frames(self) -> int:
        return first_index(self.duration_s, self.fps)

    @property
    def n_samples(self) -> int:
        return first_index(self.duration_s, self.sample_rate)

    @property
    def gop(self) -> int:
        return max(1, round(self.gop_s * self.fps))

    @cached_property
    def jumps(self) -> tuple[tuple[int, int], ...]:
        """(first frame, frames added) of each timestamp jump."""
        return tuple(
            (first_index(d.start_s, self.fps), max(1, round(d.params["jump_s"] * self.fps)))
            for d in self.of("timestamp_jump")
        )

    def container_s(self, t: float) -> float:
        """Media time a monitor measures for content time t: later by every jump at or before t."""
        return t + sum(n for j, n in self.jumps if t >= j / self.fps) / self.fps

    def content_s(self, c: float) -> float:
        """Inverse of ``container_s`` (jumps only go forward, so it is unambiguous)."""
        shift = 0.0
        for j, n in self.jumps:
            if c - shift >= (j + n) / self.fps:
                shift += n / self.fps
        return c - shift

    @cached_property
    def loss_frames(self) -> tuple[tuple[int, int], ...]:
        return tuple(self.frames(d) for d in self.of("signal_loss"))

    def lost(self, kind: str, t: float) -> int | None:
        """Which signal loss (index) withholds the packet of ``kind`` at content time t, if any."""
        i = round(t * self.fps)
        for k, (a, b) in enumerate(self.loss_frames):
            if (a <= i < b) if kind == "video" else (a / self.fps <= t < b / self.fps):
                return k
        return None

    @cached_property
    def forced_keyframes(self) -> frozenset[int]:
        """IDRs at jumps and at both ends of each signal loss, so no picture references across."""
        return frozenset([j for j, _ in self.jumps] + [i for ab in self.loss_frames for i in ab])

    @cached_property
    def keyframes(self) -> tuple[int, ...]:
        """x264's keyframes: every ``gop`` frames, counting again from each forced one."""
        keys: list[int] = []
        for i in range(self.n_frames):
            if not keys or i in self.forced_keyframes or i - keys[-1] >= self.gop:
                keys.append(i)
        return tuple(keys)

    @cached_property
    def mark_frames(self) -> tuple[int, ...]:
        if not self.sync_marks:
            return ()
        frames = (first_index(k + _MARK_PHASE_S, self.fps) for k in itertools.count())
        end = self.duration_s - _BEEP_S - _BEEP_EDGE_S
        return tuple(itertools.takewhile(lambda i: i / self.fps <= end, frames))

    def offset_ms(self, t: float) -> float:
        """Audio delay (ms) an av_offset/av_drift applies at media time t (0 outside)."""
        for d in self.of(*SYNC_TYPES):
            if d.start_s <= t < d.end_s:
                return d.params.get("offset_ms", 0.0) + d.params.get("ms_per_s", 0.0) * (t - d.start_s)
        return 0.0


class _Video:
    """Pictures as a pure function of frame index: scenes, grain, flashes, then black/freeze."""

    def __init__(self, spec: SignalSpec) -> None:
        self.seed, self.w, self.h, self.fps = spec.seed, spec.width, spec.height, spec.fps
        fps = self.fps
        rng = np.random.default_rng([self.seed, 0])
        cuts = [0]  # scene start frames
        while cuts[-1] / fps < spec.duration_s:
            cuts.append(cuts[-1] + round(rng.uniform(5.0, 8.0) * fps))
        self.cut_frames = cuts
        self.scene_cuts_s = [c / fps for c in cuts[1:] if c / fps < spec.duration_s]
        self._scene: _Scene | None = None
        self.ranges = [(d.type, *spec.frames(d)) for d in spec.of(*VIDEO_TYPES)]
        self.flashes = frozenset(spec.mark_frames)
        self._held: dict[int, npt.NDArray[np.uint8]] = {}

    def _normal(self, i: int) -> npt.NDArray[np.uint8]:
        k = int(np.searchsorted(self.cut_frames, i, side="right")) - 1
        if self._scene is None or self._scene.start_s != self.cut_frames[k] / self.fps:
            self._scene = _Scene(self.seed, k, self.cut_frames[k] / self.fps, self.w, self.h, self.fps)
        y, u, v = self._scene.render(i / self.fps)
        # Grain: new every frame, so that consecutive pictures are never identical.
        y += np.random.default_rng([self.seed, 3, i]).integers(-3, 4, size=y.shape, dtype=np.int16)
        return np.concatenate(
            [np.clip(p, 16, top).astype(np.uint8).ravel() for p, top in ((y, 235), (u, 240), (v, 240))]
        )

    def hidden(self, i: int) -> bool:
        """Whether black or freeze replaces frame i."""
        return any(a <= i < b for _, a, b in self.ranges)

    def frame(self, i: int) -> npt.NDArray[np.uint8]:
        """yuv420p picture of frame i, planes concatenated, shaped (height * 3 / 2, width)."""
        active = {kind: a for kind, a, b in self.ranges if a <= i < b}
        if "black" in active or (i in self.flashes and not active):
            buf = np.full(self.w * self.h * 3 // 2, _NEUTRAL_C, np.uint8)
            buf[: self.w * self.h] = _BLACK_Y if active else _WHITE_Y
        elif "freeze" in active:
            # Hold the exact picture of the freeze's first frame (no new grain), computed once.
            start = active["freeze"]
            if start not in self._held:
                self._held = {start: self._normal(start)}
            buf = self._held[start]
        else:
            buf = self._normal(i)
        return buf.reshape(-1, self.w)


def _window(d: F64, flat: float, ramp: float) -> F64:
    """1 for 0 <= d <= flat, a raised-cosine fall to 0 over ``ramp`` after it, 0 beyond (and for d < 0)."""
    x = np.clip((d - flat) / ramp, 0.0, 1.0)
    return np.where(d >= 0, 0.5 * (1 + np.cos(np.pi * x)), 0.0)


class _Audio:
    """Samples as a pure function of sample index: notes, noise and marks, shifted, then defects."""

    def __init__(self, spec: SignalSpec) -> None:
        rate, channels = spec.sample_rate, spec.channels
        self.rate, self.channels = rate, channels
        rng = np.random.default_rng([spec.seed, 4])
        # Enough notes for the media and at least 1.4 s more: the limiter's lookahead, and content
        # read up to 1 s ahead by a negative av_offset (MAX_SYNC_OFFSET_MS).
        n_notes = int(spec.n_samples / rate / 0.35) + 4
        lengths = np.rint(rng.uniform(0.35, 0.65, n_notes) * rate).astype(np.int64)
        self.starts, self.lengths = np.concatenate([[0], np.cumsum(lengths)]), lengths
        self.f0 = 110.0 * 2.0 ** (rng.integers(0, 25, n_notes) / 12)  # A2..A4, semitone steps
        self.amp = rng.uniform(0.6, 1.0, n_notes)
        # Phase at each note start, accumulated so that pitch changes are click-free.
        self.phase0 = np.concatenate([[0.0], np.cumsum(2 * np.pi * self.f0 * lengths / rate)]) % (2 * np.pi)
        self.noise = rng.standard_normal((channels, 131071)).astype(np.float32)  # unit RMS
        self.block = max(1, rate // 100)  # limiter block: 10 ms
        self.ranges = [
            (d.type, first_index(d.start_s, rate), first_index(d.end_s, rate), d.params)
            for d in spec.of(*AUDIO_TYPES)
        ]
        self.shifts = [
            (first_index(d.start_s, rate), first_index(d.end_s, rate), d.params) for d in spec.of(*SYNC_TYPES)
        ]
        self.marks = np.array([first_index(i / spec.fps, rate) for i in spec.mark_frames], np.float64)

    def _positions(self, a0: int, a1: int) -> F64:
        """Content position (fractional sample) heard at output samples a0..a1-1: av_sync delays."""
        n = np.arange(a0, a1, dtype=np.float64)
        pos = n.copy()
        for s, e, params in self.shifts:
            lo, hi = max(s, a0) - a0, min(e, a1) - a0
            if lo < hi:
                late = params.get("offset_ms", 0.0) + params.get("ms_per_s", 0.0) * (n[lo:hi] - s) / self.rate
                pos[lo:hi] -= late * self.rate / 1000
        return np.maximum(pos, 0.0)

    def _content(self, pos: F64) -> F64:
        k = np.searchsorted(self.starts, pos, side="right") - 1
        u = pos - self.starts[k]
        x = u / self.lengths[k]
        phase = self.phase0[k] + 2 * np.pi * self.f0[k] * u / self.rate
        tone = np.zeros_like(phase)
        for p in range(1, 5):  # harmonics 1/p: a buzzy, voice-like timbre
            tone += np.sin(p * phase) / p
        # Envelope: fast attack, slow decay, never below 30 % (no quiet gaps within content).
        env = 0.3 + 0.7 * np.sin(np.pi * x**0.3) ** 2
        mono = _NOTE_SCALE * self.amp[k] * env * tone
        if len(self.marks):
            mono = mono * self._duck(pos) + self._beep(pos)
        pan = 0.15 * np.sin(2 * np.pi * 0.1 * pos / self.rate)
        gains = [1 + pan, 1 - pan] if self.channels == 2 else [np.ones_like(pan)]
        idx = np.rint(pos).astype(np.int64) % self.noise.shape[1]
        return np.stack([mono * g + _NOISE_RMS * self.noise[c, idx] for c, g in enumerate(gains)])

    def _beep(self, pos: F64) -> F64:
        half = _BEEP_EDGE_S / 2 * self.rate
        k = np.searchsorted(self.marks, pos + half, side="right") - 1
        d = pos - self.marks[np.maximum(k, 0)]  # samples since the nominal start
        edge = np.clip(np.minimum(d + half, _BEEP_S * self.rate + half - d) / (2 * half), 0.0, 1.0)
        env = np.where(k >= 0, 0.5 - 0.5 * np.cos(np.pi * edge), 0.0)
        return _BEEP_AMP * env * np.sin(2 * np.pi * _BEEP_HZ * d / self.rate)

    def _duck(self, pos: F64) -> F64:
        k = np.searchsorted(self.marks, pos, side="right")
        ramp = _DUCK_RAMP_S * self.rate
        after = _window(pos - self.marks[np.maximum(k - 1, 0)], (_BEEP_S + _DUCK_S) * self.rate, ramp)
        before = _window(self.marks[np.minimum(k, len(self.marks) - 1)] - pos, _DUCK_S * self.rate, ramp)
        w = np.maximum(np.where(k > 0, after, 0.0), np.where(k < len(self.marks), before, 0.0))
        return 1.0 - (1.0 - _DUCK_GAIN) * w

    def samples(self, n0: int, n1: int) -> F32:
        """(channels, n1 - n0) float32 samples n0..n1-1, full scale ±1.0."""
        b = self.block
        # Work on whole limiter blocks plus one either side, so the result is chunk-independent.
        a0, a1 = max(0, (n0 // b - 1) * b), (-(-n1 // b) + 1) * b
        x = self._content(self._positions(a0, a1))
        gain = np.ones(a1 - a0)
        hard = np.zeros(a1 - a0, bool)
        for kind, s, e, params in self.ranges:
            s, e = max(s, a0) - a0, min(e, a1) - a0
            if s < e and kind in ("clipping", "loudness"):
                gain[s:e] *= 10 ** (params["gain_db"] / 20)
                hard[s:e] |= kind == "clipping"
        x *= gain
        # Look-ahead block limiter (only bites on boosted audio): each block's gain keeps its peak
        # under _LIMIT; nodes take the smaller neighbour and are interpolated, so gain is smooth.
        peak = np.abs(x).max(axis=0).reshape(-1, b).max(axis=1)
        r = np.minimum(1.0, _LIMIT / np.maximum(peak, 1e-12))
        nodes = np.concatenate([r[:1], np.minimum(r[:-1], r[1:]), r[-1:]])
        lim = np.interp(np.arange(a1 - a0), np.arange(len(nodes)) * b, nodes)
        lim[hard] = 1.0
        x = np.clip(x * lim, -1.0, 1.0)  # hard clipping only ever happens in "clipping" ranges
        for kind, s, e, params in self.ranges:
            s, e = max(s, a0), min(e, a1)
            if s < e and kind == "silence":
                if "level_dbfs" in params:
                    idx = np.arange(s, e) % self.noise.shape[1]
                    x[:, s - a0 : e - a0] = 10 ** (params["level_dbfs"] / 20) * self.noise[:, idx]
                else:
                    x[:, s - a0 : e - a0] = 0.0
        return np.ascontiguousarray(x[:, n0 - a0 : n1 - a0], dtype=np.float32)


# ------------------------------------------------------------------ transport


def ts_pid(p: bytes) -> int:
    return ((p[1] & 0x1F) << 8) | p[2]


def ts_random_access(p: bytes) -> bool:
    """The adaptation field's random_access_indicator: FFmpeg's muxer sets it on keyframes."""
    return bool(p[3] & 0x20) and p[4] > 0 and bool(p[5] & 0x40)


def ts_pes_pts(p: bytes) -> int | None:
    """PTS (90 kHz) of the PES that starts in TS packet p, if one starts there and carries one."""
    if not p[1] & 0x40 or not p[3] & 0x10:
        return None
    off = 4 + (1 + p[4] if p[3] & 0x20 else 0)
    if off + 14 > TS_PACKET or p[off : off + 3] != b"\x00\x00\x01" or not p[off + 7] & 0x80:
        return None
    x = p[off + 9 : off + 14]
    return ((x[0] >> 1) & 7) << 30 | x[1] << 22 | (x[2] >> 1) << 15 | x[3] << 7 | x[4] >> 1


class TsPackets:
    """Reassembles an MPEG-TS byte stream, written in arbitrary chunks, into 188-byte packets."""

    def __init__(self) -> None:
        self._pending = b""

    def split(self, data: bytes) -> list[bytes]:
        buf = self._pending + bytes(data)
        whole = len(buf) - len(buf) % TS_PACKET
        self._pending = buf[whole:]
        return [buf[i : i + TS_PACKET] for i in range(0, whole, TS_PACKET)]


class TsDrop:
    """Write filter for the ``drop`` defect on an MPEG-TS byte stream: inside a drop span, each of
    the video PID's packets is lost with probability ``rate`` (seeded), except the first of each
    PES (its timestamps survive) and the last (so the continuity error is seen within the damaged
    PES, not at the start of the next one). FFmpeg's demuxer flags the picture *before* the damaged
    one in decode order (its H.264 parser emits a picture when the next one begins), so a PES is
    only damaged if that one is in the span too. Each video packet waits for the next one to know
    whether it ends its PES; ``finish()`` writes what is still held."""

    def __init__(self, write: Callable[[bytes], object], spec: SignalSpec) -> None:
        self._write = write
        self._spec = spec
        self._spans = [(*spec.frames(d), d.params["rate"]) for d in spec.of("drop")]
        self._rng = np.random.default_rng([spec.seed, 8])
        self._packets = TsPackets()
        self._first_pts: int | None = None
        self._frames = (-1, -1)  # content frame index of the previous and the current video PES
        self._held: list[bytes] = []  # the latest video packet, and everything after it
        self._held_frames = self._frames
        self.dropped = 0

    def write(self, data: bytes) -> int:
        out: list[bytes] = []
        for p in self._packets.split(data):
            if ts_pid(p) != VIDEO_PID:
                (self._held if self._held else out).append(p)
                continue
            starts = bool(p[1] & 0x40)
            if self._held:
                if not starts and self._drops(self._held[0]):
                    del self._held[0]
                out += self._held
            pts = ts_pes_pts(p) if starts else None
            if pts is not None:
                self._first_pts = pts if self._first_pts is None else self._first_pts
                frame = round(self._spec.content_s((pts - self._first_pts) / TS_CLOCK) * self._spec.fps)
                self._frames = (self._frames[1], frame)
            self._held, self._held_frames = [p], self._frames
        if out:
            self._write(b"".join(out))
        return len(data)

    def _drops(self, p: bytes) -> bool:
        if p[1] & 0x40:
            return False
        before, frame = self._held_frames
        for a, b, rate in self._spans:
            if a <= before < b and a <= frame < b and self._rng.random() < rate:
                self.dropped += 1
                return True
        return False

    def finish(self) -> None:
        if self._held:
            self._write(b"".join(self._held))
            self._held = []


def _damage(data: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite bursts of bytes inside the slice data of every coded slice (NAL types 1 and 5),
    past the slice header; parameter sets and SEI stay intact, so the decoder keeps going."""
    buf = bytearray(data)
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else len(buf)
        lo, hi = s + 12, e - 2
        if buf[s] & 0x1F not in (1, 5) or hi - lo < 4:
            continue
        for _ in range(1 + (hi - lo) // 2000):
            n = min(8, hi - lo)
            at = int(rng.integers(lo, hi - n + 1))
            buf[at : at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(buf)


@dataclass(frozen=True, slots=True)
class Muxable:
    """An encoded packet ready for the muxer, with the content times a sender needs."""

    packet: av.Packet[Any]
    kind: str  # "video" or "audio"
    t: float  # content time (s) of its pts: frame i / fps, or its first sample
    pace_s: float  # content time (s) of its dts: when a real-time sender sends it


class _Transport:
    """Packet-level transport defects: corrupt, timestamp jumps, and drop where there is no TS."""

    def __init__(self, spec: SignalSpec, *, drop_frames: bool) -> None:
        self.spec = spec
        self.corrupt = [(*spec.frames(d), d.params["rate"]) for d in spec.of("corrupt")]
        self.drop = [(*spec.frames(d), d.params["rate"]) for d in spec.of("drop")] if drop_frames else []

    def __call__(self, packet: av.Packet[Any], kind: str) -> Muxable | None:
        spec, tb, pts_ticks, dts_ticks = self.spec, packet.time_base, packet.pts, packet.dts
        assert pts_ticks is not None and dts_ticks is not None and tb is not None
        pts, dts = pts_ticks * tb, dts_ticks * tb
        if kind == "video":
            i = round(pts * spec.fps)
            if any(
                a <= i < b and np.random.default_rng([spec.seed, 8, i]).random() < rate
                for a, b, rate in self.drop
            ):
                return None
            for a, b, rate in self.corrupt:
                rng = np.random.default_rng([spec.seed, 7, i])
                if a <= i < b and rng.random() < rate:
                    packet = _with_payload(packet, _damage(bytes(packet), rng))
        jumped = sum(n for j, n in spec.jumps if pts >= Fraction(j, spec.fps))
        if jumped:
            ticks = round(Fraction(jumped, spec.fps) / tb)
            packet.pts, packet.dts = pts_ticks + ticks, dts_ticks + ticks
        return Muxable(packet, kind, float(pts), float(dts))


def _with_payload(packet: av.Packet[Any], data: bytes) -> av.Packet[Any]:
    out = av.Packet(data)
    out.pts, out.dts, out.duration = packet.pts, packet.dts, packet.duration
    out.time_base = packet.time_base
    out.is_keyframe = packet.is_keyframe
    out.stream = packet.stream
    return out


def encode(out: Any, spec: SignalSpec) -> Iterator[Muxable]:
    """Add the H.264 and AAC streams to the output container ``out`` and yield its packets in
    decode-time order, with corrupt, timestamp jumps and (outside MPEG-TS) drop applied."""
    video, audio = _Video(spec), _Audio(spec)
    vs = out.add_stream("libx264", rate=spec.fps)
    vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, "yuv420p"
    cc = vs.codec_context
    cc.time_base = Fraction(1, spec.fps)
    # Signal limited range BT.709 so that black is Y=16 for the monitor.
    cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1, 1
    # Fixed thread count: x264 output depends on it, and determinism must not depend on the host.
    cc.thread_count = 2
    # Fixed GOP like a broadcast encoder. mbtree is off because with it this x264 build gives
    # run-to-run different bitstreams for the same input (measured), breaking determinism.
    gop = spec.gop
    vs.options = {"preset": "veryfast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:mbtree=0"}
    aus = out.add_stream("aac", rate=spec.sample_rate)
    aus.layout = "stereo" if spec.channels == 2 else "mono"
    layout = aus.layout.name
    transport = _Transport(spec, drop_frames=out.format.name != "mpegts")
    # Release packets in dts order, once both encoders are past them: a live sender paces on it.
    queue: list[tuple[float, int, Muxable]] = []
    order = itertools.count()
    latest = {"video": -math.inf, "audio": -math.inf}

    def take(packets: Sequence[av.Packet[Any]], kind: str, final: bool = False) -> Iterator[Muxable]:
        for packet in packets:
            item = transport(packet, kind)
            if item is not None:
                heapq.heappush(queue, (item.pace_s, next(order), item))
                latest[kind] = item.pace_s
        if final:
            latest[kind] = math.inf
        while queue and queue[0][0] <= min(latest.values()):
            yield heapq.heappop(queue)[2]

    n_audio = _AAC_PRIMING  # see module docstring: priming then lines up with video frame 0
    for i in range(spec.n_frames):
        frame = av.VideoFrame.from_ndarray(video.frame(i), format="yuv420p")
        frame.pts = i
        frame.color_range = 1
        if i in spec.forced_keyframes:
            frame.pict_type = av.video.frame.PictureType.I
        yield from take(vs.encode(frame), "video")
        n_next = min(spec.n_samples, first_index((i + 1) / spec.fps, spec.sample_rate))
        if n_next > n_audio:
            af = av.AudioFrame.from_ndarray(audio.samples(n_audio, n_next), format="fltp", layout=layout)
            af.sample_rate, af.pts, af.time_base = spec.sample_rate, n_audio, Fraction(1, spec.sample_rate)
            yield from take(aus.encode(af), "audio")
            n_audio = n_next
    yield from take(vs.encode(None), "video", final=True)
    yield from take(aus.encode(None), "audio", final=True)


class Pacer:
    """Real-time pacing: ``wait(t)`` returns once media time t (s) is due, ``speed`` times faster
    than real time, counting from the first call. False if ``stop`` was set meanwhile."""

    def __init__(self, speed: float = 1.0, stop: threading.Event | None = None) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError("speed must be > 0")
        self.speed = speed
        self.stop = stop or threading.Event()
        self._anchor: tuple[float, float] | None = None

    def wait(self, t: float) -> bool:
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, t)
        wall0, t0 = self._anchor
        delay = wall0 + (t - t0) / self.speed - now
        return not (self.stop.wait(delay) if delay > 0 else self.stop.is_set())


def build_truth(spec: SignalSpec, source: str, origin_s: float) -> GroundTruth:
    """The ground truth of ``spec`` as sent to ``source`` (see the module docstring's timeline)."""
    video = _Video(spec)
    defects = []
    for d in spec.defects:
        params: dict[str, Any] = dict(d.params)
        start, end = spec.container_s(d.start_s), spec.container_s(d.start_s) + d.duration_s
        if d.type in INSTANT_TYPES:
            start = end = d.start_s
            params["jump_s"] = max(1, round(d.params["jump_s"] * spec.fps)) / spec.fps
        if d.type in TRUTH_TYPES:
            params["injected"] = d.type
        if d.type == "av_drift":
            params |= {"start_offset_ms": 0.0, "end_offset_ms": d.params["ms_per_s"] * d.duration_s}
        if d.type in ("corrupt", "drop"):
            end_frame = spec.frames(d)[1]
            key = next((k for k in spec.keyframes if k >= end_frame), spec.n_frames)
            params |= {
                "expect": ["decode_error", "blockiness"],
                "recovers_by_s": round(spec.container_s(key / spec.fps), 9),
            }
        defects.append(
            {
                "type": TRUTH_TYPES.get(d.type, d.type),
                "start_s": round(start, 9),
                "end_s": round(end, 9),
                "params": params,
            }
        )
    silences = spec.of("silence")
    marks = []
    for i in spec.mark_frames:
        t = i / spec.fps
        beep = t + spec.offset_ms(t) / 1000
        if (
            video.hidden(i)
            or spec.lost("video", t) is not None
            or any(s.start_s - _BEEP_S < beep < s.end_s for s in silences)
        ):
            continue
        marks.append(round(spec.container_s(t), 9))
    return GroundTruth(
        source=source,
        duration_s=float(spec.duration_s),
        seed=spec.seed,
        width=spec.width,
        height=spec.height,
        fps=spec.fps,
        sample_rate=spec.sample_rate,
        channels=spec.channels,
        gop_s=spec.gop / spec.fps,
        origin_s=round(origin_s, 9),
        audio_start_s=_AAC_PRIMING / spec.sample_rate,
        scene_cuts_s=[round(spec.container_s(c), 9) for c in video.scene_cuts_s],
        defects=defects,
        sync_marks_s=marks,
    )


def _start_s(stream: av.stream.Stream) -> float:
    """Container timestamp (s) of a stream's first frame, as the demuxer reports it."""
    if stream.start_time is None or stream.time_base is None:
        raise RuntimeError(f"{stream.container.name}: {stream.type} stream has no start time")
    return float(stream.start_time * stream.time_base)


def generate(
    path: str | Path,
    *,
    duration_s: float = 30.0,
    defects: Sequence[DefectSpec] = (),
    seed: int = 0,
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    sample_rate: int = 48000,
    channels: int = 2,
    gop_s: float = 2.0,
    sync_marks: bool = False,
    realtime: bool = False,
    speed: float = 1.0,
) -> GroundTruth:
    """Encode ``duration_s`` seconds of H.264 (``width`` x ``height`` px, ``fps`` frames/s,
    a keyframe every ``gop_s`` s) and AAC (``sample_rate`` Hz, 1-2 channels) to ``path``
    (.ts → MPEG-TS, .mp4 → MP4), and write ``<path>.truth.json``. Returns the truth.
    ``sync_marks`` adds a flash and a beep once a second; ``realtime`` writes the packets at their
    media time (``speed`` times faster), for monitors that follow a growing file."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: output must end in .ts or .mp4")
    spec = SignalSpec(
        duration_s=duration_s,
        defects=tuple(defects),
        seed=seed,
        width=width,
        height=height,
        fps=fps,
        sample_rate=sample_rate,
        channels=channels,
        gop_s=gop_s,
        sync_marks=sync_marks,
    )
    spec.check_output(live=False)
    pacer = Pacer(speed)
    with contextlib.ExitStack() as stack:
        target: Any = str(path)
        if fmt == "mpegts" and spec.of("drop"):
            target = TsDrop(stack.enter_context(path.open("wb")).write, spec)
            stack.callback(target.finish)  # after the muxer's trailer, before the file closes
        options = TS_OPTIONS if fmt == "mpegts" else {}
        out = stack.enter_context(av.open(target, "w", format=fmt, container_options=options))
        for item in encode(out, spec):
            if realtime:
                pacer.wait(item.pace_s)
            out.mux(item.packet)

    with av.open(str(path)) as check:
        v0, a0 = _start_s(check.streams.video[0]), _start_s(check.streams.audio[0])
    if abs(v0 - a0) > 1e-6:
        raise RuntimeError(
            f"{path}: video starts at {v0} s but audio at {a0} s; the truth assumes both "
            "start together (AAC priming changed?)"
        )
    truth = build_truth(spec, str(path), min(v0, a0))
    truth_path(path).write_text(truth.to_json())
    return truth


# ------------------------------------------------------------------ command line

_EPILOG = """\
defect script: comma-separated TYPE@START+DURATION[:key=value[:key=value]] items, in seconds of
media time; a defect covers the frames and samples with START <= t < START+DURATION.

  picture    black                        black frames (Y=16, limited range)
             freeze                       the picture at START held still
  sound      silence[:level_dbfs=L]       digital zero, or noise at L <= -70 dBFS
             clipping[:gain_db=26]        driven into hard clipping (18..60 dB)
             loudness:gain_db=G           level change of G dB (-60..30), limited, never clips
  A/V sync   av_offset:offset_ms=MS       sound MS ms late (negative: early), |MS| <= 1000
  (needs     av_drift:ms_per_s=R          sound late by R ms more every second of the span,
  --sync-marks)                           from 0 at START (at most 1000 ms at the end)
  transport  corrupt[:rate=0.3]           garbles slice data of that fraction of video frames,
                                          keyframes too (damage shows until the next keyframe)
             drop[:rate=0.1]              loses that fraction of the video PID's TS packets, as
                                          on a lossy network (MP4: whole video frames)
             timestamp_jump@T[:jump_s=10] from T on every timestamp is jump_s later (no DURATION)
             signal_loss                  live outputs only: nothing is sent for DURATION (no UDP
                                          datagram, no new HLS segment), then the stream resumes
                                          where it would have been

Defects of one kind may not overlap (av_offset/av_drift count as one, corrupt/drop too).
Sync marks: once a second (at k+0.5 s, the next frame time) one white frame and a 40 ms 1 kHz
beep at the same instant; a monitor measures the A/V offset between them.

The ground truth (JSON: type, start_s, end_s, params per defect, plus sync_marks_s) goes to
OUTPUT.truth.json and to --truth PATH. It names defects as a monitor reports them: av_offset and
av_drift are av_sync, corrupt and drop are decode_error (params.expect: decode_error,
blockiness). After a timestamp_jump, later times include the jump, as a monitor measures them.

examples:
  avmon testsrc clip.ts --duration 60 \\
      --defects 'black@5+3, freeze@12+4, silence@20+3, loudness@30+12:gain_db=-20'
  avmon testsrc sync.mp4 --sync-marks --defects 'av_offset@10+10:offset_ms=120, av_drift@30+10:ms_per_s=20'

  # live: start the receiver first (UDP is not buffered anywhere), then the source
  avmon analyze udp://127.0.0.1:5000 &
  avmon testsrc --udp 127.0.0.1:5000 --sync-marks --defects 'corrupt@10+2, signal_loss@20+5'

  avmon testsrc --hls 8081 --defects 'drop@10+3, timestamp_jump@20:jump_s=30' &
  avmon analyze http://127.0.0.1:8081/live.m3u8

  # RTMP: the generator publishes to a server that listens (nginx-rtmp, MediaMTX, ...)
  avmon testsrc --rtmp rtmp://127.0.0.1:1935/live/test --duration 600
"""


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 640x360")
    return int(m[1]), int(m[2])


def host_port(text: str, default_host: str | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``; ``PORT`` alone with a default host) → (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep and default_host is not None:
        host = default_host
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avmon testsrc``."""
    parser.description = (
        "Generate real H.264/AAC test signals with defects at scripted times, to a file or live,\n"
        "and write the ground truth. To check a monitor, point it at the file or URL and compare\n"
        "what it reports with the truth."
    )
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "output",
        metavar="OUTPUT",
        nargs="?",
        help="media file to write: .ts (MPEG-TS) or .mp4; the ground truth goes to OUTPUT.truth.json",
    )
    where.add_argument(
        "--udp",
        metavar="HOST:PORT",
        type=host_port,
        help="send MPEG-TS over UDP, 7 TS packets per datagram, in real time; receive with udp://HOST:PORT",
    )
    where.add_argument(
        "--hls",
        metavar="[HOST:]PORT",
        type=lambda s: host_port(s, "127.0.0.1"),
        help="serve live HLS (a keyframe-aligned segment every --gop s, a sliding window of "
        "--window) at http://HOST:PORT/live.m3u8; PORT 0 picks a free one",
    )
    where.add_argument(
        "--rtmp",
        metavar="URL",
        help="publish FLV over RTMP to a server that listens at URL "
        "(rtmp://HOST:PORT/APP/KEY); the bundled FFmpeg cannot listen for players itself",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="length in seconds (default 30)")
    parser.add_argument(
        "--defects",
        metavar="SCRIPT",
        default="",
        help=(
            "defects to inject: comma-separated TYPE@START+DURATION[:key=value[:key=value]] items (see "
            "below). Example: 'black@5+3, freeze@12+4, silence@20+3, loudness@30+12:gain_db=-20'"
        ),
    )
    parser.add_argument(
        "--sync-marks",
        action="store_true",
        help="a white frame and a 1 kHz beep together "
        "once a second, to measure A/V sync (needed by av_offset and av_drift)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="write a file at the media's own pace (live outputs always are)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="pacing factor: 2 sends twice as fast as real time (default 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="content seed (default 0); same seed, same media")
    parser.add_argument(
        "--size",
        type=_size,
        default=(640, 360),
        metavar="WxH",
        help="picture size in pixels, even numbers (default 640x360)",
    )
    parser.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    parser.add_argument(
        "--gop",
        type=float,
        default=2.0,
        help="keyframe interval in seconds, and the HLS segment length (default 2)",
    )
    parser.add_argument("--window", type=int, default=6, help="HLS playlist length in segments (default 6)")
    parser.add_argument(
        "--truth",
        metavar="PATH",
        help="also write the ground truth here; a live source's default is "
        "testsrc-udp-PORT.truth.json (-hls-PORT, -rtmp) in this directory",
    )


def run(args: argparse.Namespace) -> int:
    """Generate from parsed arguments; print a one-line summary. Returns 0, or 2 on bad input."""
    try:
        width, height = args.size
        media: dict[str, Any] = {
            "duration_s": args.duration,
            "defects": parse_script(args.defects),
            "seed": args.seed,
            "width": width,
            "height": height,
            "fps": args.fps,
            "gop_s": args.gop,
            "sync_marks": args.sync_marks,
        }
        if args.output is None:
            from avmon import livesrc  # the live outputs import this module

            return livesrc.run_cli(args, media)
        started = time.perf_counter()
        truth = generate(args.output, realtime=args.realtime, speed=args.speed, **media)
        if args.truth:
            Path(args.truth).write_text(truth.to_json())
    except ValueError as exc:
        print(f"testsrc: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(
        f"wrote {truth.source}: {truth.duration_s:g} s {width}x{height}@{truth.fps} h264/aac, "
        f"{len(truth.defects)} defect(s), truth in {truth_path(truth.source)} ({elapsed:.1f} s)"
    )
    return 0
