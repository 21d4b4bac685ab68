"""Marshalling between plain dicts and DynamoDB attribute maps, and opaque page tokens.

Every request builder in this package returns the keyword arguments of one low-level client call
(:data:`Request`) and marshals its items and values here.
"""

from __future__ import annotations

import base64
import binascii
import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_SER = TypeSerializer()
_DESER = TypeDeserializer()

Request = dict[str, Any]
Item = dict[str, Any]


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def marshal(item: dict[str, Any]) -> Item:
    """Plain dict → DynamoDB attribute map (floats as numbers, ``None`` values dropped)."""
    return {k: _SER.serialize(_to_dynamo(v)) for k, v in item.items() if v is not None}


def unmarshal(item: Item) -> dict[str, Any]:
    return {k: _from_dynamo(_DESER.deserialize(v)) for k, v in item.items()}


def _values(**values: Any) -> Item:
    return {f":{k}": _SER.serialize(_to_dynamo(v)) for k, v in values.items()}


def encode_page_token(key: Item | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(unmarshal(key), sort_keys=True).encode()).decode()


def decode_page_token(token: str) -> Item:
    """The opaque ``next_token`` of a listing back to an ExclusiveStartKey (ValueError if forged)."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("next_token is not valid") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError("next_token is not valid")
    return marshal(raw)
