"""The ffmpeg CLI corpus: broadcast formats encoded by Debian's ffmpeg (an encoder independent
of ours) from its lavfi sources, with defects placed by FFmpeg's filters at known times."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avmon import testsrc


@dataclass(frozen=True)
class CliFormat:
    """A broadcast format the ffmpeg CLI encodes (Debian's ffmpeg: an encoder independent of ours)."""

    what: str
    video: tuple[str, ...]  # encoder options
    audio: tuple[str, ...]
    size: str = "320x180"
    rate: float = 25.0  # pictures per second (frames; an interlaced format weaves 2 fields each)
    interlaced: bool = False
    channels: int = 2  # 2: stereo, 6: 5.1(side)
    full_range: bool = False

    @property
    def audio_frame(self) -> int:
        """Samples per frame the sound encoder takes (filter_complex does not adapt to it)."""
        codec = self.audio[self.audio.index("-c:a") + 1]
        return {"ac3": 1536, "mp2": 1152}.get(codec, 1024)


_X265 = ("-x265-params", "log-level=error")
CLI_FORMATS: dict[str, CliFormat] = {
    "h264-aac": CliFormat(
        "H.264 High (libx264) + AAC stereo, 25p",
        ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        ("-c:a", "aac", "-b:a", "160k"),
    ),
    "h264-5994-ac3": CliFormat(
        "H.264 (libx264) 59.94p + AC-3 stereo",
        ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        ("-c:a", "ac3", "-b:a", "192k"),
        rate=60000 / 1001,
    ),
    "hevc-ac3-51": CliFormat(
        "HEVC Main (libx265) + AC-3 5.1(side)",
        ("-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *_X265),
        ("-c:a", "ac3", "-b:a", "384k"),
        channels=6,
    ),
    "hevc10-aac-50p": CliFormat(
        "HEVC Main10 (libx265) 50p, full range + AAC stereo",
        ("-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", *_X265),
        ("-c:a", "aac", "-b:a", "160k"),
        rate=50.0,
        full_range=True,
    ),
    "mpeg2i-mp2": CliFormat(
        "MPEG-2 video 576i25 (top field first) + MP2 stereo",
        ("-c:v", "mpeg2video", "-b:v", "5M", "-flags", "+ilme+ildct", "-top", "1", "-pix_fmt", "yuv420p"),
        ("-c:a", "mp2", "-b:a", "192k"),
        size="720x576",
        interlaced=True,
    ),
}


@dataclass(frozen=True)
class CliDefect:
    """One defect placed in a CLI clip: ``kind`` (a key of :data:`CLI_DEFECTS`) over [start, end) s."""

    kind: str
    start: float
    end: float


# The defects FFmpeg's filters place, as the report names them.
CLI_DEFECTS: dict[str, str] = {
    "black": "black",
    "freeze": "freeze",
    "freeze_overlay": "freeze under a burned-in running clock",
    "stutter": "stutter",
    "silence": "silence",
    "loudness": "a loudness step of +10 LU",
    "phase_inversion": "phase inversion",
    "centre_lost": "centre channel lost (dialogue)",
}


@dataclass(frozen=True)
class CliCase:
    duration_s: float
    defects: tuple[CliDefect, ...] = ()
    picture: str = "testsrc2"  # a key of CLI_PICTURES
    clock: bool = False  # a burned-in running clock over the whole clip
    stereo_only: bool = False  # needs a stereo pair of its own (phase inversion)
    surround_only: bool = False  # needs 5.1 (a centre channel)

    @property
    def what(self) -> str:
        """What the clip holds, for the report."""
        if not self.defects:
            return f"clean programme: {self.picture}"
        return ", ".join(CLI_DEFECTS[d.kind] for d in self.defects)


def _case(
    seconds: float,
    *spans: tuple[str, float, float],
    clock: bool = False,
    stereo_only: bool = False,
    surround_only: bool = False,
) -> CliCase:
    """A case of ``seconds`` with a defect per (kind, start s, end s)."""
    defects = tuple(CliDefect(kind, float(start), float(end)) for kind, start, end in spans)
    return CliCase(seconds, defects, clock=clock, stereo_only=stereo_only, surround_only=surround_only)


# Moving programme pictures of different kinds (lavfi sources, then filters).
CLI_PICTURES: dict[str, str] = {
    "testsrc2": "testsrc2=size={size}:rate={rate}",  # graphics: bars, moving shapes, a counter
    "mandelbrot": "mandelbrot=size={size}:rate={rate}",  # zooming fractal: fine, sharp detail
    "lower_third": (  # sharp graphics over a smooth, slowly panning gradient (blockiness bait)
        "gradients=size={size}:rate={rate}:speed=0.02:c0=0x203060:c1=0x80a0c0,"
        "drawbox=x=iw/20:y=ih*0.72:w=iw*0.9:h=ih/8:color=white:t=fill,"
        "drawbox=x=iw/20:y=ih*0.66:w=iw*0.4:h=ih/16:color=0x102040:t=fill"
    ),
    "grain": "testsrc2=size={size}:rate={rate},noise=alls=12:allf=t",  # camera-like grain
    "dark": "testsrc2=size={size}:rate={rate},eq=brightness=-0.35:contrast=0.5",  # a dark scene
    "sport": "life=size={size}:rate={rate}:ratio=0.3:death_color=0x206020:life_color=0xe0e0e0:mold=10",
}

CLI_CASES: dict[str, CliCase] = {
    "picture": _case(30.0, ("black", 4, 8), ("freeze", 12, 16), ("stutter", 22, 22.2)),
    "overlay": _case(24.0, ("freeze_overlay", 4, 10), ("black", 15, 19), clock=True),
    "sound": _case(40.0, ("silence", 4, 8), ("loudness", 14, 34)),
    "stereo": _case(30.0, ("phase_inversion", 4, 14), ("silence", 20, 24), stereo_only=True),
    "dialogue": _case(30.0, ("centre_lost", 4, 14), ("silence", 20, 24), surround_only=True),
}
CLEAN_KINDS = tuple(CLI_PICTURES)
CLEAN_CLIP_S = 60.0  # 5 formats x 6 kinds x 60 s: 30 minutes of clean content

# Programme sound (measured with FFmpeg's ebur128): stereo at -23 LUFS, a chord whose 660 Hz
# note is common to both channels (correlation about 0.9, like centred dialogue) and the rest
# not; 5.1 at about -24.5 LUFS, the chord in the front pair, a syllabic tone in the centre (its
# loss leaves the loudness in range: that is silence's defect, not loudness's), 50 Hz in the LFE
# and quieter tones in the surrounds.
_CHORD = (
    "0.024*sin(2*PI*440*t)*(1+0.5*sin(2*PI*0.3*t))+0.071*sin(2*PI*660*t)",
    "0.024*sin(2*PI*550*t)*(1+0.5*sin(2*PI*0.2*t))+0.071*sin(2*PI*660*t)",
)
_SURROUND = (
    "0.8*(" + _CHORD[0] + ")",
    "0.8*(" + _CHORD[1] + ")",
    "0.04*sin(2*PI*330*t)*(0.6+0.4*sin(2*PI*3*t))",
    "0.1*sin(2*PI*50*t)",
    "0.012*sin(2*PI*770*t)",
    "0.012*sin(2*PI*880*t)",
)


def cli_case(name: str) -> CliCase:
    if name.startswith("clean-"):
        kind = name.removeprefix("clean-")
        return CliCase(0.0, picture=kind)
    return CLI_CASES[name]


def _within(d: CliDefect) -> str:
    return f"between(t,{d.start},{d.end - 1e-6})"


def make_cli_clip(cli: str, seconds: float, path: Path) -> testsrc.GroundTruth:
    """Encode the clip ``cli`` ("<format>/<case>", keys of :data:`CLI_FORMATS` and
    :data:`CLI_CASES`, or "<format>/clean-<picture>") of ``seconds`` with the ffmpeg CLI
    (MPEG-TS), defects placed by FFmpeg's filters where the case says; returns its truth."""
    from tests.ffmpeg_media import ffmpeg  # the CLI runner the tests use

    fmt_name, case_name = cli.split("/")
    fmt, case = CLI_FORMATS[fmt_name], cli_case(case_name)
    rate = 2 * fmt.rate if fmt.interlaced else fmt.rate  # the source weaves two pictures a frame
    video = CLI_PICTURES[case.picture].format(size=fmt.size, rate=f"{rate:.6f}") + f",trim=duration={seconds}"
    truths: list[dict[str, Any]] = []
    dropped: list[str] = []
    for d in case.defects:
        if d.kind in ("freeze", "freeze_overlay"):
            first, last = round(d.start * rate), round(d.end * rate) - 1
            a, b = f"fa{first}", f"fb{first}"
            video += f",split[{a}][{b}];[{a}][{b}]freezeframes=first={first}:last={last}:replace={first}"
            truths.append(
                {"type": "freeze", "start_s": d.start, "end_s": d.end, "params": {"injected": d.kind}}
            )
        elif d.kind == "black":
            video += f",drawbox=color=black:t=fill:enable='{_within(d)}'"
            truths.append({"type": "black", "start_s": d.start, "end_s": d.end, "params": {}})
        elif d.kind == "stutter":
            first, last = round(d.start * rate), round(d.end * rate) - 1
            dropped.append(f"not(between(n,{first},{last}))")
            truths.append(
                {
                    "type": "stutter",
                    "start_s": d.start,
                    "end_s": (last + 1) / rate,
                    "params": {"frames": last - first + 1},
                }
            )
    if case.clock:
        video += (
            ",drawtext=text='%{pts\\:hms}':fontsize=h/12:fontcolor=white:box=1:boxcolor=black:x=w/40:y=h/30"
        )
    if dropped:
        video += ",select='" + "*".join(dropped).replace(",", "\\,") + "'"
    if fmt.interlaced:
        video += ",tinterlace=mode=interleave_top,setfield=tff"
    if fmt.full_range:
        video += ",scale=out_range=full"
    channels = list(_SURROUND if fmt.channels == 6 else _CHORD)
    for d in case.defects:
        if d.kind == "silence":
            channels = [f"({c})*not({_within(d)})" for c in channels]
            truths.append({"type": "silence", "start_s": d.start, "end_s": d.end, "params": {}})
        elif d.kind == "loudness":
            channels = [f"({c})*if({_within(d)},3.1623,1)" for c in channels]
            truths.append(
                {"type": "loudness", "start_s": d.start, "end_s": d.end, "params": {"gain_db": 10.0}}
            )
        elif d.kind == "phase_inversion":
            channels[1] = f"({channels[1]})*if({_within(d)},-1,1)"
            truths.append({"type": "phase_inversion", "start_s": d.start, "end_s": d.end, "params": {}})
        elif d.kind == "centre_lost":
            channels[2] = f"({channels[2]})*not({_within(d)})"
            truths.append(
                {"type": "silence", "start_s": d.start, "end_s": d.end, "params": {"channel": "FC"}}
            )
    layout = "5.1(side)" if fmt.channels == 6 else "stereo"
    sound = f"aevalsrc='{'|'.join(channels)}':s=48000:d={seconds}:c={layout}:n={fmt.audio_frame}"
    sound = sound.replace(",", "\\,")
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-filter_complex", f"{video}[v];{sound}[a]",
        "-map", "[v]", "-map", "[a]", "-fps_mode", "passthrough", *fmt.video,
        *(("-color_range", "pc") if fmt.full_range else ()), *fmt.audio, "-f", "mpegts", str(path),
    )  # fmt: skip
    w, h = (int(x) for x in fmt.size.split("x"))
    return testsrc.GroundTruth(
        source=str(path), duration_s=seconds, seed=0, width=w, height=h, fps=round(fmt.rate),
        sample_rate=48_000, channels=fmt.channels, gop_s=0.0, origin_s=0.0, audio_start_s=0.0,
        scene_cuts_s=[], defects=sorted(truths, key=lambda t: t["start_s"]),
    )  # fmt: skip
