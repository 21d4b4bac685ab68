"""The live picture's writes (worker/sink.py): the newest picture, at most one write per stream
per interval, only for streams this worker holds; what the router's wall reads back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import aws, store
from tests.conftest import Stack
from tests.test_leases import new_stream
from worker.leases import LeaseTable
from worker.sink import DefectWriter


@pytest.fixture
async def ddb(stack: Stack) -> AsyncIterator[Any]:
    async with aws.async_session().client("dynamodb", config=aws.CLIENT_CONFIG) as client:
        yield client


@pytest.fixture
def tables(stack: Stack) -> store.Tables:
    return store.Tables(streams=f"{stack.prefix}-streams", defects=f"{stack.prefix}-defects")


def picture(n: int) -> dict[str, Any]:
    return {
        "t": float(n),
        "taken_at": 1.0,
        "width": 160,
        "height": 90,
        "jpeg_b64": "AAAA",
        "levels_dbfs": [-20.0],
    }


async def live_items(ddb: Any, tables: store.Tables, stream_id: str) -> list[dict[str, Any]]:
    got = await ddb.batch_get_item(**store.get_live_pictures(tables, [stream_id]))
    return [store.unmarshal(i) for i in got["Responses"].get(tables.defects, [])]


async def test_the_newest_picture_is_written_at_most_once_per_interval(
    ddb: Any,
    tables: store.Tables,
) -> None:
    sid = await new_stream(ddb, tables)
    lease = await LeaseTable(ddb, tables, "a", 10).claim(sid, 1)
    assert lease is not None
    writer = DefectWriter(ddb, tables, "a", ttl_days=1, live_interval_s=3600)
    writer.fence(sid, lease.counter)
    for n in range(3):
        writer.offer_live(sid, picture(n))
    assert await writer.write_live() == 1  # the newest of three offers
    writer.offer_live(sid, picture(3))
    assert await writer.write_live() == 0  # within the interval: held back
    items = await live_items(ddb, tables, sid)
    assert [i["live"]["t"] for i in items] == [2.0] and writer.live_written == 1


async def test_no_picture_is_written_for_a_stream_not_held(
    ddb: Any,
    tables: store.Tables,
) -> None:
    sid = await new_stream(ddb, tables)
    writer = DefectWriter(ddb, tables, "a", ttl_days=1, live_interval_s=0.0)
    writer.offer_live(sid, picture(1))  # never fenced: not ours
    writer.fence("s-000000000002", -1)  # lost
    writer.offer_live("s-000000000002", picture(2))
    assert await writer.write_live() == 0
    assert await live_items(ddb, tables, sid) == []
