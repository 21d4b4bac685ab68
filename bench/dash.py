"""How soon a live DASH MPD that stops advancing is reported as ``manifest_stale``.

A local origin serves a live MPD built from on-demand segments (made by the ffmpeg CLI's dash
muxer, 1 s segments): every segment is listed once its end has passed, as a live packager lists
them, until the origin freezes (the MPD stops changing). A stream session (in process, the
worker's own code) follows it; the latency is the time from the MPD's last change (its newest
segment listed) to the report, less the staleness limit (3 update periods: here 3 s). Issue 18
asks for at most one target duration (here one segment, 1 s).

``python -m bench.dash [--rounds 3]``; not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from avmon import testsrc
from shared.models import Defect
from worker.dash.mpd import parse_mpd
from worker.session import SessionConfig, StreamSession

FREEZE_AFTER_S = 6.0


def _vod(root: Path) -> Path:
    clip = root / "clip.mp4"
    testsrc.generate(clip, duration_s=20.0, width=160, height=90, gop_s=1.0)
    mpd = root / "vod.mpd"
    subprocess.run(
        [
            "nice", "-n", "19", "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(clip), "-c", "copy", "-f", "dash", "-seg_duration", "1", "-use_template", "1",
            "-use_timeline", "1", "-init_seg_name", "init-$RepresentationID$.m4s",
            "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s", str(mpd),
        ],
        check=True,
    )  # fmt: skip
    return mpd


class LiveOrigin(http.server.ThreadingHTTPServer):
    """The on-demand segments as a live MPD that grows with the clock until ``frozen_at``."""

    def __init__(self, root: Path, vod: bytes) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
        mpd = parse_mpd(vod, "http://x/vod.mpd", time.time())
        self.reps = [(rep, mpd.segments(rep, time.time())) for rep in mpd.representations]
        self.started = time.time()
        self.frozen_at: float | None = None
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def mpd(self) -> bytes:
        now = time.time() if self.frozen_at is None else self.frozen_at
        ast = datetime.fromtimestamp(self.started, UTC).isoformat().replace("+00:00", "Z")
        sets = []
        for rep, segs in self.reps:
            listed = [s for s in segs if self.started + s.end_s <= now]
            timeline = "".join(f'<S t="{s.start}" d="{s.duration}"/>' for s in listed)
            sets.append(
                f'<AdaptationSet contentType="{rep.kind}"><Representation id="{rep.id}" bandwidth="1">'
                f'<SegmentTemplate timescale="{rep.timescale}" initialization="init-$RepresentationID$.m4s" '
                f'media="chunk-$RepresentationID$-$Number%05d$.m4s" startNumber="1">'
                f"<SegmentTimeline>{timeline}</SegmentTimeline></SegmentTemplate></Representation></AdaptationSet>"
            )
        return (
            '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT1S" '
            f'availabilityStartTime="{ast}" suggestedPresentationDelay="PT2S">'
            f'<Period start="PT0S">{"".join(sets)}</Period></MPD>'
        ).encode()


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: LiveOrigin

    def do_GET(self) -> None:
        if self.path.startswith("/live.mpd"):
            body = self.server.mpd()
            self.send_response(200)
            self.send_header("Content-Type", "application/dash+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def one_round(root: Path, vod: bytes) -> float:
    """Seconds from the MPD's last change to the manifest_stale report, less the staleness limit."""
    origin = LiveOrigin(root, vod)
    stop = threading.Event()
    reported: list[tuple[float, Defect]] = []

    def emit(defect: Defect, _evidence: object) -> None:
        if defect.type == "manifest_stale" and not reported:
            reported.append((time.time(), defect))
            stop.set()

    config = SessionConfig(url=f"{origin.base}/live.mpd", read_timeout_s=5.0)
    session = StreamSession("bench-dash", config, emit, stop=stop)
    thread = threading.Thread(target=session.run)
    thread.start()
    time.sleep(FREEZE_AFTER_S)
    origin.frozen_at = time.time()
    thread.join(timeout=30)
    stop.set()
    thread.join()
    origin.shutdown()
    origin.server_close()
    if not reported:
        raise RuntimeError("no manifest_stale reported")
    at, defect = reported[0]
    # The MPD last changed when its newest segment was listed, up to a segment before the freeze.
    changed = max(
        origin.started + s.end_s
        for _, segs in origin.reps
        for s in segs
        if origin.started + s.end_s <= origin.frozen_at
    )
    limit = defect.metrics["limit_s"]
    assert isinstance(limit, float)
    return at - changed - limit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vod = _vod(root).read_bytes()
        latencies = [one_round(root, vod) for _ in range(args.rounds)]
    print(
        f"manifest_stale after the staleness limit (s), {args.rounds} rounds: "
        f"median {statistics.median(latencies):.2f}, max {max(latencies):.2f} "
        f"({', '.join(f'{x:.2f}' for x in latencies)})"
    )


if __name__ == "__main__":
    main()
