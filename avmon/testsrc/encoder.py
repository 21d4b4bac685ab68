"""Encoding: H.264 and AAC packets of a ``SignalSpec`` in decode-time order with the packet-level
transport defects applied, real-time pacing, the ground truth of what was encoded, and
``generate()``, which writes a file and its truth."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Unpack

import av
import numpy as np

from avmon.testsrc.mpegts import TS_OPTIONS, TsDrop
from avmon.testsrc.picture import Video
from avmon.testsrc.script import INSTANT_TYPES, TRUTH_TYPES, GroundTruth, truth_path
from avmon.testsrc.sound import Audio
from avmon.testsrc.spec import BEEP_S, Media, SignalSpec, first_index

_FORMATS = {".ts": "mpegts", ".mp4": "mp4"}
AAC_PRIMING = 1024  # samples FFmpeg's native AAC encoder emits before the first input sample


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
    video, audio = Video(spec), Audio(spec)
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

    n_audio = AAC_PRIMING  # see the package docstring: priming then lines up with video frame 0
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
    """The ground truth of ``spec`` as sent to ``source`` (see the package docstring's timeline)."""
    video = Video(spec)
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
            or any(s.start_s - BEEP_S < beep < s.end_s for s in silences)
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
        audio_start_s=AAC_PRIMING / spec.sample_rate,
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
    path: str | Path, *, realtime: bool = False, speed: float = 1.0, **media: Unpack[Media]
) -> GroundTruth:
    """Encode ``duration_s`` seconds of H.264 (``width`` x ``height`` px, ``fps`` frames/s,
    a keyframe every ``gop_s`` s) and AAC (``sample_rate`` Hz, 1-2 channels) to ``path``
    (.ts → MPEG-TS, .mp4 → MP4), and write ``<path>.truth.json``. Returns the truth.
    ``sync_marks`` adds a flash and a beep once a second; ``realtime`` writes the packets at their
    media time (``speed`` times faster), for monitors that follow a growing file. ``media`` are
    ``SignalSpec``'s fields, with its defaults: 30 s of 640x360 at 25 fps, 48 kHz stereo, a keyframe
    every 2 s, seed 0, no defects and no sync marks."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: output must end in .ts or .mp4")
    spec = SignalSpec(**media)
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
