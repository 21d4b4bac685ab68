"""Closed captions added to real H.264: ATSC A/53 cc_data in SEI, the way a caption encoder does.

Each picture's access unit gets an SEI NAL (user_data_registered_itu_t_t35, ITU-T T.35 country
0xB5, provider 0x0031, "GA94", user_data_type 3: cc_data) before its first slice; FFmpeg's H.264
decoder hands it back as the picture's ``A53_CC`` side data. Used by the tests and the caption
bench; ``python -m avmon.ccsei OUT.ts --seconds 8 --text 0-3`` writes a clip with caption text
for its first 3 s and the null pair (a live caption channel without text) after.
"""

from __future__ import annotations

import argparse
import fractions
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

# cc_data triplets (CEA-708-E §4.4): marker bits, cc_valid, cc_type; then two bytes.
TEXT = bytes([0xFC, 0xC8, 0x49])  # cc_valid, CEA-608 field 1: "HI" (0xC8: 'H' with odd parity)
PADDING = bytes([0xFC, 0x80, 0x80])  # the null pair: a live caption channel without text
DTVCC = bytes([0xFE, 0x41, 0x42])  # cc_valid, DTVCC packet data


def sei_nal(triplets: bytes) -> bytes:
    """An H.264 SEI NAL (Annex B, start code included) carrying A/53 ``cc_data`` triplets, with
    emulation prevention applied."""
    if not 0 < len(triplets) <= 31 * 3 or len(triplets) % 3:
        raise ValueError("cc_data is 1 to 31 whole triplets")
    payload = b"\xb5\x00\x31GA94\x03" + bytes([0x40 | len(triplets) // 3, 0xFF]) + triplets + b"\xff"
    body = bytes([0x04, len(payload)]) + payload + b"\x80"
    out = bytearray()
    zeros = 0
    for b in body:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return b"\x00\x00\x00\x01\x06" + bytes(out)


def with_sei(au: bytes, sei: bytes) -> bytes:
    """The Annex B access unit ``au`` with ``sei`` inserted before its first slice NAL."""
    for m in re.finditer(b"\x00\x00\x01", au):
        if m.end() < len(au) and au[m.end()] & 0x1F in (1, 5):  # a non-IDR or IDR slice
            k = m.start() - (1 if m.start() and au[m.start() - 1] == 0 else 0)
            return au[:k] + sei + au[k:]
    raise ValueError("no slice in the access unit")


def write_clip(
    path: Path,
    *,
    seconds: float,
    cc_at: Callable[[float], bytes | None],
    fps: int = 25,
    size: tuple[int, int] = (64, 64),
    gop: int = 25,
) -> int:
    """An MPEG-TS of real libx264 H.264 (moving content, no B-frames) whose picture at time t
    (seconds from the start) carries ``cc_at(t)`` (cc_data triplets; None: no SEI). How many
    pictures it holds."""
    width, height = size
    n = round(seconds * fps)
    with av.open(str(path), "w", format="mpegts") as out:
        vs: Any = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = fractions.Fraction(1, fps)
        vs.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(gop)}
        ramp = np.arange(width, dtype=np.int64)[None, :, None]
        for i in range(n + 1):
            frame = None
            if i < n:
                img = np.broadcast_to((ramp + i * 7) % 256, (height, width, 3)).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
                frame.pts = i
            for packet in vs.encode(frame):
                t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
                cc = cc_at(t)
                if cc:
                    packet = _with_payload(packet, with_sei(bytes(packet), sei_nal(cc)))
                out.mux(packet)
    return n


def add_captions(src: Path, dst: Path, cc_at: Callable[[float], bytes | None]) -> int:
    """``src``'s H.264 video (Annex B: MPEG-TS, raw .h264) remuxed to MPEG-TS ``dst`` with
    ``cc_at(t)`` added to the picture at t seconds from its first; its audio is left out. How
    many pictures carry captions."""
    added = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        first: float | None = None
        for packet in inp.demux(vin):
            if packet.dts is None or packet.pts is None or packet.time_base is None:
                continue
            t = float(packet.pts * packet.time_base)
            first = t if first is None else first
            cc = cc_at(t - first)
            new = _with_payload(packet, with_sei(bytes(packet), sei_nal(cc)) if cc else bytes(packet))
            new.stream = vout
            out.mux(new)
            added += bool(cc)
    return added


def _with_payload(packet: Any, data: bytes) -> Any:
    new = av.Packet(data)
    new.pts, new.dts, new.duration = packet.pts, packet.dts, packet.duration
    new.time_base = packet.time_base
    new.is_keyframe = packet.is_keyframe
    new.stream = packet.stream
    return new


def spans(text: str) -> Callable[[float], bytes | None]:
    """``"0-3,5-8"``: caption text within those seconds, the null pair elsewhere."""
    parts = [tuple(float(x) for x in p.split("-", 1)) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 or p[0] > p[1] for p in parts):
        raise ValueError(f"not a list of START-END seconds: {text!r}")
    return lambda t: TEXT if any(a <= t < b for a, b in parts) else PADDING


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avmon.ccsei", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--text", default="", help="START-END seconds with caption text, comma separated")
    p.add_argument("--size", default="320x180", help="WxH")
    args = p.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.split("x"))
        cc = spans(args.text) if args.text else (lambda t: None)
    except ValueError as exc:
        print(f"ccsei: {exc}", file=sys.stderr)
        return 2
    n = write_clip(args.out, seconds=args.seconds, cc_at=cc, size=(w, h))
    print(f"{args.out}: {n} pictures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
