"""Programme-like clips with known A/V offsets and no sync marks, encoded by the ffmpeg CLI.

A scene is a scrolling textured background (moving everywhere, so motion alone is no event)
with a few discs that glide and bounce off the edges silently. At irregular times (gaps drawn
from ``GAP_S``) one disc is *hit*: it turns white for two pictures and is kicked to a new
velocity, and a knock sounds (a damped sine of random pitch and decay over a click). Every few
seconds (``CUT_S``) the scene is *cut*: a new background, speed and disc colours, and a new
ambience (noise of another colour and level). Ambience plays throughout (-40 to -30 dBFS).

The picture events sit on frames; their sounds start exactly at the frame's time plus the
offset (``offset_ms`` at that time: positive = sound late), so the truth is exact, also for a
drift. Pictures are rendered with numpy and OpenCV and piped to ffmpeg as raw grey frames; the
audio is written as raw float32. H.264 (libx264) and AAC-LC in MPEG-TS.

Kinds: ``knocks`` (the above), ``unrelated`` (the same pictures, sounds and cuts of another
seed: no relation), ``silence`` (digital silence), ``static`` (one still picture with the
knocks of an ordinary scene).
"""

from __future__ import annotations

import itertools
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

RATE = 48_000
GAP_S = (0.35, 2.0)  # seconds between hits, uniform
CUT_S = (5.0, 12.0)  # seconds between cuts, uniform
DISCS = 3
KINDS = ("knocks", "unrelated", "silence", "static")

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Timeline:
    """What happens when: event and cut times (s, on the frame grid) and their sound details."""

    hits: list[tuple[float, int]]  # (time, disc)
    cuts: list[float]


def timeline(duration_s: float, fps: int, rng: np.random.Generator) -> Timeline:
    hits: list[tuple[float, int]] = []
    t = rng.uniform(*GAP_S)
    while t < duration_s - 0.5:
        hits.append((round(t * fps) / fps, int(rng.integers(DISCS))))
        t += rng.uniform(*GAP_S)
    cuts: list[float] = []
    t = rng.uniform(*CUT_S)
    while t < duration_s - 1.0:
        cuts.append(round(t * fps) / fps)
        t += rng.uniform(*CUT_S)
    return Timeline(hits, cuts)


def _texture(rng: np.random.Generator, height: int, width: int) -> U8:
    """A smooth random texture that is periodic (low-pass filtered in the Fourier domain), so a
    scroll that wraps around shows no seam (a seam would be a cut in every picture)."""
    noise = np.fft.rfft2(rng.standard_normal((height, width)))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    sigma = max(1.5, width / 80.0)
    blurred = np.fft.irfft2(noise * np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2)), s=(height, width))
    blurred /= float(blurred.std()) + 1e-6
    level = rng.uniform(70, 150)
    return np.clip(level + 35.0 * blurred, 20, 220).astype(np.uint8)


def render_video(
    duration_s: float, fps: int, width: int, height: int, line: Timeline, seed: int, static: bool
) -> Iterator[bytes]:
    """Raw grey frames (bytes, one per picture) of the scene of ``line``."""
    rng = np.random.default_rng(seed + 1000)
    frames = round(duration_s * fps)
    hit_at: dict[int, int] = {round(t * fps): disc for t, disc in line.hits}
    cut_at = {round(t * fps) for t in line.cuts}
    radius = max(4, height // 10)

    def scene() -> tuple[U8, float, float, list[int]]:
        return (
            _texture(rng, height, width),
            rng.uniform(-2.5, 2.5),
            rng.uniform(-1.5, 1.5),
            [int(c) for c in rng.integers(40, 170, DISCS)],
        )

    def pictures() -> Iterator[bytes]:
        texture, vx, vy, colours = scene()
        pos = rng.uniform([radius, radius], [width - radius, height - radius], (DISCS, 2))
        vel = rng.uniform(-3.0, 3.0, (DISCS, 2))
        white: dict[int, int] = {}
        still: U8 | None = None
        for k in range(frames):
            if static and still is not None:
                yield still.tobytes()
                continue
            if k in cut_at:
                texture, vx, vy, colours = scene()
            shift = (int(vy * k) % height, int(vx * k) % width)
            picture = np.ascontiguousarray(np.roll(texture, shift, axis=(0, 1)))
            if k in hit_at:
                disc = hit_at[k]
                white[disc] = 2
                vel[disc] = rng.uniform(-6.0, 6.0, 2)
            for d in range(DISCS):
                colour = 235 if white.get(d, 0) > 0 else colours[d]
                cv2.circle(picture, (int(pos[d, 0]), int(pos[d, 1])), radius, colour, -1)
                if white.get(d, 0) > 0:
                    white[d] -= 1
            pos += vel
            for axis, limit in ((0, width), (1, height)):
                low, high = pos[:, axis] < radius, pos[:, axis] > limit - radius
                vel[low | high, axis] *= -1.0
                pos[:, axis] = np.clip(pos[:, axis], radius, limit - radius)
            if static:
                still = picture
            yield picture.tobytes()

    return pictures()


def render_audio(duration_s: float, line: Timeline, offset_ms: Callable[[float], float], seed: int) -> F32:
    """Mono float32: ambience that changes at the cuts, and a knock at every hit, all placed at
    their picture's time plus ``offset_ms(time)``."""
    rng = np.random.default_rng(seed + 2000)
    n = round(duration_s * RATE)
    audio = np.zeros(n, np.float64)
    bounds = [0.0, *[c + offset_ms(c) / 1000.0 for c in line.cuts], duration_s + 1.0]
    for lo, hi in itertools.pairwise(bounds):
        a, b = max(0, round(lo * RATE)), min(n, round(hi * RATE))
        if b <= a:
            continue
        white = rng.standard_normal(b - a)
        colour = rng.uniform(0.0, 0.97)  # a one-pole low-pass (truncated): from hiss to rumble
        shaped = np.convolve(white, colour ** np.arange(64), mode="same")
        shaped /= float(shaped.std()) + 1e-9
        level = 10 ** (rng.uniform(-40.0, -30.0) / 20.0)
        audio[a:b] += level * shaped
    for t, _ in line.hits:
        start = t + offset_ms(t) / 1000.0
        i = round(start * RATE)
        if not 0 <= i < n:
            continue
        tau = rng.uniform(0.01, 0.04)
        freq = rng.uniform(200.0, 2500.0)
        k = np.arange(min(n - i, round(8 * tau * RATE)))
        env = np.exp(-k / (tau * RATE))
        amp = 10 ** (rng.uniform(-20.0, -8.0) / 20.0)
        click = rng.standard_normal(k.size) * np.exp(-k / (0.002 * RATE))
        audio[i : i + k.size] += amp * env * (np.sin(2 * np.pi * freq * k / RATE) + 0.3 * click)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def make_clip(
    path: Path,
    kind: str,
    duration_s: float,
    offset_ms: Callable[[float], float] = lambda t: 0.0,
    *,
    seed: int = 0,
    width: int = 320,
    height: int = 180,
    fps: int = 25,
) -> Path:
    """Encode one clip of ``kind`` (see the module docstring) to ``path`` (MPEG-TS)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng(seed)
    line = timeline(duration_s, fps, rng)
    unrelated = timeline(duration_s, fps, np.random.default_rng(seed + 7919))
    sound_line = unrelated if kind == "unrelated" else line
    audio = render_audio(duration_s, sound_line, offset_ms, seed)
    if kind == "silence":
        audio[:] = 0.0
    video = render_video(duration_s, fps, width, height, line, seed, static=kind == "static")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "audio.f32"
        np.stack([audio, audio], axis=1).astype("<f4").tofile(raw)
        command = [
            "ffmpeg", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
            "-f", "f32le", "-ar", str(RATE), "-ac", "2", "-i", str(raw),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-g", str(2 * fps),
            "-c:a", "aac", "-b:a", "128k", "-shortest", "-f", "mpegts", str(path),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdin=subprocess.PIPE)
        assert process.stdin is not None
        for frame in video:
            process.stdin.write(frame)
        process.stdin.close()
        if process.wait() != 0:
            raise RuntimeError(f"ffmpeg failed to encode {path}")
    return path


def constant(ms: float) -> Callable[[float], float]:
    return lambda t: ms


def drift(to_ms: float, duration_s: float) -> Callable[[float], float]:
    """0 ms at the start to ``to_ms`` at the end, linearly."""
    return lambda t: to_ms * t / duration_s
