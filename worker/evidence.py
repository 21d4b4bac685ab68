"""Evidence for a defect: a thumbnail of the picture and a short trace of the measurements.

One :class:`EvidenceRecorder` per stream lives in the stream's decode thread and is fed every
decoded frame and audio block. It keeps, for the last ``keep_s`` (12 s) of media time:

* colour thumbnails (``width`` = 160 px, height from the storage aspect ratio: 160×90 for 16:9)
  every ``thumb_interval_s`` (0.2 s) of media time, from the luma plane and, when the frame
  carries its decoded picture, the chroma planes (``worker/picture.py``; gray without one);
* per frame, the mean luma and the mean absolute difference to the previous frame, both measured
  on a strided grid of ~160 columns (an estimate: the grid holds ~14,000 of 921,600 pixels at
  720p, which is exact to a fraction of a code value on real pictures and costs µs, not ms);
* per 100 ms of audio, the RMS level in dBFS;
* any other series the worker wants to keep (``observe_value``, e.g. ``lufs_m``, ``offset_ms``).

:meth:`EvidenceRecorder.evidence_for` turns that into an :class:`Evidence` for one defect record:
the JPEG of the first thumbnail at or after ``start_s`` (inside the defect, so a black defect's
thumbnail is black), the JPEG of the last one before ``end_s`` when the defect is closed, and the
trace samples around it. It is cheap (one or two 160×90 JPEG encodes of 20-40 µs each; ~0.3 ms
in all) and may be called from the decode thread (where the defect record is made) or from any other thread.

The recorder never blocks on I/O: storing evidence (inline in the defect record, or in S3 with a
lifecycle rule) is the async side's job, with :meth:`Evidence.to_item`, whose JSON stays under
:data:`MAX_ITEM_BYTES`.

Luma is kept in the stream's own coding: limited range (black = 16) or full range (black = 0),
``luma_range`` says which; thumbnails are expanded to full range when they are encoded, so black
is 0 in every JPEG.

With :meth:`EvidenceRecorder.publish_live` the recorder also offers the newest thumbnail as the
stream's live picture every few seconds (:class:`worker.picture.LivePicture`).
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from shared.models import Defect
from worker.detectors.base import AudioBlock, VideoFrame
from worker.picture import LIVE_INTERVAL_S, Chroma, LivePicture, chroma_thumbnail, to_bgr

EVIDENCE_VERSION = 1
# DynamoDB items are capped at 400 KB and S3 GETs of small objects cost the same whatever their
# size up to a few KB: 32 KB keeps evidence inline-able next to the defect record and cheap to serve.
MAX_ITEM_BYTES = 32_000
JPEG_QUALITY = 75
SILENCE_FLOOR_DBFS = -120.0  # digital silence has no finite level; JSON has no -inf
LUMA_MEAN = "luma_mean"  # 8-bit luma code, in the stream's range (see ``luma_range``)
LUMA_DIFF = "luma_diff"  # mean |Y(n) - Y(n-1)| in 8-bit codes
AUDIO_RMS = "audio_rms_dbfs"  # dBFS per 100 ms, RMS over all channels re a full-scale square wave
UNITS: Mapping[str, str] = {
    LUMA_MEAN: "luma code 0-255 (range: luma_range)",
    LUMA_DIFF: "mean abs luma difference to the previous frame, codes",
    AUDIO_RMS: "dBFS RMS per 100 ms (full-scale sine = -3.0)",
}
_MAX_SERIES = 16  # observe_value keeps at most this many named series (bounded memory)


# ------------------------------------------------------------------ pure functions


def thumbnail(luma: npt.NDArray[np.uint8], width: int = 160) -> npt.NDArray[np.uint8]:
    """Downscale a (H, W) uint8 plane to (round(H·width/W), width), area-averaged.

    Storage pixels are taken as square (the sample aspect ratio is not known here), so 1280×720
    and 1920×1080 both give 160×90. A plane narrower than ``width`` is returned as a copy.
    Cost at 720p: ~70 µs (a full ``INTER_AREA`` from 1280 to 160 is ~360 µs: halving first with
    the 2×2 fast path gives the same picture to within one code value at a fifth of the cost).
    """
    h, w = luma.shape
    if w <= width:
        return np.array(luma, dtype=np.uint8, copy=True)
    height = max(1, round(h * width / w))
    g: npt.NDArray[Any] = luma
    while g.shape[1] // 2 >= width and g.shape[0] // 2 >= height:
        g = cv2.resize(g, (g.shape[1] // 2, g.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if g.shape[1] != width or g.shape[0] != height:
        g = cv2.resize(g, (width, height), interpolation=cv2.INTER_AREA)
    out: npt.NDArray[np.uint8] = np.ascontiguousarray(g, dtype=np.uint8)
    return out


def _expand_lut() -> npt.NDArray[np.uint8]:
    codes = (np.arange(256, dtype=np.float64) - 16.0) * (255.0 / 219.0)
    return np.clip(np.rint(codes), 0, 255).astype(np.uint8)


_LIMITED_TO_FULL = _expand_lut()


def to_full_range(gray: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Limited-range luma (16 = black, 235 = white) to full range (0, 255), same shape."""
    return np.asarray(cv2.LUT(gray, _LIMITED_TO_FULL), dtype=np.uint8)


def encode_jpeg(gray: npt.NDArray[np.uint8], quality: int = JPEG_QUALITY) -> bytes:
    """Baseline JPEG of a (H, W) gray or (H, W, 3) BGR uint8 array (full range expected).

    A 160×90 thumbnail is 1-4 KB at quality 75 (colour: 2-6 KB; up to ~9 KB for pure noise).
    """
    ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # only for an empty or malformed array
        raise ValueError(f"cannot encode a {gray.shape} {gray.dtype} array as JPEG")
    return bytes(buf)


def rms_dbfs(power: float) -> float:
    """Mean square (full scale = 1.0) to dBFS, floored at :data:`SILENCE_FLOOR_DBFS`."""
    if power <= 1e-12:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 10.0 * math.log10(power))


# ------------------------------------------------------------------ the evidence


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A JPEG of the picture at media time ``t``; ``role`` is ``start`` or ``end``."""

    role: str
    t: float
    width: int
    height: int
    jpeg: bytes

    def to_item(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "t": round(self.t, 3),
            "width": self.width,
            "height": self.height,
            "jpeg_b64": base64.b64encode(self.jpeg).decode("ascii"),
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Thumbnail:
        return cls(
            role=str(item["role"]),
            t=float(item["t"]),
            width=int(item["width"]),
            height=int(item["height"]),
            jpeg=base64.b64decode(item["jpeg_b64"]),
        )


Series = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Thumbnails and measurement traces for one defect record.

    ``trace`` maps a series name (:data:`LUMA_MEAN`, :data:`LUMA_DIFF`, :data:`AUDIO_RMS`, or a
    name given to ``observe_value``) to ``(t, value)`` pairs in media seconds, covering
    ``window`` (clipped to what the recorder still held).
    """

    stream_id: str
    defect_id: str
    type: str
    start_s: float
    end_s: float | None
    window: tuple[float, float]
    thumbnails: tuple[Thumbnail, ...] = ()
    trace: Mapping[str, Series] = field(default_factory=dict)
    luma_range: str = "limited"  # of the luma trace values: "limited" (black 16) or "full" (black 0)

    def thumbnail_for(self, role: str) -> Thumbnail | None:
        return next((th for th in self.thumbnails if th.role == role), None)

    def to_item(self) -> dict[str, Any]:
        """JSON-safe: JPEGs as base64, traces as ``[[t, value], ...]`` (t to the ms)."""
        return {
            "v": EVIDENCE_VERSION,
            "stream_id": self.stream_id,
            "defect_id": self.defect_id,
            "type": self.type,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "window_s": [round(self.window[0], 3), round(self.window[1], 3)],
            "luma_range": self.luma_range,
            "thumbnails": [th.to_item() for th in self.thumbnails],
            "trace": {name: [[t, v] for t, v in pts] for name, pts in self.trace.items()},
            "units": {name: UNITS[name] for name in self.trace if name in UNITS},
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Evidence:
        end = item.get("end_s")
        window = item["window_s"]
        return cls(
            stream_id=str(item["stream_id"]),
            defect_id=str(item["defect_id"]),
            type=str(item["type"]),
            start_s=float(item["start_s"]),
            end_s=None if end is None else float(end),
            window=(float(window[0]), float(window[1])),
            thumbnails=tuple(Thumbnail.from_item(th) for th in item.get("thumbnails", [])),
            trace={
                str(name): tuple((float(t), float(v)) for t, v in pts)
                for name, pts in dict(item.get("trace", {})).items()
            },
            luma_range=str(item.get("luma_range", "limited")),
        )

    def item_bytes(self) -> int:
        """Size of :meth:`to_item` as compact JSON, the form it is stored in."""
        return item_size(self.to_item())


def item_size(item: Mapping[str, Any]) -> int:
    return len(json.dumps(item, separators=(",", ":")).encode())


# ------------------------------------------------------------------ the recorder


class _Ring:
    """(t, value) samples of the last ``keep_s`` media seconds, at most ``maxlen`` of them."""

    __slots__ = ("keep_s", "samples")

    def __init__(self, keep_s: float, maxlen: int) -> None:
        self.keep_s = keep_s
        self.samples: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def add(self, t: float, value: float) -> None:
        s = self.samples
        s.append((t, value))
        horizon = t - self.keep_s
        while s[0][0] < horizon:
            s.popleft()

    def window(self, t0: float, t1: float) -> list[tuple[float, float]]:
        return [p for p in self.samples if t0 <= p[0] <= t1]


@dataclass(frozen=True, slots=True)
class _Thumb:
    t: float
    gray: npt.NDArray[np.uint8]
    full_range: bool
    chroma: Chroma | None = None

    def picture(self) -> npt.NDArray[np.uint8]:
        """Full range, gray (H, W) or BGR (H, W, 3): what is encoded."""
        if self.chroma is not None:
            return to_bgr(self.gray, self.chroma, self.full_range)
        return self.gray if self.full_range else to_full_range(self.gray)


class EvidenceRecorder:
    """Per-stream rings of thumbnails and measurement samples (see the module docstring).

    ``observe_video``/``observe_audio``/``observe_value`` are called from the decode thread;
    ``evidence_for`` from any thread (a lock guards the rings; uncontended, it costs ~0.1 µs).
    Memory: ~70 thumbnails of 14 KB luma + 7 KB chroma (1.5 MB) plus ~40 KB of samples at 60 fps.
    """

    def __init__(
        self,
        stream_id: str = "",
        *,
        keep_s: float = 12.0,
        thumb_width: int = 160,
        thumb_interval_s: float = 0.2,
        pre_s: float = 3.0,
        post_s: float = 3.0,
        max_points: int = 300,
        max_item_bytes: int = MAX_ITEM_BYTES,
    ) -> None:
        self.stream_id = stream_id
        self.keep_s, self.thumb_width, self.thumb_interval_s = keep_s, thumb_width, thumb_interval_s
        self.pre_s, self.post_s = pre_s, post_s
        self.max_points, self.max_item_bytes = max_points, max_item_bytes
        self._lock = threading.Lock()
        # maxlen bounds memory even if timestamps misbehave (a time-based horizon alone would not).
        self._thumbs: deque[_Thumb] = deque(maxlen=int(keep_s / max(thumb_interval_s, 0.01)) + 8)
        self._luma = _Ring(keep_s, int(keep_s * 120) + 8)
        self._diff = _Ring(keep_s, int(keep_s * 120) + 8)
        self._audio = _Ring(keep_s, int(keep_s * 10) + 8)
        self._values: dict[str, _Ring] = {}
        self._prev_grid: npt.NDArray[np.uint8] | None = None
        self._last_thumb_t: float | None = None
        self._full_range = False
        # The current 100 ms audio window: its index (t // 0.1), sum of squares, sample count.
        self._aw_index: int | None = None
        self._aw_sum = 0.0
        self._aw_n = 0
        self.live: LivePicture | None = None

    def publish_live(
        self, on_item: Callable[[dict[str, Any]], object], interval_s: float = LIVE_INTERVAL_S
    ) -> LivePicture:
        """Offer the live picture to ``on_item`` (from the decode thread, every ``interval_s``)."""
        self.live = LivePicture(on_item, interval_s=interval_s)
        return self.live

    # -------------------------------------------------------------- feeding (decode thread)

    def observe_video(self, frame: VideoFrame) -> None:
        """Sample one frame: ~7 µs at 720p, plus ~70 µs for a thumbnail every 0.2 s of media
        (11-16 µs a frame on average at 25-60 fps)."""
        luma = frame.luma
        t = frame.t
        step = max(1, luma.shape[1] // self.thumb_width)
        # A strided grid (~160 columns) for the trace: a ~14 KB copy instead of touching 1 MB.
        grid = np.ascontiguousarray(luma[::step, ::step])
        mean = cv2.mean(grid)[0]
        prev = self._prev_grid
        diff = (
            cv2.norm(grid, prev, cv2.NORM_L1) / grid.size
            if prev is not None and prev.shape == grid.shape
            else None
        )
        self._prev_grid = grid
        take_thumb = (
            self._last_thumb_t is None
            or t - self._last_thumb_t >= self.thumb_interval_s
            or t < self._last_thumb_t  # the timeline restarted: do not wait for it to catch up
        )
        thumb = None
        if take_thumb:
            picture = frame.picture
            chroma = None if picture is None else chroma_thumbnail(picture, self.thumb_width, thumbnail)
            thumb = _Thumb(t, thumbnail(luma, self.thumb_width), frame.full_range, chroma)
        with self._lock:
            self._full_range = frame.full_range
            self._luma.add(t, mean)
            if diff is not None:
                self._diff.add(t, diff)
            if thumb is not None:
                self._last_thumb_t = t
                self._thumbs.append(thumb)
                horizon = t - self.keep_s
                while self._thumbs[0].t < horizon:
                    self._thumbs.popleft()
        live = self.live
        if thumb is not None and live is not None and live.due():
            shown = thumb.picture()
            live.offer(t, shown, encode_jpeg(shown))

    feed_video = observe_video  # as a consumer of the stream's media (worker/dispatch.py)

    def observe_audio(self, block: AudioBlock) -> None:
        """Accumulate mean-square power into 100 ms windows aligned on media time (~5 µs a block)."""
        samples = block.samples
        if samples.ndim != 2 or samples.shape[1] == 0:
            return
        channels, n = samples.shape
        if self.live is not None:
            self.live.observe_audio(samples)
        # Per-sample power averaged over channels: the level of the mix, whatever the layout.
        power = np.einsum("ij,ij->j", samples, samples, dtype=np.float64) / channels
        rate = float(block.rate)
        i = 0
        while i < n:
            t = block.t + i / rate
            index = math.floor(t * 10.0 + 1e-9)
            # Samples up to the next 100 ms boundary belong to this window.
            j = min(n, max(i + 1, math.ceil(((index + 1) / 10.0 - block.t) * rate - 1e-6)))
            if index != self._aw_index:
                self._finish_audio_window()
                self._aw_index = index
            self._aw_sum += float(power[i:j].sum())
            self._aw_n += j - i
            if j < n:  # the boundary falls inside this block: the window is complete
                self._finish_audio_window()
            i = j

    def _finish_audio_window(self) -> None:
        if self._aw_index is not None and self._aw_n > 0:
            level = rms_dbfs(self._aw_sum / self._aw_n)
            with self._lock:
                self._audio.add(self._aw_index / 10.0, level)
        self._aw_index, self._aw_sum, self._aw_n = None, 0.0, 0

    feed_audio = observe_audio

    def observe_value(self, name: str, t: float, value: float) -> None:
        """Keep another measurement (e.g. ``lufs_m`` each 100 ms, ``offset_ms`` per estimate).

        Non-finite values are skipped (JSON cannot carry them).
        """
        if not math.isfinite(value):
            return
        with self._lock:
            ring = self._values.get(name)
            if ring is None:
                if len(self._values) >= _MAX_SERIES:
                    return
                ring = self._values[name] = _Ring(self.keep_s, int(self.keep_s * 100) + 8)
            ring.add(t, float(value))

    # -------------------------------------------------------------- reading (any thread)

    def evidence_for(self, defect: Defect) -> Evidence:
        """The evidence of ``defect`` from what the rings hold now.

        Window: ``start_s - pre_s`` to ``start_s + post_s`` for an open defect, to
        ``end_s + post_s`` for a closed one; in practice it ends at the newest sample (the record
        is made as the detector decides, so the seconds after it have not been decoded yet) and
        starts no earlier than ``keep_s`` ago. Each series is thinned to ``max_points`` by taking
        every k-th sample, and the whole is kept under ``max_item_bytes`` (see :meth:`_fit`).
        """
        start = float(defect.start_s)
        end = None if defect.end_s is None else float(defect.end_s)
        t0 = start - self.pre_s
        t1 = (start if end is None else max(start, end)) + self.post_s
        with self._lock:
            start_thumb = _pick_start(self._thumbs, start, end)
            end_thumb = _pick_end(self._thumbs, start, end) if end is not None else None
            raw: dict[str, list[tuple[float, float]]] = {
                LUMA_MEAN: self._luma.window(t0, t1),
                LUMA_DIFF: self._diff.window(t0, t1),
                AUDIO_RMS: self._audio.window(t0, t1),
            }
            for name, ring in self._values.items():
                raw[name] = ring.window(t0, t1)
            full_range = self._full_range
        raw = {name: pts for name, pts in raw.items() if pts}
        thumbs = [th for th in (start_thumb, end_thumb) if th is not None]
        if end_thumb is not None and start_thumb is not None and end_thumb.t == start_thumb.t:
            thumbs = [start_thumb]
        return self._fit(defect, (t0, t1), raw, thumbs, full_range)

    def _fit(
        self,
        defect: Defect,
        window: tuple[float, float],
        raw: dict[str, list[tuple[float, float]]],
        thumbs: list[_Thumb],
        full_range: bool,
    ) -> Evidence:
        """Build the evidence within the size budget: thin the traces, then lower the JPEG quality,
        then drop the end thumbnail (in that order: the start picture is the most telling)."""
        roles = ["start", "end"] if len(thumbs) == 2 else ["start"]
        points, quality = self.max_points, JPEG_QUALITY
        while True:
            evidence = Evidence(
                stream_id=defect.stream_id,
                defect_id=defect.defect_id,
                type=str(defect.type),
                start_s=float(defect.start_s),
                end_s=None if defect.end_s is None else float(defect.end_s),
                window=window,
                thumbnails=tuple(_encode(th, role, quality) for th, role in zip(thumbs, roles, strict=False)),
                trace={name: _thin(name, pts, points) for name, pts in raw.items()},
                luma_range="full" if full_range else "limited",
            )
            if _size_bound(evidence) <= self.max_item_bytes or evidence.item_bytes() <= self.max_item_bytes:
                return evidence
            if points > 60:
                points //= 2
            elif quality > 30:
                quality -= 20
            elif len(thumbs) > 1:
                thumbs = thumbs[:1]
            elif points > 1:
                points //= 2
            else:  # only with an absurd budget; the evidence is still valid, just large
                return evidence


def _size_bound(evidence: Evidence) -> int:
    """An upper bound of ``item_bytes``, computed in µs: serialising thousands of floats costs
    ~1 ms, and this runs in the decode thread. Exact for everything but the trace, whose points are
    bounded by the widest time and value in each series."""
    item = evidence.to_item()
    traces = item.pop("trace")
    item["trace"] = {}
    size = item_size(item)
    for name, pts in traces.items():
        if not pts:
            size += len(name) + 6
            continue
        arr = np.abs(np.asarray(pts, dtype=np.float64))
        t_max, v_max = float(arr[:, 0].max()), float(arr[:, 1].max())
        # "[-t,-v]," with t and v at most 3 decimals: sign + integer digits + point + decimals.
        per_point = len(f"{t_max:.3f}") + len(f"{v_max:.3f}") + 6
        size += len(name) + 6 + per_point * len(pts)
    return size


def _pick_start(thumbs: deque[_Thumb], start: float, end: float | None) -> _Thumb | None:
    """The first thumbnail at or after ``start`` (and before ``end``): a picture of the defect.

    Failing that (the defect began before the ring, or is shorter than the thumbnail interval),
    the one nearest ``start``.
    """
    for th in thumbs:
        if th.t >= start and (end is None or th.t < end or end <= start):
            return th
    return min(thumbs, key=lambda th: abs(th.t - start), default=None)


def _pick_end(thumbs: deque[_Thumb], start: float, end: float) -> _Thumb | None:
    """The last thumbnail before ``end`` and after ``start``: the defect as it ended."""
    for th in reversed(thumbs):
        if start <= th.t < end:
            return th
    return None


def _encode(th: _Thumb, role: str, quality: int) -> Thumbnail:
    shown = th.picture()
    return Thumbnail(
        role=role, t=th.t, width=shown.shape[1], height=shown.shape[0], jpeg=encode_jpeg(shown, quality)
    )


def _thin(name: str, pts: list[tuple[float, float]], max_points: int) -> Series:
    """Every k-th sample, at most ``max_points``, rounded: t to the ms, values to what they mean."""
    k = max(1, math.ceil(len(pts) / max(1, max_points)))
    digits = 1 if name in (LUMA_MEAN, AUDIO_RMS) else 2 if name == LUMA_DIFF else 3
    arr = np.asarray(pts[::k], dtype=np.float64).reshape(-1, 2)
    times = np.round(arr[:, 0], 3).tolist()
    values = np.round(arr[:, 1], digits).tolist()
    return tuple(zip(times, values, strict=True))
