"""AWS access: client construction and the one place ClientError codes become our errors.

Clients are built here and injected; nothing deeper creates its own. The endpoint is botocore's
``AWS_ENDPOINT_URL`` (LocalStack, moto's server, or unset for real AWS).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import aioboto3
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

DEFAULT_REGION = "us-east-1"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "localstack", "moto", "emulator"}


class AvmonError(Exception):
    """Base of the project's own errors."""


class ConflictError(AvmonError):
    """A conditional write lost: someone else changed the item (lease taken, stale generation)."""


class NotFoundError(AvmonError):
    """The resource (table, queue, item) does not exist."""


class RetryableError(AvmonError):
    """Throttling, a 5xx or a connection failure: try again with backoff."""


class StoreError(AvmonError):
    """Any other failure of an AWS call: a bug or a misconfiguration, not worth retrying."""


_CONFLICT = {
    "ConditionalCheckFailedException",
    "TransactionCanceledException",
    "TransactionConflictException",
}
_NOT_FOUND = {"ResourceNotFoundException", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestThrottled",
}


def map_error(exc: BaseException) -> AvmonError:
    """Translate a botocore error into :class:`AvmonError` (raise the result ``from exc``)."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _CONFLICT:
            reasons = exc.response.get("CancellationReasons") or []
            codes = {r.get("Code") for r in reasons if isinstance(r, Mapping)}
            if code == "TransactionCanceledException" and codes - {"ConditionalCheckFailed", "None", None}:
                return RetryableError(f"{code}: {sorted(c for c in codes if c)}")
            return ConflictError(code)
        if code in _NOT_FOUND:
            return NotFoundError(code)
        if code in _RETRYABLE or status >= 500:
            return RetryableError(code or str(status))
        return StoreError(f"{code}: {exc}")
    if isinstance(exc, BotoCoreError | OSError | TimeoutError):
        return RetryableError(f"{type(exc).__name__}: {exc}")
    return StoreError(repr(exc))


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or None


def _is_local_endpoint(url: str | None) -> bool:
    return bool(url) and (urlparse(url).hostname or "") in _LOCAL_HOSTS


def session_kwargs() -> dict[str, Any]:
    """Region, and dummy credentials when talking to a local emulator with none configured.

    An emulator accepts any key; requiring users to invent one before `avmon worker` joins the
    local stack would only be friction. Real AWS endpoints never get dummy keys.
    """
    kwargs: dict[str, Any] = {
        "region_name": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    }
    if _is_local_endpoint(endpoint_url()) and boto3.Session().get_credentials() is None:
        kwargs["aws_access_key_id"] = "testing"
        kwargs["aws_secret_access_key"] = "testing"
    return kwargs


CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=3,
    read_timeout=30,
    max_pool_connections=32,
)


def client(service: str) -> Any:
    """A boto3 client (the router, the CLI, tests)."""
    return boto3.Session(**session_kwargs()).client(service, config=CLIENT_CONFIG)


def async_session() -> aioboto3.Session:
    """An aioboto3 session (the worker); open clients with ``session.client(name, config=CLIENT_CONFIG)``."""
    return aioboto3.Session(**session_kwargs())
