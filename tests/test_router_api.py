"""The router's Lambda handler, called with function-URL events shaped as AWS documents them,
against tables and queues on the emulator."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from router.handler import lambda_handler
from router.local import LambdaContext
from shared import aws, store
from tests.conftest import Stack, _close_router_clients, load_event


def invoke(event: dict[str, Any]) -> tuple[int, Any]:
    result = lambda_handler(event, LambdaContext())
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else None


def post(body: Any, raw: str | None = None) -> tuple[int, Any]:
    return invoke(
        load_event("function_url_post_streams.json", body=raw if raw is not None else json.dumps(body))
    )


def get(path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
    event = load_event("function_url_get_streams.json", rawPath=path, queryStringParameters=query)
    event["requestContext"]["http"]["path"] = path
    return invoke(event)


def messages(stack: Stack) -> list[dict[str, Any]]:
    sqs = aws.client("sqs")
    try:
        got = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    finally:
        sqs.close()
    return [json.loads(m["Body"]) for m in got.get("Messages", [])]


def test_post_creates_a_running_stream_and_one_assignment(stack: Stack) -> None:
    status, body = post({"url": "https://example.com/live/channel1.m3u8", "name": "channel 1"})
    assert status == 201
    assert body["desired"] == "RUNNING" and body["status"] == "PENDING" and body["owner"] is None
    assert messages(stack) == [{"stream_id": body["stream_id"], "generation": 1}]


def test_get_returns_the_created_stream(stack: Stack) -> None:
    _, created = post({"url": "https://example.com/a.m3u8"})
    status, body = get(f"/streams/{created['stream_id']}")
    assert status == 200
    assert body["url"] == "https://example.com/a.m3u8" and body["lease_expires_at"] is None


def test_a_multipart_body_is_a_415(stack: Stack) -> None:
    # A cross-site form may post multipart without a CORS preflight (the local adapter already
    # refuses multipart as a malformed head; a function URL passes it on).
    event = load_event(
        "function_url_post_streams.json", body=json.dumps({"url": "https://example.com/a.m3u8"})
    )
    event["headers"]["content-type"] = "multipart/form-data; boundary=b"
    status, body = invoke(event)
    assert status == 415 and body["error"] == "send the body as application/json"
    assert messages(stack) == []


def test_malformed_json_is_a_400_with_reason(stack: Stack) -> None:
    status, body = post(None, raw="{not json")
    assert status == 400 and body["error"] == "the body is not valid JSON"


def test_unknown_field_is_a_422_naming_it(stack: Stack) -> None:
    status, body = post({"url": "https://example.com/a.m3u8", "colour": "red"})
    assert status == 422
    assert body["detail"][0]["loc"] == ["colour"]


def test_missing_url_is_a_422(stack: Stack) -> None:
    status, body = post({"name": "x"})
    assert status == 422 and body["detail"][0]["loc"] == ["url"]


def test_wrong_type_is_a_422(stack: Stack) -> None:
    status, _ = post({"url": ["https://example.com"]})
    assert status == 422


def test_huge_body_is_a_413(stack: Stack) -> None:
    status, body = post({"url": "https://example.com/a.m3u8", "name": "x" * 20000})
    assert status == 413 and body["detail"]["max_bytes"] == 16384


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.ts",
        "gopher://example.com/",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_refused_urls_are_a_422_with_the_reason(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("AVMON_ALLOWED_SCHEMES", "http,https,udp")
    monkeypatch.setenv("AVMON_ALLOW_PRIVATE_HOSTS", "false")
    _close_router_clients()
    status, body = post({"url": url})
    assert status == 422 and body["error"] == "url refused" and body["detail"]
    assert messages(stack) == []


def test_unknown_stream_is_a_404(stack: Stack) -> None:
    status, body = get("/streams/s-0123456789abcdef01234567")
    assert status == 404 and body["error"] == "no such stream"


def test_stream_id_that_is_not_an_id_is_a_404_without_a_lookup(stack: Stack) -> None:
    status, body = get("/streams/..%2F..%2Fetc")
    assert status == 404 and body["error"] == "no such stream"


def test_unknown_route_is_a_json_404(stack: Stack) -> None:
    status, body = get("/nothing-here")
    assert status == 404 and body["error"] == "no such route"


def test_list_is_paginated(stack: Stack) -> None:
    for n in range(3):
        post({"url": f"https://example.com/{n}.m3u8"})
    status, first = get("/streams", {"limit": "2"})
    assert status == 200 and len(first["streams"]) == 2 and first["next_token"]
    _, second = get("/streams", {"limit": "2", "next_token": first["next_token"]})
    urls = {s["url"] for s in first["streams"] + second["streams"]}
    assert len(urls) == 3


def test_bad_limit_is_a_400(stack: Stack) -> None:
    status, _ = get("/streams", {"limit": "100000"})
    assert status == 400


def test_forged_next_token_is_a_400(stack: Stack) -> None:
    status, body = get("/streams", {"next_token": "!!notbase64"})
    assert status == 400 and body["error"] == "next_token is not valid"


def test_delete_sets_desired_stopped(stack: Stack) -> None:
    _, created = post({"url": "https://example.com/a.m3u8"})
    event = load_event("function_url_delete_stream.json", rawPath=f"/streams/{created['stream_id']}")
    status, body = invoke(event)
    assert status == 200 and body["desired"] == "STOPPED" and body["status"] == "STOPPED"


def test_client_token_makes_post_idempotent(stack: Stack) -> None:
    s1, first = post({"url": "https://example.com/a.m3u8", "client_token": "abc-123"})
    s2, again = post({"url": "https://example.com/a.m3u8", "client_token": "abc-123"})
    assert (s1, s2) == (201, 200) and first["stream_id"] == again["stream_id"]
    assert len(messages(stack)) == 1


def test_client_token_reused_for_another_url_is_a_409(stack: Stack) -> None:
    post({"url": "https://example.com/a.m3u8", "client_token": "tok"})
    status, _ = post({"url": "https://example.com/b.m3u8", "client_token": "tok"})
    assert status == 409


def test_defects_filter_by_type_and_since(stack: Stack, ddb_client: Any) -> None:
    _, created = post({"url": "https://example.com/a.m3u8"})
    sid = created["stream_id"]
    ddb = ddb_client
    t = store.Tables(streams=f"{stack.prefix}-streams", defects=f"{stack.prefix}-defects")
    for start, kind in ((1.0, "black"), (5.0, "black"), (7.0, "silence")):
        item = {
            "stream_id": sid,
            "defect_id": f"{start:013.3f}-{kind}",
            "type": kind,
            "start_s": start,
            "end_s": start + 2,
            "start_at": "2026-11-27T03:00:00.000Z",
            "end_at": "2026-11-27T03:00:02.000Z",
            "severity": "critical",
            "metrics": {},
            "worker_id": "w",
            "expires_at": int(time.time()) + 3600,
        }
        ddb.put_item(TableName=t.defects, Item=store.marshal(item))
    status, body = get(f"/streams/{sid}/defects", {"type": "black", "since": "2"})
    assert status == 200
    assert [(d["type"], d["start_s"]) for d in body["defects"]] == [("black", 5.0)]


def test_expired_defects_are_hidden(stack: Stack, ddb_client: Any) -> None:
    _, created = post({"url": "https://example.com/a.m3u8"})
    sid = created["stream_id"]
    item = {
        "stream_id": sid,
        "defect_id": "000000001.000-black",
        "type": "black",
        "start_s": 1.0,
        "start_at": "2026-11-27T03:00:00.000Z",
        "severity": "critical",
        "metrics": {},
        "worker_id": "w",
        "expires_at": int(time.time()) - 1,
    }
    ddb_client.put_item(TableName=f"{stack.prefix}-defects", Item=store.marshal(item))
    status, body = get(f"/streams/{sid}/defects")
    assert status == 200, body
    assert body["defects"] == []


def test_unknown_defect_type_filter_is_a_400(stack: Stack) -> None:
    _, created = post({"url": "https://example.com/a.m3u8"})
    status, body = get(f"/streams/{created['stream_id']}/defects", {"type": "smell"})
    assert status == 400 and "smell" in body["error"]


def test_housekeeping_reenqueues_an_orphaned_stream(stack: Stack, ddb_client: Any) -> None:
    _, created = post({"url": "https://example.com/a.m3u8"})
    assert len(messages(stack)) == 1  # the first assignment was taken by nobody
    ddb_client.update_item(
        TableName=f"{stack.prefix}-streams",
        Key=store.marshal({"stream_id": created["stream_id"]}),
        UpdateExpression="SET enqueued_at = :old",
        ExpressionAttributeValues=store.marshal({":old": time.time() - 60}),
    )
    result = lambda_handler(load_event("scheduled_event.json"), LambdaContext())
    assert result == {"scanned": 1, "requeued": 1}
    assert messages(stack) == [{"stream_id": created["stream_id"], "generation": 1}]


def test_housekeeping_leaves_a_recently_enqueued_stream_alone(stack: Stack) -> None:
    post({"url": "https://example.com/a.m3u8"})
    result = lambda_handler(load_event("scheduled_event.json"), LambdaContext())
    assert result["requeued"] == 0


def test_ipv4_mapped_metadata_address_is_refused_even_where_private_hosts_are_allowed(stack: Stack) -> None:
    status, body = post({"url": "http://[::ffff:169.254.169.254]/latest/meta-data/"})
    assert status == 422 and "metadata" in body["detail"]


def test_loudness_profile_is_stored_and_shown_with_r128_by_default(stack: Stack) -> None:
    _, a85 = post({"url": "https://example.com/a85.m3u8", "loudness_profile": "atsc_a85"})
    _, plain = post({"url": "https://example.com/plain.m3u8"})
    assert get(f"/streams/{a85['stream_id']}")[1]["loudness_profile"] == "atsc_a85"
    assert get(f"/streams/{plain['stream_id']}")[1]["loudness_profile"] == "ebu_r128"


def test_unknown_loudness_profile_is_a_422_naming_the_field(stack: Stack) -> None:
    status, body = post({"url": "https://example.com/a.m3u8", "loudness_profile": "arib_tr_b32"})
    assert status == 422
    assert body["detail"][0]["loc"] == ["loudness_profile"]
