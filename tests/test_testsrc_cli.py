"""Tests of ``avmon testsrc``'s arguments, help and summary."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from avmon.testsrc import DEFECT_TYPES, GroundTruth, add_arguments, run


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_writes_media_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.ts"
    args = cli_args(str(out), "--duration", "1", "--size", "64x48", "--defects", "black@0.2+0.2")
    assert run(args) == 0
    assert GroundTruth.load(out).defects[0]["type"] == "black"
    assert capsys.readouterr().out.count("\n") == 1


def test_cli_help_documents_the_defect_script() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "TYPE@START+DURATION" in text and "loudness@30+12:gain_db=-20" in text


def test_cli_reports_bad_script_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(cli_args(str(tmp_path / "bad.ts"), "--defects", "blur@1+1")) == 2
    assert "unknown type" in capsys.readouterr().err
    assert not (tmp_path / "bad.ts").exists()


def test_cli_help_documents_every_defect_type_and_parameter() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = parser.format_help()
    for name in [*DEFECT_TYPES, "level_dbfs", "gain_db", "offset_ms", "ms_per_s", "rate", "jump_s"]:
        assert name in text, name
    for option in ("--udp", "--hls", "--rtmp", "--sync-marks", "--realtime", "--speed", "--truth"):
        assert option in text, option


def test_cli_needs_exactly_one_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_args("x.ts", "--udp", "127.0.0.1:5000")
    with pytest.raises(SystemExit):
        cli_args()
    assert cli_args("--udp", "127.0.0.1:5000").udp == ("127.0.0.1", 5000)
    assert cli_args("--hls", "8081").hls == ("127.0.0.1", 8081)
    assert "not allowed with" in capsys.readouterr().err


def test_cli_writes_sync_marks_and_realtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.mp4"
    args = cli_args(
        str(out),
        "--duration",
        "1.2",
        "--size",
        "64x48",
        "--sync-marks",
        "--realtime",
        "--speed",
        "8",
        "--defects",
        "av_offset@0.2+0.8:offset_ms=30",
    )
    assert run(args) == 0
    assert GroundTruth.load(out).sync_marks_s == [0.52]
    assert "1 defect(s)" in capsys.readouterr().out
