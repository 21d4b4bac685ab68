"""Serve the Lambda handler over plain HTTP, for `avmon up` and `docker compose`.

Each request becomes the same function-URL event (payload 2.0) that AWS would send, and the
handler's answer goes back unchanged: what runs locally is what runs in Lambda. Like one Lambda
container, the handler sees one event at a time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from router.handler import lambda_handler

log = logging.getLogger("avmon.router.local")
MAX_REQUEST_BYTES = 1024 * 1024


@dataclass
class LambdaContext:
    """The few attributes of Lambda's context object that handlers read."""

    function_name: str = "avmon-router"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:avmon-router"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def function_url_event(
    method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str = "127.0.0.1"
) -> dict[str, Any]:
    """An HTTP request as a Lambda function-URL event (payload format 2.0)."""
    parts = urlsplit(target)
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    try:
        text, is_b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path or "/",
        "rawQueryString": parts.query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "queryStringParameters": query or None,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": parts.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": text if body else None,
        "isBase64Encoded": is_b64,
    }


SCHEDULED_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "local-housekeeping",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/avmon-housekeeping"],
    "detail": {},
}


# Bounds on one request, so that a slow or hostile client holds a thread for seconds, not for as
# long as it likes (slowloris): the request line and headers must arrive within HEAD_TIMEOUT_S of
# the connection (or of the previous answer, on a kept-alive one), and the body within
# BODY_TIMEOUT_S of the headers (1 MiB in 10 s: 100 KiB/s at least, far below loopback or a VPC).
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64  # open connections served at once; more are answered 503 and closed
_DIGITS = re.compile(r"^[0-9]{1,12}$")


class _Deadlines:
    """One thread that ends the read side of connections whose phase has run out of time.

    Socket timeouts bound each ``recv``, not a request: a client sending a byte every few seconds
    never trips them. ``shutdown(SHUT_RD)`` wakes the handler's blocked read (it sees the end of
    the stream) and leaves the write side open for a 408 with the JSON error shape.
    """

    def __init__(self, tick_s: float = 0.2) -> None:
        self._lock = threading.Lock()
        self._due: dict[socket.socket, float] = {}
        self.expired: set[socket.socket] = set()
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="router-deadlines", daemon=True)
        self._thread.start()

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._lock:
            self._due[sock] = time.monotonic() + seconds

    def disarm(self, sock: socket.socket) -> bool:
        """Stop the clock; True if it had already run out."""
        with self._lock:
            self._due.pop(sock, None)
            return sock in self.expired

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._due.pop(sock, None)
            self.expired.discard(sock)

    def is_expired(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock in self.expired

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, due in self._due.items() if due <= now]
                for sock in late:
                    del self._due[sock]
                    self.expired.add(sock)
            for sock in late:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)


def _error_body(error: str, detail: Any = None) -> bytes:
    return json.dumps({"error": error, "detail": detail}).encode()


class _Handler(BaseHTTPRequestHandler):
    server: RouterServer
    protocol_version = "HTTP/1.1"

    def handle_one_request(self) -> None:
        self.server.deadlines.arm(self.connection, HEAD_TIMEOUT_S)
        try:
            super().handle_one_request()
        finally:
            self.server.deadlines.disarm(self.connection)

    def parse_request(self) -> bool:
        if self.server.deadlines.is_expired(self.connection):
            self._timed_out("the request head took too long")
            return False
        ok = super().parse_request()
        if ok and self.server.deadlines.is_expired(self.connection):
            # The headers were cut short by the deadline: what arrived is not the whole head.
            self._timed_out("the request head took too long")
            return False
        if ok and (self.request_version == "HTTP/0.9" or not self.path.startswith("/")):
            # "GET path" alone is HTTP/0.9, whose answers have no status line or headers.
            self._error(400, "bad request line", "expected 'METHOD /path HTTP/1.1'")
            return False
        if ok and (self.headers.defects or any("\n" in v for v in self.headers.values())):
            # A line without a colon, or obsolete line folding (RFC 9112 §5.2): refuse the request
            # rather than guess where its headers end.
            self._error(400, "malformed header", "every header line must be 'Name: value'")
            return False
        return ok

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.deadlines.forget(self.connection)

    def _timed_out(self, why: str) -> None:
        with contextlib.suppress(OSError):
            self._error(408, "request timeout", why)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error the HTTP layer itself answers (malformed request line or headers, 414,
        431, 501) in the API's JSON error shape, and the connection closed after it."""
        short, long = self.responses.get(code, ("error", ""))
        self._error(code, (message or short).lower(), explain or long)

    def _error(self, code: int, error: str, detail: Any = None) -> None:
        self.close_connection = True
        if self.server.deadlines.is_expired(self.connection):
            code, error, detail = 408, "request timeout", "the request took too long"
        body = _error_body(error, detail)
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer as 1.1 does
            self.request_version = self.protocol_version
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body_length(self) -> int | None:
        """The declared body length, or None after answering why it cannot be read (400, 411,
        413): always before reading any of it."""
        if self.headers.get("Transfer-Encoding") is not None:
            # The Lambda URL gateway de-chunks; this adapter does not: ask for a length.
            self._error(411, "length required", "send the body with a Content-Length, not chunked")
            return None
        values = self.headers.get_all("Content-Length") or []
        if not values:
            if self.command in ("POST", "PUT", "PATCH"):
                self._error(411, "length required", "a request with a body needs a Content-Length")
                return None
            return 0
        if len(set(v.strip() for v in values)) != 1 or not _DIGITS.match(values[0].strip()):
            self._error(400, "bad content-length", "Content-Length must be one non-negative integer")
            return None
        length = int(values[0].strip())
        if length > MAX_REQUEST_BYTES:
            self._error(413, "request body too large", {"max_bytes": MAX_REQUEST_BYTES})
            return None
        return length

    def _serve(self) -> None:
        length = self._body_length()
        if length is None:
            return
        self.server.deadlines.arm(self.connection, BODY_TIMEOUT_S)
        body = self.rfile.read(length) if length else b""
        if self.server.deadlines.disarm(self.connection) or len(body) < length:
            self._timed_out("the request body took too long or was cut short")
            return
        event = function_url_event(
            self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
        )
        try:
            with self.server.handler_lock:
                result = lambda_handler(event, LambdaContext())
        except Exception:  # a bug in a route: the client still gets the JSON error shape
            log.exception("%s %s failed", self.command, self.path[:200])
            result = {"statusCode": 500, "body": _error_body("internal error").decode()}
            result["headers"] = {"content-type": "application/json"}
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else str(payload).encode()
        headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name.lower()] = ", ".join(str(v) for v in values)
        self._reply(int(result.get("statusCode", 200)), headers, data)

    def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name not in ("content-length", "connection"):
                self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class RouterServer(ThreadingHTTPServer):
    """The adapter's HTTP server: a thread per connection, at most :data:`MAX_CONNECTIONS`."""

    daemon_threads = True
    # socketserver's default backlog is 5: a burst of connections would wait for SYN retries
    # (seconds) instead of an answer, a 503 included.
    request_queue_size = 128

    def __init__(self, host: str, port: int, *, max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__((host, port), _Handler)
        # Powertools' resolver keeps the current event in a class attribute (BaseRouter.current_event):
        # two events at once in one process would read each other's. As in one Lambda container,
        # the handler sees one event at a time; the HTTP reading and writing around it do not wait.
        self.handler_lock = threading.Lock()
        self.deadlines = _Deadlines()
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Full: answer at once rather than queue behind connections that may never finish.
            with contextlib.suppress(OSError):
                body = _error_body("too many connections, retry")
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_close(self) -> None:
        self.deadlines.stop()
        super().server_close()


def run_housekeeping(server: RouterServer) -> dict[str, Any]:
    with server.handler_lock:
        return lambda_handler(json.loads(json.dumps(SCHEDULED_EVENT)), LambdaContext())


def serve(host: str, port: int, housekeeping_every_s: float, stop: threading.Event) -> None:
    """Serve until ``stop`` is set, running housekeeping on its schedule like EventBridge would."""
    server = RouterServer(host, port)
    thread = threading.Thread(target=server.serve_forever, name="router-http", daemon=True)
    thread.start()
    log.info("router listening on http://%s:%d", host, server.server_address[1])
    try:
        while not stop.wait(housekeeping_every_s):
            try:
                run_housekeeping(server)
            except Exception:  # the schedule goes on, as EventBridge's would
                log.exception("housekeeping failed")
    finally:
        server.shutdown()
        server.server_close()
