"""The `avmon` command (DESIGN.md §5)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from shared.models import Defect
from shared.urlpolicy import to_url


def _value(v: Any) -> str:
    """A metric as a person reads it: numbers short, channel lists joined."""
    if isinstance(v, float | int):
        return f"{v:g}"
    return "+".join(map(str, v)) if isinstance(v, list) else str(v)


def _describe(d: dict[str, Any]) -> str:
    end = "…" if d.get("end_s") is None else f"{d['end_s']:8.2f}"
    metrics = " ".join(f"{k}={_value(v)}" for k, v in sorted((d.get("metrics") or {}).items()))
    return f"{d['type']:<12} {d['start_s']:8.2f} → {end} s  {d['severity']:<8} {metrics}"


# ------------------------------------------------------------------ analyze


def _chosen_detectors(profile: str, names: str | None) -> frozenset[str] | None:
    """``--detectors a,b`` or ``--profile``'s as the session takes them (None: every detector).
    ValueError names an unknown detector."""
    from shared.models import chosen_detectors
    from worker.detectors import registry

    if names is None:
        return chosen_detectors(profile)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in registry()]
    if unknown or not chosen:
        name = unknown[0] if unknown else names
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(registry())}")
    return frozenset(chosen)


def cmd_analyze(args: argparse.Namespace) -> int:
    from avmon.report import Progress, report_dict, summarise, summary_table, write_report
    from shared.settings import WorkerSettings
    from worker.detectors import check_detector_options
    from worker.session import Outcome, analyze_session

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    final: dict[str, dict[str, Any]] = {}  # defect_id → its latest record
    evidence: dict[str, dict[str, Any]] = {}
    progress = Progress(sys.stderr) if sys.stderr.isatty() else None
    lock = threading.Lock()  # the progress line and the defect lines share the terminal

    def emit(defect: Defect, item: dict[str, Any] | None) -> None:
        if item is not None:
            evidence[defect.defect_id] = item
        record = defect.model_dump(mode="json")
        final[defect.defect_id] = record
        with lock:
            if progress is not None:
                progress.clear()
            if args.json:
                if defect.end_s is not None:  # one line per defect: its final record
                    print(json.dumps(record), flush=True)
            else:
                state = "ended  " if defect.end_s is not None else "started"
                print(f"{state} {_describe(record)}", flush=True)

    # Evidence (pictures and traces) only when a report will show it.
    try:
        detectors = _chosen_detectors(args.profile, args.detectors)
        detector_options = WorkerSettings().detector_options  # AVMON_DETECTOR_OPTIONS, as a worker's
        check_detector_options(detector_options)
    except ValueError as exc:
        print(f"avmon analyze: {exc}", file=sys.stderr)
        return 2
    session = analyze_session(
        args.source, emit, realtime=args.realtime, stop=stop, evidence=bool(args.report),
        loudness_profile=args.loudness_profile, detectors=detectors, detector_options=detector_options,
    )  # fmt: skip
    started = time.monotonic()
    done = threading.Event()

    def show_progress() -> None:
        while not done.wait(0.5):
            with lock:
                if progress is not None and not done.is_set():
                    still_open = sum(1 for d in final.values() if d.get("end_s") is None)
                    progress.show(session.figures.media_time_s, len(final), still_open)

    if progress is not None:
        threading.Thread(target=show_progress, name="progress", daemon=True).start()
    try:
        outcome, reason = session.run()
    except Exception as exc:
        print(f"avmon analyze: cannot read {args.source}: {exc}", file=sys.stderr)
        return 1
    finally:
        done.set()
        with lock:
            if progress is not None:
                progress.clear()
    if outcome is Outcome.REFUSED:
        print(f"avmon analyze: refused: {reason}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    media = session.figures.media_time_s
    speed = "" if not media else f" ({media / max(elapsed, 1e-6):.1f}× real time)"
    summary = (
        f"{'—' if media is None else f'{media:.1f} s'} of media analysed in {elapsed:.1f} s{speed}\n"
        + summary_table(summarise(list(final.values())))
    )
    # With --json, stdout carries only defects: the summary goes to the terminal's stderr.
    print(summary, file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.report:
        report = report_dict(args.source, list(final.values()), evidence, media_s=media, elapsed_s=elapsed)
        write_report(Path(args.report), report)
        print(f"report written to {args.report}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ the stack


def _http(method: str, url: str, body: Any = None) -> Any:
    import urllib.request  # here: `avmon analyze` has no use for its 0.07 s import

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _stack_config(args: argparse.Namespace) -> Any:
    from avmon.stack import StackConfig

    return StackConfig(workers=args.workers, port=args.port, aws_port=args.aws_port)


def cmd_up(args: argparse.Namespace) -> int:
    from avmon.stack import running_stack

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running_stack(_stack_config(args), stop) as base:
        print(
            f"avmon is up: API {base} (the wall of streams at {base}/), "
            f"AWS emulator http://127.0.0.1:{args.aws_port}, "
            f"{args.workers} worker(s). Ctrl-C stops everything.",
            flush=True,
        )
        stop.wait()
    return 0


FINAL = {"COMPLETED", "REFUSED", "STOPPED"}


def status_line(streams: list[dict[str, Any]], open_defects: int) -> str:
    """One line: how many streams in each state, the worst lag, and the defects going on now."""
    states: dict[str, int] = {}
    for stream in streams:
        states[stream["status"]] = states.get(stream["status"], 0) + 1
    lags = [s["lag_s"] for s in streams if s.get("lag_s") is not None]
    owners = {s["owner"] for s in streams if s.get("owner")}
    parts = [", ".join(f"{n} {state.lower()}" for state, n in sorted(states.items()))]
    parts.append(f"{len(owners)} worker(s)")
    if lags:
        parts.append(f"max lag {max(lags):.1f} s")
    parts.append(f"{open_defects} defect(s) open")
    return " | ".join(parts)


def watch(
    base: str, stream_ids: dict[str, str], stop: threading.Event, *, until_done: bool
) -> list[dict[str, Any]]:
    """Print defects as they open and close; return the final records once every stream is done.

    On a terminal a status line at the bottom is rewritten in place; elsewhere (a log, a pipe)
    only the defect lines are printed.
    """
    live = sys.stdout.isatty()
    seen: dict[tuple[str, str], Any] = {}
    while not stop.is_set():
        streams = []
        for stream_id, label in stream_ids.items():
            streams.append(_http("GET", f"{base}/streams/{stream_id}"))
            for d in _http("GET", f"{base}/streams/{stream_id}/defects?limit=100")["defects"]:
                key = (stream_id, d["defect_id"])
                if seen.get(key, "unseen") != d.get("end_s"):
                    state = "ended  " if d.get("end_s") is not None else "started"
                    print(("\r\033[K" if live else "") + f"{label:<24} {state} {_describe(d)}", flush=True)
                seen[key] = d.get("end_s")
        if live:
            line = status_line(streams, sum(1 for end in seen.values() if end is None))
            print(f"\r\033[K{line}", end="", flush=True)
        if until_done and all(s["status"] in FINAL for s in streams):
            break
        stop.wait(1.0)
    if live:
        print()
    out: list[dict[str, Any]] = []
    for stream_id in stream_ids:
        out.extend(_http("GET", f"{base}/streams/{stream_id}/defects?limit=100")["defects"])
    return out


def cmd_monitor(args: argparse.Namespace) -> int:
    import urllib.error

    from avmon.stack import running_stack

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running_stack(_stack_config(args), stop) as base:
        ids: dict[str, str] = {}
        for source in args.sources:
            body = {"url": to_url(source), "name": Path(source).name, "realtime": args.realtime}
            try:
                stream = _http("POST", f"{base}/streams", body)
            except urllib.error.HTTPError as exc:
                print(f"{source}: refused: {exc.read().decode()}", file=sys.stderr)
                continue
            ids[stream["stream_id"]] = Path(source).name
            print(f"monitoring {source} as {stream['stream_id']}", flush=True)
        if ids:
            watch(base, ids, stop, until_done=not args.forever)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate streams with known defects, monitor them with the whole system, compare with the truth."""
    from avmon import testsrc
    from avmon.stack import running_stack

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scripts = {
        "black-and-silence.ts": "black@4+3,silence@12+3",
        "freeze.mp4": "freeze@6+4",
        "clean.ts": "",
    }
    with tempfile.TemporaryDirectory(prefix="avmon-demo-") as tmp:
        truths = {}
        for name, script in scripts.items():
            path = Path(tmp) / name
            truths[name] = testsrc.generate(
                path, duration_s=20.0, defects=testsrc.parse_script(script), seed=len(name)
            )
            print(f"generated {name}: {script or 'no defects'}", flush=True)
        with running_stack(_stack_config(args), stop) as base:
            ids = {}
            for name in scripts:
                stream = _http(
                    "POST", f"{base}/streams", {"url": to_url(str(Path(tmp) / name)), "name": name}
                )
                ids[stream["stream_id"]] = name
            print(
                f"submitted {len(ids)} streams to {base} (to look at them: {base}/); "
                "defects as the workers report them:",
                flush=True,
            )
            found = watch(base, ids, stop, until_done=True)
    by_name: dict[str, list[dict[str, Any]]] = {name: [] for name in scripts}
    for d in found:
        by_name[ids[d["stream_id"]]].append(d)
    print("\nexpected vs found:")
    ok = True
    for name, truth in truths.items():
        expected = sorted((d["type"], d["start_s"], d["end_s"]) for d in truth.defects)
        got = sorted((d["type"], d["start_s"], d["end_s"]) for d in by_name[name])
        print(f"  {name}: expected {expected or 'nothing'}\n  {' ' * len(name)}  found    {got or 'nothing'}")
        ok &= len(expected) == len(got)
    return 0 if ok else 1


# ------------------------------------------------------------------ processes


def cmd_worker(args: argparse.Namespace) -> int:
    from avmon.stack import is_local_endpoint, local_policy

    if is_local_endpoint(os.environ.get("AWS_ENDPOINT_URL")):
        # Joining `avmon up` (or another stack on this machine): accept what its router accepts.
        os.environ.update(local_policy(os.environ))
    from worker.main import main

    main()
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from worker.main import healthy

    return 0 if healthy() else 1


def cmd_init(args: argparse.Namespace) -> int:
    from infra.local import create_data_plane

    for attempt in range(30):  # the emulator container may still be starting
        try:
            plane = create_data_plane(args.prefix)
            break
        except Exception as exc:
            if attempt == 29:
                print(f"avmon init: {exc}", file=sys.stderr)
                return 1
            time.sleep(1.0)
    print(json.dumps({"tables": plane.tables, "queues": plane.queue_urls}, indent=2))
    return 0


def cmd_router(args: argparse.Namespace) -> int:
    from router.local import serve

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serve(args.host, args.port, args.housekeeping_every, stop)
    return 0


def cmd_testsrc(args: argparse.Namespace) -> int:
    from avmon import testsrc

    return testsrc.run(args)


PROFILE_NAMES = ("full", "picture", "sound", "transport-light")  # shared.models.DETECTOR_PROFILES


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``command``: build only what that subcommand needs in full."""
    parser = argparse.ArgumentParser(prog="avmon", description="Live audio/video stream monitoring.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="run every detector on one file or URL, in process, no AWS")
    p.add_argument("source", help="a file path or a URL (udp://, http(s)://, rtmp:// ...)")
    p.add_argument("--json", action="store_true", help="print one defect per line as JSON, nothing else")
    p.add_argument("--realtime", action="store_true", help="read a file at its own pace, as if live")
    p.add_argument(
        "--loudness-profile",
        choices=("ebu_r128", "atsc_a85"),
        default="ebu_r128",
        help="loudness and true-peak targets: EBU R128 (-23 LUFS, -1 dBTP, the default) or ATSC A/85 "
        "(-24 LKFS, -2 dBTP)",
    )
    p.add_argument(
        "--detectors",
        metavar="A,B",
        help="run only these detectors (defect types, comma-separated; `python -m worker.detectors.doc` "
        "lists them and their options)",
    )
    p.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default="full",
        help="a named set of detectors (README: Detector profiles); ignored with --detectors",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="also write a report: FILE.html (pictures and traces drawn) or FILE.json",
    )
    p.set_defaults(func=cmd_analyze)

    def stack_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workers", type=int, default=2, help="worker processes to start (default 2; 0 is valid)"
        )
        p.add_argument("--port", type=int, default=8080, help="router HTTP port (default 8080)")
        p.add_argument("--aws-port", type=int, default=4566, help="AWS emulator port (default 4566)")

    p = sub.add_parser("up", help="the whole system on this machine: emulator, router, workers")
    stack_args(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("monitor", help="`up`, submit the sources, show defects live")
    p.add_argument("sources", nargs="+", help="file paths or URLs")
    p.add_argument("--realtime", action="store_true", help="read files at their own pace, as if live")
    p.add_argument("--forever", action="store_true", help="keep watching after finite sources end")
    stack_args(p)
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("demo", help="generate streams with known defects and monitor them with `up`")
    stack_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("worker", help="one worker process (joins `avmon up` with AWS_ENDPOINT_URL set)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("health", help="exit 0 if this host's worker loop is alive, 1 if not")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("init", help="create the tables and queues of infra/template.yaml at AWS_ENDPOINT_URL")
    p.add_argument("--prefix", default=os.environ.get("AVMON_PREFIX", "avmon"))
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("router", help="serve the router's handler over HTTP (with scheduled housekeeping)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--housekeeping-every", type=float, default=5.0, metavar="SECONDS")
    p.set_defaults(func=cmd_router)

    p = sub.add_parser(
        "testsrc",
        help="the test-signal generator: real H.264/AAC with defects at scripted times",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if command in (None, "testsrc"):  # its arguments import the generator: only when it runs
        from avmon import testsrc

        testsrc.add_arguments(p)
    p.set_defaults(func=cmd_testsrc)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(argv)).parse_args(argv)
    default_level = "INFO" if args.command in ("worker", "router", "up") else "WARNING"
    level = "DEBUG" if args.verbose else os.environ.get("AVMON_LOG_LEVEL", default_level).upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    for noisy in ("botocore", "aiobotocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    sys.exit(args.func(args))
