"""The detector contract: registration, typed findings, declared options, the run tracker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import worker.detectors as detectors
from shared.models import DETECTOR_PROFILES, DETECTORS, DefectType
from tests.test_detector_freeze import hold, run
from worker.detectors import (
    Detector,
    DetectorOptions,
    Finding,
    RegistrationError,
    RunTracker,
    Severity,
    StreamContext,
    parse_options,
    registry,
    resolve_options,
)
from worker.detectors.black import BlackDetector, BlackOptions
from worker.detectors.doc import markdown
from worker.detectors.freeze import FreezeOptions
from worker.detectors.silence import SilenceOptions

# Adding a detector is a conscious change: its name joins this list, shared.models.DETECTORS
# and DESIGN.md §4's types.
REGISTERED = [
    "av_sync",
    "black",
    "blockiness",
    "clipping",
    "decode_error",
    "freeze",
    "loudness",
    "phase_inversion",
    "silence",
    "stereo_collapsed",
    "stutter",
    "timestamp_jump",
]


@pytest.fixture
def drop_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory scanned as part of ``worker.detectors``: a module written there is one
    dropped into the package (the registry's own scan finds it)."""
    monkeypatch.setattr(detectors, "__path__", [*detectors.__path__, str(tmp_path)])
    registry.cache_clear()
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("worker.detectors."):
            del sys.modules[name]
    registry.cache_clear()


def test_the_registered_detectors_are_exactly_the_pinned_ones() -> None:
    assert list(registry()) == REGISTERED
    assert sorted(DETECTORS) == REGISTERED  # what the router validates stream requests against


def test_every_registered_detector_declares_typed_documented_options() -> None:
    for name, cls in registry().items():
        assert isinstance(cls.name, DefectType) and cls.name == name
        assert issubclass(cls.Options, DetectorOptions)
        declared = cls.Options.declared()
        assert declared, name
        for option, (_, decl) in declared.items():
            assert decl.doc and decl.unit, (name, option)
            assert f"\n    {option} " in (cls.Options.__doc__ or ""), (name, option)  # the docstring's table
        cls.Options()  # the defaults are in range


def test_the_option_tables_are_generated_from_the_declarations() -> None:
    text = markdown(["black", "freeze"])
    assert "| `pic_th` | fraction | 0.98 | [0, 1] | share of black pixels" in text
    assert "| `row_step` | rows | 4 | 1, 2, 4, 8 |" in text
    assert "### `black`" in text and "### `freeze`" in text


def test_a_detector_named_after_no_defect_type_is_refused_at_registration(drop_in: Path) -> None:
    (drop_in / "sparkle.py").write_text(
        "from dataclasses import dataclass\n"
        "from worker.detectors import Detector, DetectorOptions\n"
        "@dataclass(frozen=True, slots=True)\n"
        "class SparkleOptions(DetectorOptions):\n"
        "    pass\n"
        "class SparkleDetector(Detector):\n"
        "    name = 'sparkle'\n"
        "    Options = SparkleOptions\n"
    )
    with pytest.raises(RegistrationError, match=r"named 'sparkle', which is not a defect type.*DefectType"):
        registry()


def test_a_detector_without_declared_options_is_refused() -> None:
    class Untyped(Detector):
        name = "black"
        Options = dict

    with pytest.raises(RegistrationError, match="Options must be a DetectorOptions"):
        detectors.check_detector(Untyped)


def test_a_finding_carries_a_defect_type_and_refuses_any_other_name() -> None:
    assert Finding("black", 1.0, None, Severity.CRITICAL).type is DefectType.BLACK
    with pytest.raises(ValueError, match="sparkle"):
        Finding("sparkle", 1.0, None, Severity.WARNING)


def test_an_option_out_of_its_declared_range_is_refused_with_its_range() -> None:
    with pytest.raises(ValueError, match=r"pic_th must be in \[0, 1\] fraction, got 1.5"):
        BlackOptions(pic_th=1.5)
    with pytest.raises(ValueError, match=r"row_step must be one of 1, 2, 4, 8, got 3"):
        FreezeOptions(row_step=3)
    with pytest.raises(ValueError, match=r"window_s must be in \[hop_s, 10\] s \(hop_s = 0.5\), got 0.4"):
        SilenceOptions(hop_s=0.5)
    with pytest.raises(ValueError, match="d must be a number, got '2'"):
        BlackOptions(d="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"row_step must be a whole number, got 2\.5"):
        BlackOptions(row_step=2.5)  # type: ignore[arg-type]


def test_options_from_json_values_take_the_declared_types() -> None:
    options = parse_options({"black": {"d": 3}, "silence": {"exempt": ["LFE", "FC"]}})
    assert options["black"] == BlackOptions(d=3.0) and isinstance(options["black"].d, float)
    assert options["silence"].exempt == ("LFE", "FC")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sparkle": {}}, "unknown detector 'sparkle'; known: av_sync, black"),
        ({"freeze": {"min_duration_s": 3}}, "freeze: unknown option 'min_duration_s'; known: n, d,"),
        ({"freeze": {"d": -1}}, r"freeze: d must be in \[0, inf\) s, got -1"),
        ({"freeze": 3}, "freeze: options must be an object"),
    ],
)
def test_option_values_naming_nothing_known_or_out_of_range_are_refused(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(values)  # type: ignore[arg-type]


def test_later_option_layers_win_over_the_loudness_profile() -> None:
    options = resolve_options("atsc_a85", {"loudness": {"tolerance": 2}}, {"clipping": {"d": 0.5}})
    assert (options["loudness"].target, options["loudness"].tolerance) == (-24.0, 2.0)
    assert (options["clipping"].tp_dbtp, options["clipping"].d) == (-2.0, 0.5)
    assert resolve_options("ebu_r128", {"loudness": {"target": -16}})["loudness"].target == -16.0


def test_the_run_tracker_opens_after_the_minimum_and_reports_whole_what_proves_long_at_its_end() -> None:
    run_ = RunTracker(2.0)
    assert not run_.extend(0.0) and not run_.extend(1.9) and run_.extend(2.0) and not run_.extend(3.0)
    assert run_.stop(4.0) == [(0.0, 4.0)] and not run_.active
    assert not run_.extend(5.0) and run_.stop(7.0) == [(5.0, None), (5.0, 7.0)]  # exactly d, known at the end
    assert not run_.extend(8.0) and run_.stop(9.0) == []  # too short
    # Not eligible (freeze: the held picture is black): never opens.
    assert not run_.extend(10.0) and not run_.extend(12.0, lambda: False)
    assert run_.stop(13.0, lambda: False) == []


def test_freeze_leaves_to_black_the_pictures_black_calls_black_with_the_options_it_runs_with() -> None:
    dark = np.full((96, 160), 45, np.uint8)  # above blackdetect's 37 (pix_th 0.10), under 0.2's
    picture = hold(25, 125, lambda i: dark)
    assert [f.type for f in run(picture, 6.0) if f.end_s is not None] == ["freeze"]
    ctx = StreamContext()
    BlackDetector(BlackOptions(pix_th=0.2), ctx)
    assert ctx.black_picture.pix_th == 0.2
    assert run(picture, 6.0, ctx=ctx) == []


def test_every_profile_names_registered_detectors() -> None:
    assert set(DETECTOR_PROFILES["full"]) == set(registry())
    for name, members in DETECTOR_PROFILES.items():
        assert members and set(members) <= set(registry()), name
