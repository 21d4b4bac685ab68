"""DASH through a stream session: an on-demand MPD made by the ffmpeg CLI's dash muxer, the egress
policy on segment URLs, and a live MPD that stops advancing."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from avmon import testsrc
from shared.models import Defect
from shared.urlpolicy import UrlRefused
from tests.media import ffmpeg, make_testsrc
from tests.test_dash_live import DashServer
from worker.dash.fetch import fetch
from worker.egress import EgressProxy
from worker.session import Outcome, SessionConfig, StreamSession

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

TOLERANCE_S = 0.5


@pytest.fixture(scope="module")
def vod(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, testsrc.GroundTruth]:
    """8 s with a black at 3 s as on-demand DASH: vod.mpd, SegmentTemplate + SegmentTimeline."""
    out = tmp_path_factory.mktemp("dash")
    clip = out / "clip.mp4"
    truth = make_testsrc(clip, duration_s=8.0, script="black@3+2.5", width=160, height=90, gop_s=1.0)
    ffmpeg(
        "-i", str(clip), "-c", "copy", "-f", "dash", "-seg_duration", "1", "-use_template", "1",
        "-use_timeline", "1", "-init_seg_name", "init-$RepresentationID$.m4s",
        "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s", str(out / "vod.mpd"),
    )  # fmt: skip
    return out, truth


@pytest.fixture
def served(vod: tuple[Path, testsrc.GroundTruth]) -> Iterator[DashServer]:
    server = DashServer(vod[0], set())
    yield server
    server.close()


def _run(url: str) -> tuple[Outcome, list[Defect]]:
    records: list[Defect] = []
    outcome, _ = StreamSession("s-dash", SessionConfig(url=url), lambda d, _: records.append(d)).run()
    return outcome, records


def test_an_on_demand_mpd_is_read_to_its_end_with_its_defects_on_its_timeline(
    served: DashServer, vod: tuple[Path, testsrc.GroundTruth]
) -> None:
    outcome, records = _run(f"{served.base}/vod.mpd")
    assert outcome is Outcome.COMPLETED
    closed = [(d.type, d.start_s, d.end_s) for d in records if d.end_s is not None]
    ((kind, start, end),) = closed
    expected = vod[1].defects[0]
    assert kind == "black"
    assert abs(start - expected["start_s"]) <= TOLERANCE_S and abs(end - expected["end_s"]) <= TOLERANCE_S


def test_an_mpd_answered_for_a_url_without_mpd_in_its_name_is_read_as_dash(
    served: DashServer, vod: tuple[Path, testsrc.GroundTruth]
) -> None:
    shutil.copy(vod[0] / "vod.mpd", vod[0] / "watch")
    outcome, records = _run(f"{served.base}/watch")
    assert outcome is Outcome.COMPLETED
    assert [d.type for d in records if d.end_s is not None] == ["black"]


def test_the_egress_policy_refuses_a_segment_fetch_to_a_forbidden_address(served: DashServer) -> None:
    with EgressProxy.start(allow_private=False) as proxy, pytest.raises(UrlRefused):
        fetch(f"{served.base}/chunk-0-00001.m4s", proxy.url, 5.0, 1 << 20)
    assert proxy.refused == 1


def test_an_mpd_whose_segments_are_on_the_metadata_address_is_refused(
    served: DashServer, vod: tuple[Path, testsrc.GroundTruth]
) -> None:
    text = (vod[0] / "vod.mpd").read_text()
    hostile = re.sub(r"<Period([^>]*)>", r"<Period\1><BaseURL>http://169.254.169.254/latest/</BaseURL>", text)
    (vod[0] / "hostile.mpd").write_text(hostile)
    outcome, records = _run(f"{served.base}/hostile.mpd")
    assert outcome is Outcome.REFUSED
    assert records == []


def test_a_live_mpd_that_stops_advancing_is_manifest_stale(
    served: DashServer, vod: tuple[Path, testsrc.GroundTruth]
) -> None:
    # The on-demand segments as a live MPD whose last segment has just ended, never updated.
    text = (vod[0] / "vod.mpd").read_text()
    ast = datetime.fromtimestamp(time.time() - 8.5, UTC).isoformat().replace("+00:00", "Z")
    live = text.replace(
        'type="static"',
        f'type="dynamic" availabilityStartTime="{ast}" publishTime="{ast}" minimumUpdatePeriod="PT1S" '
        'suggestedPresentationDelay="PT2S"',
    )
    live = re.sub(r'mediaPresentationDuration="[^"]*"', "", live)
    (vod[0] / "frozen.mpd").write_text(live)
    stop = threading.Event()
    records: list[Defect] = []

    def emit(defect: Defect, _evidence: object) -> None:
        records.append(defect)
        if defect.type == "manifest_stale":
            stop.set()

    session = StreamSession(
        "s-stale", SessionConfig(url=f"{served.base}/frozen.mpd", read_timeout_s=2.0), emit, stop=stop
    )
    thread = threading.Thread(target=session.run)
    thread.start()
    thread.join(timeout=20)
    stop.set()
    thread.join()
    stale = [d for d in records if d.type == "manifest_stale"]
    assert stale, records
    # 3 x the update period: minimumUpdatePeriod, or the longest segment (AAC: 1.003 s) where longer.
    assert stale[0].metrics["limit_s"] == pytest.approx(3.0, abs=0.05)
    assert stale[0].metrics["uri"] == f"{served.base}/frozen.mpd"
    assert not [d for d in records if d.type not in ("manifest_stale", "signal_loss")]


def test_an_mpd_that_does_not_parse_is_a_lost_signal_retried_not_a_crash(
    served: DashServer, vod: tuple[Path, testsrc.GroundTruth]
) -> None:
    (vod[0] / "broken.mpd").write_text("<MPD>not a manifest")
    stop = threading.Event()
    records: list[Defect] = []

    def emit(defect: Defect, _evidence: object) -> None:
        records.append(defect)
        stop.set()

    config = SessionConfig(url=f"{served.base}/broken.mpd", signal_loss_after_s=0.5)
    session = StreamSession("s-broken", config, emit, stop=stop)
    outcome, _ = session.run()
    assert outcome is Outcome.STOPPED
    assert [d.type for d in records][:1] == ["signal_loss"]


def test_a_segment_base_representation_muxing_audio_with_video_is_read_whole(
    served: DashServer, vod: tuple[Path, testsrc.GroundTruth]
) -> None:
    # One fragmented MP4 holding both tracks, as SegmentBase: its picture and its sound are judged.
    ffmpeg(
        "-i", str(vod[0] / "clip.mp4"), "-c", "copy", "-movflags", "frag_keyframe+empty_moov",
        str(vod[0] / "muxed.mp4"),
    )  # fmt: skip
    (vod[0] / "muxed.mpd").write_text(
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT8S">'
        '<Period><AdaptationSet mimeType="video/mp4"><Representation id="av" bandwidth="1" '
        'codecs="avc1.42c00d,mp4a.40.2"><BaseURL>muxed.mp4</BaseURL><SegmentBase/></Representation>'
        "</AdaptationSet></Period></MPD>"
    )
    records: list[Defect] = []
    config = SessionConfig(url=f"{served.base}/muxed.mpd")
    session = StreamSession("s-muxed", config, lambda d, _: records.append(d))
    outcome, _ = session.run()
    assert outcome is Outcome.COMPLETED
    assert session.ctx.has_video and session.ctx.has_audio
    assert [d.type for d in records if d.end_s is not None] == ["black"]


def _live_copy(vod: tuple[Path, testsrc.GroundTruth], name: str, ast_ago_s: float, keep: int | None) -> str:
    """The on-demand MPD as a live one begun ``ast_ago_s`` ago, listing its first ``keep`` segments."""
    text = (vod[0] / "vod.mpd").read_text()
    ast = datetime.fromtimestamp(time.time() - ast_ago_s, UTC).isoformat().replace("+00:00", "Z")
    text = text.replace(
        'type="static"', f'type="dynamic" availabilityStartTime="{ast}" minimumUpdatePeriod="PT1S"'
    )
    if keep is not None:
        # One S per segment, the first `keep` of them.
        def listed(found: re.Match[str]) -> str:
            body = found.group(1)
            t0, d = (int(x) for x in re.search(r't="(\d+)" d="(\d+)"', body).groups())  # type: ignore[union-attr]
            return (
                "<SegmentTimeline>"
                + "".join(f'<S t="{t0 + k * d}" d="{d}"/>' for k in range(keep))
                + "</SegmentTimeline>"
            )

        text = re.sub(r"<SegmentTimeline>(.*?)</SegmentTimeline>", listed, text, flags=re.S)
    (vod[0] / name).write_text(text)
    return name


@pytest.mark.parametrize(
    ("ast_ago_s", "keep", "rule"),
    [(0.0, None, "availability"), (100.0, 2, "window_short")],
)
def test_a_live_mpd_breaking_a_timing_rule_opens_a_manifest_error_naming_it(
    served: DashServer, vod: tuple[Path, testsrc.GroundTruth], ast_ago_s: float, keep: int | None, rule: str
) -> None:
    name = _live_copy(vod, f"{rule}.mpd", ast_ago_s, keep)
    stop = threading.Event()
    records: list[Defect] = []

    def emit(defect: Defect, _evidence: object) -> None:
        records.append(defect)
        if defect.type == "manifest_error":
            stop.set()

    StreamSession("s-rule", SessionConfig(url=f"{served.base}/{name}"), emit, stop=stop).run()
    errors = [d for d in records if d.type == "manifest_error"]
    assert [d.metrics["rule"] for d in errors][:1] == [rule], records


def _has_encoders(*names: str) -> bool:
    if shutil.which("ffmpeg") is None:
        return False
    listed = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return all(f" {name} " in listed for name in names)


@pytest.mark.skipif(not _has_encoders("libvpx-vp9", "libopus"), reason="needs ffmpeg's VP9 and Opus encoders")
def test_a_webm_presentation_is_read_by_its_mime_type(tmp_path: Path) -> None:
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25", "-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", "4",
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "25", "-c:a", "libopus",
        "-f", "dash", "-dash_segment_type", "webm", "-seg_duration", "1", "-use_template", "1",
        "-use_timeline", "1", str(tmp_path / "webm.mpd"),
    )  # fmt: skip
    server = DashServer(tmp_path, set())
    try:
        session = StreamSession("s-webm", SessionConfig(url=f"{server.base}/webm.mpd"), lambda *_: None)
        outcome, _ = session.run()
    finally:
        server.close()
    assert outcome is Outcome.COMPLETED
    assert session.figures.frames_analysed == 100 and session.ctx.has_audio
