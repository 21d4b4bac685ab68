"""Hard negatives and documented limits: how their media are made.

Each :class:`Recipe` takes the generator's clean programme, decoded, and changes its pictures
(:data:`VideoFn`) and its sound track (:data:`AudioFn`); :func:`reencode` encodes the result
again as the generator does. :data:`HARD_NEGATIVES` are content that is not a defect but looks
like one to a naive detector, :data:`LIMITS` content a detector's docs say it reports, and
:data:`COMPARISON_RECIPES` the held pictures only the comparison with FFmpeg's filters uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from avmon import testsrc

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


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


COMPARISON_RECIPES: dict[str, Recipe] = {
    "slide_held": Recipe("slide held 4-8 s", "a held picture", _slide_held),
    "faint_noise": Recipe("still picture 4-8 s with faint noise", "live", _faint_noise),
}
