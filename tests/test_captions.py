"""Caption presence from A/53 side data: CEA-608 caption text carried in real libx264 H.264
(an SEI user_data_registered_itu_t_t35 "GA94" added before each picture's slices, as a caption
encoder does), decoded by FFmpeg's H.264 decoder through PyAV, tracked per picture."""

from __future__ import annotations

import fractions
import json
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from avmon.ccsei import DTVCC, PADDING, TEXT, sei_nal, spans, with_sei, write_clip
from router.handler import lambda_handler
from router.local import LambdaContext
from shared import store
from shared.models import Defect, StreamStatus
from tests.conftest import Stack, load_event
from worker.captions import CaptionTracker, a53_cc, a53_from_packet, parse_cc_data
from worker.detectors.base import Finding
from worker.session import Outcome, SessionConfig, StreamSession

FPS = 25
SECONDS = 8


@pytest.fixture(scope="module")
def access_units() -> list[bytes]:
    """A real libx264 encode, one Annex B access unit per picture, no B-frames (decode order is
    presentation order)."""
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = 64, 64, "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "25"}
    packets: list[av.Packet] = []
    for i in range(FPS * SECONDS):
        img = np.full((64, 64, 3), (i * 7) % 256, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    return [bytes(p) for p in packets]


def track(
    aus: list[bytes], cc_at: dict[int, bytes], lost_s: float = 2.0
) -> tuple[CaptionTracker, list[Finding]]:
    """Decode ``aus`` with ``cc_at[i]`` added to picture i; track pictures at i / FPS seconds."""
    dec = av.CodecContext.create("h264", "r")
    tracker = CaptionTracker(lost_s=lost_s)
    out: list[Finding] = []
    n = 0
    for i, au in enumerate(aus):
        data = with_sei(au, sei_nal(cc_at[i])) if i in cc_at else au
        for frame in dec.decode(av.Packet(data)):
            assert isinstance(frame, av.VideoFrame)
            out += tracker.picture(n / FPS, a53_cc(frame))
            n += 1
    assert n == FPS * SECONDS
    return tracker, out + tracker.flush(SECONDS)


def test_captions_present_while_text_flows(access_units: list[bytes]) -> None:
    tracker, findings = track(access_units, {i: TEXT for i in range(len(access_units))})
    assert tracker.present is True
    assert tracker.pictures_with_text == FPS * SECONDS
    assert findings == []


def test_captions_stopping_raise_captions_lost_after_the_configured_time(access_units: list[bytes]) -> None:
    text_until = 3 * FPS  # text for the first 3 s, padding after
    cc = {i: TEXT if i < text_until else PADDING for i in range(len(access_units))}
    tracker, findings = track(access_units, cc, lost_s=2.0)
    last_text = (text_until - 1) / FPS
    opened, closed = findings
    assert opened.type == "captions_lost" and opened.end_s is None
    assert opened.start_s == pytest.approx(last_text + 2.0)
    assert closed.end_s == SECONDS
    assert tracker.present is False


def test_captions_returning_close_captions_lost(access_units: list[bytes]) -> None:
    cc = {i: TEXT for i in range(len(access_units)) if not FPS <= i < 5 * FPS}
    tracker, findings = track(access_units, cc, lost_s=2.0)
    (opened, closed) = findings
    assert opened.start_s == pytest.approx((FPS - 1) / FPS + 2.0)
    assert closed.end_s == pytest.approx(5.0)
    assert tracker.present is True


def test_clip_without_captions_reports_no_captions_not_a_defect(access_units: list[bytes]) -> None:
    tracker, findings = track(access_units, {})
    assert tracker.present is None
    assert findings == []


def test_padding_only_counts_as_no_captions(access_units: list[bytes]) -> None:
    tracker, findings = track(access_units, {i: PADDING for i in range(len(access_units))})
    assert tracker.present is None
    assert findings == []


def test_cc_data_triplets_are_counted_by_kind() -> None:
    invalid = bytes([0xF8, 0xC8, 0x49])  # cc_valid 0
    counts = parse_cc_data(TEXT + PADDING + DTVCC + invalid + bytes([0xFE, 0, 0]))
    assert (counts.cea608, counts.cea708, counts.padding) == (1, 1, 3)


def test_lost_time_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match="lost_s"):
        CaptionTracker(lost_s=0.0)


# -- through a session: an MPEG-TS file with captions in its SEI (avmon.ccsei), read as a source


def _session_run(path: Path, lost_s: float = 2.0) -> tuple[StreamSession, list[Defect]]:
    found: list[Defect] = []
    config = SessionConfig(url=path.as_uri(), reconnect=False, captions_lost_s=lost_s, detectors=frozenset())
    session = StreamSession("cc", config, lambda d, _: found.append(d))
    outcome, _ = session.run()
    assert outcome is Outcome.COMPLETED
    return session, found


def test_session_reports_captions_present_while_text_flows(tmp_path: Path) -> None:
    path = tmp_path / "cc.ts"
    write_clip(path, seconds=4, cc_at=spans("0-4"))
    session, found = _session_run(path)
    assert session.figures.captions == "present"
    assert [d for d in found if d.type == "captions_lost"] == []


def test_session_reports_captions_lost_after_the_configured_time(tmp_path: Path) -> None:
    path = tmp_path / "cc.ts"
    write_clip(path, seconds=SECONDS, cc_at=spans("0-3"))  # text for 3 s, the null pair after
    session, found = _session_run(path, lost_s=2.0)
    lost = [d for d in found if d.type == "captions_lost"]
    opened, closed = lost
    assert opened.end_s is None and closed.end_s is not None
    last_text = 3.0 - 1 / FPS  # media time starts at the first picture
    assert opened.start_s == pytest.approx(last_text + 2.0, abs=0.05)
    assert opened.defect_id == closed.defect_id
    assert session.figures.captions == "lost"


def test_session_without_captions_reports_none_and_no_defect(tmp_path: Path) -> None:
    path = tmp_path / "plain.ts"
    write_clip(path, seconds=4, cc_at=lambda t: None)
    session, found = _session_run(path)
    assert session.figures.captions == "none"
    assert [d for d in found if d.type == "captions_lost"] == []


def test_caption_data_read_from_the_packet_is_what_the_decoder_hands_out(access_units: list[bytes]) -> None:
    dec = av.CodecContext.create("h264", "r")
    for i, au in enumerate(access_units[:30]):
        data = with_sei(au, sei_nal(TEXT + PADDING * (i % 3) + DTVCC)) if i % 2 else au
        (frame,) = dec.decode(av.Packet(data))
        assert isinstance(frame, av.VideoFrame)
        assert a53_from_packet(data) == a53_cc(frame), i


def test_stream_view_shows_the_captions_figure_its_worker_published(stack: Stack, ddb_client: Any) -> None:
    tables = store.Tables(streams=f"{stack.prefix}-streams", defects=f"{stack.prefix}-defects")
    sid, now = "s-cc0000000001", time.time()
    ddb_client.put_item(**store.put_new_stream(
        tables, stream_id=sid, url="udp://@:5000", name=None, realtime=False, client_token=None, now=now))
    ddb_client.update_item(**store.claim_lease(tables, sid, 1, worker_id="w", now=now, period_s=30))
    ddb_client.update_item(**store.renew_lease(
        tables, sid, worker_id="w", counter=1, now=now, period_s=30, status=StreamStatus.MONITORING,
        figures={"captions": "lost"}))
    event = load_event("function_url_get_streams.json", rawPath=f"/streams/{sid}")
    event["requestContext"]["http"]["path"] = f"/streams/{sid}"
    result = lambda_handler(event, LambdaContext())
    assert result["statusCode"] == 200
    assert json.loads(result["body"])["captions"] == "lost"
