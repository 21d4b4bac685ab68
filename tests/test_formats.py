"""Detectors on broadcast formats made by the ffmpeg CLI: 10-bit and full-range black, an
interlaced MPEG-2 freeze, and a live source whose 33-bit MPEG-TS timestamps wrap."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from shared.models import Defect
from tests.media import HEVC_MAIN, HEVC_MAIN10, MPEG2_INTERLACED, decode, programme_ts
from worker.detectors.base import Finding
from worker.detectors.black import BlackDetector
from worker.detectors.freeze import FreezeDetector
from worker.session import Outcome, analyze

EDGE_S = 0.05  # boundaries: media time counts from the audio, a picture or so before the video
PTS_WRAP_S = 2**33 / 90_000  # 33-bit 90 kHz timestamps roll over every 26.5 h


def spans(findings: list[Finding]) -> list[tuple[float, float | None]]:
    return [(f.start_s, f.end_s) for f in findings if f.end_s is not None]


@pytest.mark.parametrize(
    ("video", "full_range"),
    [
        (HEVC_MAIN, False),
        (HEVC_MAIN10, False),
        (HEVC_MAIN10, True),
        (("-c:v", "libx264", "-pix_fmt", "yuvj420p"), True),
    ],
    ids=["hevc-main", "hevc-main10", "hevc-main10-full-range", "h264-full-range"],
)
def test_black_is_black_in_every_bit_depth_and_range(
    tmp_path: Path, video: tuple[str, ...], full_range: bool
) -> None:
    clip = tmp_path / "black.ts"
    programme_ts(clip, 7.0, video, black=(2.0, 5.0), full_range=full_range)
    with av.open(str(clip)) as container:
        picture = next(container.decode(video=0))
        assert (int(picture.color_range) == 2) is full_range
    [(start, end)] = spans(decode(clip, BlackDetector()))
    assert (start, end) == pytest.approx((2.0, 5.0), abs=EDGE_S)


def test_interlaced_mpeg2_freeze_is_found(tmp_path: Path) -> None:
    clip = tmp_path / "interlaced.ts"
    # 576i25, top field first, from a 50p source held from 2 s to 6 s.
    programme_ts(clip, 8.0, MPEG2_INTERLACED, freeze=(2.0, 6.0), size="720x576", interlaced=True)
    with av.open(str(clip)) as container:
        assert next(container.decode(video=0)).interlaced_frame
    [(start, end)] = spans(decode(clip, FreezeDetector()))
    assert (start, end) == pytest.approx((2.0, 6.0), abs=EDGE_S)


def test_a_pts_wrap_in_a_live_source_gives_no_defect(tmp_path: Path) -> None:
    # The encoder's clock 6 s short of the 33-bit wrap: timestamps roll over mid-clip.
    clip = tmp_path / "wrap.ts"
    programme_ts(clip, 12.0, out=("-output_ts_offset", f"{PTS_WRAP_S - 6.0:.6f}"))
    with av.open(str(clip)) as container:
        # FFmpeg's demuxer unwraps relative to the first timestamp: those before the wrap read
        # as negative, so the file really does wrap.
        assert container.streams.video[0].start_time < 0
    defects: list[Defect] = []
    outcome, reason = analyze(str(clip), defects.append)
    assert (outcome, reason) == (Outcome.COMPLETED, None)
    assert defects == []
