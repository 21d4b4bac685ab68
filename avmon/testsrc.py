"""Test-signal generator: real H.264/AAC media with scripted defects and a JSON ground truth.

``generate()`` encodes a moving, TV-like picture (scrolling fractal texture, drifting light,
moving discs, film grain, a scene cut every 5-8 s) and a speech/music-like tone (harmonic notes
changing pitch every ~0.5 s, about -20 dBFS RMS) into MPEG-TS or MP4, injecting defects at
scripted times, and writes ``<output>.truth.json`` beside it.

Timing model. Media time t (seconds) is measured from the container's earliest first timestamp,
as the monitor does; ``GroundTruth.origin_s`` is that container timestamp. Video frame i is at
t = i / fps, audio sample n at t = n / sample_rate. A defect covers the frames/samples with
``start_s <= t < end_s``. The AAC encoder emits 1024 priming samples before the first input
sample and MPEG-TS cannot trim them, so the audio input starts at sample 1024: the priming
packet then starts exactly at t = 0, together with video frame 0, in both TS and MP4. The
generated audio therefore begins at ``audio_start_s`` (21.3 ms at 48 kHz); before that the
decoder outputs near-silence. Through the library API the MPEG-TS muxer adds no 1.4 s offset (that
is the ffmpeg CLI's -muxdelay); ``origin_s`` is 2 frames there, the H.264 B-frame reorder delay.

Overlaps: black wins over freeze (a freeze holds the scene picture of its first frame, never
black); silence wins over gain changes; clipping and loudness gains multiply. Everything is a pure
function of (seed, frame or sample index), so output is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
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
DEFECT_TYPES = VIDEO_TYPES | AUDIO_TYPES
# Allowed params per type, with defaults (None: required or "absent means default behaviour").
_PARAMS: dict[str, dict[str, float | None]] = {
    "black": {},
    "freeze": {},
    "silence": {"level_dbfs": None},
    "clipping": {"gain_db": 20.0},
    "loudness": {"gain_db": None},
}
_FORMATS = {".ts": "mpegts", ".mp4": "mp4"}
_AAC_PRIMING = 1024  # samples FFmpeg's native AAC encoder emits before the first input sample
_LIMIT = 10 ** (-1.5 / 20)  # loudness limiter ceiling: -1.5 dBFS leaves room for AAC overshoot
_BLACK_Y, _NEUTRAL_C = 16, 128  # limited ("MPEG") range, which the stream signals
_NOTE_SCALE = 0.25  # tone amplitude giving about -20 dBFS RMS overall
_NOISE_RMS = 0.003  # "a little noise" (-50 dBFS) under the tone


@dataclass(frozen=True)
class DefectSpec:
    """One scripted defect: ``type`` from DEFECT_TYPES, media times in seconds."""

    type: str
    start_s: float
    duration_s: float
    params: dict[str, float] = field(default_factory=dict)  # e.g. {"gain_db": -20} for loudness

    @property
    def end_s(self) -> float:
        # Rounded so that 0.1 + 0.2 is 0.3: the truth and the frame selection use this value.
        return round(self.start_s + self.duration_s, 9)


@dataclass
class GroundTruth:
    """What ``generate`` put in the media. Times are media seconds (see module docstring)."""

    source: str
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


_ITEM_RE = re.compile(r"^(?P<type>[a-z_]+)@(?P<start>[^+:]+)\+(?P<dur>[^:]+)(?::(?P<params>.*))?$")


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
    Raises ValueError on unknown types or params, negative times, overlapping same-type defects."""
    if not script.strip():
        return []
    specs = []
    for raw in script.split(","):
        item = raw.strip()
        m = _ITEM_RE.match(item.replace(" ", ""))
        if not m:
            raise ValueError(f"bad defect {item!r}: expected TYPE@START+DURATION[:key=value...], "
                             "e.g. black@5+3 or loudness@30+12:gain_db=-20")
        params: dict[str, float] = {}
        for kv in m["params"].split(":") if m["params"] is not None else []:
            key, sep, val = kv.partition("=")
            if not sep or not key:
                raise ValueError(f"defect {item!r}: parameter {kv!r} is not key=value")
            if key in params:
                raise ValueError(f"defect {item!r}: parameter {key!r} given twice")
            params[key] = _number(val, f"parameter {key}", item)
        specs.append(DefectSpec(m["type"], _number(m["start"], "start", item),
                                _number(m["dur"], "duration", item), params))
    return validate_defects(specs)


def validate_defects(specs: Sequence[DefectSpec], duration_s: float | None = None) -> list[DefectSpec]:
    """Check specs and return them sorted by start with default params filled in.
    With ``duration_s``, also require every defect to end within the media."""
    out = []
    for s in specs:
        label = f"{s.type}@{s.start_s:g}+{s.duration_s:g}"
        if s.type not in DEFECT_TYPES:
            raise ValueError(f"defect {label}: unknown type {s.type!r} "
                             f"(expected one of {', '.join(sorted(DEFECT_TYPES))})")
        if s.start_s < 0 or not math.isfinite(s.start_s):
            raise ValueError(f"defect {label}: start must be >= 0 s")
        if s.duration_s <= 0 or not math.isfinite(s.duration_s):
            raise ValueError(f"defect {label}: duration must be > 0 s")
        if duration_s is not None and s.end_s > duration_s:
            raise ValueError(f"defect {label}: ends at {s.end_s:g} s, after the media ({duration_s:g} s)")
        allowed = _PARAMS[s.type]
        unknown = set(s.params) - set(allowed)
        if unknown:
            raise ValueError(f"defect {label}: unknown parameter(s) {sorted(unknown)} "
                             f"(allowed: {sorted(allowed) or 'none'})")
        params = {k: float(v) for k, v in allowed.items() if v is not None} | dict(s.params)
        if s.type == "loudness" and not ("gain_db" in params and -60 <= params["gain_db"] <= 30
                                         and params["gain_db"] != 0):
            raise ValueError(f"defect {label}: loudness needs gain_db in [-60, 30], non-zero")
        if s.type == "clipping" and not 12 <= params["gain_db"] <= 60:
            raise ValueError(f"defect {label}: clipping gain_db must be in [12, 60] to clip for sure")
        if s.type == "silence" and params.get("level_dbfs", -120) > -70:
            raise ValueError(f"defect {label}: silence level_dbfs must be <= -70")
        out.append(DefectSpec(s.type, float(s.start_s), float(s.duration_s), params))
    out.sort(key=lambda s: (s.type, s.start_s))
    for a, b in itertools.pairwise(out):
        # Abutting defects of one type are rejected too: the media could not tell them apart.
        if a.type == b.type and b.start_s <= a.end_s:
            raise ValueError(f"defects {a.type}@{a.start_s:g}+{a.duration_s:g} and "
                             f"{b.type}@{b.start_s:g}+{b.duration_s:g} overlap or touch")
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
        luma = rng.uniform(100, 135) + rng.uniform(25, 38) * _fractal_noise(rng, self.th, self.tw,
                                                                             rng.uniform(2.6, 3.2))
        self.y_ext = _wrap_pad(np.clip(luma, 24, 226), height, width)
        # Chroma at 4:2:0 resolution: a half-size texture with the same (halved) period.
        self.c_ext = [_wrap_pad(128 + rng.uniform(-20, 20) + rng.uniform(8, 16)
                                * _fractal_noise(rng, height, width, 3.0), height // 2, width // 2)
                      for _ in range(2)]
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
        self.discs = np.column_stack([
            rng.uniform(0.2, 0.8, n) * width, rng.uniform(0.2, 0.8, n) * height,
            rng.uniform(0.1, 0.3, n) * width, rng.uniform(0.1, 0.3, n) * height,
            rng.uniform(0.3, 1.5, n), rng.uniform(0.3, 1.5, n), rng.uniform(0, 6.3, n),
            rng.uniform(0.04, 0.12, n) * height, rng.uniform(40, 210, n),
            rng.uniform(80, 176, n), rng.uniform(80, 176, n)])

    def render(self, t: float) -> tuple[I16, I16, I16]:
        """Y, U, V planes (int16, before grain and clipping) at media time t seconds."""
        tau = t - self.start_s
        oy = math.floor(self.off0[0] + self.vel[0] * tau) % self.th
        ox = math.floor(self.off0[1] + self.vel[1] * tau) % self.tw
        h, w = self.h, self.w
        amp, wavelength, hz = self.sweep
        cols = np.arange(w, dtype=np.float32)
        sweep = (amp * np.sin(2 * np.pi * (cols / wavelength - hz * tau))).astype(np.int16)
        y = self.y_ext[oy:oy + h, ox:ox + w] + sweep
        cy, cx = oy // 2, ox // 2  # chroma texture period is exactly half the luma one
        u = self.c_ext[0][cy:cy + h // 2, cx:cx + w // 2].copy()
        v = self.c_ext[1][cy:cy + h // 2, cx:cx + w // 2].copy()
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


class _Video:
    """Pictures as a pure function of frame index: scenes, grain, then black/freeze defects."""

    def __init__(self, seed: int, width: int, height: int, fps: int, duration_s: float,
                 defects: Sequence[DefectSpec]) -> None:
        self.seed, self.w, self.h, self.fps = seed, width, height, fps
        rng = np.random.default_rng([seed, 0])
        cuts = [0]  # scene start frames
        while cuts[-1] / fps < duration_s:
            cuts.append(cuts[-1] + round(rng.uniform(5.0, 8.0) * fps))
        self.cut_frames = cuts
        self.scene_cuts_s = [c / fps for c in cuts[1:] if c / fps < duration_s]
        self._scene: _Scene | None = None
        self.ranges = [(d.type, first_index(d.start_s, fps), first_index(d.end_s, fps))
                       for d in defects if d.type in VIDEO_TYPES]
        self._held: dict[int, npt.NDArray[np.uint8]] = {}

    def _normal(self, i: int) -> npt.NDArray[np.uint8]:
        k = int(np.searchsorted(self.cut_frames, i, side="right")) - 1
        if self._scene is None or self._scene.start_s != self.cut_frames[k] / self.fps:
            self._scene = _Scene(self.seed, k, self.cut_frames[k] / self.fps, self.w, self.h, self.fps)
        y, u, v = self._scene.render(i / self.fps)
        # Grain: new every frame, so that consecutive pictures are never identical.
        y += np.random.default_rng([self.seed, 3, i]).integers(-3, 4, size=y.shape, dtype=np.int16)
        return np.concatenate([np.clip(p, 16, top).astype(np.uint8).ravel()
                               for p, top in ((y, 235), (u, 240), (v, 240))])

    def frame(self, i: int) -> npt.NDArray[np.uint8]:
        """yuv420p picture of frame i, planes concatenated, shaped (height * 3 / 2, width)."""
        active = {kind: a for kind, a, b in self.ranges if a <= i < b}
        if "black" in active:
            buf = np.full(self.w * self.h * 3 // 2, _NEUTRAL_C, np.uint8)
            buf[: self.w * self.h] = _BLACK_Y
        elif "freeze" in active:
            # Hold the exact picture of the freeze's first frame (no new grain), computed once.
            start = active["freeze"]
            if start not in self._held:
                self._held = {start: self._normal(start)}
            buf = self._held[start]
        else:
            buf = self._normal(i)
        return buf.reshape(-1, self.w)


class _Audio:
    """Samples as a pure function of sample index: harmonic notes plus noise, then defects."""

    def __init__(self, seed: int, rate: int, channels: int, total: int,
                 defects: Sequence[DefectSpec]) -> None:
        self.rate, self.channels = rate, channels
        rng = np.random.default_rng([seed, 4])
        n_notes = int(total / rate / 0.35) + 4  # enough notes for the media and the lookahead
        lengths = np.rint(rng.uniform(0.35, 0.65, n_notes) * rate).astype(np.int64)
        self.starts, self.lengths = np.concatenate([[0], np.cumsum(lengths)]), lengths
        self.f0 = 110.0 * 2.0 ** (rng.integers(0, 25, n_notes) / 12)  # A2..A4, semitone steps
        self.amp = rng.uniform(0.6, 1.0, n_notes)
        # Phase at each note start, accumulated so that pitch changes are click-free.
        self.phase0 = np.concatenate([[0.0], np.cumsum(2 * np.pi * self.f0 * lengths / rate)]) % (2 * np.pi)
        self.noise = rng.standard_normal((channels, 131071)).astype(np.float32)  # unit RMS
        self.block = max(1, rate // 100)  # limiter block: 10 ms
        self.ranges = [(d.type, first_index(d.start_s, rate), first_index(d.end_s, rate), d.params)
                       for d in defects if d.type in AUDIO_TYPES]

    def _content(self, n0: int, n1: int) -> F64:
        n = np.arange(n0, n1)
        k = np.searchsorted(self.starts, n, side="right") - 1
        u = n - self.starts[k]
        x = u / self.lengths[k]
        phase = self.phase0[k] + 2 * np.pi * self.f0[k] * u / self.rate
        tone = np.zeros_like(phase)
        for p in range(1, 5):  # harmonics 1/p: a buzzy, voice-like timbre
            tone += np.sin(p * phase) / p
        # Envelope: fast attack, slow decay, never below 30 % (no quiet gaps within content).
        env = 0.3 + 0.7 * np.sin(np.pi * x**0.3) ** 2
        mono = _NOTE_SCALE * self.amp[k] * env * tone
        pan = 0.15 * np.sin(2 * np.pi * 0.1 * n / self.rate)
        gains = [1 + pan, 1 - pan] if self.channels == 2 else [np.ones_like(pan)]
        return np.stack([mono * g + _NOISE_RMS * self.noise[c, n % self.noise.shape[1]]
                         for c, g in enumerate(gains)])

    def samples(self, n0: int, n1: int) -> F32:
        """(channels, n1 - n0) float32 samples n0..n1-1, full scale ±1.0."""
        b = self.block
        # Work on whole limiter blocks plus one either side, so the result is chunk-independent.
        a0, a1 = max(0, (n0 // b - 1) * b), (-(-n1 // b) + 1) * b
        x = self._content(a0, a1)
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
                    x[:, s - a0:e - a0] = 10 ** (params["level_dbfs"] / 20) * self.noise[:, idx]
                else:
                    x[:, s - a0:e - a0] = 0.0
        return np.ascontiguousarray(x[:, n0 - a0:n1 - a0], dtype=np.float32)


def _start_s(stream: av.stream.Stream) -> float:
    """Container timestamp (s) of a stream's first frame, as the demuxer reports it."""
    if stream.start_time is None or stream.time_base is None:
        raise RuntimeError(f"{stream.container.name}: {stream.type} stream has no start time")
    return float(stream.start_time * stream.time_base)


def generate(path: str | Path, *, duration_s: float = 30.0, defects: Sequence[DefectSpec] = (),
             seed: int = 0, width: int = 640, height: int = 360, fps: int = 25,
             sample_rate: int = 48000, channels: int = 2, gop_s: float = 2.0) -> GroundTruth:
    """Encode ``duration_s`` seconds of H.264 (``width`` x ``height`` px, ``fps`` frames/s,
    a keyframe every ``gop_s`` s) and AAC (``sample_rate`` Hz, 1-2 channels) to ``path``
    (.ts → MPEG-TS, .mp4 → MP4), and write ``<path>.truth.json``. Returns the truth."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: output must end in .ts or .mp4")
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"size {width}x{height}: width and height must be even and >= 16")
    if fps <= 0 or sample_rate < 8000 or channels not in (1, 2) or gop_s <= 0:
        raise ValueError("fps must be > 0, sample_rate >= 8000, channels 1 or 2, gop_s > 0")
    if not duration_s >= 0.5:
        raise ValueError("duration_s must be >= 0.5")
    specs = validate_defects(defects, duration_s)
    n_frames, n_samples = first_index(duration_s, fps), first_index(duration_s, sample_rate)
    video = _Video(seed, width, height, fps, duration_s, specs)
    audio = _Audio(seed, sample_rate, channels, n_samples, specs)

    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        cc = vs.codec_context
        cc.time_base = Fraction(1, fps)
        # Signal limited range BT.709 so that black is Y=16 for the monitor.
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1, 1
        gop = max(1, round(gop_s * fps))
        # Fixed thread count: x264 output depends on it, and determinism must not depend on the host.
        cc.thread_count = 2
        # Fixed GOP like a broadcast encoder. mbtree is off because with it this x264 build gives
        # run-to-run different bitstreams for the same input (measured), breaking determinism.
        vs.options = {"preset": "veryfast",
                      "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:mbtree=0"}
        aus = out.add_stream("aac", rate=sample_rate)
        aus.layout = "stereo" if channels == 2 else "mono"
        layout = aus.layout.name
        n_audio = _AAC_PRIMING  # see module docstring: priming then lines up with video frame 0
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(video.frame(i), format="yuv420p")
            frame.pts = i
            frame.color_range = 1
            out.mux(vs.encode(frame))
            n_next = min(n_samples, first_index((i + 1) / fps, sample_rate))
            if n_next > n_audio:
                af = av.AudioFrame.from_ndarray(audio.samples(n_audio, n_next), format="fltp",
                                                layout=layout)
                af.sample_rate, af.pts, af.time_base = sample_rate, n_audio, Fraction(1, sample_rate)
                out.mux(aus.encode(af))
                n_audio = n_next
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))

    with av.open(str(path)) as check:
        v0, a0 = _start_s(check.streams.video[0]), _start_s(check.streams.audio[0])
    if abs(v0 - a0) > 1e-6:
        raise RuntimeError(f"{path}: video starts at {v0} s but audio at {a0} s; the truth assumes both "
                           "start together (AAC priming changed?)")
    truth = GroundTruth(
        source=str(path), duration_s=float(duration_s), seed=seed, width=width, height=height, fps=fps,
        sample_rate=sample_rate, channels=channels, gop_s=gop / fps, origin_s=round(min(v0, a0), 9),
        audio_start_s=_AAC_PRIMING / sample_rate, scene_cuts_s=video.scene_cuts_s,
        defects=[{"type": d.type, "start_s": d.start_s, "end_s": d.end_s, "params": dict(d.params)}
                 for d in specs])
    truth_path(path).write_text(truth.to_json())
    return truth


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 640x360")
    return int(m[1]), int(m[2])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avmon testsrc``."""
    parser.add_argument("output", metavar="OUTPUT", help="media file to write: .ts (MPEG-TS) or .mp4; "
                        "the ground truth goes to OUTPUT.truth.json")
    parser.add_argument("--duration", type=float, default=30.0, help="length in seconds (default 30)")
    parser.add_argument("--defects", metavar="SCRIPT", default="", help=(
        "defects to inject: comma-separated TYPE@START+DURATION[:key=value[:key=value]] items, "
        "times in seconds of media time. Types: black, freeze (video); silence[:level_dbfs=-80], "
        "clipping[:gain_db=20], loudness:gain_db=G (audio). Defects of one type may not overlap. "
        "Example: 'black@5+3, freeze@12+4, silence@20+3, loudness@30+12:gain_db=-20'"))
    parser.add_argument("--seed", type=int, default=0, help="content seed (default 0); same seed, same media")
    parser.add_argument("--size", type=_size, default=(640, 360), metavar="WxH",
                        help="picture size in pixels, even numbers (default 640x360)")
    parser.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    parser.add_argument("--gop", type=float, default=2.0, help="keyframe interval in seconds (default 2)")


def run(args: argparse.Namespace) -> int:
    """Generate from parsed arguments; print a one-line summary. Returns 0, or 2 on bad input."""
    try:
        specs = parse_script(args.defects)
        started = time.perf_counter()
        width, height = args.size
        truth = generate(args.output, duration_s=args.duration, defects=specs, seed=args.seed,
                         width=width, height=height, fps=args.fps, gop_s=args.gop)
    except ValueError as exc:
        print(f"testsrc: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(f"wrote {truth.source}: {truth.duration_s:g} s {width}x{height}@{truth.fps} h264/aac, "
          f"{len(truth.defects)} defect(s), truth in {truth_path(truth.source)} ({elapsed:.1f} s)")
    return 0
