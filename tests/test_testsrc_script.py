"""Tests of the defect script: parsing, checking and the frame/sample index of a time."""

from __future__ import annotations

import pytest

from avmon.testsrc import DefectSpec, first_index, parse_script


def test_parse_script_reads_types_times_and_params() -> None:
    assert parse_script(" black@5+3 ,loudness@30+12:gain_db=-20, silence@0.5+0.25:level_dbfs=-80") == [
        DefectSpec("silence", 0.5, 0.25, {"level_dbfs": -80.0}),
        DefectSpec("black", 5.0, 3.0),
        DefectSpec("loudness", 30.0, 12.0, {"gain_db": -20.0}),
    ]
    assert parse_script("") == []


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("blur@1+2", "unknown type"),
        ("black@-1+2", "start must be >= 0"),
        ("black@1+-2", "duration must be > 0"),
        ("black@1+0", "duration must be > 0"),
        ("black@1+3, black@2+1", "overlap"),
        ("silence@1+1, silence@2+1", "overlap or touch"),
        ("black1+2", "expected TYPE@START"),
        ("black@x+2", "not a number"),
        ("loudness@1+2", "loudness needs gain_db"),
        ("black@1+2:gain_db=3", "unknown parameter"),
        ("clipping@1+2:gain_db", "not key=value"),
        ("black@1+2,", "bad defect"),
    ],
)
def test_parse_script_rejects_bad_input(script: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_script(script)


def test_parse_script_reads_the_new_types() -> None:
    assert parse_script(
        "timestamp_jump@5, av_offset@1+2:offset_ms=-40, corrupt@8+1:rate=1, signal_loss@9+1"
    ) == [
        DefectSpec("av_offset", 1.0, 2.0, {"offset_ms": -40.0}),
        DefectSpec("timestamp_jump", 5.0, 0.0, {"jump_s": 10.0}),
        DefectSpec("corrupt", 8.0, 1.0, {"rate": 1.0}),
        DefectSpec("signal_loss", 9.0, 1.0, {}),
    ]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("av_offset@1+2", "needs offset_ms"),
        ("av_offset@1+2:offset_ms=1500", "within ±1000"),
        ("av_drift@1+20:ms_per_s=100", "at most ±1000 ms"),
        ("av_offset@1+2:offset_ms=50, av_drift@3+1:ms_per_s=5", "overlap or touch"),
        ("corrupt@1+2, drop@2+2", "overlap or touch"),
        ("corrupt@1+2:rate=1.5", "rate must be in"),
        ("timestamp_jump@2+1", "duration must be 0"),
        ("timestamp_jump@0", "start > 0"),
        ("timestamp_jump@2:jump_s=-5", r"jump_s must be in \(0, 3600\]"),
        ("timestamp_jump@2, black@1+3", "falls inside"),
        ("signal_loss@1+2, black@2+2", "nothing is sent then"),
        ("black@5", "expected TYPE@START"),
    ],
)
def test_parse_script_rejects_bad_new_defects(script: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_script(script)


def test_first_index_is_exact_on_decimal_times() -> None:
    assert [first_index(t, 25) for t in (0.0, 0.04, 0.05, 0.12, 5.0)] == [0, 1, 2, 3, 125]
    assert first_index(0.3, 48000) == 14400
