"""The picture: scrolling fractal texture, drifting light, moving discs, film grain and a scene
cut every 5-8 s, as a pure function of (seed, frame index), then sync flashes, black and freeze."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from avmon.testsrc.script import VIDEO_TYPES
from avmon.testsrc.spec import SignalSpec

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]

_BLACK_Y, _NEUTRAL_C = 16, 128  # limited ("MPEG") range, which the stream signals
_WHITE_Y = 235


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


class Video:
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
