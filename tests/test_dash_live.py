"""Live DASH end to end: the ffmpeg CLI's dash muxer (SegmentTemplate + SegmentTimeline), paced
in real time from a generated clip with a black and a silence in it, served over local HTTP by a
server that withholds one video segment, monitored through the API by a real worker."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest

from avmon import testsrc
from tests.conftest import Api, WorkerFactory
from tests.media import make_testsrc
from tests.support import wait_for
from tests.test_live import LIVE

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

TOLERANCE_S = 0.5
WITHHELD = "chunk-0-00013.m4s"  # video, media time 12-13 s


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: DashServer

    def do_GET(self) -> None:
        name = self.path.split("?", 1)[0].lstrip("/")
        self.server.requests.append(name)
        if name in self.server.withheld:
            self.send_error(404)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DashServer(http.server.ThreadingHTTPServer):
    """A directory over HTTP on a free loopback port; names in ``withheld`` answer 404."""

    def __init__(self, directory: Path, withheld: set[str]) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
        self.withheld = withheld
        self.requests: list[str] = []
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


@dataclass
class LiveDash:
    """A generated clip, the directory the dash muxer writes, and the server of that directory."""

    clip: Path
    truth: testsrc.GroundTruth
    out: Path
    server: DashServer
    muxer: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the dash muxer, paced in real time, and wait for its first MPD."""
        # `nice`: the machine may be measuring; the muxer only copies packets.
        self.muxer = subprocess.Popen(
            [
                "nice", "-n", "19", "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                "-i", str(self.clip), "-c", "copy", "-f", "dash", "-seg_duration", "1",
                "-use_template", "1", "-use_timeline", "1", "-window_size", "6",
                "-extra_window_size", "40", "-remove_at_exit", "0", "-streaming", "0",
                "-init_seg_name", "init-$RepresentationID$.m4s",
                "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s",
                str(self.out / "live.mpd"),
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: (self.out / "live.mpd").exists(), 15, what="the dash muxer's first MPD")


@pytest.fixture
def live_dash(tmp_path: Path) -> Iterator[LiveDash]:
    clip = tmp_path / "clip.mp4"
    truth = make_testsrc(
        clip,
        duration_s=20.0,
        script="black@7+3,silence@14+3",
        width=320,
        height=180,
        gop_s=1.0,
    )
    out = tmp_path / "dash"
    out.mkdir()
    server = DashServer(out, {WITHHELD})
    live = LiveDash(clip, truth, out, server)
    try:
        yield live
    finally:
        server.close()
        if live.muxer is not None:
            live.muxer.terminate()
            live.muxer.wait(timeout=10)


def _first_time(out: Path, rep: str, requests: list[str]) -> float:
    """Media time (s) of the first sample of the first media segment of ``rep`` requested."""
    name = next(r for r in requests if r.startswith(f"chunk-{rep}-"))
    data = (out / f"init-{rep}.m4s").read_bytes() + (out / name).read_bytes()
    with av.open(io.BytesIO(data), format="mp4") as container:
        packet = next(p for p in container.demux() if p.pts is not None)
        return float(packet.pts * packet.time_base)


def test_live_dash_black_silence_and_a_withheld_segment_are_found(
    router: Api, workers: WorkerFactory, live_dash: LiveDash
) -> None:
    server, truth, out = live_dash.server, live_dash.truth, live_dash.out
    workers("d1", **LIVE)  # starting while the muxer does
    live_dash.start()
    status, stream = router.call("POST", "/streams", {"url": f"{server.base}/live.mpd", "name": "dash"})
    assert status == 201, stream
    sid = stream["stream_id"]

    def found() -> list[dict[str, Any]] | None:
        defects: list[dict[str, Any]] = router.call("GET", f"/streams/{sid}/defects")[1]["defects"]
        types = {d["type"] for d in defects if d["end_s"] is not None}
        return defects if {"black", "silence", "segment_error"} <= types else None

    defects = wait_for(found, 45, interval_s=0.5, what="black, silence and the segment error")
    # Media time 0 is the earliest first sample of the first segments the worker read.
    origin = min(_first_time(out, rep, server.requests) for rep in ("0", "1"))
    for kind in ("black", "silence"):
        expected = next(d for d in truth.defects if d["type"] == kind)
        got = [d for d in defects if d["type"] == kind]
        assert len(got) == 1, defects
        assert abs(got[0]["start_s"] + origin - expected["start_s"]) <= TOLERANCE_S, (got, origin, expected)
        assert abs(got[0]["end_s"] + origin - expected["end_s"]) <= TOLERANCE_S, (got, origin, expected)
    assert sorted(d["type"] for d in defects) == ["black", "segment_error", "silence"], defects
    errors = [d for d in defects if d["type"] == "segment_error"]
    assert [(d["metrics"]["status"], d["metrics"]["uri"].rsplit("/", 1)[-1]) for d in errors] == [
        (404, WITHHELD)
    ]
    assert abs(errors[0]["start_s"] + origin - 12.0) <= TOLERANCE_S, (errors, origin)
    # Decoding went on after it: pictures past the withheld segment were analysed.
    wait_for(
        lambda: (router.call("GET", f"/streams/{sid}")[1]["media_time_s"] or 0) + origin > 14.0,
        15,
        what="media past the withheld segment",
    )
    assert WITHHELD in server.requests
