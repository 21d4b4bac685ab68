"""Hostile origins against the running system (router, a real `avmon worker`, egress proxy), on
loopback: a playlist that drips forever, a playlist whose variant is ``tcp://``, and a master
playlist that lists itself."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from tests.conftest import Api, WorkerFactory
from tests.media import make_testsrc
from tests.support import wait_for
from worker.egress import EgressProxy
from worker.media import Limits, open_options
from worker.session import Outcome, SessionConfig, StreamSession

DRIP_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n\r\n#EXTM3U\n"


class Origin(socketserver.ThreadingTCPServer):
    """A hostile HTTP origin: ``/drip.m3u8`` sends the playlist header, then a comment line every
    0.2 s and never ends; other paths answer from ``pages``. Counts requests per path and the
    connections open now."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OriginHandler)
        self.pages: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.open = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OriginHandler(socketserver.BaseRequestHandler):
    server: Origin

    def handle(self) -> None:
        with self.server.lock:
            self.server.open += 1
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = self.request.recv(4096)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ", 2)[1].decode()
            path = "/" + path.split("/", 3)[3] if path.startswith("http://") else path
            with self.server.lock:
                self.server.requests[path] += 1
            if path == "/drip.m3u8":
                self.request.sendall(DRIP_HEAD)
                while not self.server.stopping.wait(0.2):
                    self.request.sendall(b"#\n")
            body = self.server.pages.get(path)
            if body is None:
                self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
        except OSError:
            return  # the client went away: what a hostile origin sees when it is cut off
        finally:
            with self.server.lock:
                self.server.open -= 1


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def tcp_listener() -> Iterator[tuple[int, list[object]]]:
    """A bare TCP listener on ::1 that counts the connections it accepts."""
    accepted: list[object] = []
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    listener.settimeout(0.2)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, peer = listener.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(peer)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        done.set()
        thread.join(5)
        listener.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "clip.ts"
    make_testsrc(path, duration_s=30.0, width=160, height=90)
    return path


def _stream(api: Api, sid: str) -> dict[str, object]:
    status, body = api.call("GET", f"/streams/{sid}")
    assert status == 200
    return dict(body)


def _defect_types(api: Api, sid: str) -> list[str]:
    return [d["type"] for d in api.call("GET", f"/streams/{sid}/defects")[1]["defects"]]


# ------------------------------------------------------------ finding 1: the drip


def test_a_dripping_playlist_is_signal_loss_and_delete_frees_the_slot_at_once(
    router: Api, workers: WorkerFactory, origin: Origin, clip: Path
) -> None:
    # One slot, so the second stream shows when the first one's slot is free.
    workers("w-drip", AVMON_WORKER_CAPACITY="1", AVMON_READ_TIMEOUT_S="3", AVMON_OPEN_TIMEOUT_S="10")
    status, created = router.call("POST", "/streams", {"url": f"{origin.base}/drip.m3u8"})
    assert status == 201
    sid = created["stream_id"]
    wait_for(lambda: "signal_loss" in _defect_types(router, sid), 30, what="signal_loss for the drip")
    assert _stream(router, sid)["status"] == "RECONNECTING"
    assert _stream(router, sid)["frames_analysed"] == 0

    status, _ = router.call("DELETE", f"/streams/{sid}")
    assert status == 200
    status, other = router.call("POST", "/streams", {"url": clip.as_uri(), "realtime": True})
    # The worker sees the DELETE at its next renewal (every 1 s here), and the fetch in flight is
    # cut at once: the slot is free and the next stream taken well before the origin lets go.
    wait_for(lambda: _stream(router, other["stream_id"])["owner"] == "w-drip", 10, what="the slot freed")
    wait_for(lambda: origin.open == 0, 5, what="the worker's connection to the drip closed")
    assert _stream(router, sid)["owner"] is None


# ------------------------------------------------------------ finding 2: tcp:// in a playlist


def test_a_tcp_variant_in_a_playlist_is_refused_without_a_connection(
    router: Api, workers: WorkerFactory, origin: Origin, tcp_listener: tuple[int, list[object]]
) -> None:
    port, accepted = tcp_listener
    origin.pages["/master.m3u8"] = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\ntcp://[::1]:%d\n" % port
    workers("w-tcp", AVMON_WORKER_CAPACITY="1")
    status, created = router.call("POST", "/streams", {"url": f"{origin.base}/master.m3u8"})
    assert status == 201
    sid = created["stream_id"]
    wait_for(lambda: _stream(router, sid)["status"] == "REFUSED", 30, what="the stream refused")
    assert "tcp://" in str(_stream(router, sid)["reason"])
    assert accepted == []


@pytest.mark.parametrize(
    "uri",
    ["tcp://[::1]:{port}/x.ts", "httpproxy://[::1]:{port}/x", "udp://[::1]:{port}", "data:text/plain,x"],
)
def test_a_segment_or_key_of_another_protocol_is_refused_by_the_worker(
    origin: Origin, tcp_listener: tuple[int, list[object]], uri: str
) -> None:
    port, accepted = tcp_listener
    target = uri.format(port=port).encode()
    origin.pages["/media.m3u8"] = (
        b'#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI="%s"\n#EXTINF:2,\n%s\n'
        b"#EXT-X-ENDLIST\n" % (target, target)
    )
    config = SessionConfig(url=f"{origin.base}/media.m3u8", open_timeout_s=3.0, read_timeout_s=3.0)
    outcome, reason = StreamSession("s-nested", config, lambda *_: None).run()
    assert outcome is Outcome.REFUSED and reason is not None and "only http(s)" in reason
    assert accepted == []


# ------------------------------------------------------------ a playlist loop


def test_a_master_playlist_loop_is_refused_before_it_amplifies(origin: Origin) -> None:
    # The worker's session, as the worker runs it: a hostile run saw FFmpeg make 11,720
    # requests in 10 s to a pair of masters listing each other before anything refused them.
    origin.pages["/a.m3u8"] = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nb.m3u8\n"
    origin.pages["/b.m3u8"] = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\na.m3u8\n"
    config = SessionConfig(url=f"{origin.base}/a.m3u8", open_timeout_s=3.0, read_timeout_s=3.0)
    outcome, reason = StreamSession("s-loop", config, lambda *_: None).run()
    assert outcome is Outcome.REFUSED and reason is not None and "master playlist" in reason
    assert origin.requests == {"/a.m3u8": 1, "/b.m3u8": 1}  # the probe's reads; FFmpeg's none


def test_a_master_playlist_listing_itself_is_refused(origin: Origin) -> None:
    origin.pages["/self.m3u8"] = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nself.m3u8\n"
    config = SessionConfig(url=f"{origin.base}/self.m3u8", open_timeout_s=3.0, read_timeout_s=3.0)
    outcome, reason = StreamSession("s-self", config, lambda *_: None).run()
    assert outcome is Outcome.REFUSED and reason is not None and "itself" in reason
    assert origin.requests == {"/self.m3u8": 1}


# ------------------------------------------------------------ the proxy checks every playlist


@pytest.fixture
def proxy() -> Iterator[EgressProxy]:
    with EgressProxy.start(allow_private=True) as running:
        yield running


def test_ffmpeg_opening_a_tcp_variant_past_the_probe_is_stopped_by_the_proxy(
    origin: Origin, proxy: EgressProxy, tcp_listener: tuple[int, list[object]]
) -> None:
    # What a live reload would do after the probe: FFmpeg itself fetches a playlist naming
    # tcp://. The proxy reads every playlist whole before passing it on, and refuses this one.
    port, accepted = tcp_listener
    origin.pages["/master.m3u8"] = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\ntcp://[::1]:%d\n" % port
    url = f"{origin.base}/master.m3u8"
    with pytest.raises(av.error.HTTPForbiddenError):
        av.open(url, options=open_options(url, Limits(), proxy_url=proxy.url), timeout=(3.0, 3.0))
    assert accepted == [] and proxy.refused == 1


def test_a_clean_playlist_passes_the_proxy_unchanged(origin: Origin, proxy: EgressProxy) -> None:
    page = b'#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI="k.key"\n#EXTINF:2,\na.ts\n'
    origin.pages["/ok.m3u8"] = page
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(f"GET {origin.base}/ok.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(page)
