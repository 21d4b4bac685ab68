"""One address policy for router, worker and egress proxy (DESIGN.md §8): every form of a cloud
metadata address is refused always, and internal, CGNAT and special-purpose ranges are refused
where private hosts are not allowed. Each form goes through the running router over HTTP, the
worker's session (which checks before it opens) and the egress proxy (which checks every fetch
FFmpeg makes).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from shared.urlpolicy import UrlRefused, check_url
from tests.conftest import Api, _close_router_clients
from worker.egress import EgressProxy
from worker.session import Outcome, SessionConfig, StreamSession

# Refused even where private hosts are allowed (`avmon up`, compose).
METADATA_FORMS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fd00:ec2::254%1]/latest/meta-data/",  # a zone id
    "http://[fd00:ec2::254%25eth0]/latest/meta-data/",  # a zone id, percent-encoded as RFC 6874 says
    "http://[FD00:EC2:0:0:0:0:0:254]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::169.254.169.254]/",  # NAT64
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[::169.254.169.254]/",  # IPv4-compatible
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud
    "http://169.254.170.2/v2/credentials/x",  # ECS task credentials
    "http://169.254.170.23/v1/credentials",  # EKS Pod Identity
    "http://[fd00:ec2::23]/v1/credentials",
    "http://168.63.129.16/machine",  # Azure WireServer
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.google.internal./computeMetadata/v1/",
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one decimal number
    "http://0xa9fea9fe/latest/meta-data/",
    "http://0251.0376.0251.0376/latest/meta-data/",
]
# Refused with deployment defaults (private hosts not allowed).
INTERNAL_FORMS = [
    "http://100.64.0.1/",  # CGNAT: Python's ipaddress does not call it private
    "http://100.127.255.254/",
    "http://198.18.0.1/",  # benchmarking
    "http://192.0.2.1/",  # documentation
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://192.0.0.8/",  # IETF protocol assignments
    "http://240.0.0.1/",
    "http://224.0.0.1/",  # multicast, over http
    "http://0.0.0.0/",
    "http://10.1.2.3/",
    "http://127.0.0.1/",
    "http://[::1]/",
    "http://[::]/",
    "http://[fe80::1%1]/",
    "http://[fc00::1]/",
    "http://[2001:db8::1]/",  # documentation
    "http://[3fff::1]/",
    "http://[2001:2::1]/",  # benchmarking
    "http://[100::1]/",  # discard-only
    "http://[64:ff9b::10.0.0.1]/",  # NAT64 of a private address
    "http://[2002:0a00:0001::]/",  # 6to4 of a private address
]
PUBLIC_FORMS = [
    "http://93.184.215.14/live.m3u8",
    "http://[2606:4700:4700::1111]/live.m3u8",
    "http://[64:ff9b::93.184.215.14]/live.m3u8",  # NAT64 of a public address (DNS64 networks)
    "udp://239.1.1.1:5000",
]
SCHEMES = frozenset({"http", "https", "udp"})


def _no_dns(host: str) -> list[str]:
    """A resolver for the numeric forms getaddrinfo accepts (inet_aton: decimal, hex, octal)."""
    return [socket.inet_ntoa(socket.inet_aton(host))]


# ------------------------------------------------------------ the policy itself


@pytest.mark.parametrize("url", METADATA_FORMS)
def test_every_metadata_form_is_refused_even_with_private_hosts_allowed(url: str) -> None:
    with pytest.raises(UrlRefused, match="metadata"):
        check_url(url, schemes=SCHEMES, allow_private=True, resolve=_no_dns)


@pytest.mark.parametrize("url", INTERNAL_FORMS)
def test_every_internal_form_is_refused_with_deployment_defaults(url: str) -> None:
    with pytest.raises(UrlRefused, match="internal address"):
        check_url(url, schemes=SCHEMES, allow_private=False, resolve=_no_dns)


@pytest.mark.parametrize("url", PUBLIC_FORMS)
def test_public_addresses_pass_with_deployment_defaults(url: str) -> None:
    check_url(url, schemes=SCHEMES, allow_private=False, resolve=_no_dns)


# ------------------------------------------------------------ the running router


@pytest.fixture
def strict_router(router: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The router on loopback with the deployment's defaults: private hosts refused."""
    monkeypatch.setenv("AVMON_ALLOW_PRIVATE_HOSTS", "false")
    monkeypatch.setenv("AVMON_ALLOWED_SCHEMES", "http,https,udp")
    _close_router_clients()
    yield router


def _accepted(api: Api, field: str, urls: list[str], word: str) -> list[tuple[str, int, object]]:
    """The URLs the router does not refuse with a 422 naming ``word`` (one stack for all forms:
    a refused POST never reaches the store)."""
    wrong = []
    for url in urls:
        body = {"url": url} if field == "url" else {"url": PUBLIC_FORMS[0], field: url}
        status, answer = api.call("POST", "/streams", body)
        if status != 422 or answer["error"] != f"{field} refused" or word not in answer["detail"]:
            wrong.append((url, status, answer))
    return wrong


def test_the_router_refuses_every_metadata_form_where_private_hosts_are_allowed(router: Api) -> None:
    assert _accepted(router, "url", METADATA_FORMS, "metadata") == []


def test_the_router_refuses_every_internal_form_by_default(strict_router: Api) -> None:
    assert _accepted(strict_router, "url", INTERNAL_FORMS, "internal") == []


def test_the_router_refuses_a_webhook_at_any_metadata_form(router: Api) -> None:
    assert _accepted(router, "webhook_url", METADATA_FORMS, "metadata") == []


# ------------------------------------------------------------ the worker


def _worker_outcome(url: str, allow_private: bool) -> tuple[Outcome, str | None]:
    config = SessionConfig(url=url, allow_private=allow_private, open_timeout_s=2.0, read_timeout_s=2.0)
    return StreamSession("s-policy", config, lambda *_: None).run()


@pytest.mark.parametrize("url", METADATA_FORMS)
def test_the_worker_refuses_every_metadata_form_where_private_hosts_are_allowed(url: str) -> None:
    outcome, reason = _worker_outcome(url, allow_private=True)
    assert outcome is Outcome.REFUSED and reason is not None and "metadata" in reason


@pytest.mark.parametrize("url", INTERNAL_FORMS)
def test_the_worker_refuses_every_internal_form_by_default(url: str) -> None:
    outcome, reason = _worker_outcome(url, allow_private=False)
    assert outcome is Outcome.REFUSED and reason is not None and "internal" in reason


# ------------------------------------------------------------ the egress proxy


def _ask(proxy: EgressProxy, url: str) -> bytes:
    """A proxied GET for ``url`` as FFmpeg sends it; the proxy's whole answer."""
    parts = urlsplit(url)
    request = f"GET {url} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.fixture(scope="module")
def lenient_proxy() -> Iterator[EgressProxy]:
    with EgressProxy.start(allow_private=True) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def strict_proxy() -> Iterator[EgressProxy]:
    with EgressProxy.start(allow_private=False) as proxy:
        yield proxy


@pytest.mark.parametrize("url", METADATA_FORMS)
def test_the_egress_proxy_refuses_every_metadata_form_where_private_hosts_are_allowed(
    lenient_proxy: EgressProxy, url: str
) -> None:
    answer = _ask(lenient_proxy, url)
    assert answer.startswith(b"HTTP/1.1 403 ") and b"metadata" in answer


@pytest.mark.parametrize("url", INTERNAL_FORMS)
def test_the_egress_proxy_refuses_every_internal_form_by_default(strict_proxy: EgressProxy, url: str) -> None:
    answer = _ask(strict_proxy, url)
    assert answer.startswith(b"HTTP/1.1 403 ") and b"internal" in answer


# ------------------------------------------------------------ FFmpeg options in a URL's query


@pytest.mark.parametrize(
    "url",
    [
        "udp://@:5090?fifo_size=20000000",
        "udp://239.1.1.1:5000?buffer_size=999999999",
        "srt://host:9000?mode=listener",
    ],
)
def test_ffmpeg_options_in_a_url_query_are_refused_by_the_worker(url: str) -> None:
    outcome, reason = _worker_outcome(url, allow_private=True)
    assert outcome is Outcome.REFUSED and reason is not None and "not accepted" in reason


def test_ffmpeg_options_in_a_url_query_are_refused_by_the_router(router: Api) -> None:
    status, body = router.call("POST", "/streams", {"url": "udp://@:5090?fifo_size=20000000"})
    assert status == 422 and "fifo_size" in body["detail"]


def test_a_multicast_interface_in_the_query_is_accepted() -> None:
    check_url("udp://239.1.1.1:5000?localaddr=10.0.0.5", schemes=SCHEMES, allow_private=False)
