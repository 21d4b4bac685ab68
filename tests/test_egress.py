"""The egress proxy: FFmpeg's nested HTTP(S) fetches (HLS segments, keys, variants, redirects) obey
the URL policy, not just the URL the user submitted.

Everything runs on loopback. To play "a public host serving a playlist that points at an internal
one" without a public host, the proxy is given an extra denied address: 127.0.0.1 plays the
public origin, 127.0.0.2 the internal service.
"""

from __future__ import annotations

import functools
import http.server
import ipaddress
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.media import make_testsrc
from worker import egress
from worker.egress import EgressProxy
from worker.media import Limits, open_options, open_source, read_timeout_for

SEGMENTS = ("live0.ts", "live1.ts", "live2.ts")
INTERNAL = ipaddress.ip_network("127.0.0.2/32")


def _deny_internal(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return addr in INTERNAL


# ------------------------------------------------------------ media and servers


@pytest.fixture(scope="module")
def hls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of media as a 3-segment VOD HLS playlist (live.m3u8, live0..2.ts)."""
    out = tmp_path_factory.mktemp("egress")
    source = out / "source.ts"
    make_testsrc(source, duration_s=6, width=160, height=90)
    with (
        av.open(str(source)) as inp,
        av.open(
            str(out / "live.m3u8"), "w", format="hls", options={"hls_time": "2", "hls_list_size": "0"}
        ) as hls,
    ):
        streams = {s.index: hls.add_stream_from_template(s) for s in (*inp.streams.video, *inp.streams.audio)}
        for packet in inp.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            packet.stream = streams[packet.stream.index]
            hls.mux(packet)
    assert [name for name in SEGMENTS if (out / name).exists()] == list(SEGMENTS)
    return out


def _packets_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux() if packet.dts is not None)


def _playlist(hls_dir: Path, name: str, live1_ts: str) -> str:
    """Write a copy of live.m3u8 as ``name`` with the second segment's URL replaced."""
    text = (hls_dir / "live.m3u8").read_text().replace("\nlive1.ts\n", f"\n{live1_ts}\n")
    assert live1_ts in text
    (hls_dir / name).write_text(text)
    return name


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files from the served directory; ``/redirect?to=URL`` answers 302 to URL."""

    server: MediaServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect?to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MediaServer(http.server.ThreadingHTTPServer):
    """A directory over HTTP(S) on ``host``, a free port, counting connections and requests."""

    def __init__(self, directory: Path, host: str, tls: ssl.SSLContext | None = None) -> None:
        super().__init__((host, 0), functools.partial(_Handler, directory=str(directory)))
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.connections = 0
        self.requests: list[str] = []
        self.port: int = self.server_address[1]
        scheme = "https" if tls is not None else "http"
        self.base = f"{scheme}://{host}:{self.port}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1  # every TCP connection, even one that sends no request
        super().process_request(request, client_address)

    def close(self) -> None:
        self.shutdown()
        self.server_close()  # joins the request threads: no socket outlives the test
        self._thread.join()


@pytest.fixture
def servers(hls_dir: Path) -> Iterator[Callable[..., MediaServer]]:
    started: list[MediaServer] = []

    def start(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> MediaServer:
        server = MediaServer(hls_dir, host, tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def proxies() -> Iterator[Callable[..., EgressProxy]]:
    started: list[EgressProxy] = []

    def start(allow_private: bool, **kwargs: Any) -> EgressProxy:
        proxy = EgressProxy.start(allow_private, **kwargs)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def shared_proxies(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[bool, EgressProxy]]:
    """A fresh set of per-process proxies for ``open_source``, stopped after the test."""
    proxies: dict[bool, EgressProxy] = {}
    monkeypatch.setattr(egress, "_shared", proxies)
    yield proxies
    for proxy in proxies.values():
        proxy.stop()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address the proxy (or anything in Python) connects to with create_connection."""
    calls: list[tuple[str, int]] = []
    real = socket.create_connection

    def recording(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        calls.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", recording)
    return calls


def _demux(url: str, proxy: EgressProxy) -> int:
    """Open ``url`` as a worker does (its options and whitelist) through ``proxy``; count packets."""
    options = open_options(url, Limits(), proxy_url=proxy.url)
    with av.open(url, options=options, timeout=(5.0, 5.0)) as container:
        return sum(1 for packet in container.demux() if packet.dts is not None)


def _ask(proxy: EgressProxy, request: bytes) -> bytes:
    """Send one raw request to the proxy and read its whole answer (it closes after one)."""
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# ------------------------------------------------------------ the policy on nested fetches


def test_private_hosts_allowed_a_worker_open_demuxes_the_whole_playlist_through_the_proxy(
    hls_dir: Path, servers: Callable[..., MediaServer], shared_proxies: dict[bool, EgressProxy]
) -> None:
    origin = servers()
    with open_source(f"{origin.base}/live.m3u8", Limits(), 5.0, 5.0, allow_private=True) as container:
        packets = sum(1 for packet in container.demux() if packet.dts is not None)
    assert packets == sum(_packets_in(hls_dir / name) for name in SEGMENTS)
    assert shared_proxies[True].forwarded >= 1 + len(SEGMENTS)  # the playlist and every segment


def test_private_hosts_refused_the_proxy_refuses_a_loopback_playlist(
    servers: Callable[..., MediaServer], shared_proxies: dict[bool, EgressProxy]
) -> None:
    origin = servers()
    with pytest.raises(av.error.HTTPForbiddenError):
        open_source(f"{origin.base}/live.m3u8", Limits(), 5.0, 5.0)  # the default: private refused
    assert shared_proxies[False].refused == 2  # the playlist probe (read_timeout_for) and FFmpeg
    assert origin.requests == []
    assert origin.connections == 0


def test_an_hls_sources_read_timeout_is_three_target_durations(
    hls_dir: Path, servers: Callable[..., MediaServer], shared_proxies: dict[bool, EgressProxy]
) -> None:
    # FFmpeg waits for a live playlist's next segment inside one read: a read timeout shorter
    # than a segment would end the stream at every segment.
    origin = servers()
    (hls_dir / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000\nlive.m3u8\n")
    proxy = egress.shared_proxy(True).url
    assert "#EXT-X-TARGETDURATION:2" in (hls_dir / "live.m3u8").read_text()
    assert read_timeout_for(f"{origin.base}/live.m3u8", 1.0, proxy, 5.0) == 6.0
    assert read_timeout_for(f"{origin.base}/master.m3u8", 1.0, proxy, 5.0) == 6.0  # its variant's
    assert read_timeout_for(f"{origin.base}/live.m3u8", 10.0, proxy, 5.0) == 10.0  # never shorter
    assert read_timeout_for(f"{origin.base}/live0.ts", 1.0, proxy, 5.0) == 1.0  # not a playlist
    assert read_timeout_for(f"{origin.base}/missing.m3u8", 1.0, proxy, 5.0) == 1.0


def test_the_playlist_probe_goes_through_the_proxy_even_for_hosts_in_no_proxy(
    servers: Callable[..., MediaServer],
    shared_proxies: dict[bool, EgressProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Python's own HTTP client would connect straight to a host listed in NO_PROXY.
    origin = servers()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    proxy = egress.shared_proxy(True)
    target = f"{origin.base}/redirect?to={origin.base}/live.m3u8"  # a redirect, followed via the proxy too
    assert read_timeout_for(target, 1.0, proxy.url, 5.0) == 6.0
    assert proxy.forwarded == 2 and len(origin.requests) == 2


def test_a_garbled_answer_to_the_playlist_probe_leaves_the_read_timeout_as_it_was() -> None:
    # Not an HTTP status line: http.client raises HTTPException, which is no OSError.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00garbage\r\n\r\n")

        server = threading.Thread(target=answer)
        server.start()
        proxy_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert read_timeout_for("http://example.com/live.m3u8", 1.0, proxy_url, 5.0) == 1.0
        server.join(5)


def test_internal_segment_in_a_public_playlist_is_never_fetched(
    hls_dir: Path, servers: Callable[..., MediaServer], proxies: Callable[..., EgressProxy]
) -> None:
    public, internal = servers("127.0.0.1"), servers("127.0.0.2")
    proxy = proxies(allow_private=True, deny=_deny_internal)
    name = _playlist(hls_dir, "ssrf.m3u8", live1_ts=f"{internal.base}/live1.ts")
    packets = _demux(f"{public.base}/{name}", proxy)
    assert internal.connections == 0
    assert proxy.refused == 1
    assert packets == _packets_in(hls_dir / "live0.ts") + _packets_in(hls_dir / "live2.ts")


def test_redirect_to_an_internal_host_is_not_followed(
    hls_dir: Path, servers: Callable[..., MediaServer], proxies: Callable[..., EgressProxy]
) -> None:
    public, internal = servers("127.0.0.1"), servers("127.0.0.2")
    proxy = proxies(allow_private=True, deny=_deny_internal)
    redirect = f"{public.base}/redirect?to={internal.base}/live1.ts"
    name = _playlist(hls_dir, "redirect.m3u8", live1_ts=redirect)
    packets = _demux(f"{public.base}/{name}", proxy)
    assert internal.connections == 0
    assert packets == _packets_in(hls_dir / "live0.ts") + _packets_in(hls_dir / "live2.ts")


def test_a_playlist_with_a_file_segment_is_refused_whole(
    hls_dir: Path, servers: Callable[..., MediaServer], proxies: Callable[..., EgressProxy]
) -> None:
    # A real media file, so that only the policy stands in the way: the proxy reads every
    # playlist before FFmpeg does and refuses one naming any protocol but http(s).
    origin = servers()
    name = _playlist(hls_dir, "file.m3u8", live1_ts=(hls_dir / "live1.ts").as_uri())
    proxy = proxies(allow_private=True)
    with pytest.raises(av.error.HTTPForbiddenError):
        _demux(f"{origin.base}/{name}", proxy)
    assert proxy.refused == 1


def test_etc_passwd_segment_fails_the_open_cleanly(
    hls_dir: Path, servers: Callable[..., MediaServer], proxies: Callable[..., EgressProxy]
) -> None:
    # Refused by the proxy's playlist check (and FFmpeg's demuxer and whitelist would refuse it
    # too): an error, no data, no crash.
    origin = servers()
    name = _playlist(hls_dir, "passwd.m3u8", live1_ts="file:///etc/passwd")
    with pytest.raises(av.error.HTTPForbiddenError):
        _demux(f"{origin.base}/{name}", proxies(allow_private=True))


def test_metadata_service_in_a_playlist_is_refused_without_a_connection(
    hls_dir: Path,
    servers: Callable[..., MediaServer],
    proxies: Callable[..., EgressProxy],
    connections: list[tuple[str, int]],
) -> None:
    # As a variant playlist: FFmpeg opens variant URLs whatever their extension (a segment URL
    # without one is refused by the demuxer before any request), so the proxy sees this one.
    origin = servers()
    (hls_dir / "metadata.m3u8").write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nhttp://169.254.169.254/latest/meta-data/\n"
    )
    proxy = proxies(allow_private=True)  # metadata is refused even where private hosts are allowed
    with pytest.raises(av.error.HTTPForbiddenError):
        _demux(f"{origin.base}/metadata.m3u8", proxy)
    assert proxy.refused == 1
    assert [addr for addr, _ in connections if addr != "127.0.0.1"] == []


# ------------------------------------------------------------ the proxy itself


def test_connect_to_an_internal_address_is_refused(
    proxies: Callable[..., EgressProxy], connections: list[tuple[str, int]]
) -> None:
    proxy = proxies(allow_private=False)
    answer = _ask(proxy, b"CONNECT 10.0.0.5:443 HTTP/1.1\r\nHost: 10.0.0.5:443\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"internal address (10.0.0.5)" in answer
    assert proxy.refused == 1
    assert connections == []


def test_connect_to_the_metadata_service_as_mapped_ipv6_is_refused(
    proxies: Callable[..., EgressProxy], connections: list[tuple[str, int]]
) -> None:
    proxy = proxies(allow_private=True)
    answer = _ask(proxy, b"CONNECT [::ffff:169.254.169.254]:80 HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"metadata" in answer
    assert connections == []


def test_host_is_resolved_once_and_the_checked_address_is_the_one_connected(
    servers: Callable[..., MediaServer],
    proxies: Callable[..., EgressProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DNS rebinding: the first answer is "public", any later one internal.
    public, internal = servers("127.0.0.1"), servers("127.0.0.2")
    answers = iter(["127.0.0.1"])
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return real(next(answers, "127.0.0.2"), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    proxy = proxies(allow_private=True, deny=_deny_internal)
    answer = _ask(proxy, f"GET http://rebind.test:{public.port}/live.m3u8 HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 200 ")
    assert b"\r\nConnection: close\r\n" in answer
    assert lookups == ["rebind.test"]
    assert (public.connections, internal.connections) == (1, 0)
    assert public.requests == ["/live.m3u8"]  # origin form, as an origin server expects


def test_https_source_is_tunnelled_through_the_proxy(
    hls_dir: Path, tmp_path: Path, servers: Callable[..., MediaServer], proxies: Callable[..., EgressProxy]
) -> None:
    origin = servers("127.0.0.1", tls=_self_signed_tls(tmp_path))
    proxy = proxies(allow_private=True)
    packets = _demux(f"{origin.base}/live.m3u8", proxy)
    assert packets == sum(_packets_in(hls_dir / name) for name in SEGMENTS)
    assert proxy.forwarded >= 1
    assert "/live0.ts" in origin.requests


def test_no_proxy_is_taken_out_of_ffmpegs_reach(
    shared_proxies: dict[bool, EgressProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    # FFmpeg connects directly to hosts listed in the lowercase no_proxy, past the proxy.
    monkeypatch.setenv("no_proxy", "127.0.0.2")
    monkeypatch.delenv("NO_PROXY", raising=False)
    egress.shared_proxy(True)
    assert "no_proxy" not in os.environ
    assert os.environ["NO_PROXY"] == "127.0.0.2"  # Python's HTTP clients still see it


def _self_signed_tls(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context
