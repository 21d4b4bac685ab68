"""Which detectors run, and with which options: per deployment (settings), per stream (a
profile or a list, through the API), and for `avmon analyze`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avmon import testsrc
from avmon.cli import PROFILE_NAMES, main
from shared.models import DETECTOR_PROFILES, chosen_detectors
from shared.settings import WorkerSettings
from tests.conftest import Stack
from tests.test_router_api import get, post
from worker.clients import Clients
from worker.main import Worker
from worker.session import Outcome, SessionConfig, StreamSession

URL = "https://example.com/live.m3u8"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "clip.ts"
    script = testsrc.parse_script("black@1+2.5,silence@2+2.5")
    testsrc.generate(path, duration_s=5.0, defects=script, seed=4, width=320, height=180)
    return path


def analyze_types(clip: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    with pytest.raises(SystemExit) as done:
        main(["analyze", str(clip), "--json", *args])
    assert done.value.code == 0
    return sorted(json.loads(line)["type"] for line in capsys.readouterr().out.splitlines())


def test_a_stream_runs_every_detector_unless_it_names_a_profile_or_a_list(stack: Stack) -> None:
    _, plain = post({"url": URL})
    _, sound = post({"url": URL, "profile": "sound"})
    _, listed = post({"url": URL, "detectors": ["freeze", "black", "black"]})
    shown = {name: get(f"/streams/{body['stream_id']}")[1] for name, body in
             (("plain", plain), ("sound", sound), ("listed", listed))}  # fmt: skip
    assert shown["plain"]["profile"] == "full"
    assert shown["plain"]["detectors"] == sorted(DETECTOR_PROFILES["full"])
    assert shown["sound"]["detectors"] == sorted(DETECTOR_PROFILES["sound"])
    assert "silence" in shown["sound"]["detectors"] and "black" not in shown["sound"]["detectors"]
    assert shown["listed"]["detectors"] == ["black", "freeze"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"detectors": ["black", "sparkle"]}, "unknown detector 'sparkle'"),
        ({"detectors": []}, "name at least one detector"),
        ({"profile": "everything"}, "'full', 'picture', 'sound' or 'transport-light'"),
        ({"profile": "sound", "detectors": ["black"]}, "not both"),
    ],
)
def test_an_unknown_detector_or_profile_is_a_422_with_the_reason(
    stack: Stack, body: dict[str, object], reason: str
) -> None:
    status, answer = post({"url": URL, **body})
    assert status == 422
    assert reason in json.dumps(answer)


def test_a_stream_may_set_its_own_detector_options(stack: Stack) -> None:
    _, body = post({"url": URL, "detector_options": {"freeze": {"d": 3, "row_step": 2}}})
    assert get(f"/streams/{body['stream_id']}")[1]["detector_options"] == {"freeze": {"d": 3, "row_step": 2}}
    status, answer = post({"url": URL, "detector_options": {"sparkle": {"d": 3}}})
    assert status == 422 and "unknown detector 'sparkle'" in json.dumps(answer)


def test_a_stream_whose_own_options_are_out_of_range_is_refused_with_the_reason(clip: Path) -> None:
    own = {"freeze": {"d": -1}}
    config = SessionConfig(url=clip.resolve().as_uri(), reconnect=False, detector_options=own)
    outcome, reason = StreamSession("s-refused", config, lambda *_: None).run()
    assert outcome is Outcome.REFUSED
    assert reason == "detector_options: freeze: d must be in [0, inf) s, got -1"


def test_the_worker_runs_all_registered_detectors_for_the_full_profile_and_the_named_ones_otherwise() -> None:
    assert chosen_detectors("full") is None
    assert chosen_detectors("transport-light") == {"black", "silence", "decode_error", "timestamp_jump"}
    assert chosen_detectors("full", ["freeze"]) == {"freeze"}
    assert set(PROFILE_NAMES) == set(DETECTOR_PROFILES)  # `avmon analyze --profile`'s choices


def start_worker(detector_options: dict[str, dict[str, object]]) -> Worker:
    """A worker on these options, with no AWS: it refuses them before any call."""
    settings = WorkerSettings(detector_options=detector_options)
    return Worker(settings, clients=Clients(ddb=None, sqs=None, sns=None), queue_url="")


def test_a_worker_refuses_to_start_on_options_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="AVMON_DETECTOR_OPTIONS: freeze: unknown option 'min_duration_s'"):
        start_worker({"freeze": {"min_duration_s": 3}})
    with pytest.raises(ValueError, match=r"AVMON_DETECTOR_OPTIONS: black: pic_th must be in \[0, 1\]"):
        start_worker({"black": {"pic_th": 2}})


def test_analyze_runs_the_detectors_or_the_profile_it_is_given(
    clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert analyze_types(clip, capsys) == ["black", "silence"]
    assert analyze_types(clip, capsys, "--detectors", "black,freeze") == ["black"]
    assert analyze_types(clip, capsys, "--profile", "sound") == ["silence"]


def test_analyze_takes_the_deployments_detector_options(
    clip: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVMON_DETECTOR_OPTIONS", json.dumps({"black": {"d": 3}}))  # the clip's is 2.5 s
    assert analyze_types(clip, capsys) == ["silence"]
    monkeypatch.setenv("AVMON_DETECTOR_OPTIONS", json.dumps({"black": {"d": -3}}))
    with pytest.raises(SystemExit) as done:
        main(["analyze", str(clip), "--json"])
    assert done.value.code == 2
    assert "AVMON_DETECTOR_OPTIONS: black: d must be in [0, inf) s, got -3" in capsys.readouterr().err
