"""Notification targets as they may be shown (API answers, logs, the delivery log): never the
user info (credentials), query (tokens) or fragment of a webhook URL."""

from __future__ import annotations

from urllib.parse import urlsplit


def url_origin(url: str, *, with_path: bool = False) -> str:
    """``scheme://host[:port]`` (``with_path``: and the path), or ``<invalid url>``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path if with_path else ''}"


def redact_target(url: str) -> str:
    """A webhook URL as ``scheme://host[:port]/path``; an SNS topic ARN as it is."""
    if url.startswith("arn:"):
        return url
    return url_origin(url, with_path=True)
