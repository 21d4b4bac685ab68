"""Real media made by the ffmpeg CLI (an encoder independent of PyAV's and of our generator).

Each maker writes one short clip with defects placed where the test chooses, from FFmpeg's lavfi
sources (``testsrc2``, ``sine``...) and its broadcast encoders (libx264, libx265, mpeg2video, ac3,
mp2).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from tests.media.cache import cached_path
from tests.media.own import generated

FFMPEG = shutil.which("ffmpeg")


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg CLI quietly; raises with its log when it fails."""
    if FFMPEG is None:
        raise RuntimeError("the ffmpeg CLI is not installed")
    done = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")


def surround_5_1_ac3(path: Path, seconds: float, silent: dict[str, tuple[float, float]]) -> None:
    """AC-3 5.1(side) at 384 kbit/s: a different tone in every channel (LFE at 50 Hz), each channel
    in ``silent`` (layout name -> (start, end) s) muted over that span."""
    names = ("FL", "FR", "FC", "LFE", "SL", "SR")
    tones = (440, 550, 330, 50, 660, 770)
    inputs: list[str] = []
    chains: list[str] = []
    for i, (name, hz) in enumerate(zip(names, tones, strict=True)):
        inputs += ["-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate=48000:duration={seconds}"]
        gain = "volume=0.5"
        if name in silent:
            start, end = silent[name]
            gain += f",volume=0:enable='between(t,{start},{end})'"
        chains.append(f"[{i}:a]{gain}[c{i}]")
    joined = "".join(f"[c{i}]" for i in range(6))
    mapping = "|".join(f"{i}.0-{name}" for i, name in enumerate(names))
    graph = ";".join(chains) + f";{joined}join=inputs=6:channel_layout=5.1(side):map={mapping}[a]"
    ffmpeg(*inputs, "-filter_complex", graph, "-map", "[a]", "-c:a", "ac3", "-b:a", "384k", str(path))


def h264_ts(path: Path, seconds: float, *, vf: str = "", size: str = "320x180", rate: int = 25) -> None:
    """libx264 in MPEG-TS from ``testsrc2`` (moving pattern), filtered by ``vf`` with every
    picture keeping its own timestamp (``-fps_mode passthrough``: a ``select`` that drops
    pictures leaves a gap), with a 1 kHz MP2 tone."""
    chain = f"testsrc2=size={size}:rate={rate}:duration={seconds}" + (f",{vf}" if vf else "")
    ffmpeg(
        "-f", "lavfi", "-i", chain,
        "-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate=48000:duration={seconds}",
        "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-c:a", "mp2", "-b:a", "192k", "-f", "mpegts", str(path),
    )  # fmt: skip


def under_overlay_ts(
    path: Path,
    seconds: float,
    freeze: tuple[float, float] | None,
    *,
    inset: str = "",
    size: str = "640x360",
    rate: int = 25,
    codec: tuple[str, ...] = ("-c:v", "libx264", "-preset", "veryfast"),
) -> None:
    """``testsrc2`` (moving), its picture held over ``freeze`` (start, end) s by ``freezeframes``,
    under a live overlay at (16, 16): a burned-in running clock (``drawtext`` of the timestamp
    to the millisecond, white on a black box: new digits every picture), or with ``inset``
    ("WxH") a moving ``testsrc2`` picture of that size instead. No audio."""
    graph = f"testsrc2=size={size}:rate={rate}:duration={seconds}"
    if freeze is not None:
        first, last = round(freeze[0] * rate), round(freeze[1] * rate) - 1
        graph += f",split[a][b];[a][b]freezeframes=first={first}:last={last}:replace={first}"
    if inset:
        graph += f"[p];testsrc2=size={inset}:rate={rate}:duration={seconds}[c];[p][c]overlay=x=16:y=16[v]"
    else:
        clock = "drawtext=text='%{pts\\:hms}':fontsize=24:fontcolor=white:box=1:boxcolor=black:x=16:y=16"
        graph += f",{clock}[v]"
    ffmpeg("-filter_complex", graph, "-map", "[v]", *codec, "-pix_fmt", "yuv420p", "-f", "mpegts", str(path))


def stereo_aac(path: Path, seconds: float, pan: str = "", collapse_at_s: float | None = None) -> None:
    """AAC stereo at 192 kbit/s: a partly shared chord (440 and 660 Hz left, 550 and 660 Hz right,
    the 660 Hz common and louder: correlation about 0.9, like centred dialogue), remixed by
    FFmpeg's ``pan`` filter when given (``stereo|c0=c0|c1=-1*c1`` inverts the right channel);
    from ``collapse_at_s`` on, the right channel carries the left (dual mono)."""
    left = "0.1*sin(2*PI*440*t)*(1+0.5*sin(2*PI*0.3*t))+0.3*sin(2*PI*660*t)"
    right = "0.1*sin(2*PI*550*t)*(1+0.5*sin(2*PI*0.2*t))+0.3*sin(2*PI*660*t)"
    if collapse_at_s is not None:
        right = f"if(lt(t,{collapse_at_s}),{right},{left})"
    chain = f"aevalsrc='{left}|{right}':s=48000:d={seconds}:c=stereo" + (f",pan={pan}" if pan else "")
    ffmpeg("-f", "lavfi", "-i", chain, "-c:a", "aac", "-b:a", "192k", str(path))


H264 = ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p")
HEVC_MAIN = (
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-pix_fmt",
    "yuv420p",
    "-x265-params",
    "log-level=error",
)
HEVC_MAIN10 = (
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-pix_fmt",
    "yuv420p10le",
    "-x265-params",
    "log-level=error",
)
MPEG2_INTERLACED = (
    "-c:v",
    "mpeg2video",
    "-b:v",
    "4M",
    "-flags",
    "+ilme+ildct",
    "-top",
    "1",
    "-pix_fmt",
    "yuv420p",
)
MP2 = ("-c:a", "mp2", "-b:a", "192k")
AC3 = ("-c:a", "ac3", "-b:a", "192k")


def programme_ts(
    path: Path,
    seconds: float,
    video: tuple[str, ...] = H264,
    *,
    black: tuple[float, float] | None = None,
    freeze: tuple[float, float] | None = None,
    size: str = "320x180",
    rate: float = 25,
    interlaced: bool = False,
    full_range: bool = False,
    audio: tuple[str, ...] = MP2,
    out: tuple[str, ...] = (),
) -> None:
    """A programme in MPEG-TS from ``testsrc2`` (moving) and a mono 1 kHz tone, encoded by
    ``video`` and ``audio`` (e.g. :data:`HEVC_MAIN10`, :data:`MPEG2_INTERLACED`), with a black
    picture (``drawbox`` filled) over ``black`` and the picture held by ``freezeframes`` over
    ``freeze`` (start, end) s. ``interlaced`` weaves fields of a source at twice ``rate``, top
    field first; ``full_range`` makes full-range (JPEG) luma, black at code 0; ``out`` adds
    output options (e.g. ``-output_ts_offset``)."""
    source_rate = 2 * rate if interlaced else rate
    graph = f"testsrc2=size={size}:rate={source_rate}:duration={seconds}"
    if freeze is not None:
        first, last = round(freeze[0] * source_rate), round(freeze[1] * source_rate) - 1
        graph += f",split[a][b];[a][b]freezeframes=first={first}:last={last}:replace={first}"
    if black is not None:
        graph += f",drawbox=color=black:t=fill:enable='between(t,{black[0]},{black[1] - 0.001})'"
    if interlaced:
        graph += ",tinterlace=mode=interleave_top,setfield=tff"
    if full_range:
        graph += ",scale=out_range=full"
    graph += "[v]"
    ffmpeg(
        "-filter_complex", graph,
        "-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate=48000:duration={seconds}",
        "-map", "[v]", "-map", "0:a", *video, *(("-color_range", "pc") if full_range else ()),
        *audio, *out, "-f", "mpegts", str(path),
    )  # fmt: skip


TRANSPORT_SECONDS = 12  # the length of the transport tests' sources


def transport_ts(path: Path, *args: str) -> None:
    """:data:`TRANSPORT_SECONDS` of ``testsrc2`` 320x180 at 25 fps (libx264 ultrafast, an IDR every
    2 s) and a 440 Hz tone, in MPEG-TS, with ``args`` choosing the rest (audio codec, rates)."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(TRANSPORT_SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", *args,
        "-f", "mpegts", str(path),
    )  # fmt: skip


def mpts_ts(path: Path) -> None:
    """Two programs in one TS (constant 3 Mb/s, 9 s): PMTs 0x1000 and 0x1001, PIDs 0x100 and 0x101
    (video, audio, PCR on video) and 0x102 and 0x103."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000",
        "-t", "9", "-map", "0", "-map", "1", "-map", "2", "-map", "3",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "mp2",
        "-program", "title=one:st=0:st=1", "-program", "title=two:st=2:st=3",
        "-muxrate", "3M", "-f", "mpegts", str(path),
    )  # fmt: skip


@functools.cache
def transport_sources() -> dict[str, bytes]:
    """The transport tests' sources, made once per session. ``cbr``: FFmpeg, libx264 + AAC at a
    constant -muxrate (null packets, PCR-only packets); ``vbr``: FFmpeg, libx264 + MP2 without;
    ``testsrc``: ``avmon testsrc`` (PyAV's muxer)."""
    cbr_args = ("-b:v", "800k", "-c:a", "aac", "-b:a", "96k", "-muxrate", "1500k")
    cbr = cached_path("cbr.ts", transport_ts, *cbr_args)
    vbr = cached_path("vbr.ts", transport_ts, "-c:a", "mp2")
    own, _ = generated("testsrc.ts", duration_s=TRANSPORT_SECONDS, width=320, height=180)
    return {"cbr": cbr.read_bytes(), "vbr": vbr.read_bytes(), "testsrc": own.read_bytes()}


def mpts_source() -> bytes:
    """:func:`mpts_ts`, made once per session."""
    return cached_path("mpts.ts", mpts_ts).read_bytes()
