"""The whole system: emulator, router over HTTP, real worker processes, generated media."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from avmon import testsrc
from tests.conftest import Api, Stack, WorkerFactory
from tests.media import ffmpeg, make_testsrc
from tests.support import wait_for

TOLERANCE_S = 0.5
SCRIPTS = {
    "black_silence.ts": "black@4+3,silence@11+3",
    "freeze.mp4": "freeze@5+4",
    "clean.ts": "",
}


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, testsrc.GroundTruth]]:
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for n, (name, script) in enumerate(SCRIPTS.items()):
        path = root / name
        truth = make_testsrc(path, duration_s=16.0, script=script, seed=n + 1)
        out[name] = (path, truth)
    return out


def _stream(api: Api, stream_id: str) -> dict[str, Any]:
    status, body = api.call("GET", f"/streams/{stream_id}")
    assert status == 200, body
    return dict(body)


def _defects(api: Api, stream_id: str) -> list[dict[str, Any]]:
    status, body = api.call("GET", f"/streams/{stream_id}/defects")
    assert status == 200, body
    return list(body["defects"])


def _submit(api: Api, path: Path, **extra: Any) -> str:
    status, body = api.call("POST", "/streams", {"url": path.resolve().as_uri(), "name": path.name, **extra})
    assert status == 201, body
    return str(body["stream_id"])


def _matches(found: list[dict[str, Any]], truth: testsrc.GroundTruth) -> None:
    expected = sorted((d["type"], d["start_s"], d["end_s"]) for d in truth.defects)
    got = sorted((d["type"], d["start_s"], d["end_s"]) for d in found)
    assert [g[0] for g in got] == [e[0] for e in expected], f"expected {expected}, found {got}"
    for (_, gs, ge), (_, es, ee) in zip(got, expected, strict=True):
        assert abs(gs - es) <= TOLERANCE_S and ge is not None and abs(ge - ee) <= TOLERANCE_S, (got, expected)


def _check_evidence(api: Api, defect: dict[str, Any]) -> None:
    """A thumbnail that decodes as a JPEG of the right size and shows the defect, and a trace."""
    status, evidence = api.call("GET", defect["evidence_url"])
    assert status == 200, evidence
    start = next(t for t in evidence["thumbnails"] if t["role"] == "start")
    picture = cv2.imdecode(np.frombuffer(base64.b64decode(start["jpeg_b64"]), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert picture is not None and picture.shape == (90, 160) == (start["height"], start["width"])
    if defect["type"] == "black":
        assert picture.mean() < 8
    else:
        assert picture.mean() > 40
    assert evidence["trace"]["luma_mean"] and evidence["trace"]["audio_rms_dbfs"]


def test_generated_streams_are_monitored_end_to_end(
    router: Api, workers: WorkerFactory, clips: dict[str, tuple[Path, testsrc.GroundTruth]]
) -> None:
    workers("w1")
    workers("w2")
    ids = {name: _submit(router, path) for name, (path, _) in clips.items()}
    for name, stream_id in ids.items():
        wait_for(
            lambda sid=stream_id: _stream(router, sid)["status"] == "COMPLETED",
            90,
            what=f"{name} to complete",
        )
    owners = set()
    for name, stream_id in ids.items():
        found = _defects(router, stream_id)
        _matches(found, clips[name][1])
        owners |= {d["worker_id"] for d in found}
        for defect in found:
            _check_evidence(router, defect)
        stream = _stream(router, stream_id)
        assert stream["desired"] == "STOPPED" and stream["owner"] is None and stream["frames_analysed"] > 0
    assert owners <= {"w1", "w2"}


@pytest.fixture(scope="module")
def quiet_programme(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A programme at -28.7 LUFS (a 1 kHz tone in both channels, ffmpeg CLI, MP2): out of EBU
    R128's -23 ± 5 LU, inside ATSC A/85's -24 ± 5."""
    clip = tmp_path_factory.mktemp("loudness") / "quiet.ts"
    tone = "0.0367*sin(2*PI*1000*t)"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=14",
        "-f", "lavfi", "-i", f"aevalsrc='{tone}|{tone}':s=48000:d=14",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "mp2", "-b:a", "192k",
        "-f", "mpegts", str(clip),
    )  # fmt: skip
    return clip


def test_a_streams_loudness_profile_decides_whether_its_programme_is_in_range(
    router: Api, workers: WorkerFactory, quiet_programme: Path
) -> None:
    clip = quiet_programme
    workers("w1")
    r128, a85 = _submit(router, clip), _submit(router, clip, loudness_profile="atsc_a85")
    for stream_id in (r128, a85):
        wait_for(lambda sid=stream_id: _stream(router, sid)["status"] == "COMPLETED", 60, what="completion")
    assert [(d["type"], d["metrics"]["target_lufs"]) for d in _defects(router, r128)] == [("loudness", -23.0)]
    assert _defects(router, a85) == []
    assert _stream(router, a85)["loudness_profile"] == "atsc_a85"


def test_delete_stops_monitoring_within_one_lease_period(
    router: Api, workers: WorkerFactory, stack: Stack, clips: dict[str, tuple[Path, testsrc.GroundTruth]]
) -> None:
    workers("w1")
    stream_id = _submit(router, clips["clean.ts"][0], realtime=True)
    wait_for(lambda: _stream(router, stream_id)["owner"] == "w1", 30, what="the worker to take the stream")
    deleted_at = time.monotonic()
    status, _ = router.call("DELETE", f"/streams/{stream_id}")
    assert status == 200
    lease_period = float(stack.env["AVMON_LEASE_PERIOD_S"])
    wait_for(
        lambda: _stream(router, stream_id)["owner"] is None, lease_period + 2, what="the lease to be released"
    )
    assert time.monotonic() - deleted_at <= lease_period + 2
    frames = _stream(router, stream_id)["frames_analysed"]
    time.sleep(lease_period / 3 + 0.5)
    stream = _stream(router, stream_id)
    assert stream["status"] == "STOPPED" and stream["frames_analysed"] == frames


def test_duplicate_assignments_never_make_two_owners(
    router: Api,
    workers: WorkerFactory,
    stack: Stack,
    sqs_client: Any,
    clips: dict[str, tuple[Path, testsrc.GroundTruth]],
) -> None:
    workers("w1")
    workers("w2")
    stream_id = _submit(router, clips["clean.ts"][0], realtime=True)
    sqs = sqs_client
    for _ in range(3):
        sqs.send_message(
            QueueUrl=stack.queue_url, MessageBody=json.dumps({"stream_id": stream_id, "generation": 1})
        )

    def drained() -> bool:
        attrs = sqs.get_queue_attributes(
            QueueUrl=stack.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return attrs == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}

    wait_for(drained, 30, what="every assignment to be consumed")
    stream = _stream(router, stream_id)
    assert stream["owner"] in {"w1", "w2"}
    assert stream["lease_counter"] == 1  # exactly one claim ever succeeded


def test_poison_assignment_goes_to_the_dead_letter_queue(
    router: Api, workers: WorkerFactory, stack: Stack, sqs_client: Any
) -> None:
    worker = workers("w1")
    sqs = sqs_client
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody="this is not an assignment")

    def in_dlq() -> bool:
        got = sqs.receive_message(QueueUrl=stack.dlq_url, WaitTimeSeconds=1)
        return any(m["Body"] == "this is not an assignment" for m in got.get("Messages", []))

    wait_for(in_dlq, 60, what="the poison message in the DLQ")
    assert worker.poll() is None


def test_analyze_json_prints_exactly_the_injected_defects(
    clips: dict[str, tuple[Path, testsrc.GroundTruth]],
) -> None:
    path, truth = clips["black_silence.ts"]
    out = subprocess.run(
        [sys.executable, "-m", "avmon", "analyze", str(path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = [json.loads(line) for line in out.stdout.splitlines()]
    _matches(found, truth)
    for record in found:
        assert {
            "stream_id",
            "defect_id",
            "type",
            "start_s",
            "end_s",
            "start_at",
            "end_at",
            "severity",
            "metrics",
            "worker_id",
        } <= set(record)


def test_analyze_judges_loudness_against_the_profile_it_is_given(quiet_programme: Path) -> None:
    def analyze(*extra: str) -> list[str]:
        command = [sys.executable, "-m", "avmon", "analyze", str(quiet_programme), "--json", *extra]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        return [json.loads(line)["type"] for line in out.stdout.splitlines()]

    assert analyze() == ["loudness"]
    assert analyze("--loudness-profile", "atsc_a85") == []


def test_analyze_json_is_silent_on_a_clean_clip(clips: dict[str, tuple[Path, testsrc.GroundTruth]]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "avmon", "analyze", str(clips["clean.ts"][0]), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == ""


def test_analyze_of_a_missing_file_fails_with_a_message(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "avmon", "analyze", str(tmp_path / "nope.ts"), "--json"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "cannot read" in out.stderr and out.stdout == ""


def test_sigterm_hands_streams_back_and_another_worker_takes_them(
    router: Api, workers: WorkerFactory, clips: dict[str, tuple[Path, testsrc.GroundTruth]]
) -> None:
    first = workers("w1")
    stream_id = _submit(router, clips["clean.ts"][0], realtime=True)
    wait_for(lambda: _stream(router, stream_id)["owner"] == "w1", 30, what="w1 to take the stream")
    workers("w2")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=25) == 0
    wait_for(lambda: _stream(router, stream_id)["owner"] == "w2", 10, what="w2 to take the stream over")
