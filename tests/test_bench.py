"""The benchmarks' code runs and gives sane numbers, on tiny media (no timing assertions: the
machine is shared, so only "positive and finite" is asserted of a time)."""

from __future__ import annotations

import http.server
import math
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import report
from bench.aws_calls import PER_WORKER_OPS, count_calls
from bench.breakdown import ALL, measure_breakdown
from bench.capacity import Run
from bench.clips import Clip, decode, ensure_clip
from bench.detectors import measure_detectors
from bench.ffmpeg import compare_with_ffmpeg
from bench.machine import describe
from bench.per_frame import measure_per_frame
from bench.prices import PRICES, request_cost, stream_hour_cost
from bench.profile import profile_pipeline
from bench.proxy import CountingProxy, operation
from bench.throughput import DECODE, PIPELINE, PIPELINE_FULL, measure_throughput
from worker.detectors import registry


def finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    return ensure_clip("tiny", 320, 180, 2.0, out_dir=tmp_path_factory.mktemp("bench"))


def test_clips_are_cached_and_decode(tiny: Clip) -> None:
    again = ensure_clip("tiny", 320, 180, 2.0, out_dir=tiny.path.parent)
    assert again.path == tiny.path and tiny.frames == 50
    assert decode(tiny.url, views=True) == 50


def test_throughput_detectors_and_ffmpeg_give_sane_numbers(tiny: Clip) -> None:
    t = measure_throughput(tiny, repeats=1)
    for variant in (DECODE, PIPELINE, PIPELINE_FULL):
        assert finite_positive(t.realtime_per_core(variant)) and finite_positive(t.fps(variant))
        assert finite_positive(t.throughput_ratio(variant, cpu=False))

    d = measure_detectors(tiny, seconds=1.0, repeats=1)
    assert set(d.detectors) == set(registry())
    assert d.pictures == 25 and 0.9 < d.audio_s < 1.1
    assert finite_positive(d.decode_us) and finite_positive(d.share)
    assert all(math.isfinite(c.share_of_decode[0]) for c in d.detectors.values())

    c = compare_with_ffmpeg(tiny, repeats=1, per_filter=False)
    assert finite_positive(c.pipeline_vs_ffmpeg)

    b = measure_breakdown(tiny, repeats=1)
    assert set(b.detectors) == set(registry())
    assert all(math.isfinite(b.us_per_picture(name)) for name in b.detectors)
    assert finite_positive(b.result.ratio(ALL, cpu=True))


def test_operation_names() -> None:
    auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{}/aws4_request, SignedHeaders=host"
    ddb = {"authorization": auth.format("dynamodb"), "x-amz-target": "DynamoDB_20120810.UpdateItem"}
    assert operation("POST", "/", ddb, b"{}") == "dynamodb:UpdateItem"
    sqs = {"authorization": auth.format("sqs"), "x-amz-target": "AmazonSQS.ReceiveMessage"}
    assert operation("POST", "/", sqs, b"{}") == "sqs:ReceiveMessage"
    s3 = {"authorization": auth.format("s3")}
    assert operation("PUT", "/bucket/a/b", s3, b"") == "s3:PutObject"
    assert operation("GET", "/bucket/a", s3, b"") == "s3:GetObject"
    assert operation("PUT", "/bucket", s3, b"") == "s3:CreateBucket"
    query = {"authorization": auth.format("sqs")}
    assert operation("POST", "/", query, b"Action=SendMessage&Version=2012-11-05") == "sqs:SendMessage"


@pytest.fixture
def echo_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.headers.get("Transfer-Encoding") == "chunked":
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    self.rfile.read(size + 2)
                self.rfile.readline()
            else:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_counts_every_request_on_a_kept_alive_connection(echo_server: str) -> None:
    proxy = CountingProxy(echo_server)
    try:
        target = {"X-Amz-Target": "DynamoDB_20120810.PutItem"}
        for body in (b"x" * 100_000, b"{}"):
            request = urllib.request.Request(proxy.url + "/", data=body, method="POST", headers=target)
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.read() == b"ok"

        def chunks() -> Iterator[bytes]:
            yield b"abc"
            yield b"defgh"

        chunked = urllib.request.Request(
            proxy.url + "/", data=chunks(), method="POST", headers={"X-Amz-Target": "AmazonSQS.SendMessage"}
        )
        with urllib.request.urlopen(chunked, timeout=10) as response:
            assert response.read() == b"ok"
        assert proxy.snapshot() == Counter({"dynamodb:PutItem": 2, "sqs:SendMessage": 1})
    finally:
        proxy.close()


def test_capacity_judges_lag_growth() -> None:
    steady = Run(2, 5.0, 100.0, [130.0] * 10, [[0.01, 0.02]] * 10, 1.0, 0.0)
    assert steady.sustained and steady.rss_per_stream_mb == 15.0
    assert finite_positive(steady.cpu_per_media_s)
    growing = Run(1, 5.0, 100.0, [110.0] * 10, [[0.3 * i] for i in range(10)], 1.0, 0.0)
    assert not growing.sustained


def test_prices_and_costs() -> None:
    assert all(p.usd >= 0 for p in PRICES.values())
    assert request_cost("s3:PutObject", 1000) == pytest.approx(0.005)
    cost = stream_hour_cost({"dynamodb:UpdateItem": 720.0}, cpu_s_per_media_s=0.1, memory_gb=0.1)
    assert finite_positive(cost.total) and cost.requests_usd == pytest.approx(720 * 0.625e-6)


def test_aws_calls_per_frame_profile_and_report(emulator: str, tmp_path: Path, tiny: Clip) -> None:
    healthy = ensure_clip("healthy", 320, 180, 20.0, healthy=True, out_dir=tiny.path.parent)
    fast = {"AVMON_LEASE_PERIOD_S": "3"}  # renewals every second
    calls = count_calls(healthy, streams=1, seconds=2.5, endpoint=emulator, settings=fast)
    assert calls.defects_written >= 0  # 0 for a healthy stream (the report shows it)
    assert calls.worker["dynamodb:UpdateItem"] >= 1
    assert set(calls.per_worker_rates()) <= PER_WORKER_OPS
    assert finite_positive(calls.per_stream_hour)
    assert calls.per_request["GET /streams/{id}"] == Counter({"dynamodb:GetItem": 1})

    per_frame = measure_per_frame(tiny, frames=3, repeats=1, endpoint=emulator)
    assert per_frame.calls_per_frame == 4.0 and per_frame.transitions_per_frame == 2.0
    assert finite_positive(per_frame.cpu_ratio)

    profile = profile_pipeline(tiny, runs=1, out_dir=tmp_path)
    assert profile.text_path.exists() and profile.samples > 0

    results = report.Results(machine=describe(), quick=True, command="test", aws=calls, per_frame=per_frame)
    results.profile = profile
    results.throughput.append(measure_throughput(tiny, repeats=1))
    text = report.render(results)
    assert "AWS requests per healthy stream-hour" in text and "cost per stream-hour" in text
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nkept by hand\n")
    report.write(out, text)
    report.write(out, text)
    written = out.read_text()
    assert "kept by hand" in written and written.count(report.BEGIN) == 1
