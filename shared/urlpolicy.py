"""Which stream URLs a deployment accepts (DESIGN.md §8, "Trust").

Checked by the router (a fast 4xx with the reason) and again by the worker when it opens the
source, because DNS may answer differently by then.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

METADATA_HOSTS = {"169.254.169.254", "fd00:ec2::254", "169.254.170.2", "metadata.google.internal"}
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]


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


def _is_internal(addr: IpAddress) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return bool(
        addr.is_loopback
        or addr.is_link_local
        or addr.is_private
        or addr.is_unspecified
        or addr.is_reserved
        or (addr.is_multicast and isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local)
    )


def check_url(
    url: str,
    *,
    schemes: frozenset[str],
    allow_private: bool,
    resolve: Resolver = _resolve,
) -> None:
    """Raise :class:`UrlRefused` unless ``url`` may be monitored under this policy.

    * the scheme must be enabled (``file`` only where the deployment enables it);
    * the host must not be a cloud metadata address, ever;
    * a host that does not resolve raises :class:`HostUnresolvable` (an ``OSError``);
    * unless ``allow_private``, no host may resolve to a loopback, private, link-local or
      reserved address (multicast groups stay allowed for ``udp``: studios send TS that way).
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
    host = parts.hostname
    if scheme == "udp" and (host is None or host in ("", "0.0.0.0", "::")):
        return  # listen on all interfaces for an incoming TS: nothing is fetched
    if not host:
        raise UrlRefused("the URL has no host")
    if port is not None and not 0 < port < 65536:
        raise UrlRefused(f"port {port} is out of range")
    if host.lower() in METADATA_HOSTS:
        raise UrlRefused(f"host {host!r} is a cloud metadata service")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host)]
    for addr in addresses:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # ::ffff:169.254.169.254 is the metadata service too
        if str(addr) in METADATA_HOSTS:
            raise UrlRefused(f"host {host!r} resolves to a cloud metadata address ({addr})")
        if scheme == "udp" and addr.is_multicast:
            continue
        if not allow_private and _is_internal(addr):
            raise UrlRefused(
                f"host {host!r} resolves to an internal address ({addr}); "
                "internal hosts are not allowed in this deployment"
            )
