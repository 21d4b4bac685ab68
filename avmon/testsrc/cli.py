"""``avmon testsrc``: its arguments, and running the generator to a file or a live output."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import av

from avmon.testsrc.encoder import generate
from avmon.testsrc.live import LiveSource
from avmon.testsrc.script import parse_script, truth_path
from avmon.testsrc.spec import Media

_EPILOG = """\
defect script: comma-separated TYPE@START+DURATION[:key=value[:key=value]] items, in seconds of
media time; a defect covers the frames and samples with START <= t < START+DURATION.

  picture    black                        black frames (Y=16, limited range)
             freeze                       the picture at START held still
  sound      silence[:level_dbfs=L]       digital zero, or noise at L <= -70 dBFS
             clipping[:gain_db=26]        driven into hard clipping (18..60 dB)
             loudness:gain_db=G           level change of G dB (-60..30), limited, never clips
  A/V sync   av_offset:offset_ms=MS       sound MS ms late (negative: early), |MS| <= 1000
  (needs     av_drift:ms_per_s=R          sound late by R ms more every second of the span,
  --sync-marks)                           from 0 at START (at most 1000 ms at the end)
  transport  corrupt[:rate=0.3]           garbles slice data of that fraction of video frames,
                                          keyframes too (damage shows until the next keyframe)
             drop[:rate=0.1]              loses that fraction of the video PID's TS packets, as
                                          on a lossy network (MP4: whole video frames)
             timestamp_jump@T[:jump_s=10] from T on every timestamp is jump_s later (no DURATION)
             signal_loss                  live outputs only: nothing is sent for DURATION (no UDP
                                          datagram, no new HLS segment), then the stream resumes
                                          where it would have been

Defects of one kind may not overlap (av_offset/av_drift count as one, corrupt/drop too).
Sync marks: once a second (at k+0.5 s, the next frame time) one white frame and a 40 ms 1 kHz
beep at the same instant; a monitor measures the A/V offset between them.

The ground truth (JSON: type, start_s, end_s, params per defect, plus sync_marks_s) goes to
OUTPUT.truth.json and to --truth PATH. It names defects as a monitor reports them: av_offset and
av_drift are av_sync, corrupt and drop are decode_error (params.expect: decode_error,
blockiness). After a timestamp_jump, later times include the jump, as a monitor measures them.

examples:
  avmon testsrc clip.ts --duration 60 \\
      --defects 'black@5+3, freeze@12+4, silence@20+3, loudness@30+12:gain_db=-20'
  avmon testsrc sync.mp4 --sync-marks --defects 'av_offset@10+10:offset_ms=120, av_drift@30+10:ms_per_s=20'

  # live: start the receiver first (UDP is not buffered anywhere), then the source
  avmon analyze udp://127.0.0.1:5000 &
  avmon testsrc --udp 127.0.0.1:5000 --sync-marks --defects 'corrupt@10+2, signal_loss@20+5'

  avmon testsrc --hls 8081 --defects 'drop@10+3, timestamp_jump@20:jump_s=30' &
  avmon analyze http://127.0.0.1:8081/live.m3u8

  # RTMP: the generator publishes to a server that listens (nginx-rtmp, MediaMTX, ...)
  avmon testsrc --rtmp rtmp://127.0.0.1:1935/live/test --duration 600
"""


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 640x360")
    return int(m[1]), int(m[2])


def host_port(text: str, default_host: str | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``; ``PORT`` alone with a default host) → (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep and default_host is not None:
        host = default_host
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avmon testsrc``."""
    parser.description = (
        "Generate real H.264/AAC test signals with defects at scripted times, to a file or live,\n"
        "and write the ground truth. To check a monitor, point it at the file or URL and compare\n"
        "what it reports with the truth."
    )
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "output",
        metavar="OUTPUT",
        nargs="?",
        help="media file to write: .ts (MPEG-TS) or .mp4; the ground truth goes to OUTPUT.truth.json",
    )
    where.add_argument(
        "--udp",
        metavar="HOST:PORT",
        type=host_port,
        help="send MPEG-TS over UDP, 7 TS packets per datagram, in real time; receive with udp://HOST:PORT",
    )
    where.add_argument(
        "--hls",
        metavar="[HOST:]PORT",
        type=lambda s: host_port(s, "127.0.0.1"),
        help="serve live HLS (a keyframe-aligned segment every --gop s, a sliding window of "
        "--window) at http://HOST:PORT/live.m3u8; PORT 0 picks a free one",
    )
    where.add_argument(
        "--rtmp",
        metavar="URL",
        help="publish FLV over RTMP to a server that listens at URL "
        "(rtmp://HOST:PORT/APP/KEY); the bundled FFmpeg cannot listen for players itself",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="length in seconds (default 30)")
    parser.add_argument(
        "--defects",
        metavar="SCRIPT",
        default="",
        help=(
            "defects to inject: comma-separated TYPE@START+DURATION[:key=value[:key=value]] items (see "
            "below). Example: 'black@5+3, freeze@12+4, silence@20+3, loudness@30+12:gain_db=-20'"
        ),
    )
    parser.add_argument(
        "--sync-marks",
        action="store_true",
        help="a white frame and a 1 kHz beep together "
        "once a second, to measure A/V sync (needed by av_offset and av_drift)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="write a file at the media's own pace (live outputs always are)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="pacing factor: 2 sends twice as fast as real time (default 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="content seed (default 0); same seed, same media")
    parser.add_argument(
        "--size",
        type=_size,
        default=(640, 360),
        metavar="WxH",
        help="picture size in pixels, even numbers (default 640x360)",
    )
    parser.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    parser.add_argument(
        "--gop",
        type=float,
        default=2.0,
        help="keyframe interval in seconds, and the HLS segment length (default 2)",
    )
    parser.add_argument("--window", type=int, default=6, help="HLS playlist length in segments (default 6)")
    parser.add_argument(
        "--truth",
        metavar="PATH",
        help="also write the ground truth here; a live source's default is "
        "testsrc-udp-PORT.truth.json (-hls-PORT, -rtmp) in this directory",
    )


def run(args: argparse.Namespace) -> int:
    """Generate from parsed arguments; print a one-line summary. Returns 0, or 2 on bad input."""
    try:
        width, height = args.size
        media: Media = {
            "duration_s": args.duration,
            "defects": parse_script(args.defects),
            "seed": args.seed,
            "width": width,
            "height": height,
            "fps": args.fps,
            "gop_s": args.gop,
            "sync_marks": args.sync_marks,
        }
        if args.output is None:
            return run_live(args, media)
        started = time.perf_counter()
        truth = generate(args.output, realtime=args.realtime, speed=args.speed, **media)
        if args.truth:
            Path(args.truth).write_text(truth.to_json())
    except ValueError as exc:
        print(f"testsrc: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(
        f"wrote {truth.source}: {truth.duration_s:g} s {width}x{height}@{truth.fps} h264/aac, "
        f"{len(truth.defects)} defect(s), truth in {truth_path(truth.source)} ({elapsed:.1f} s)"
    )
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_live(args: argparse.Namespace, media: Media) -> int:
    """``avmon testsrc --udp/--hls/--rtmp``: send until the media ends, Ctrl-C or SIGTERM."""
    if args.udp is not None:
        kind, (host, port), url = "udp", args.udp, None
    elif args.hls is not None:
        kind, (host, port), url = "hls", args.hls, None
    else:
        kind, host, port, url = "rtmp", "127.0.0.1", 0, args.rtmp
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    try:
        source = LiveSource.start(
            kind, host=host, port=port, url=url, speed=args.speed, window=args.window, **media
        )
    except (OSError, av.FFmpegError, TimeoutError) as exc:
        print(f"testsrc: cannot send {kind}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    port = urlsplit(source.url).port or 0
    path = Path(args.truth or f"testsrc-{kind}{f'-{port}' if port else ''}.truth.json")
    with source:
        path.write_text(source.truth.to_json())
        spec = source.spec
        print(
            f"sending {source.url}: {spec.duration_s:g} s {spec.width}x{spec.height}@{spec.fps} h264/aac, "
            f"{len(spec.defects)} defect(s), truth in {path}; Ctrl-C stops",
            flush=True,
        )
        try:
            while not source.wait(0.5):
                pass
            if kind == "hls":  # let readers at the live edge reach the ENDLIST
                time.sleep(args.window * spec.gop / spec.fps / args.speed)
        except KeyboardInterrupt:
            pass
        except (OSError, av.FFmpegError) as exc:
            print(f"testsrc: {source.url}: {exc}", file=sys.stderr)
            return 1
    print(f"sent {source.url} ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0
