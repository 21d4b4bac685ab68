"""Streams never vanish on the embedded default: fenced transactions failing on the streams table
while streams are created (the churn a hostile run saw lose 2 of 115 streams) lose no write."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from shared import aws, store
from shared.settings import RouterSettings
from tests.conftest import Stack

ROUNDS = 200


def test_failing_fenced_transactions_lose_no_stream_created_meanwhile(stack: Stack) -> None:
    # What a worker's fenced defect write does when its lease is gone: a transaction whose
    # ConditionCheck on the streams table fails. moto 5.2.5 restores a deep copy of the table
    # taken when the transaction began, dropping every stream the router created meanwhile.
    tables = store.Tables.from_settings(RouterSettings())  # the stack's tables, from its env
    created: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def create_streams(worker: int) -> None:
        client = aws.client("dynamodb")
        try:
            for n in range(ROUNDS // 2):
                sid = f"s-{worker:02d}{n:022d}"
                request = store.put_new_stream(
                    tables,
                    stream_id=sid,
                    url="http://93.184.215.14/a.m3u8",
                    name=None,
                    realtime=False,
                    client_token=None,
                    now=1.0,
                )
                client.put_item(**request)
                created.append(sid)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    def fenced_writes() -> None:
        client = aws.client("dynamodb")
        try:
            while not done.is_set():
                # Fenced, as it should be: the condition cannot hold.
                with contextlib.suppress(client.exceptions.TransactionCanceledException):
                    client.transact_write_items(TransactItems=_fenced(tables))
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    writers = [threading.Thread(target=create_streams, args=(w,)) for w in range(2)]
    fencers = [threading.Thread(target=fenced_writes) for _ in range(2)]
    for thread in (*fencers, *writers):
        thread.start()
    for thread in writers:
        thread.join(120)
    done.set()
    for thread in fencers:
        thread.join(30)
    assert errors == []
    client = aws.client("dynamodb")
    try:
        stored = {
            item["stream_id"]["S"]
            for page in client.get_paginator("scan").paginate(TableName=tables.streams)
            for item in page["Items"]
        }
    finally:
        client.close()
    assert len(created) == ROUNDS
    assert sorted(set(created) - stored) == []


def _fenced(tables: store.Tables) -> list[dict[str, Any]]:
    """A defect put guarded by a lease condition that cannot hold (no such owner)."""
    return [
        {
            "ConditionCheck": {
                "TableName": tables.streams,
                "Key": {"stream_id": {"S": "s-000000000000000000000000"}},
                "ConditionExpression": "#o = :me",
                "ExpressionAttributeNames": {"#o": "owner"},
                "ExpressionAttributeValues": {":me": {"S": "nobody"}},
            }
        },
        {
            "Put": {
                "TableName": tables.defects,
                "Item": {"stream_id": {"S": "s-000000000000000000000000"}, "defect_id": {"S": "x"}},
            }
        },
    ]
