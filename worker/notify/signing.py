"""Webhook headers and their HMAC signature.

A webhook ``POST`` carries ``Content-Type: application/json``, ``User-Agent: avmon-notify/1``, and

* ``X-Avmon-Event``: the body's ``event``;
* ``X-Avmon-Delivery``: a unique id of this message to this target, the same on every retry
  (receivers dedupe on it, or on ``event_id`` across workers);
* ``X-Avmon-Timestamp``: Unix seconds of this attempt;
* ``X-Avmon-Signature``: ``sha256=`` + hex HMAC-SHA256, keyed with the shared secret, of
  ``"<timestamp>.<raw body>"`` (omitted when no secret is configured).

A receiver verifies with :func:`verify_signature`, or by hand: compute
``hmac.new(secret, f"{ts}.".encode() + raw_body, "sha256").hexdigest()`` over the raw bytes it
received, compare with ``hmac.compare_digest``, and refuse timestamps more than 5 minutes away
from its clock (a replayed request keeps its old timestamp, which the signature covers).
"""

from __future__ import annotations

import hashlib
import hmac
import time

USER_AGENT = "avmon-notify/1"
SIGNATURE_TOLERANCE_S = 300.0


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Avmon-Signature`` value: ``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches the raw body and the timestamp is recent."""
    try:
        ts = float(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def webhook_headers(
    *, event: str, delivery_id: str, body: bytes, secret: bytes, timestamp: str
) -> dict[str, str]:
    """The headers of one attempt (``timestamp``: its Unix seconds); signed when ``secret``."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Avmon-Event": event,
        "X-Avmon-Delivery": delivery_id,
        "X-Avmon-Timestamp": timestamp,
    }
    if secret:
        headers["X-Avmon-Signature"] = sign(secret, timestamp, body)
    return headers
