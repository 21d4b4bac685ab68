"""A request-counting HTTP proxy in front of the AWS emulator.

Clients reach AWS through botocore's ``AWS_ENDPOINT_URL``; pointing that at this proxy counts
every request a process makes, whatever SDK or thread makes it, at the wire, as AWS would bill
it (retries included). Bytes are forwarded unchanged in both directions; the client-to-server
stream is parsed just enough to find request boundaries (``Content-Length`` or chunked bodies)
and to name each request:

* JSON protocols (DynamoDB, SQS, Step Functions): the ``X-Amz-Target`` header,
  ``DynamoDB_20120810.UpdateItem`` → ``dynamodb:UpdateItem``;
* query protocol: the body's ``Action=``;
* S3 (REST): method and path, ``PUT /bucket/key`` → ``s3:PutObject``.

The service is the one in the request's SigV4 credential scope.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

_SCOPE = re.compile(rb"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request")
_CHUNK_LIMIT = 1 << 20
# The worker's live picture of a stream (shared/store.py put_live_picture).
_LIVE_PICTURE = re.compile(rb'"defect_id":\s*\{"S":\s*"~live"\}')
_TARGETS = {"DynamoDB_20120810": "dynamodb", "AmazonSQS": "sqs", "AWSStepFunctions": "states"}


def operation(method: str, target: str, headers: dict[str, str], body: bytes) -> str:
    """``service:Operation`` of one request (see the module docstring)."""
    scope = _SCOPE.search(headers.get("authorization", "").encode())
    service = scope.group(1).decode() if scope else ""
    amz_target = headers.get("x-amz-target", "")
    if amz_target:
        prefix, _, op = amz_target.partition(".")
        if op == "PutItem" and _LIVE_PICTURE.search(body):
            op = "PutItem live-picture"  # per stream, where the worker's other PutItem is its own
        return f"{service or _TARGETS.get(prefix, prefix)}:{op}"
    if service == "s3" or not service:
        path = urlsplit(target).path.strip("/")
        query = urlsplit(target).query
        has_key = "/" in path
        names = {
            "PUT": "PutObject" if has_key else "CreateBucket",
            "GET": "GetObject" if has_key else ("ListObjectsV2" if "list-type" in query else "ListObjects"),
            "DELETE": "DeleteObject" if has_key else "DeleteBucket",
            "HEAD": "HeadObject" if has_key else "HeadBucket",
            "POST": "DeleteObjects" if "delete" in query else "PostObject",
        }
        return f"{service or 's3'}:{names.get(method, method)}"
    action = parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
    return f"{service}:{action or method}"


class _RequestParser:
    """Feeds on the client's bytes; calls ``count(name)`` once per complete request."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self.count = count
        self.buffer = b""
        self.state = "head"
        self.remaining = 0
        self.head: tuple[str, str, dict[str, str]] | None = None
        self.body = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while self._step():
            pass

    def _done(self) -> None:
        assert self.head is not None
        method, target, headers = self.head
        self.count(operation(method, target, headers, self.body))
        self.state, self.head, self.body = "head", None, b""

    def _step(self) -> bool:
        if self.state == "head":
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            self.buffer = self.buffer[end + 4 :]
            request_line = [*lines[0].split(" "), "", ""]
            method, target = request_line[0], request_line[1]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.head = (method, target, headers)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.state = "chunk-size"
            else:
                self.remaining = int(headers.get("content-length") or 0)
                self.state = "body"
            return True
        if self.state == "body":
            take = min(self.remaining, len(self.buffer))
            if len(self.body) < 4096:
                self.body += self.buffer[: min(take, 4096 - len(self.body))]
            self.buffer, self.remaining = self.buffer[take:], self.remaining - take
            if self.remaining:
                return False
            self._done()
            return True
        if self.state == "chunk-size":
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return False
            size = int(self.buffer[:end].split(b";")[0] or b"0", 16)
            self.buffer = self.buffer[end + 2 :]
            self.state, self.remaining = ("trailer", 0) if size == 0 else ("chunk", size + 2)
            return True
        if self.state == "chunk":
            take = min(self.remaining, len(self.buffer))
            self.buffer, self.remaining = self.buffer[take:], self.remaining - take
            if self.remaining:
                return False
            self.state = "chunk-size"
            return True
        # trailer: header lines until an empty one
        end = self.buffer.find(b"\r\n")
        if end < 0:
            return False
        trailer, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        if not trailer:
            self._done()
        return True


class CountingProxy:
    """Listens on a free loopback port and forwards to ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="counting-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for s in list(self._sockets):
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            parser = _RequestParser(self._count)
            threading.Thread(target=self._pump, args=(client, upstream, parser), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, parser: _RequestParser | None) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(_CHUNK_LIMIT):
                if parser is not None:
                    parser.feed(data)
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
