"""A new detector is one module dropped into ``worker/detectors/``: registered by the package's
own scan, configured from the deployment's settings, its defects reported through the API."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import worker.detectors as detectors
from avmon import testsrc
from tests.conftest import Api, WorkerFactory, wait_for
from worker.detectors import registry

# A defect type no registered detector reports, and nothing else on a local file (it is HLS's).
TYPE = "rendition_mismatch"
MODULE = '''
from dataclasses import dataclass

from shared.models import DefectType
from worker.detectors import Detector, DetectorOptions, Finding, RunTracker, Severity, opt


@dataclass(frozen=True, slots=True)
class BrightOptions(DetectorOptions):
    d: float = opt(10.0, "s", "minimum duration of a bright run", ge=0.0)
    level: float = opt(255.0, "code", "a picture whose mean luma is above this is bright", ge=0.0, le=255.0)


class BrightDetector(Detector):
    """Reports runs of bright pictures (a test's detector: by default it never fires)."""

    name = DefectType.RENDITION_MISMATCH
    Options = BrightOptions

    def __init__(self, options=None, ctx=None):
        super().__init__(options, ctx)
        self._run = RunTracker(self.options.d)

    def feed_video(self, frame):
        if float(frame.luma.mean()) <= self.options.level:
            return [self._finding(s, e) for s, e in self._run.stop(frame.t)]
        return [self._finding(self._run.start, None)] if self._run.extend(frame.t) else []

    def flush(self, t_end):
        return [self._finding(s, e) for s, e in self._run.stop(t_end)]

    def _finding(self, start, end):
        return Finding(self.name, start, end, Severity.WARNING, {"d": self.options.d})
'''


@pytest.fixture
def dropped(tmp_path: Path) -> Path:
    """A directory holding the new module, to be scanned as part of ``worker.detectors``."""
    folder = tmp_path / "detectors"
    folder.mkdir()
    (folder / "bright.py").write_text(MODULE)
    return folder


@pytest.fixture
def in_package(dropped: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(detectors, "__path__", [*detectors.__path__, str(dropped)])
    registry.cache_clear()
    yield
    sys.modules.pop("worker.detectors.bright", None)
    registry.cache_clear()


def test_a_dropped_module_is_registered_and_takes_its_options_from_settings(in_package: None) -> None:
    assert registry()[TYPE].__name__ == "BrightDetector"
    options = detectors.resolve_options("ebu_r128", {TYPE: {"d": 1.5}})
    assert options[TYPE].d == 1.5 and options[TYPE].level == 255.0


def test_a_dropped_detector_is_configured_from_settings_and_its_defects_reach_the_api(
    router: Api, workers: WorkerFactory, dropped: Path, tmp_path: Path
) -> None:
    clip = tmp_path / "clean.ts"
    testsrc.generate(clip, duration_s=4.0, defects=[], seed=2, width=320, height=180)
    # The worker process sees the module as part of the package: its start-up appends the folder
    # to worker.detectors' path, as a module copied into worker/detectors/ would be found.
    hook = tmp_path / "hook"
    hook.mkdir()
    hook_code = f"import worker.detectors\nworker.detectors.__path__.append({str(dropped)!r})\n"
    (hook / "sitecustomize.py").write_text(hook_code)
    workers(
        "w1",
        PYTHONPATH=str(hook),
        AVMON_MEDIA_PROCESSES="1",
        AVMON_DETECTOR_OPTIONS=f'{{"{TYPE}": {{"d": 1.5, "level": 0}}}}',
    )
    url = clip.resolve().as_uri()
    ids = []
    for own in (None, {TYPE: {"d": 2.5}}):  # the deployment's options, then the stream's over them
        status, body = router.call("POST", "/streams", {"url": url, "detector_options": own})
        assert status == 201, body
        ids.append(body["stream_id"])

    def completed() -> bool:
        return all(router.call("GET", f"/streams/{sid}")[1]["status"] == "COMPLETED" for sid in ids)

    wait_for(completed, 60, what="the streams to complete")
    for stream_id, d in zip(ids, (1.5, 2.5), strict=True):
        status, found = router.call("GET", f"/streams/{stream_id}/defects")
        assert status == 200, found
        defects: list[dict[str, Any]] = [x for x in found["defects"] if x["type"] == TYPE]
        [defect] = defects
        assert defect["metrics"]["d"] == d  # not the module's default of 10 s
        assert defect["start_s"] < 0.2 and defect["end_s"] > 3.5
