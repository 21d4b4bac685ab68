"""Live capacity through the real worker: ``avmon up`` on this machine, MPEG-TS over loopback UDP.

    python -m bench.live                   # search the largest N held at real time (default settings)
    python -m bench.live --streams 12      # one run with 12 streams
    python -m bench.live --overload 2      # offer 2x what one worker held: what does it keep?

What runs is what a user runs: ``avmon up --workers 1`` (the AWS emulator, the router, one
``avmon worker`` process, every setting at its default: no capacity set), and N streams submitted
through the router's HTTP API as ``udp://@:PORT``. The sources are one clip encoded by the ffmpeg
CLI (libx264 + AAC in a CBR MPEG-TS, 1280x720 at 25 fps, moving pictures and sound, no defect),
replayed by one small sender process that paces every stream's datagrams (7 TS packets each) by
the clip's own PCR, as a broadcast encoder sends them. The sender's CPU is measured and reported
apart from the worker's.

A stream is *held* when, over the measurement window (after the warm-up), it is owned by the
worker at every sample, its lag behind the live edge (the worker's own figure, published with
every lease renewal) stays within ``MAX_LAG_S``, and the run reports no defect on it. The worker's
cost per stream is its process CPU time over the window divided by the streams it held.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.aws_calls import _http
from bench.capacity import busy_cores_s
from infra import local

OUT = Path(__file__).resolve().parent / "out"
MAX_LAG_S = 1.0
TS = 188
DATAGRAM = 7 * TS
SAMPLE_S = 2.0


# ---------------------------------------------------------------- media


def ensure_clip(
    seconds: float = 150.0, width: int = 1280, height: int = 720, fps: int = 25, preset: str = "veryfast"
) -> Path:
    """A clean CBR MPEG-TS made by the ffmpeg CLI (cached): moving test pattern under film grain,
    a centred tone over stereo ambience (independent pink noise left and right) at about
    -23 LUFS, keyframes every 2 s, 4 Mb/s with null stuffing."""
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "" if preset == "veryfast" else f"-{preset}"
    path = OUT / f"live2-{width}x{height}p{fps}-{seconds:.0f}s{suffix}.ts"
    if path.exists():
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("the live benchmark needs the ffmpeg CLI (apt-get install ffmpeg)")
    tmp = path.with_suffix(".part.ts")
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps},noise=alls=12:allf=t",
        "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000,volume=0.8",
        "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.05:sample_rate=48000:seed=1",
        "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.05:sample_rate=48000:seed=2",
        "-filter_complex",
        "[2:a][3:a]join=inputs=2:channel_layout=stereo[amb];"
        "[1:a]aformat=channel_layouts=stereo[tone];[tone][amb]amix=inputs=2:normalize=0[a]",
        "-map", "0:v", "-map", "[a]", "-t", str(seconds),
        "-c:v", "libx264", "-preset", preset, "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-g", str(2 * fps), "-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "1500k",
        "-x264-params", "nal-hrd=cbr",
        "-c:a", "aac", "-b:a", "128k",
        "-f", "mpegts", "-muxrate", "4000k", "-pcr_period", "20", str(tmp),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    tmp.rename(path)
    return path


def datagram_schedule(data: bytes) -> np.ndarray:
    """Send time (s from the first) of each 1316-byte datagram of a TS, from its PCRs: a PCR
    packet is due at its PCR, the packets between two PCRs at evenly spaced times."""
    packets = np.frombuffer(data[: len(data) // TS * TS], np.uint8).reshape(-1, TS)
    has_af = (packets[:, 3] & 0x20) != 0
    has_pcr = has_af & (packets[:, 4] >= 7) & ((packets[:, 5] & 0x10) != 0)
    idx = np.flatnonzero(has_pcr)
    p = packets[idx].astype(np.int64)
    base = (p[:, 6] << 25) | (p[:, 7] << 17) | (p[:, 8] << 9) | (p[:, 9] << 1) | (p[:, 10] >> 7)
    ext = ((p[:, 10] & 1) << 8) | p[:, 11]
    pcr_s = (base * 300 + ext) / 27e6
    pid = ((packets[idx, 1].astype(np.int32) & 0x1F) << 8) | packets[idx, 2]
    first_pid = pid[0]
    idx, pcr_s = idx[pid == first_pid], pcr_s[pid == first_pid]  # one PCR PID
    times = np.interp(np.arange(len(packets)), idx, pcr_s - pcr_s[0])
    sent: np.ndarray = times[::7]
    return sent


# ---------------------------------------------------------------- the sender


def send(ports: list[int], clip: Path, seconds: float, stagger_s: float = 0.25) -> None:
    """Send ``clip`` to every port on 127.0.0.1, paced by its PCR, for ``seconds`` (the sender's
    own process: ``python -m bench.live --send``)."""
    data = clip.read_bytes()
    schedule = datagram_schedule(data)
    count = len(schedule)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    view = memoryview(data)
    start = time.monotonic() + 0.5
    nxt = [0] * len(ports)
    offsets = [start + i * stagger_s for i in range(len(ports))]
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        soonest = end
        for i, port in enumerate(ports):
            k = nxt[i]
            base = offsets[i]
            while k < count and base + schedule[k] <= now:
                sock.sendto(view[k * DATAGRAM : (k + 1) * DATAGRAM], ("127.0.0.1", port))
                k += 1
            nxt[i] = k
            if k < count:
                soonest = min(soonest, base + schedule[k])
        time.sleep(max(0.0, min(soonest - time.monotonic(), 0.005)))
    sock.close()


# ---------------------------------------------------------------- the system


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and every process below it (a worker and its media processes)."""
    return _cpu_s(pid) + sum(_tree_cpu_s(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    """Its child processes, whichever of its threads started them (the worker starts its media
    processes from a helper thread: they are listed under that thread, not the main one)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class LiveRun:
    offered: int
    seconds: float
    warmup_s: float
    held: int = 0  # owned throughout the window, lag within MAX_LAG_S, no defect
    owned_min: int = 0  # fewest streams the first worker owned at any sample of the window
    owned_end: int = 0
    worst_lag_s: float = 0.0  # of the streams owned throughout
    defects: int = 0
    defects_marked: int = 0  # of those, carrying monitor_overloaded
    worker_cores: float = 0.0
    sender_cores: float = 0.0
    machine_cores: float = 0.0
    handovers: int = 0  # times a stream changed owner or lost it during the window
    second_worker_s: float | None = None  # after a second worker started: until every stream was owned
    per_stream: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cores_per_stream(self) -> float:
        return self.worker_cores / self.owned_min if self.owned_min else float("nan")


def _worker_env(aws_port: int) -> dict[str, str]:
    """What `avmon worker` needs to join the `avmon up` of this run (README, "the whole system")."""
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{aws_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AVMON_ALLOWED_SCHEMES": "http,https,udp,file",
        "AVMON_ALLOW_PRIVATE_HOSTS": "true",
        "AVMON_LOG_LEVEL": "WARNING",
        "AVMON_WORKER_ID": "second",
        "AVMON_HEALTH_FILE": str(OUT / "live-second.health"),
    }


def run_live(
    streams: int,
    *,
    seconds: float = 70.0,
    warmup_s: float = 25.0,
    clip: Path | None = None,
    second_worker_after_s: float | None = None,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> LiveRun:
    """One run: ``avmon up --workers 1`` with ``streams`` live UDP sources for ``seconds``; with
    ``second_worker_after_s``, a second ``avmon worker`` joins then and the run goes on until
    every stream is owned (60 s at most)."""
    clip = clip or ensure_clip()
    router_port, aws_port = local.free_port(), local.free_port()
    udp_ports = [local.free_port() for _ in range(streams)]
    total_s = seconds + (60.0 if second_worker_after_s is not None else 0.0)
    log = (log_path or OUT / "live-up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "avmon", "up", "--workers", "1", "--port", str(router_port),
         "--aws-port", str(aws_port)],
        env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{router_port}"
    sender: subprocess.Popen[bytes] | None = None
    second: subprocess.Popen[bytes] | None = None
    result = LiveRun(offered=streams, seconds=seconds, warmup_s=warmup_s)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _http(base, "GET", "/streams")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if up.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"avmon up did not come up (see {log.name})") from None
                time.sleep(0.3)
        worker_pid = next((c for c in _children(up.pid) if "worker" in _cmdline(c)), None)
        sender = subprocess.Popen(
            [sys.executable, "-m", "bench.live", "--send", str(clip), "--seconds", str(total_s + 10),
             "--ports", ",".join(map(str, udp_ports))],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        ids = [
            _http(base, "POST", "/streams", {"url": f"udp://@:{port}", "name": f"live-{i}"})["stream_id"]
            for i, port in enumerate(udp_ports)
        ]
        t0 = time.monotonic()
        samples: list[dict[str, dict[str, Any]]] = []
        cpu0 = busy0 = snd0 = 0.0
        tm = t0
        measuring = False
        while True:
            time.sleep(SAMPLE_S)
            now = time.monotonic() - t0
            if not measuring and now >= warmup_s:
                measuring, tm = True, time.monotonic()
                cpu0 = _tree_cpu_s(worker_pid) if worker_pid else 0.0
                snd0, busy0 = _cpu_s(sender.pid), busy_cores_s()
            listed = {s["stream_id"]: s for s in _http(base, "GET", "/streams?limit=100")["streams"]}
            if measuring and now < seconds:
                samples.append(listed)
            if now >= seconds and measuring and not result.worker_cores:
                elapsed = time.monotonic() - tm
                result.worker_cores = ((_tree_cpu_s(worker_pid) if worker_pid else 0.0) - cpu0) / elapsed
                result.sender_cores = (_cpu_s(sender.pid) - snd0) / elapsed
                result.machine_cores = (busy_cores_s() - busy0) / elapsed
            if second_worker_after_s is not None and second is None and now >= second_worker_after_s:
                second = subprocess.Popen(
                    [sys.executable, "-m", "avmon", "worker"], env=_worker_env(aws_port),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )  # fmt: skip
                second_at = now
            if (
                second is not None
                and result.second_worker_s is None
                and all(listed.get(sid, {}).get("owner") for sid in ids)
            ):
                result.second_worker_s = now - second_at
            if now >= total_s or (now >= seconds and (second is None or result.second_worker_s is not None)):
                break

        def first(owner: object) -> bool:  # `avmon up` names its workers worker-N-<pid>
            return isinstance(owner, str) and owner.startswith("worker-1-")

        for sid in ids:
            trace = [s.get(sid, {}) for s in samples]
            owners = [t.get("owner") for t in trace]
            owned = bool(owners) and all(first(o) for o in owners)
            lags = [float(t.get("lag_s") or 0.0) for t in trace if t.get("owner")]
            defects = _http(base, "GET", f"/streams/{sid}/defects?limit=100")["defects"]
            worst = max(lags, default=0.0)
            result.held += owned and worst <= MAX_LAG_S and not defects
            result.owned_end += bool(owners and owners[-1])
            result.handovers += sum(a != b for a, b in itertools.pairwise(owners))
            if owned:
                result.worst_lag_s = max(result.worst_lag_s, worst)
            result.defects += len(defects)
            result.defects_marked += sum(bool(d.get("monitor_overloaded")) for d in defects)
            status = trace[-1].get("status") if trace else None
            kinds = sorted({d["type"] for d in defects})
            result.per_stream.append(
                {"stream_id": sid, "owned": owned, "worst_lag_s": worst, "defects": kinds, "status": status,
                 "lags_s": lags}
            )
        result.owned_min = min(
            (sum(first(s.get(sid, {}).get("owner")) for sid in ids) for s in samples), default=0
        )
    finally:
        for proc in (sender, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        up.terminate()
        try:
            up.wait(timeout=40)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        log.close()
    return result


def decode_only_cores(
    streams: int, *, seconds: float = 30.0, warmup_s: float = 8.0, clip: Path | None = None
) -> float:
    """The baseline of the same run: cores per stream to only receive and decode the same live
    UDP input (our own socket reader, one decoder thread, no detectors, no AWS), ``streams`` at
    once in this process. The worker's cost per stream divided by this is its overhead."""
    import threading

    import av

    from worker.udp import UdpInput

    clip = clip or ensure_clip()
    ports = [local.free_port() for _ in range(streams)]
    stop = threading.Event()
    inputs = [UdpInput(f"udp://@:{port}", read_timeout_s=5.0, stop=stop) for port in ports]

    def decode(udp: UdpInput) -> None:
        udp.first_read_timeout_s = 10.0
        with av.open(udp, mode="r", format="mpegts", buffer_size=64 * 1316) as container:
            video = container.streams.video[0]
            video.thread_type, video.codec_context.thread_count = "SLICE", 1
            for packet in container.demux(video, *container.streams.audio[:1]):
                for _frame in packet.decode():
                    pass
                if stop.is_set():
                    return

    threads = [threading.Thread(target=decode, args=(u,), daemon=True) for u in inputs]
    for thread in threads:
        thread.start()
    sender = subprocess.Popen(
        [sys.executable, "-m", "bench.live", "--send", str(clip), "--seconds", str(seconds + 5),
         "--ports", ",".join(map(str, ports))],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(warmup_s)
        t0, c0 = time.monotonic(), time.process_time()
        time.sleep(seconds - warmup_s)
        cores = (time.process_time() - c0) / (time.monotonic() - t0)
    finally:
        stop.set()
        sender.terminate()
        sender.wait(timeout=10)
        for thread in threads:
            thread.join(timeout=10)
        for udp in inputs:
            udp.close()
    return cores / streams


def describe(run: LiveRun) -> str:
    second = (
        ""
        if run.second_worker_s is None
        else f"; a second worker: all owned {run.second_worker_s:.0f} s later"
    )
    return (
        f"offered {run.offered:2d}: held {run.held:2d} (owned {run.owned_min}-{run.owned_end}, "
        f"{run.handovers} handovers), worst lag {run.worst_lag_s:.2f} s, defects {run.defects} "
        f"({run.defects_marked} marked overloaded); worker {run.worker_cores:.2f} cores "
        f"({run.cores_per_stream:.3f} per stream), sender {run.sender_cores:.2f}, machine "
        f"{run.machine_cores:.2f}{second}"
    )


def search(start: int, seconds: float, warmup_s: float, step: int = 2) -> tuple[int, list[LiveRun]]:
    """The largest N held entirely (every stream held), raising N by ``step`` from ``start``."""
    runs: list[LiveRun] = []
    best = 0
    n = start
    while True:
        run = run_live(n, seconds=seconds, warmup_s=warmup_s)
        runs.append(run)
        print(describe(run), flush=True)
        if run.held < n:
            break
        best = n
        n += step
    return best, runs


BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
BEGIN, END = "<!-- live:begin (python -m bench.live --write) -->", "<!-- live:end -->"


def full(offered: int = 24, seconds: float = 100.0, warmup_s: float = 50.0) -> str:
    """The whole measurement as a Markdown section: the decode-only baseline on the same live
    input, then ``offered`` streams on one worker with default settings (what it takes, holds,
    costs), then a second worker joining (how soon every stream is owned)."""
    import platform

    baseline = decode_only_cores(8)
    run = run_live(offered, seconds=seconds, warmup_s=warmup_s, second_worker_after_s=seconds)
    print(describe(run), flush=True)
    # The same number of streams with every one in the worker's own process (the design before
    # media processes): what one GIL does to them.
    one = run_live(max(1, run.owned_min), seconds=70.0, warmup_s=25.0, env={"AVMON_MEDIA_PROCESSES": "1"})
    print("one media process:", describe(one), flush=True)
    held_cost = run.cores_per_stream
    load = os.getloadavg()
    hour_task = 2 * 0.04048 + 4 * 0.004445  # a 2 vCPU / 4 GB Fargate task, us-east-1 list prices
    rows = [
        ("streams offered to one worker (720p25 H.264 3 Mb/s + AAC, CBR TS over UDP)", f"{run.offered}"),
        ("taken and held at real time, default settings (no capacity set)", f"{run.owned_min}"),
        ("... of those with lag ≤ 1 s and no defect throughout the window", f"{run.held}"),
        ("worst lag of a held stream", f"{run.worst_lag_s:.2f} s"),
        (
            f"the same {one.offered} streams all in the worker's own process (`AVMON_MEDIA_PROCESSES=1`): "
            "held / worst lag",
            f"{one.held} / {one.worst_lag_s:.2f} s",
        ),
        ("defects on the clean streams (marked monitor_overloaded)", f"{run.defects} ({run.defects_marked})"),
        ("hand-overs during the window (a stream changing or losing its owner)", f"{run.handovers}"),
        ("worker process CPU", f"{run.worker_cores:.2f} cores"),
        ("worker cost per held stream", f"{held_cost:.3f} cores"),
        ("decode only, the same live input (own UDP reader, one decoder thread)", f"{baseline:.3f} cores"),
        ("worker cost ÷ decode only", f"{held_cost / baseline:.2f}×"),
        (
            "sender / whole machine during the window",
            f"{run.sender_cores:.2f} / {run.machine_cores:.2f} cores",
        ),
        (
            "a second worker started: every stream owned after",
            "not within 60 s" if run.second_worker_s is None else f"{run.second_worker_s:.0f} s",
        ),
        (
            "cost per stream-hour at this density (2 vCPU / 4 GB Fargate task)",
            f"${hour_task / max(1, run.owned_min):.4f}",
        ),
    ]
    lines = [
        BEGIN,
        "",
        "## Live capacity through the real worker",
        "",
        f"`python -m bench.live --write`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, "
        f"Python {platform.python_version()}. `avmon up --workers 1` (emulator, router, one `avmon worker`) "
        f"with every setting at its default, {run.offered} live UDP streams submitted through the API, "
        "replayed by one sender process paced by the clip's PCR (the clip: the ffmpeg CLI's libx264 "
        "veryfast + AAC, testsrc2 under film grain, 2 s GOP). The window is the run's last "
        f"{seconds - warmup_s:.0f} s of {seconds:.0f}; then a second `avmon worker` joins.",
        "",
        "| what | measured |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
        "The worker takes streams by their measured cost up to 75 % of its cores "
        "(`AVMON_CPU_TARGET`), and none while one of its streams stays behind real time; what it has "
        "no room for waits, unowned, for another worker. Its streams run in one media process per "
        "core (worker/shards.py); the row on `AVMON_MEDIA_PROCESSES=1` is the same offer with every "
        "stream in the worker's own process, one GIL. Lag is the worker's own figure, sampled every 2 s. "
        "The in-process "
        "figure above (*Streams per worker*) runs sessions on files in one process, on the generator's "
        "lighter clip: it is not what a deployment carries.",
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(section: str, path: Path = BENCHMARKS) -> None:
    text = path.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, help="one run with this many streams")
    parser.add_argument("--start", type=int, default=8, help="search from this N (default 8)")
    parser.add_argument("--seconds", type=float, default=70.0)
    parser.add_argument("--warmup", type=float, default=25.0)
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")
    parser.add_argument(
        "--baseline",
        type=int,
        metavar="N",
        help="only the decode-only baseline with N streams, cores per stream",
    )
    parser.add_argument(
        "--second-worker", type=float, metavar="S", help="start a second worker S seconds in (overload runs)"
    )
    parser.add_argument("--write", action="store_true", help="the whole measurement, into BENCHMARKS.md")
    parser.add_argument("--send", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send is not None:
        send([int(p) for p in args.ports.split(",")], args.send, args.seconds)
        return 0
    if args.write:
        section = full()
        print(section)
        write_section(section)
        return 0
    if args.baseline:
        print(
            f"decode only, {args.baseline} live UDP streams: "
            f"{decode_only_cores(args.baseline):.3f} cores per stream"
        )
        return 0
    if args.streams:
        run = run_live(
            args.streams, seconds=args.seconds, warmup_s=args.warmup, second_worker_after_s=args.second_worker
        )
        print(describe(run))
        if args.json:
            print(json.dumps(run.__dict__, indent=1, default=str))
        return 0
    best, _ = search(args.start, args.seconds, args.warmup)
    print(f"largest N held: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
