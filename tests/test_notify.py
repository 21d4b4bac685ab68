"""Notifications: a real webhook receiver on loopback, and SNS → SQS on the emulator."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared import aws
from shared.models import Defect, DefectType, Event
from tests.support import make_defect, wait_for_async
from worker.notify import (
    CLOSED,
    OPENED,
    DeliveryRecord,
    Notifier,
    Outcome,
    Targets,
    incident_title,
    redact_target,
    sign,
    verify_signature,
)

SECRET = b"s3cret-for-tests"
STREAM = "stream-one"


# ------------------------------------------------------------------ helpers


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    """An HTTP server on a free loopback port that records POSTs; fails the first ``fail_first``
    with ``fail_status``, and every one with ``always`` when set."""

    fail_first: int = 0
    fail_status: int = 500
    always: int | None = None
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(Request(self.path, dict(self.headers.items()), body))
                    if receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        status = receiver.fail_status
                    else:
                        status = receiver.always or 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[tuple[str, str]]:
        """(event, defect_id) of every event in every request, in order of arrival."""
        with self.lock:
            return [(e["event"], e["defect"]["defect_id"]) for r in self.requests for e in r.json["events"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
async def log_records() -> AsyncIterator[list[DeliveryRecord]]:
    yield []


def notifier(records: list[DeliveryRecord] | None = None, **kwargs: Any) -> Notifier:
    async def record(entry: DeliveryRecord) -> None:
        if records is not None:
            records.append(entry)

    options: dict[str, Any] = {
        "secret": SECRET,
        "record": record,
        "coalesce_s": 0.0,
        "min_gap_s": 0.0,
        "backoff_s": 0.01,
        "timeout_s": 2.0,
        **kwargs,
    }
    return Notifier(**options)


def mk(type_: DefectType, start: float, end: float | None = None, stream: str = STREAM) -> Defect:
    return make_defect(
        type_, start, end, stream_id=stream, metrics={"duration_s": 0.0 if end is None else end - start}
    )


# ------------------------------------------------------------------ pure parts


def test_signature_round_trip() -> None:
    body = b'{"a":1}'
    ts = str(int(time.time()))
    sig = sign(SECRET, ts, body)
    assert sig == "sha256=" + hmac.new(SECRET, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert verify_signature(SECRET, ts, body, sig)
    assert not verify_signature(SECRET, ts, body + b" ", sig)
    assert not verify_signature(b"other", ts, body, sig)
    assert not verify_signature(SECRET, ts, body, sig, now=time.time() + 3600)  # replayed later
    assert not verify_signature(SECRET, "not-a-time", body, sig)


def test_targets_and_redaction() -> None:
    t = Targets.from_settings(" https://a/x , https://b/y,", stream_webhook="https://a/x", sns_topic_arn="")
    assert t.webhook_urls == ("https://a/x", "https://b/y") and t.sns_topic_arn is None
    assert (
        redact_target("https://user:pw@hooks.example:8443/p/q?token=abc#frag")
        == "https://hooks.example:8443/p/q"
    )
    assert redact_target("http://[::1]:9/h") == "http://[::1]:9/h"
    assert redact_target("arn:aws:sns:us-east-1:123:t") == "arn:aws:sns:us-east-1:123:t"


def test_titles() -> None:
    assert incident_title(["silence", "black"]) == "feed lost"
    assert incident_title(["freeze", "black"]) == "black + freeze"
    assert incident_title(["silence"]) == "silence"


def test_delivery_record_item() -> None:
    rec = DeliveryRecord(
        "d1", STREAM, "https://h/p", "webhook", OPENED, "inc-x", ("a",), 1, Outcome.DELIVERED, 204
    )
    item = rec.to_item()
    assert item["outcome"] == "delivered" and item["status"] == 204 and "error" not in item
    assert json.loads(json.dumps(item)) == item


# ------------------------------------------------------------------ webhooks


async def test_one_open_and_one_close_signed(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    records: list[DeliveryRecord] = []
    targets = Targets.from_settings(rcv.url)
    async with notifier(records, coalesce_s=0.05, min_gap_s=0.1) as n:
        stopping = asyncio.Event()
        runner = asyncio.create_task(n.run(stopping))
        opened = mk(DefectType.BLACK, 10.0)
        n.submit(opened, targets)
        n.submit(opened, targets)  # the sink wrote it twice
        await wait_for_async(lambda: len(rcv.requests) == 1)
        closed = mk(DefectType.BLACK, 10.0, 13.0)
        await n.defect_written(closed, targets)
        n.submit(closed, targets)
        await wait_for_async(lambda: len(rcv.requests) == 2)
        stopping.set()
        await runner
        assert await n.drain(2.0)
    assert rcv.events() == [(OPENED, opened.defect_id), (CLOSED, opened.defect_id)]
    first, second = rcv.requests
    for req, event in ((first, OPENED), (second, CLOSED)):
        h = {k.lower(): v for k, v in req.headers.items()}
        assert h["content-type"] == "application/json" and h["x-avmon-event"] == event
        assert verify_signature(SECRET, h["x-avmon-timestamp"], req.body, h["x-avmon-signature"])
        assert req.json["event"] == event and req.json["stream_id"] == STREAM
    assert first.headers["X-Avmon-Delivery"] != second.headers["X-Avmon-Delivery"]
    body = first.json
    assert body["incident"]["title"] == "black" and body["incident"]["state"] == "open"
    assert body["events"][0]["defect"]["end_s"] is None
    assert second.json["events"][0]["defect"]["end_s"] == 13.0
    assert second.json["incident"]["state"] == "closed" and second.json["incident"]["end_s"] == 13.0
    assert [r.outcome for r in records] == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert records[0].target == rcv.url and records[0].status == 204


async def test_a_cue_is_pushed_to_the_webhook_signed_as_its_own_message(
    receivers: Callable[..., Receiver],
) -> None:
    rcv = receivers()
    records: list[DeliveryRecord] = []
    cue = Event(
        stream_id=STREAM, event_id="000000030.000-splice_insert-7", type="splice_insert", kind="out",
        start_s=26.0, start_at="2026-01-01T00:00:26.000Z", splice_s=30.0, duration_s=60.0,
        splice_event_id=7, worker_id="w1",
    )  # fmt: skip
    async with notifier(records) as n:
        stopping = asyncio.Event()
        runner = asyncio.create_task(n.run(stopping))
        n.submit_cue(cue, Targets.from_settings(rcv.url))
        await wait_for_async(lambda: len(rcv.requests) == 1)
        stopping.set()
        await runner
        assert await n.drain(2.0)
    (req,) = rcv.requests
    h = {k.lower(): v for k, v in req.headers.items()}
    assert h["x-avmon-event"] == "cue"
    assert verify_signature(SECRET, h["x-avmon-timestamp"], req.body, h["x-avmon-signature"])
    assert req.json["event"] == "cue" and req.json["stream_id"] == STREAM
    assert {k: req.json["cue"][k] for k in ("type", "kind", "splice_s", "duration_s", "splice_event_id")} == {
        "type": "splice_insert", "kind": "out", "splice_s": 30.0, "duration_s": 60.0, "splice_event_id": 7,
    }  # fmt: skip
    assert [r.outcome for r in records] == [Outcome.DELIVERED]


async def test_retried_after_a_500(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers(fail_first=2, fail_status=500)
    records: list[DeliveryRecord] = []
    async with notifier(records) as n:
        n.submit(mk(DefectType.FREEZE, 3.0), Targets.from_settings(rcv.url))
        assert await n.drain(5.0)
    assert len(rcv.requests) == 3
    assert len({r.headers["X-Avmon-Delivery"] for r in rcv.requests}) == 1  # one delivery, retried
    assert [(r.attempt, r.outcome, r.status) for r in records] == [
        (1, Outcome.RETRYING, 500),
        (2, Outcome.RETRYING, 500),
        (3, Outcome.DELIVERED, 204),
    ]
    assert n.delivered == 1 and n.failed == 0


async def test_not_retried_after_a_400(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers(always=400)
    records: list[DeliveryRecord] = []
    async with notifier(records) as n:
        n.submit(mk(DefectType.FREEZE, 3.0), Targets.from_settings(rcv.url))
        assert await n.drain(5.0)
    assert len(rcv.requests) == 1
    assert [(r.attempt, r.outcome, r.status, r.error) for r in records] == [
        (1, Outcome.FAILED, 400, "HTTP 400")
    ]
    assert n.failed == 1


async def test_connection_errors_retried_up_to_max_attempts() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    records: list[DeliveryRecord] = []
    async with notifier(records, max_attempts=3) as n:
        n.submit(mk(DefectType.BLACK, 1.0), Targets.from_settings(f"http://127.0.0.1:{port}/h?token=x"))
        assert await n.drain(5.0)
    assert [(r.attempt, r.outcome) for r in records] == [
        (1, Outcome.RETRYING),
        (2, Outcome.RETRYING),
        (3, Outcome.FAILED),
    ]
    assert all(r.status is None and r.error for r in records)
    assert records[0].target == f"http://127.0.0.1:{port}/h"  # the token is not logged


async def test_refused_url_is_not_retried(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()

    def refuse(url: str) -> None:
        raise ValueError("loopback hosts are not allowed")

    records: list[DeliveryRecord] = []
    async with notifier(records, url_check=refuse) as n:
        n.submit(mk(DefectType.BLACK, 1.0), Targets.from_settings(rcv.url))
        assert await n.drain(5.0)
    assert not rcv.requests
    assert [(r.outcome, r.error) for r in records] == [
        (Outcome.FAILED, "refused: loopback hosts are not allowed")
    ]


async def test_black_and_silence_are_one_incident(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    targets = Targets.from_settings(rcv.url)
    async with notifier(coalesce_s=5.0) as n:
        black, silence = mk(DefectType.BLACK, 10.0), mk(DefectType.SILENCE, 10.4)
        later = mk(DefectType.FREEZE, 30.0)  # far from the others: its own incident
        for d in (black, silence, later):
            n.submit(d, targets)
        assert await n.drain(5.0)
        for d in (
            mk(DefectType.BLACK, 10.0, 20.0),
            mk(DefectType.SILENCE, 10.4, 20.1),
            mk(DefectType.FREEZE, 30.0, 33.0),
        ):
            n.submit(d, targets)
        assert await n.drain(5.0)
    bodies = [r.json for r in rcv.requests]
    assert len(bodies) == 4  # opened: feed lost, freeze; closed: feed lost, freeze
    feed_open, freeze_open, feed_closed, freeze_closed = bodies
    inc = feed_open["incident"]
    assert inc["title"] == "feed lost" and inc["types"] == ["black", "silence"] and inc["state"] == "open"
    assert [e["defect"]["type"] for e in feed_open["events"]] == ["black", "silence"]  # one POST
    assert {e["incident_id"] for e in feed_open["events"]} == {inc["incident_id"]}
    assert freeze_open["incident"]["incident_id"] != inc["incident_id"]
    assert freeze_open["incident"]["title"] == "freeze"
    assert feed_closed["incident"]["incident_id"] == inc["incident_id"]
    assert feed_closed["incident"]["state"] == "closed" and feed_closed["incident"]["end_s"] == 20.1
    assert [e["event"] for e in feed_closed["events"]] == [CLOSED, CLOSED]
    assert freeze_closed["incident"]["state"] == "closed"
    # Exactly one opened and one closed per defect.
    events = rcv.events()
    for d in (black, silence, later):
        assert events.count((OPENED, d.defect_id)) == 1 and events.count((CLOSED, d.defect_id)) == 1


async def test_a_late_member_joins_the_incident(receivers: Callable[..., Receiver]) -> None:
    """Silence known only after black's message went out: its own POST, same incident, new title."""
    rcv = receivers()
    targets = Targets.from_settings(rcv.url)
    async with notifier() as n:
        n.submit(mk(DefectType.BLACK, 10.0), targets)
        assert await n.drain(5.0)
        n.submit(mk(DefectType.SILENCE, 11.5), targets)
        assert await n.drain(5.0)
    first, second = (r.json for r in rcv.requests)
    assert first["incident"]["title"] == "black" and second["incident"]["title"] == "feed lost"
    assert first["incident"]["incident_id"] == second["incident"]["incident_id"]


async def test_flapping_defect_gives_one_pair(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    targets = Targets.from_settings(rcv.url)
    async with notifier(min_gap_s=10.0) as n:
        stopping = asyncio.Event()
        runner = asyncio.create_task(n.run(stopping))
        episode = [(10.0, 11.0), (12.0, 13.0), (14.5, 15.0)]  # gaps of 1 s and 1.5 s
        for start, end in episode:
            n.submit(mk(DefectType.BLACK, start), targets)
            n.submit(mk(DefectType.BLACK, start, end), targets)
        assert n.folded == 2
        await wait_for_async(lambda: len(rcv.requests) == 1)
        await asyncio.sleep(0.2)
        assert rcv.events() == [(OPENED, mk(DefectType.BLACK, 10.0).defect_id)]  # the close is held
        stopping.set()
        await runner
        assert await n.drain(5.0)  # at shutdown, held closes go out
        n.submit(mk(DefectType.BLACK, 40.0, 41.0), targets)  # 25 s later: a new defect
        assert await n.drain(5.0)
    first_id, new_id = mk(DefectType.BLACK, 10.0).defect_id, mk(DefectType.BLACK, 40.0).defect_id
    assert rcv.events() == [(OPENED, first_id), (CLOSED, first_id), (OPENED, new_id), (CLOSED, new_id)]
    closed = rcv.requests[1].json["events"][0]
    assert closed["flaps"] == 2
    assert closed["folded_defect_ids"] == [mk(DefectType.BLACK, s).defect_id for s, _ in episode[1:]]
    assert closed["defect"]["end_s"] == 15.0 and closed["defect"]["start_s"] == 10.0


async def test_an_acknowledged_defect_sends_nothing_more(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    targets = Targets.from_settings(rcv.url)
    async with notifier() as n:
        stopping = asyncio.Event()
        runner = asyncio.create_task(n.run(stopping))
        black, silence = mk(DefectType.BLACK, 10.0), mk(DefectType.SILENCE, 50.0)
        n.submit(black, targets)
        n.submit(silence, targets)
        await wait_for_async(lambda: len(rcv.events()) == 2)
        n.acknowledge(STREAM, {black.defect_id})  # an operator took the black one
        n.submit(mk(DefectType.BLACK, 10.0, 20.0), targets)
        n.submit(mk(DefectType.SILENCE, 50.0, 55.0), targets)
        await wait_for_async(lambda: len(rcv.events()) == 3)
        stopping.set()
        await runner
        assert await n.drain(2.0)
    b, s = black.defect_id, silence.defect_id
    assert rcv.events() == [(OPENED, b), (OPENED, s), (CLOSED, s)]
    assert n.acknowledged == 1


async def test_a_separate_occurrence_releases_the_held_close(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    targets = Targets.from_settings(rcv.url)
    async with notifier(min_gap_s=10.0) as n:
        stopping = asyncio.Event()
        runner = asyncio.create_task(n.run(stopping))
        n.submit(mk(DefectType.SILENCE, 5.0, 6.0), targets)
        n.submit(mk(DefectType.SILENCE, 30.0), targets)  # 24 s after: not a flap
        await wait_for_async(lambda: len(rcv.requests) == 3)
        stopping.set()
        await runner
    a, b = mk(DefectType.SILENCE, 5.0).defect_id, mk(DefectType.SILENCE, 30.0).defect_id
    assert rcv.events() == [(OPENED, a), (CLOSED, a), (OPENED, b)]


async def test_held_close_goes_out_after_min_gap(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    targets = Targets.from_settings(rcv.url)
    async with notifier(min_gap_s=0.3) as n:
        stopping = asyncio.Event()
        runner = asyncio.create_task(n.run(stopping))
        started = time.monotonic()
        n.submit(mk(DefectType.BLACK, 1.0, 2.0), targets)
        await wait_for_async(lambda: len(rcv.requests) == 2)
        assert time.monotonic() - started >= 0.3
        stopping.set()
        await runner


async def test_an_already_closed_defect_gives_open_then_close(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    async with notifier() as n:
        n.submit(mk(DefectType.CLIPPING, 7.0, 7.8), Targets.from_settings(rcv.url))
        n.submit(mk(DefectType.CLIPPING, 7.0), Targets.from_settings(rcv.url))  # a stale open: ignored
        assert await n.drain(5.0)
    did = mk(DefectType.CLIPPING, 7.0).defect_id
    assert rcv.events() == [(OPENED, did), (CLOSED, did)]
    assert rcv.requests[0].json["events"][0]["defect"]["end_s"] is None
    assert rcv.requests[1].json["events"][0]["defect"]["end_s"] == 7.8


async def test_streams_do_not_share_defect_ids(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    async with notifier() as n:
        for stream in ("stream-one", "stream-two"):
            n.submit(mk(DefectType.BLACK, 1.0, stream=stream), Targets.from_settings(rcv.url))
        assert await n.drain(5.0)
    assert sorted(r.json["stream_id"] for r in rcv.requests) == ["stream-one", "stream-two"]


async def test_global_and_stream_webhooks_both_get_it(receivers: Callable[..., Receiver]) -> None:
    a, b = receivers(), receivers()
    async with notifier() as n:
        n.submit(mk(DefectType.BLACK, 1.0), Targets(webhooks=(a.url,), stream_webhook=b.url))
        assert await n.drain(5.0)
    assert len(a.requests) == len(b.requests) == 1
    assert a.requests[0].body == b.requests[0].body
    assert a.requests[0].headers["X-Avmon-Delivery"] != b.requests[0].headers["X-Avmon-Delivery"]


async def test_full_queue_drops_the_oldest() -> None:
    """A receiver that never answers: the queue stays bounded; the oldest messages are dropped."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # connections complete in the kernel's backlog; nobody ever answers
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/h"
        records: list[DeliveryRecord] = []
        n = notifier(records, max_queue=2, timeout_s=30.0)
        try:
            for k in range(4):
                n.submit(mk(DefectType.BLACK, 10.0 * (k + 1)), Targets.from_settings(url))
            assert not await n.drain(0.1)
            assert n.dropped == 2
            dropped = [r for r in records if r.outcome is Outcome.DROPPED]
            assert [r.defect_ids for r in dropped] == [
                (mk(DefectType.BLACK, 10.0).defect_id,),
                (mk(DefectType.BLACK, 20.0).defect_id,),
            ]
            assert all(r.attempt == 0 and r.error == "queue full" for r in dropped)
        finally:
            await n.aclose()
        assert n.dropped == 4 and n.pending == 0  # the two left were abandoned at close, and counted


async def test_delivery_log_failure_does_not_stop_delivery(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()

    async def broken(entry: DeliveryRecord) -> None:
        raise RuntimeError("table gone")

    async with Notifier(secret=SECRET, record=broken, coalesce_s=0, min_gap_s=0) as n:
        n.submit(mk(DefectType.BLACK, 1.0, 2.0), Targets.from_settings(rcv.url))
        assert await n.drain(5.0)
    assert len(rcv.requests) == 2


# ------------------------------------------------------------------ SNS


@dataclass
class Topic:
    arn: str
    queue_url: str


@pytest.fixture
def topic(emulator: str) -> Iterator[Topic]:
    """An SNS topic with an SQS queue subscribed (raw message delivery: the SQS body is our JSON)."""
    name = f"t{secrets.token_hex(4)}"
    sns, sqs = aws.client("sns"), aws.client("sqs")
    try:
        arn = sns.create_topic(Name=f"{name}-alerts")["TopicArn"]
        queue_url = sqs.create_queue(QueueName=f"{name}-alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
        yield Topic(arn, queue_url)
    finally:
        sns.close()
        sqs.close()


def receive_all(queue_url: str, want: int) -> list[dict[str, Any]]:
    sqs = aws.client("sqs")
    got: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 10
        while len(got) < want and time.monotonic() < deadline:
            resp = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
            )
            got += resp.get("Messages", [])
    finally:
        sqs.close()
    return got


async def test_sns_delivers_to_a_subscribed_queue(topic: Topic) -> None:
    records: list[DeliveryRecord] = []
    async with (
        aws.async_session().client("sns", config=aws.CLIENT_CONFIG) as sns,
        notifier(records, sns=sns) as n,
    ):
        n.submit(mk(DefectType.BLACK, 5.0), Targets(sns_topic_arn=topic.arn))
        n.submit(mk(DefectType.SILENCE, 5.2), Targets(sns_topic_arn=topic.arn))
        assert await n.drain(10.0)
        n.submit(mk(DefectType.BLACK, 5.0, 9.0), Targets(sns_topic_arn=topic.arn))
        n.submit(mk(DefectType.SILENCE, 5.2, 9.1), Targets(sns_topic_arn=topic.arn))
        assert await n.drain(10.0)
    assert [(r.kind, r.outcome, r.target) for r in records] == [("sns", Outcome.DELIVERED, topic.arn)] * 2
    messages = await asyncio.to_thread(receive_all, topic.queue_url, 2)
    bodies = sorted((json.loads(m["Body"]) for m in messages), key=lambda b: b["event"] != OPENED)
    assert [b["event"] for b in bodies] == [OPENED, CLOSED]
    assert bodies[0]["incident"]["title"] == "feed lost" and len(bodies[0]["events"]) == 2
    assert bodies[1]["incident"]["state"] == "closed"
    attrs = messages[0]["MessageAttributes"]
    assert attrs["stream_id"]["StringValue"] == STREAM
    assert attrs["event"]["StringValue"] in (OPENED, CLOSED)


async def test_sns_failure_is_logged_not_raised(emulator: str) -> None:
    records: list[DeliveryRecord] = []
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    async with (
        aws.async_session().client("sns", config=aws.CLIENT_CONFIG) as sns,
        notifier(records, sns=sns) as n,
    ):
        n.submit(mk(DefectType.BLACK, 5.0), Targets(sns_topic_arn=missing))
        assert await n.drain(10.0)
    assert [r.outcome for r in records] == [Outcome.FAILED]
    assert records[0].error
