"""Our black, silence and freeze boundaries against FFmpeg's own filters on the same media.

FFmpeg's blackdetect (d=2, pic_th=0.98, pix_th=0.10), freezedetect (n=-60dB, d=2) and
silencedetect (n=-60dB, d=2) run through PyAV's libavfilter (``bench.accuracy.ffmpeg_events``).
Where both should see the same thing, boundaries must agree within 0.1 s; the cases where we are
different on purpose are tests of their own, named for what they show. The clips and the reasons
are ``bench.accuracy.agreement_cases()``, which the accuracy report prints as a table.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.accuracy import AGREEMENT_S, AgreementRow, agreement_cases, compare_with_ffmpeg

Compare = Callable[[str], AgreementRow]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Compare:
    """``compared(key)``: our defects and FFmpeg's events on that case's clip (made once)."""
    out = tmp_path_factory.mktemp("ffmpeg")
    cases = {case.key: case for case in agreement_cases()}
    rows: dict[str, AgreementRow] = {}

    def get(key: str) -> AgreementRow:
        if key not in rows:
            rows[key] = compare_with_ffmpeg(cases[key], out)
        return rows[key]

    return get


def close(a: float, b: float) -> bool:
    return abs(a - b) <= AGREEMENT_S


def test_black_boundaries_agree_with_blackdetect(compared: Compare) -> None:
    row = compared("defaults")
    [(start, end)] = row.ours["black"]
    assert close(start, 2.0) and close(end, 5.0)
    assert row.agrees("black"), (row.ours["black"], row.ffmpeg["black"])


def test_silence_boundaries_agree_with_silencedetect_on_digital_silence(compared: Compare) -> None:
    row = compared("defaults")
    [(start, end)] = row.ours["silence"]
    assert close(start, 8.0) and close(end, 11.0)
    assert row.agrees("silence"), (row.ours["silence"], row.ffmpeg["silence"])


def test_held_black_picture_is_a_freeze_for_ffmpeg_but_only_black_for_us(compared: Compare) -> None:
    # One outage, one page: a held black picture is the black detector's defect.
    row = compared("held_black")
    assert row.agrees("black") and len(row.ours["black"]) == 1
    assert row.ours["freeze"] == []
    [(start, end)] = row.ffmpeg["freeze"]
    [(black_start, black_end)] = row.ours["black"]
    assert close(start, black_start) and close(end, black_end)


def test_held_slide_freeze_agrees_with_freezedetect_and_is_a_warning_under_narration(
    compared: Compare,
) -> None:
    # Encoded losslessly, the held slide is bit-identical: a freeze where FFmpeg finds one too.
    row = compared("slide_held")
    assert row.agrees("freeze"), (row.ours["freeze"], row.ffmpeg["freeze"])
    [(start, end)] = row.ours["freeze"]
    assert close(start, 4.0) and close(end, 8.0)
    [freeze] = [f for f in row.found if f.type == "freeze"]
    assert freeze.severity == "warning"  # the sound goes on: a frozen slide under live narration
    assert {f.type for f in row.found} == {"freeze"}


def test_faint_noise_on_a_still_picture_is_frozen_for_ffmpeg_but_live_for_us(compared: Compare) -> None:
    # A tenth of the pixels one code up or down: MAFD under -60 dB, but every macroblock changes.
    row = compared("faint_noise")
    [(start, end)] = row.ffmpeg["freeze"]
    assert close(start, 4.0) and close(end, 8.0)
    assert row.found == []


def test_keyframe_refresh_inside_freeze_splits_ffmpeg_freeze_but_not_ours(compared: Compare) -> None:
    # freeze@3+7 with a keyframe every 2 s: keyframes at 4, 6 and 8 s re-encode the held picture.
    row = compared("keyframes")
    [(start, end)] = row.ours["freeze"]
    assert close(start, 3.0) and close(end, 10.0)
    theirs = row.ffmpeg["freeze"]
    assert theirs, "FFmpeg finds part of this freeze"
    assert close(theirs[-1][1], end)  # where FFmpeg finds the freeze, its end agrees with ours
    assert len(theirs) > 1 or theirs[0][0] > start + 1.0  # but it is split, or starts late
    assert all(round(a, 1) in (4.0, 6.0, 8.0) for a, _ in theirs)  # at keyframes


def test_freeze_within_one_gop_is_missed_by_freezedetect_but_not_by_us(compared: Compare) -> None:
    # No keyframe inside (GOP 5 s), yet x264's refinements of the held picture break -60 dB.
    row = compared("one_gop")
    [(start, end)] = row.ours["freeze"]
    assert close(start, 6.4) and close(end, 9.4)
    assert row.ffmpeg["freeze"] == []


def test_fade_shorter_than_2_s_is_not_black_for_either(compared: Compare) -> None:
    row = compared("fade")
    assert row.ours == {"black": [], "freeze": [], "silence": []}
    assert row.ffmpeg == {"black": [], "freeze": [], "silence": []}
    assert row.found == []


def test_quiet_passage_at_minus_50_dbfs_is_silence_for_neither(compared: Compare) -> None:
    row = compared("quiet")
    assert row.ours["silence"] == [] and row.ffmpeg["silence"] == []
    assert row.found == []


def test_hiss_at_minus_70_dbfs_rms_is_silence_for_us_but_not_for_the_peak_test(compared: Compare) -> None:
    # Dead air over a noisy line: its RMS is far under -60 dBFS, its noise peaks cross -60 dB.
    row = compared("hiss")
    [(start, end)] = row.ours["silence"]
    assert close(start, 4.0) and close(end, 9.0)
    assert row.ffmpeg["silence"] == []
