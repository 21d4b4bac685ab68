"""Small colour pictures of a stream: evidence thumbnails and the live picture of the wall.

Colour comes from the decoded picture's own chroma planes, downscaled like the luma (area
averages, halving first): no full-resolution RGB conversion, which would cost about as much as
decoding. The YCbCr → RGB matrix is the picture's (BT.709 for HD, BT.601 for SD when the stream
does not say), in its range (limited: Y 16-235, C 16-240; full: 0-255), done on the 160×90
thumbnail only when it is encoded.

The live picture (:class:`LivePicture`) is the newest thumbnail as a colour JPEG with the audio
level of each channel, offered every ``interval_s`` (20 s) of wall-clock time while the stream is
monitored; the worker's sink writes it (at most one write per ``interval_s``: a bound on AWS
requests per stream-hour, see ``worker/sink.py``).
"""

from __future__ import annotations

import base64
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

# Planar 8-bit formats whose chroma planes are read as they are; anything else (10-bit, NV12,
# RGB) is converted once, at thumbnail size, by swscale.
_PLANAR_8BIT = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})
_BT709, _BT601 = (0.2126, 0.0722), (0.299, 0.114)  # (Kr, Kb)
# Wall-clock seconds between live pictures: ≤ 180 writes (PutItem) per stream-hour at the
# default, which keeps a healthy stream within DESIGN.md's 1,000 requests per stream-hour
# (745 without them at 33 streams per worker, BENCHMARKS.md). AVMON_LIVE_PICTURE_S changes it
# (at least 1 s; 5 s would be 720 more requests per stream-hour).
LIVE_INTERVAL_S = max(1.0, float(os.environ.get("AVMON_LIVE_PICTURE_S", "20")))
LEVEL_FLOOR_DBFS = -90.0


@dataclass(frozen=True, slots=True)
class Chroma:
    """Downscaled Cb and Cr planes of a thumbnail, and how to turn them into RGB."""

    cb: npt.NDArray[np.uint8]
    cr: npt.NDArray[np.uint8]
    bt709: bool


def _plane(picture: Any, index: int) -> npt.NDArray[np.uint8]:
    plane = picture.planes[index]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def _is_bt709(picture: Any) -> bool:
    space = int(getattr(picture, "colorspace", 0) or 0)
    if space == 1:
        return True
    if space in (5, 6):  # BT.470BG, SMPTE 170M: both BT.601
        return False
    return int(picture.height) >= 720  # unspecified: what encoders assume


def chroma_thumbnail(
    picture: Any, width: int, shrink: Callable[[npt.NDArray[np.uint8], int], npt.NDArray[np.uint8]]
) -> Chroma | None:
    """The chroma of a decoded ``av.VideoFrame`` at thumbnail scale (its width ``width`` / the
    subsampling), with ``shrink`` (the luma's own downscaler). None when it has no chroma
    (gray formats). Cost at 720p: ~65 µs (4:2:0); other formats ~250 µs (one swscale call)."""
    fmt = picture.format.name
    if fmt not in _PLANAR_8BIT:
        if fmt.startswith("gray") or len(picture.planes) < 2:
            return None
        height = max(1, round(picture.height * width / picture.width))
        picture = picture.reformat(width=width, height=height, format="yuv444p")
        return Chroma(_plane(picture, 1).copy(), _plane(picture, 2).copy(), _is_bt709(picture))
    cb, cr = _plane(picture, 1), _plane(picture, 2)
    chroma_width = max(1, round(width * cb.shape[1] / picture.width))
    return Chroma(shrink(cb, chroma_width), shrink(cr, chroma_width), _is_bt709(picture))


def to_bgr(luma: npt.NDArray[np.uint8], chroma: Chroma, full_range: bool) -> npt.NDArray[np.uint8]:
    """A (H, W, 3) BGR picture (OpenCV's order) from a luma thumbnail and its chroma."""
    h, w = luma.shape
    y = luma.astype(np.float32)
    cb = cv2.resize(chroma.cb, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) - 128.0
    cr = cv2.resize(chroma.cr, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) - 128.0
    if not full_range:
        y = (y - 16.0) * (255.0 / 219.0)
        cb *= 255.0 / 224.0
        cr *= 255.0 / 224.0
    kr, kb = _BT709 if chroma.bt709 else _BT601
    kg = 1.0 - kr - kb
    r = y + 2.0 * (1.0 - kr) * cr
    b = y + 2.0 * (1.0 - kb) * cb
    g = (y - kr * r - kb * b) / kg
    out = np.stack((b, g, r), axis=-1)
    bgr: npt.NDArray[np.uint8] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return bgr


def channel_levels_dbfs(samples: npt.NDArray[np.float32]) -> list[float]:
    """RMS level of each channel of a (channels, n) block, dBFS (floored at -90), 0.1 dB."""
    if samples.ndim != 2 or samples.shape[1] == 0:
        return []
    power = np.einsum("ij,ij->i", samples, samples, dtype=np.float64) / samples.shape[1]
    floor = LEVEL_FLOOR_DBFS
    return [round(max(floor, 10.0 * math.log10(p)) if p > 1e-12 else floor, 1) for p in power]


class LivePicture:
    """Offers the stream's current picture and audio levels every ``interval_s`` (wall clock).

    Fed from the decode thread by the evidence recorder (one thumbnail every 0.2 s of media, the
    audio blocks); ``on_item`` gets a JSON-safe dict (see :meth:`item`) and must return at once
    (the worker hands it to its event loop). Cost per picture: ~0.2 ms (colour conversion, JPEG,
    levels of the newest 400 ms audio block), 0.013% of decoding a 720p25 stream at one picture
    every 20 s.
    """

    def __init__(
        self,
        on_item: Callable[[dict[str, Any]], object],
        *,
        interval_s: float = LIVE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_item, self.interval_s, self.clock = on_item, interval_s, clock
        self._next = 0.0  # the first picture goes out at once
        self._last_audio: npt.NDArray[np.float32] | None = None
        self.offered = 0

    def observe_audio(self, samples: npt.NDArray[np.float32]) -> None:
        """The newest audio block (kept, not measured: its levels are computed only when a
        picture goes out, ~50 µs, instead of for every block)."""
        self._last_audio = samples

    def due(self) -> bool:
        return self.clock() >= self._next

    def offer(self, t: float, bgr_or_gray: npt.NDArray[np.uint8], jpeg: bytes) -> None:
        """The picture at media time ``t`` (already encoded as ``jpeg``)."""
        self._next = self.clock() + self.interval_s
        self.offered += 1
        self.on_item(self.item(t, bgr_or_gray.shape[1], bgr_or_gray.shape[0], jpeg))

    def item(self, t: float, width: int, height: int, jpeg: bytes) -> dict[str, Any]:
        return {
            "t": round(t, 3),
            "taken_at": round(time.time(), 3),
            "width": width,
            "height": height,
            "jpeg_b64": base64.b64encode(jpeg).decode("ascii"),
            "levels_dbfs": [] if self._last_audio is None else channel_levels_dbfs(self._last_audio),
        }
