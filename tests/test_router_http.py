"""The local HTTP adapter under hostile requests, on loopback: every request gets an answer in the
API's JSON error shape, before the adapter reads a body it should not, and no client holds a
thread for long."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra import local as infra_local
from router import local
from tests.conftest import Api, _close_router_clients


@pytest.fixture(scope="module")
def router(emulator: str) -> Iterator[Api]:
    """One router on a free loopback port for the module, on its own tables (what these tests
    send is refused before the store, or reads its own streams)."""
    prefix = f"t{secrets.token_hex(4)}"
    infra_local.create_data_plane(prefix)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            **infra_local.settings_env(prefix),
            "AVMON_ALLOWED_SCHEMES": "http,https,udp",
            "AVMON_ALLOW_PRIVATE_HOSTS": "false",
        }.items():
            mp.setenv(key, value)
        _close_router_clients()
        server = local.RouterServer("127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Api(f"http://127.0.0.1:{server.server_address[1]}")
        finally:
            server.shutdown()
            server.server_close()
            _close_router_clients()


def _port(api: Api) -> int:
    return int(api.base.rsplit(":", 1)[1])


def _raw(api: Api, request: bytes, *, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is (head only, unless it carries a body) and read one answer."""
    with socket.create_connection(("127.0.0.1", _port(api)), timeout=timeout_s) as sock:
        sock.sendall(request)
        return _answer(sock)


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the adapter closed without an answer (got {data!r})"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split(" ")[1]), headers, body


def _json_error(body: bytes) -> dict[str, object]:
    parsed = json.loads(body)
    assert set(parsed) == {"error", "detail"} and isinstance(parsed["error"], str)
    return dict(parsed)


# ------------------------------------------------------------ Content-Length (finding 4)


def test_a_negative_content_length_is_a_400_before_any_body_is_read(router: Api) -> None:
    # Only the head is sent, and the connection stays open: an adapter that read "to the end of
    # the stream" would never answer (the hostile run grew the router by 200 MB this way).
    status, headers, body = _raw(
        router,
        b"POST /streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n",
    )
    assert status == 400 and headers["connection"] == "close"
    assert _json_error(body)["error"] == "bad content-length"


@pytest.mark.parametrize("value", ["abc", "1e3", "+5", " 5 5", "0x10", "99999999999999999999"])
def test_a_non_numeric_content_length_is_a_json_400(router: Api, value: str) -> None:
    request = f"POST /streams HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n".encode()
    status, _, body = _raw(router, request)
    assert status == 400 and _json_error(body)["error"] == "bad content-length"


def test_two_different_content_lengths_are_a_400(router: Api) -> None:
    request = b"POST /streams HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}"
    status, _, body = _raw(router, request)
    assert status == 400 and _json_error(body)["error"] == "bad content-length"


def test_a_content_length_over_the_limit_is_a_413_before_any_body_is_read(router: Api) -> None:
    request = f"POST /streams HTTP/1.1\r\nHost: x\r\nContent-Length: {local.MAX_REQUEST_BYTES + 1}\r\n\r\n"
    status, _, body = _raw(router, request.encode())
    assert status == 413 and _json_error(body)["detail"] == {"max_bytes": local.MAX_REQUEST_BYTES}


def test_a_post_without_content_length_is_a_411(router: Api) -> None:
    status, _, body = _raw(router, b"POST /streams HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411 and _json_error(body)["error"] == "length required"


def test_a_chunked_body_is_a_411(router: Api) -> None:
    request = b"POST /streams HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    status, _, body = _raw(router, request)
    assert status == 411 and _json_error(body)["error"] == "length required"


# ------------------------------------------------------------ malformed requests: JSON answers


def test_an_invalid_utf8_body_is_a_json_400(router: Api) -> None:
    body = b'{"url": "\xff\xfe"}'
    head = b"POST /streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    status, _, answer = _raw(router, head % len(body) + b"\r\n" + body)
    assert status == 400 and "UTF-8" in str(_json_error(answer)["error"])


@pytest.mark.parametrize("since", ["nan", "1e999", "-inf", "NaN"])
def test_a_non_finite_since_is_a_400(router: Api, since: str) -> None:
    status, created = router.call("POST", "/streams", {"url": "http://93.184.215.14/a.m3u8"})
    assert status == 201
    status, body = router.call("GET", f"/streams/{created['stream_id']}/defects?since={since}")
    assert status == 400 and "finite" in body["error"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /streams HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
        b"OPTIONS /streams HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /streams HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n",
    ],
    ids=["no-method", "bad-version", "bad-header", "long-uri", "unknown-method", "too-many-headers"],
)
def test_every_malformed_request_gets_the_json_error_shape(router: Api, request_bytes: bytes) -> None:
    status, headers, body = _raw(router, request_bytes)
    assert 400 <= status < 600
    assert headers["content-type"] == "application/json"
    _json_error(body)


# ------------------------------------------------------------ slow clients


@pytest.fixture
def quick_deadlines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(local, "HEAD_TIMEOUT_S", 0.5)
    monkeypatch.setattr(local, "BODY_TIMEOUT_S", 0.5)
    yield


def test_a_slowloris_head_is_answered_408_and_dropped(router: Api, quick_deadlines: None) -> None:
    with socket.create_connection(("127.0.0.1", _port(router)), timeout=10) as sock:
        sock.sendall(b"GET /streams HTTP/1.1\r\nHost: x\r\n")
        # The next header line never ends: the head deadline, not the client, ends the request.
        sock.sendall(b"X-Slow: a")
        status, _, body = _answer(sock)
        assert status == 408 and _json_error(body)["error"] == "request timeout"
        assert sock.recv(1) == b""  # closed


def test_a_body_that_never_arrives_is_answered_408_and_dropped(router: Api, quick_deadlines: None) -> None:
    with socket.create_connection(("127.0.0.1", _port(router)), timeout=10) as sock:
        sock.sendall(b'POST /streams HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"url": ')
        status, _, body = _answer(sock)
        assert status == 408 and _json_error(body)["error"] == "request timeout"
        assert sock.recv(1) == b""


def test_half_sent_requests_beyond_the_connection_cap_are_refused_at_once(
    router: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 half-sent requests held 300 threads; now the cap answers the rest with a 503 at once,
    # and the head deadline (long enough here to open them all first) drops the held ones.
    monkeypatch.setattr(local, "HEAD_TIMEOUT_S", 3.0)
    held = []
    try:
        for _ in range(local.MAX_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", _port(router)), timeout=10)
            sock.sendall(b"GET /streams HTTP/1.1\r\n")
            held.append(sock)
        status, _, body = _raw(router, b"GET /streams HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and _json_error(body)["error"] == "too many connections, retry"
        # Every held connection is answered 408 and closed by the head deadline.
        for sock in held:
            assert _answer(sock)[0] == 408
    finally:
        for sock in held:
            sock.close()
    status, _ = router.call("GET", "/streams")
    assert status == 200


# ------------------------------------------------------------ cross-site bodies (CSRF)


def _post_typed(api: Api, path: str, body: bytes, content_type: str | None) -> tuple[int, dict[str, object]]:
    typed = b"" if content_type is None else f"Content-Type: {content_type}\r\n".encode()
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
    status, _, answer = _raw(api, head + typed + b"\r\n" + body)
    return status, _json_error(answer) if status >= 400 else json.loads(answer)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        None,
    ],
)
def test_a_stream_posted_with_a_body_that_is_not_json_typed_is_refused_415(
    router: Api, content_type: str | None
) -> None:
    # What a cross-site page can send without a CORS preflight: valid JSON under another type.
    token = f"csrf-{secrets.token_hex(6)}"
    body = json.dumps({"url": "http://93.184.215.14/a.m3u8", "client_token": token}).encode()
    status, answer = _post_typed(router, "/streams", body, content_type)
    assert status == 415 and answer["error"] == "send the body as application/json"
    assert (content_type or "no Content-Type") in str(answer["detail"])
    would_be = f"s-{hashlib.sha256(token.encode()).hexdigest()[:24]}"  # the token decides the id
    assert router.call("GET", f"/streams/{would_be}")[0] == 404  # nothing was created


def test_a_stream_posted_as_json_with_a_charset_is_accepted(router: Api) -> None:
    body = json.dumps({"url": "http://93.184.215.14/a.m3u8"}).encode()
    status, created = _post_typed(router, "/streams", body, "Application/JSON; charset=utf-8")
    assert status == 201 and created["stream_id"].startswith("s-")


# ------------------------------------------------------------ headers and what is shown


def test_json_answers_carry_nosniff_and_no_store(router: Api) -> None:
    for request in (b"GET /streams HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"):
        _, headers, _ = _raw(router, request)
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


def test_webhook_credentials_are_never_shown_back(router: Api) -> None:
    secret_url = "http://user:s3cret@93.184.215.14:8443/hooks/T000/B000/tokenpart?sig=abc"
    status, created = router.call(
        "POST", "/streams", {"url": "http://93.184.215.14/a.m3u8", "webhook_url": secret_url}
    )
    assert status == 201 and created["webhook_url"] == "http://93.184.215.14:8443"
    status, listing = router.call("GET", "/streams")
    status, one = router.call("GET", f"/streams/{created['stream_id']}")
    status, stopped = router.call("DELETE", f"/streams/{created['stream_id']}")
    for text in (json.dumps(listing), json.dumps(one), json.dumps(stopped)):
        assert "s3cret" not in text and "tokenpart" not in text and "sig=abc" not in text


@pytest.mark.parametrize("value", ["yes", "true", 1, "1", None])
def test_realtime_must_be_a_json_boolean(router: Api, value: object) -> None:
    status, body = router.call("POST", "/streams", {"url": "http://93.184.215.14/a.m3u8", "realtime": value})
    assert status == 422 and body["detail"][0]["loc"] == ["realtime"]


def _token(key: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


@pytest.mark.parametrize(
    "path_key",
    [
        ("/streams", {"stream_id": "s-0123456789abcdef01234567", "defect_id": "000000001.000-black"}),
        ("/streams", {"worker_id": "w-1"}),
        ("/streams", {"stream_id": "not an id"}),
        ("/streams/{sid}/defects", {"stream_id": "{sid}"}),
        (
            "/streams/{sid}/defects",
            {"stream_id": "s-ffffffffffffffffffffffff", "defect_id": "000000001.000-black"},
        ),
        ("/streams/{sid}/defects", {"stream_id": "{sid}", "defect_id": "x" * 100}),
        ("/streams/{sid}/notifications", {"stream_id": "{sid}", "defect_id": "000000001.000-black"}),
    ],
    ids=[
        "defects-key-on-streams",
        "workers-key",
        "bad-id",
        "streams-key-on-defects",
        "other-stream",
        "bad-defect-id",
        "defects-key-on-deliveries",
    ],
)
def test_a_next_token_of_another_table_or_stream_is_a_400(
    router: Api, path_key: tuple[str, dict[str, str]]
) -> None:
    # Before, the emulator answered such a key with a 500, retried for 3-5 s under the adapter's
    # lock (three of them made an unrelated GET wait 9.5 s), then a 503.
    status, created = router.call("POST", "/streams", {"url": "http://93.184.215.14/a.m3u8"})
    sid = created["stream_id"]
    path, key = path_key
    token = _token({k: v.replace("{sid}", sid) for k, v in key.items()})
    status, body = router.call("GET", f"{path.replace('{sid}', sid)}?next_token={token}")
    assert status == 400 and "next_token" in body["error"]


# ------------------------------------------------------------ a bounded fuzz run


_METHODS = st.sampled_from([b"GET", b"POST", b"DELETE", b"PUT", b"HEAD", b"OPTIONS", b"G\x00T", b""])
_PATHS = st.sampled_from(
    [b"/streams", b"/", b"/streams/s-0123456789abcdef01234567/defects", b"*", b""]
) | st.binary(max_size=40)
_VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2", b"", b"HTTP/1.1 x"])
_LENGTHS = st.sampled_from([b"-1", b"abc", b"0", b"5", b"99999999999999", b"1e3", b" 3", b"3,3"])
_HEADERS = st.lists(
    st.tuples(
        st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Host", b"Expect", b"X-A", b""])
        | st.binary(max_size=12),
        _LENGTHS | st.binary(max_size=30),
    ),
    max_size=6,
)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    line = draw(_METHODS) + b" " + draw(_PATHS) + b" " + draw(_VERSIONS)
    headers = b"".join(name + b": " + value + b"\r\n" for name, value in draw(_HEADERS))
    return (
        line
        + b"\r\n"
        + headers
        + draw(st.sampled_from([b"\r\n", b"\n", b""]))
        + draw(st.binary(max_size=100))
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_requests())
def test_fuzzed_requests_get_an_http_answer_or_a_clean_close(router: Api, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", _port(router)), timeout=15) as sock:
        with contextlib.suppress(OSError):  # the adapter may answer and close before all is sent
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)  # the end of the request: nothing more will come
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    if answer:
        assert answer.startswith(b"HTTP/1."), answer[:200]
        status = int(answer.split(b" ", 2)[1])
        head, _, body = answer.partition(b"\r\n\r\n")
        if status >= 400 and b"\r\nContent-Length: 0" not in head and body:
            # The first answer only: a kept-alive connection may hold more after it.
            assert set(json.loads(body[: int(_header(head, b"content-length"))])) >= {"error"}
    status, _ = router.call("GET", "/nothing")
    assert status == 404


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} header in {head!r}")
