"""The ffmpeg CLI part of the accuracy corpus: what it holds, and one clip made and matched."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import accuracy


def test_every_format_gets_every_case_it_can_carry_and_30_minutes_of_clean_programme() -> None:
    plans = accuracy.cli_clips(quick=False)
    for fmt_name, fmt in accuracy.CLI_FORMATS.items():
        cases = {
            p.cli.split("/")[1] for p in plans if p.cli.startswith(fmt_name + "/") and p.kind == "defects"
        }
        assert ("stereo" in cases) is (fmt.channels == 2)
        assert ("dialogue" in cases) is (fmt.channels == 6)
        assert {"picture", "overlay", "sound"} <= cases
    clean_s = sum(p.duration_s for p in plans if p.kind == "clean")
    assert clean_s >= 30 * 60
    assert {p.cli.split("/")[1] for p in plans if p.kind == "clean"} == {
        f"clean-{kind}" for kind in accuracy.CLEAN_KINDS
    }


def test_centre_channel_lost_in_ac3_5_1_is_matched_as_silence(tmp_path: Path) -> None:
    plan = accuracy.ClipPlan("cli-dialogue", "defects", 30.0, cli="hevc-ac3-51/dialogue")
    result = accuracy.run_clip(plan, tmp_path)
    assert [t.label() for t in result.truths] == ["silence@4.00-14.00", "silence@20.00-24.00"]
    assert result.missed == [] and result.false == []
    assert {m.found.key for m in result.matches} == {"FC", ""}
    assert all(abs(m.start_error) <= accuracy.TOLERANCE_S for m in result.matches)


@pytest.mark.slow
def test_the_ffmpeg_cli_corpus_meets_the_targets_per_format(tmp_path: Path) -> None:
    results = [accuracy.run_clip(plan, tmp_path) for plan in accuracy.cli_clips(quick=False)]
    for _, name, fig in accuracy.by_cli_format(results):
        assert fig.fp == 0, name
        if fig.truths:
            assert fig.recall is not None and fig.recall >= accuracy.TARGET_RECALL, name
            assert fig.max_start_error is not None and fig.max_start_error <= accuracy.TOLERANCE_S, name
