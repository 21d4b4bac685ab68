"""An HLS master playlist: one variant monitored, the others neither decoded nor downloaded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.models import Defect, DefectType
from tests.media import make_testsrc
from worker.media import Limits
from worker.session import Outcome, SessionConfig, StreamSession

SEGMENTS = 3
SEGMENT_S = 3.0
# name, size, BANDWIDTH; only the best variant carries the defect (its encoder failed).
VARIANTS = (("low", 160, 90, 300_000, ""), ("high", 320, 180, 900_000, "black@0.5+2.5"))


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        handler = partial(_Handler, self, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def segments(self, variant: str) -> list[str]:
        """The variant's segments fetched, in order."""
        return [path for path in self.requests if path.startswith(f"/{variant}") and path.endswith(".ts")]


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, site: Site, *args: Any, **kwargs: Any) -> None:
        self.site = site
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.site.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("hls")
    master = ["#EXTM3U"]
    for name, width, height, bandwidth, defects in VARIANTS:
        playlist = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{SEGMENT_S:.0f}"]
        for k in range(SEGMENTS):
            script = defects if k == 1 else ""
            make_testsrc(
                root / f"{name}{k}.ts",
                duration_s=SEGMENT_S,
                seed=k,
                width=width,
                height=height,
                script=script,
            )
            playlist += [*(["#EXT-X-DISCONTINUITY"] if k else []), f"#EXTINF:{SEGMENT_S},", f"{name}{k}.ts"]
        (root / f"{name}.m3u8").write_text("\n".join([*playlist, "#EXT-X-ENDLIST", ""]))
        master += [f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={width}x{height}", f"{name}.m3u8"]
    (root / "master.m3u8").write_text("\n".join([*master, ""]))
    served = Site(root)
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def monitor(site: Site, limits: Limits | None = None) -> tuple[Outcome, list[Defect]]:
    site.requests.clear()
    records: list[Defect] = []
    config = SessionConfig(url=f"{site.url}/master.m3u8", reconnect=False, limits=limits or Limits())
    outcome, _ = StreamSession("hls", config, lambda d, _: records.append(d)).run()
    return outcome, records


def test_the_variant_with_the_highest_bandwidth_is_monitored(site: Site) -> None:
    outcome, records = monitor(site)
    assert outcome is Outcome.COMPLETED
    assert [r.type for r in records if r.end_s is not None].count(DefectType.BLACK) == 1


def test_the_other_variants_segments_are_not_downloaded(site: Site) -> None:
    monitor(site)
    assert site.segments("high") == [f"/high{k}.ts" for k in range(SEGMENTS)]
    assert len(site.segments("low")) <= 1  # at most the one FFmpeg reads to find the streams


def test_a_variant_beyond_the_limits_gives_way_to_one_within_them(site: Site) -> None:
    outcome, records = monitor(site, Limits(max_width=200, max_height=120))
    assert outcome is Outcome.COMPLETED  # not refused: the low variant is within the limits
    assert DefectType.BLACK not in [r.type for r in records]
    assert site.segments("low") == [f"/low{k}.ts" for k in range(SEGMENTS)]
