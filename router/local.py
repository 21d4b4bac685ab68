"""Serve the Lambda handler over plain HTTP, for `avmon up` and `docker compose`.

Each request becomes the same function-URL event (payload 2.0) that AWS would send, and the
handler's answer goes back unchanged: what runs locally is what runs in Lambda. Like one Lambda
container, the handler sees one event at a time.
"""

from __future__ import annotations

import base64
import json
import logging
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


class _Handler(BaseHTTPRequestHandler):
    server: RouterServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self._reply(413, {"content-type": "application/json"}, b'{"error": "request body too large"}')
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        event = function_url_event(
            self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
        )
        with self.server.handler_lock:
            result = lambda_handler(event, LambdaContext())
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
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class RouterServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.handler_lock = threading.Lock()


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
