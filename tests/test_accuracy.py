"""Detector accuracy (bench/accuracy.py): the matching rules, the corpus's rules, and a small
corpus through the real pipeline: one defect of each core type and two hard negatives must give
recall 1.0, precision 1.0 and a mean start error within the target. The full corpus is
``pytest -m slow`` (or ``python -m bench.accuracy``)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from avmon import testsrc
from bench import accuracy
from bench.accuracy import ClipPlan, ClipResult, Found, Truth, match


def truth(kind: str, start: float, end: float, **params: object) -> Truth:
    return Truth(kind, start, end, dict(params))


def found(kind: str, start: float, end: float | None = None, key: str = "") -> Found:
    return Found(kind, start, end if end is not None else start + 3, key, "critical", {})


# -- matching ---------------------------------------------------------------------------------------


def test_a_start_within_the_tolerance_matches_and_one_beyond_is_a_miss_and_a_false_positive() -> None:
    result = match(
        [truth("black", 5.0, 8.0), truth("black", 20.0, 23.0)], [found("black", 5.4), found("black", 20.6)]
    )
    assert [(m.truth.start_s, m.found.start_s) for m in result.matches] == [(5.0, 5.4)]
    assert [t.start_s for t in result.missed] == [20.0]
    assert [f.start_s for f in result.false] == [20.6]


def test_pairs_are_one_to_one_closest_first() -> None:
    result = match([truth("silence", 5.0, 8.0), truth("silence", 5.8, 9.0)], [found("silence", 5.7)])
    [m] = result.matches
    assert m.truth.start_s == 5.8
    assert [t.start_s for t in result.missed] == [5.0]
    assert not result.false


def test_other_types_never_match() -> None:
    result = match([truth("freeze", 5.0, 8.0)], [found("black", 5.0)])
    assert not result.matches and len(result.missed) == 1 and len(result.false) == 1


def test_blockiness_stands_for_decode_error_and_a_second_record_is_a_duplicate() -> None:
    damage = truth("decode_error", 4.0, 6.0, expect=["decode_error", "blockiness"], recovers_by_s=6.0)
    both = match([damage], [found("blockiness", 3.9), found("decode_error", 4.1, key="video")])
    [m] = both.matches
    assert m.found.type == "decode_error"  # the truth's own type is preferred
    assert [f.type for f, _ in both.duplicates] == ["blockiness"] and not both.false
    alone = match([damage], [found("blockiness", 3.9)])
    assert [m.found.type for m in alone.matches] == ["blockiness"]


def test_blockiness_without_damage_is_a_false_positive() -> None:
    result = match([truth("black", 5.0, 8.0)], [found("black", 5.0), found("blockiness", 12.0)])
    assert [f.type for f in result.false] == ["blockiness"]


def test_a_timestamp_jump_reported_per_stream_is_one_hit_and_one_duplicate() -> None:
    jump = Truth.of({"type": "timestamp_jump", "start_s": 12.0, "end_s": 12.0, "params": {"jump_s": 3.0}})
    assert jump.end_s == 15.0  # the detector's end: the first time after the jump
    result = match(
        [jump],
        [found("timestamp_jump", 11.96, 15.0, "video"), found("timestamp_jump", 11.99, 15.01, "audio")],
    )
    assert len(result.matches) == 1 and len(result.duplicates) == 1 and not result.false


def test_figures_count_false_positives_of_clean_clips_and_skip_documented_limits() -> None:
    def clip(kind: accuracy.Kind, r: ClipResult) -> ClipResult:
        r.plan = ClipPlan("x", kind)
        return r

    results = [
        clip("defects", match([truth("black", 5.0, 8.0)], [found("black", 5.1, 8.0)])),
        clip("hard", match([], [found("black", 3.0)])),
        clip("limit", match([], [found("freeze", 0.0)])),
    ]
    table = accuracy.figures(results)
    black = table["black"]
    assert (black.truths, black.found, black.tp, black.fp) == (1, 2, 1, 1)
    assert black.recall == 1.0 and black.precision == 0.5
    assert black.mean_start_error == pytest.approx(0.1)
    assert table["freeze"].found == 0
    assert black.targets() == {"recall": True, "precision": False, "start_error": True}


def test_av_sync_matches_compare_the_offset() -> None:
    sync = truth("av_sync", 10.0, 18.0, offset_ms=200.0)
    f = Found("av_sync", 10.02, 18.02, "", "critical", {"offset_ms": 212.0})
    [m] = match([sync], [f]).matches
    assert m.offset_error_ms == pytest.approx(12.0)


# -- the corpus -------------------------------------------------------------------------------------


@pytest.mark.parametrize("quick", [True, False])
def test_corpus_defects_parse_fit_and_keep_their_distances(quick: bool) -> None:
    plans = accuracy.corpus(quick=quick, seed=1)
    defect_clips = [p for p in plans if p.kind == "defects"]
    assert {p.kind for p in plans} == {"defects", "clean", "hard", "limit"}
    assert {p.recipe for p in plans if p.kind == "hard"} == set(accuracy.HARD_NEGATIVES)
    drawn = set()
    for plan in defect_clips:
        specs = testsrc.validate_defects(testsrc.parse_script(plan.script), plan.duration_s)
        assert 2 <= len(specs) <= 4, plan
        drawn |= {s.type for s in specs}
        if any(s.type == "av_offset" for s in specs):
            assert plan.sync_marks
        for a, b in itertools.combinations(specs, 2):
            gap = max(b.start_s - a.end_s, a.start_s - b.end_s)
            assert gap >= accuracy.MARGIN_S - 1e-9, (plan.script, a, b)
            if a.type == b.type:
                assert gap >= accuracy.SAME_TYPE_GAP_S - 1e-9
            if "loudness" in (a.type, b.type) and {a.type, b.type} <= accuracy.SOUND_TYPES:
                assert gap >= accuracy.AUDIO_MARGIN_S - 1e-9
        for s in specs:
            assert s.start_s >= accuracy.EDGE_S and s.end_s <= plan.duration_s - accuracy.EDGE_S
            if s.type == "loudness":
                assert s.duration_s >= 10.0 and 12 <= abs(s.params["gain_db"]) <= 20
                assert s.end_s <= plan.duration_s - accuracy.EDGE_S - accuracy.LOUDNESS_TAIL_S
    assert drawn == set(accuracy.DRAWN)
    encoded = {p.encoder for p in defect_clips if p.encoder}
    assert encoded == (set() if quick else set(accuracy.ENCODERS))
    for plan in defect_clips:
        if plan.encoder:  # only what survives decoding and encoding again
            assert {s.type for s in testsrc.parse_script(plan.script)} <= set(accuracy.CONTENT_KINDS)
            assert plan.ext == accuracy.ENCODERS[plan.encoder].ext
    assert accuracy.corpus(quick=quick, seed=1) == plans  # seeded: the same corpus every run


def test_user_clips_takes_every_media_file_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.ts", "sub/b.MP4", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    plans = accuracy.user_clips(tmp_path)
    assert [Path(p.path).name for p in plans] == ["a.ts", "b.MP4"]
    assert {p.kind for p in plans} == {"user"}
    with pytest.raises(SystemExit):
        accuracy.user_clips(tmp_path / "sub" / "empty")


# -- a small corpus through the pipeline ------------------------------------------------------------

SMALL = [
    ClipPlan("ci-video", "defects", 20.0, 21, script="black@2.5+3, freeze@8.2+3, silence@13.6+3.2"),
    ClipPlan(
        "ci-audio", "defects", 26.0, 22, ext=".mp4", script="clipping@2.4+1.2, loudness@8.3+13:gain_db=-16"
    ),
    ClipPlan("ci-mpeg2", "defects", 14.0, 25, ext=".ts", script="freeze@3+4, black@8+3", encoder="mpeg2"),
    ClipPlan("ci-fade", "hard", 12.0, 23, recipe="fade"),
    ClipPlan("ci-card", "hard", 12.0, 24, recipe="static_card"),
]
CORE = ("black", "freeze", "silence", "clipping", "loudness")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> list[ClipResult]:
    out = tmp_path_factory.mktemp("accuracy")
    return [accuracy.run_clip(plan, out) for plan in SMALL]


def test_each_core_type_is_found_once_where_it_was_injected(small: list[ClipResult]) -> None:
    table = accuracy.figures(small)
    for kind in CORE:
        fig = table[kind]
        assert fig.truths >= 1, kind
        assert fig.recall == 1.0 and fig.precision == 1.0, (kind, [r.found for r in small])
        error = fig.mean_start_error
        assert error is not None and error <= accuracy.TARGET_START_ERROR_S, kind
    assert sum(fig.fp for fig in table.values()) == 0


def test_hard_negatives_give_no_defect(small: list[ClipResult]) -> None:
    for r in small:
        if r.plan.kind == "hard":
            assert r.found == [], (r.plan.recipe, r.found)


def test_a_clean_folder_is_analysed_as_real_footage(small: list[ClipResult], tmp_path: Path) -> None:
    # What --clean DIR does, on a hard negative standing in for a real clip.
    card = next(r for r in small if r.plan.recipe == "static_card")
    shutil.copy(card.media, tmp_path / "real.ts")
    [plan] = accuracy.user_clips(tmp_path)
    result = accuracy.run_clip(plan, tmp_path / "out")
    assert result.truths == [] and result.found == [] and result.media_s > 10


def test_the_report_says_where_real_footage_is_missing_and_how_to_add_it(small: list[ClipResult]) -> None:
    meta = {"args": "", "seed": 1, "wall_s": 1.0, "machine": "test"}
    text = accuracy.render(small, meta)
    assert "Real footage was not available" in text and "--clean DIR" in text
    assert "| black | 2 | 2 | 2 | 0 | 0 | 0 | 1.00 | 1.00 |" in text  # ci-video and ci-mpeg2
    assert "| ci-fade |" in text and "| ci-card |" in text
    assert '"truths"' in accuracy.to_json(small, meta, [])


# -- the full corpus --------------------------------------------------------------------------------


# Targets the full corpus does not meet today, and why (see the accuracy report's misses). strict:
# once a type meets its targets, its entry must go.
KNOWN_UNMET: dict[str, str] = {}


@pytest.fixture(scope="module")
def full_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("accuracy-full")
    with contextlib.redirect_stdout(io.StringIO()):
        assert accuracy.main(["--out", str(out), "--no-ffmpeg"]) == 0
    doc: dict[str, Any] = json.loads((out / "accuracy.json").read_text())
    return doc


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the corpus is made and analysed in the first test's setup
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=KNOWN_UNMET[k]))
        if k in KNOWN_UNMET
        else k
        for k in accuracy.REPORT_TYPES
    ],
)
def test_full_corpus_meets_the_targets(kind: str, full_corpus: dict[str, Any]) -> None:
    row = full_corpus["types"][kind]
    unmet = [name for name, met in row["targets"].items() if met is False]
    assert not unmet, f"{kind}: {unmet} not met: {row}"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the corpus is made and analysed in the first test's setup
def test_full_corpus_clean_clips_and_hard_negatives_give_no_defect(full_corpus: dict[str, Any]) -> None:
    negatives = [c for c in full_corpus["clips"] if c["plan"]["kind"] in ("clean", "hard")]
    assert len(negatives) >= 20
    assert [(c["plan"]["name"], c["found"]) for c in negatives if c["found"]] == []
