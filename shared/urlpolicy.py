"""Which stream URLs a deployment accepts (DESIGN.md §8, "Trust").

Checked by the router (a fast 4xx with the reason) and again by the worker when it opens the
source, because DNS may answer differently by then.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]

# Cloud metadata and credential services: refused always, whatever the deployment allows, in
# every form that reaches them (IPv4-mapped, NAT64, 6to4 and IPv4-compatible IPv6, with or
# without an IPv6 zone id). Sources: each provider's instance-metadata documentation.
METADATA_ADDRESSES: frozenset[IpAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, Hetzner, ...
        "fd00:ec2::254",  # AWS IMDS over IPv6 (Nitro)
        "169.254.170.2",  # ECS task metadata and task-role credentials
        "169.254.170.23",  # EKS Pod Identity agent
        "fd00:ec2::23",  # EKS Pod Identity agent over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "169.254.0.23",  # Tencent Cloud (metadata.tencentyun.com)
        "192.0.0.192",  # Oracle Cloud (legacy)
        "169.254.42.42",  # Scaleway
        "fd00:42::42",  # Scaleway over IPv6
        "168.63.129.16",  # Azure WireServer (platform agent, certificates)
    )
)
METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)

# Addresses that are not a public origin (IANA's IPv4 and IPv6 special-purpose registries, plus
# multicast): loopback, private, shared (CGNAT 100.64.0.0/10), link-local, documentation,
# benchmarking (198.18.0.0/15), protocol assignments, reserved. Listed here rather than taken
# from ``ipaddress``'s ``is_private``, which omits CGNAT and changes between Python releases.
INTERNAL_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT), also Alibaba's metadata and VPC services
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.31.196.0/24",  # AS112
        "192.52.193.0/24",  # AMT
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "192.175.48.0/24",  # AS112 direct delegation
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast (allowed for udp:// sources, which listen rather than fetch)
        "240.0.0.0/4",  # reserved, and the limited broadcast address
        "::/128",
        "::1/128",
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0/96",  # IPv4-mapped (judged by the IPv4 address too)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking 2001:2::/48, ORCHID
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
# For these schemes FFmpeg reads options from the URL's query (``udp://@:5090?fifo_size=...``):
# a user could size buffers (a 20 GB fifo failed with ENOMEM, retried for ever) or change what is
# bound. Only the options a source needs to be named are accepted; anything else is refused.
URL_OPTIONS_ALLOWED: dict[str, frozenset[str]] = {
    "udp": frozenset({"localaddr", "sources", "block", "reuse"}),  # multicast interface, SSM
    "rtp": frozenset({"localaddr", "sources", "block"}),
    "srt": frozenset({"streamid", "passphrase", "pbkeylen", "latency"}),
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def _unscoped(addr: IpAddress) -> IpAddress:
    """``fd00:ec2::254%eth0`` without its zone id: the zone picks an interface, not another host."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        return ipaddress.IPv6Address(str(addr).split("%", 1)[0])
    return addr


def address_forms(addr: IpAddress) -> list[IpAddress]:
    """``addr`` (zone id dropped) and every IPv4 address it embeds and may reach: IPv4-mapped,
    NAT64 (64:ff9b::/96), 6to4 (2002::/16), IPv4-compatible (::/96) and Teredo's client."""
    addr = _unscoped(addr)
    forms: list[IpAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            forms.append(addr.ipv4_mapped)
        if addr.sixtofour is not None:
            forms.append(addr.sixtofour)
        if addr.teredo is not None:
            forms.extend(addr.teredo)
        if addr in _NAT64 or (addr in _V4_COMPATIBLE and int(addr) > 1):
            forms.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return forms


def is_metadata(addr: IpAddress) -> bool:
    """Whether ``addr``, in any of its :func:`address_forms`, is a cloud metadata service."""
    return any(form in METADATA_ADDRESSES for form in address_forms(addr))


def is_internal(addr: IpAddress) -> bool:
    """Whether ``addr``, in any of its :func:`address_forms`, is not a public unicast address."""
    return any(form in net for form in address_forms(addr) for net in INTERNAL_NETWORKS)


class UrlRefused(ValueError):
    """The URL may not be monitored here; the message is the reason, fit for the API's answer."""


class HostUnresolvable(OSError):
    """DNS has no answer now. Not a refusal: DNS failures pass, and the worker checks again when
    it opens the source (then it is a lost signal, retried)."""


def to_url(source: str) -> str:
    """A local path becomes an absolute ``file://`` URL; a URL passes through unchanged."""
    if urlsplit(source).scheme and not (len(source) > 1 and source[1] == ":"):
        return source
    return Path(source).expanduser().resolve().as_uri()


def _resolve(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolvable(f"host {host!r} does not resolve: {exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


def check_url(
    url: str,
    *,
    schemes: frozenset[str],
    allow_private: bool,
    resolve: Resolver = _resolve,
) -> None:
    """Raise :class:`UrlRefused` unless ``url`` may be monitored under this policy.

    * the scheme must be enabled (``file`` only where the deployment enables it);
    * the host must not be a cloud metadata service, ever (:func:`is_metadata`: every known
      address, in every IPv6 form, with or without a zone id);
    * a host that does not resolve raises :class:`HostUnresolvable` (an ``OSError``);
    * unless ``allow_private``, no host may resolve to an internal address (:data:`INTERNAL_NETWORKS`:
      loopback, private, CGNAT, link-local, documentation, benchmarking, reserved); multicast
      groups stay allowed for ``udp``: studios send TS that way.
    """
    if any(ch in url for ch in "\r\n\t\x00 "):
        raise UrlRefused("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError on a malformed port
    except ValueError as exc:
        raise UrlRefused(f"the URL is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise UrlRefused("the URL has no scheme (e.g. https://, udp://)")
    if scheme not in schemes:
        raise UrlRefused(f"scheme {scheme!r} is not enabled here (enabled: {', '.join(sorted(schemes))})")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UrlRefused("file URLs must name a local path (file:///path)")
        if not Path(parts.path).is_absolute():
            raise UrlRefused("file URLs must name an absolute path")
        return
    allowed = URL_OPTIONS_ALLOWED.get(scheme)
    if allowed is not None and parts.query:
        names = sorted({name for name, _ in parse_qsl(parts.query, keep_blank_values=True)} - allowed)
        if names or "&&" in parts.query:
            raise UrlRefused(
                f"FFmpeg option(s) {', '.join(names) or '?'} in a {scheme}:// URL are not accepted here "
                f"(accepted: {', '.join(sorted(allowed))})"
            )
    host = parts.hostname
    if scheme == "udp" and (host is None or host in ("", "0.0.0.0", "::")):
        return  # listen on all interfaces for an incoming TS: nothing is fetched
    if not host:
        raise UrlRefused("the URL has no host")
    if port is not None and not 0 < port < 65536:
        raise UrlRefused(f"port {port} is out of range")
    name = host.lower().rstrip(".")
    if name in METADATA_NAMES:
        raise UrlRefused(f"host {host!r} is a cloud metadata service")
    try:
        addresses = [ipaddress.ip_address(host)]
        literal = True
    except ValueError:
        addresses = [ipaddress.ip_address(a) for a in resolve(host)]
        literal = False
    for addr in addresses:
        if is_metadata(addr):
            if literal:
                raise UrlRefused(f"host {host!r} is a cloud metadata address")
            raise UrlRefused(f"host {host!r} resolves to a cloud metadata address ({_unscoped(addr)})")
    for addr in addresses:
        if scheme == "udp" and addr.is_multicast:
            continue
        if not allow_private and is_internal(addr):
            raise UrlRefused(
                f"host {host!r} resolves to an internal address ({_unscoped(addr)}); "
                "internal hosts are not allowed in this deployment"
            )
