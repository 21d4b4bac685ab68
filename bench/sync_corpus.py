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
knocks of an ordinary scene); ``speech``: a face on a slowly panning background whose mouth
opens with voiced syllables (phrases of 3-8, some with a consonant burst), blinking silently;
``music``: plucked notes on a 0.25 s grid, half the slots taken at random, each lighting and
raising one bar of a row (a visible, syncopated rhythm).
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
KINDS = ("knocks", "unrelated", "silence", "static", "speech", "music")
SYLLABLE_S = (0.12, 0.28)  # speech: syllable lengths, uniform
SYLLABLE_GAP_S = (0.06, 0.35)  # ... gaps between syllables in a phrase
PHRASE_GAP_S = (0.6, 1.5)  # ... pauses between phrases of 3-8 syllables
NOTE_GRID_S = 0.25  # music: notes fall on this grid ...
NOTE_CHANCE = 0.5  # ... each slot with this chance (a syncopated, irregular pattern)
SCALE_HZ = (220.0, 247.0, 277.0, 330.0, 370.0, 440.0, 494.0, 554.0)  # one bar per pitch

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


# ----------------------------------------------------------------------------- speech


def syllables(duration_s: float, fps: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """(start, length) of syllables, s, starts on the frame grid: phrases of 3-8 syllables."""
    found: list[tuple[float, float]] = []
    t = rng.uniform(0.3, 1.0)
    while t < duration_s - 1.0:
        for _ in range(int(rng.integers(3, 9))):
            start = round(t * fps) / fps
            length = rng.uniform(*SYLLABLE_S)
            found.append((start, length))
            t = start + length + rng.uniform(*SYLLABLE_GAP_S)
            if t >= duration_s - 1.0:
                break
        t += rng.uniform(*PHRASE_GAP_S)
    return found


def envelope(t: npt.NDArray[np.float64], parts: list[tuple[float, float]]) -> npt.NDArray[np.float64]:
    """0..1 opening of the syllables at times ``t``: 20 ms attack, 40 ms release (raised cosine)."""
    out = np.zeros_like(t)
    for start, length in parts:
        d = t - start
        rise = np.clip(d / 0.02, 0.0, 1.0)
        fall = np.clip((start + length - t) / 0.04, 0.0, 1.0)
        out = np.maximum(out, np.where((d >= 0) & (d <= length), np.minimum(rise, fall), 0.0))
    return 0.5 - 0.5 * np.cos(np.pi * out)


def speech_audio(
    duration_s: float,
    parts: list[tuple[float, float]],
    offset_ms: Callable[[float], float],
    seed: int,
    fps: int,
) -> F32:
    """Voiced syllables (harmonics of a gliding 100-200 Hz voice under a vowel's formants, with a
    short consonant burst at some onsets), each at its picture time plus the offset, over room tone."""
    rng = np.random.default_rng(seed + 3000)
    n = round(duration_s * RATE)
    audio = 10 ** (-45 / 20) * rng.standard_normal(n)
    f0 = rng.uniform(100.0, 200.0)
    for start, length in parts:
        # The mouth opens in 20 ms from the syllable's first picture, so the first picture that
        # shows it open is the next one: the voice starts there (the event is what is seen).
        begin = start + 1.0 / fps + offset_ms(start) / 1000.0
        i, m = round(begin * RATE), round((length + 0.05) * RATE)
        if not 0 <= i < n:
            continue
        m = min(m, n - i)
        local = np.arange(m) / RATE
        env = envelope(local, [(0.0, length)])
        pitch = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * local)) * rng.uniform(0.9, 1.1)
        phase = 2 * np.pi * np.cumsum(pitch) / RATE
        formants = rng.uniform([300, 900], [800, 2200])
        voice = np.zeros(m)
        for h in range(1, int(3500 // f0)):
            hz = h * f0
            gain = sum(np.exp(-(((hz - f) / 150.0) ** 2)) for f in formants) + 0.05
            voice += gain / h * np.sin(h * phase)
        voice *= env * 10 ** (rng.uniform(-18.0, -10.0) / 20.0) / (np.abs(voice).max() + 1e-9)
        if rng.random() < 0.5:  # a plosive or fricative onset
            burst = round(0.025 * RATE)
            voice[:burst] += (
                0.05 * rng.standard_normal(min(burst, m)) * np.exp(-np.arange(min(burst, m)) / (0.008 * RATE))
            )
        audio[i : i + m] += voice
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def speech_video(
    duration_s: float, fps: int, width: int, height: int, parts: list[tuple[float, float]], seed: int
) -> Iterator[bytes]:
    """A face (an ellipse with eyes) on a slowly panning background, its mouth opening with the
    syllables (no offset: the picture is the reference); it blinks now and then, silently."""
    rng = np.random.default_rng(seed + 4000)
    texture = _texture(rng, height, width) // 2 + 30
    cx, cy = width // 2, height // 2
    face = (int(width * 0.18), int(height * 0.4))
    times = np.arange(round(duration_s * fps)) / fps
    opening = envelope(times, parts)
    blinks = {round(t * fps) for t in np.cumsum(rng.uniform(2.0, 5.0, int(duration_s)))}
    for k, t in enumerate(times):
        picture = np.ascontiguousarray(np.roll(texture, (0, int(0.7 * k) % width), axis=(0, 1)))
        sway = round(3 * np.sin(2 * np.pi * 0.2 * t))
        cv2.ellipse(picture, (cx + sway, cy), face, 0, 0, 360, 165, -1)
        eye = 2 if k in blinks or k - 1 in blinks else max(3, height // 40)
        for side in (-1, 1):
            cv2.ellipse(
                picture,
                (cx + sway + side * face[0] // 2, cy - face[1] // 3),
                (face[0] // 6, eye),
                0,
                0,
                360,
                40,
                -1,
            )
        mouth = (face[0] // 2, max(1, round(opening[k] * face[1] / 4)))
        cv2.ellipse(picture, (cx + sway, cy + face[1] // 2), mouth, 0, 0, 360, 35, -1)
        yield picture.tobytes()


# ----------------------------------------------------------------------------- music


def notes(duration_s: float, rng: np.random.Generator) -> list[tuple[float, int]]:
    """(time, pitch index) of notes on the NOTE_GRID_S grid, each slot taken with NOTE_CHANCE."""
    slots = np.arange(NOTE_GRID_S, duration_s - 1.0, NOTE_GRID_S)
    return [(float(t), int(rng.integers(len(SCALE_HZ)))) for t in slots if rng.random() < NOTE_CHANCE]


def music_audio(
    duration_s: float, played: list[tuple[float, int]], offset_ms: Callable[[float], float], seed: int
) -> F32:
    """Plucked notes (a decaying tone with two overtones) at their picture time plus the offset,
    over a quiet pad."""
    rng = np.random.default_rng(seed + 5000)
    n = round(duration_s * RATE)
    t = np.arange(n) / RATE
    audio = 10 ** (-38 / 20) * np.sin(2 * np.pi * 110.0 * t) * (1 + 0.3 * np.sin(2 * np.pi * 0.3 * t))
    audio += 10 ** (-50 / 20) * rng.standard_normal(n)
    for when, pitch in played:
        i = round((when + offset_ms(when) / 1000.0) * RATE)
        if not 0 <= i < n:
            continue
        k = np.arange(min(n - i, round(0.6 * RATE)))
        hz = SCALE_HZ[pitch]
        tone = sum(np.sin(2 * np.pi * hz * h * k / RATE) / h for h in (1, 2, 3))
        audio[i : i + k.size] += 10 ** (rng.uniform(-16.0, -10.0) / 20.0) * np.exp(-k / (0.15 * RATE)) * tone
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def music_video(
    duration_s: float, fps: int, width: int, height: int, played: list[tuple[float, int]]
) -> Iterator[bytes]:
    """One bar per pitch that jumps to full height on its note and decays (a visible rhythm)."""
    frames = round(duration_s * fps)
    level = np.zeros(len(SCALE_HZ))
    hits: dict[int, list[int]] = {}
    for when, pitch in played:
        hits.setdefault(round(when * fps), []).append(pitch)
    bar = width // (len(SCALE_HZ) + 1)
    gradient = np.linspace(30, 70, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    for k in range(frames):
        level *= 0.75
        for pitch in hits.get(k, []):
            level[pitch] = 1.0
        picture = (gradient + 10 * np.sin(2 * np.pi * (k / fps) * 0.1)).astype(np.uint8)
        for p, value in enumerate(level):
            top = int(height * (1.0 - 0.9 * value))
            x = bar // 2 + p * bar
            cv2.rectangle(picture, (x, top), (x + bar - 4, height - 1), 200, -1)
        yield picture.tobytes()


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
    video: Iterator[bytes]
    if kind == "speech":
        parts = syllables(duration_s, fps, rng)
        audio = speech_audio(duration_s, parts, offset_ms, seed, fps)
        video = speech_video(duration_s, fps, width, height, parts, seed)
    elif kind == "music":
        played = notes(duration_s, rng)
        audio = music_audio(duration_s, played, offset_ms, seed)
        video = music_video(duration_s, fps, width, height, played)
    else:
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
