"""Lease claims, renewals, releases and fenced defect writes, over HTTP against the emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import aws, store
from shared.models import Defect, DefectType, StreamStatus
from tests.conftest import Stack
from tests.support import make_defect
from worker.leases import LeaseTable, Renewal
from worker.sink import DefectWriter


@pytest.fixture
async def ddb(stack: Stack) -> AsyncIterator[Any]:
    async with aws.async_session().client("dynamodb", config=aws.CLIENT_CONFIG) as client:
        yield client


@pytest.fixture
def tables(stack: Stack) -> store.Tables:
    return store.Tables(streams=f"{stack.prefix}-streams", defects=f"{stack.prefix}-defects")


async def new_stream(
    ddb: Any, tables: store.Tables, stream_id: str = "s-000000000001", loudness_profile: str = "ebu_r128"
) -> str:
    request = store.put_new_stream(
        tables,
        stream_id=stream_id,
        url="file:///x.ts",
        name=None,
        realtime=False,
        client_token=None,
        now=time.time(),
        loudness_profile=loudness_profile,
    )
    await ddb.put_item(**request)
    return stream_id


def defect(stream_id: str, start_s: float = 1.0, worker_id: str = "a") -> Defect:
    return make_defect(DefectType.BLACK, start_s, stream_id=stream_id, worker_id=worker_id)


async def test_first_claim_wins_and_a_duplicate_loses(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    a, b = LeaseTable(ddb, tables, "a", 10), LeaseTable(ddb, tables, "b", 10)
    lease = await a.claim(sid, 1)
    assert lease is not None and lease.counter == 1
    assert await b.claim(sid, 1) is None
    assert await a.claim(sid, 1) is None  # a redelivered message does not re-claim either


async def test_the_claimed_lease_carries_the_streams_loudness_profile(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables, loudness_profile="atsc_a85")
    lease = await LeaseTable(ddb, tables, "a", 10).claim(sid, 1)
    assert lease is not None and lease.loudness_profile == "atsc_a85"


async def test_stale_generation_cannot_claim(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    assert await LeaseTable(ddb, tables, "a", 10).claim(sid, 2) is None


async def test_expired_lease_is_taken_over_with_a_new_fencing_token(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    old = await LeaseTable(ddb, tables, "a", 1.5).claim(sid, 1)
    assert old is not None
    await asyncio.sleep(1.6)
    new = await LeaseTable(ddb, tables, "b", 10).claim(sid, 1)
    assert new is not None and new.counter == old.counter + 1


async def test_renewal_after_takeover_reports_the_lease_lost(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    a = LeaseTable(ddb, tables, "a", 1.5)
    old = await a.claim(sid, 1)
    assert old is not None
    await asyncio.sleep(1.6)
    assert await LeaseTable(ddb, tables, "b", 10).claim(sid, 1) is not None
    assert await a.renew(old, StreamStatus.MONITORING, {}, None) is Renewal.LOST


async def test_renewal_sees_a_delete(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    leases = LeaseTable(ddb, tables, "a", 10)
    lease = await leases.claim(sid, 1)
    assert lease is not None
    await ddb.update_item(**store.stop_stream(tables, sid, time.time()))
    assert await leases.renew(lease, StreamStatus.MONITORING, {"frames_analysed": 5}, None) is Renewal.STOPPED


async def test_renewal_publishes_live_figures(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    leases = LeaseTable(ddb, tables, "a", 10)
    lease = await leases.claim(sid, 1)
    assert lease is not None
    assert (
        await leases.renew(lease, StreamStatus.MONITORING, {"frames_analysed": 250, "lag_s": 0.4}, None)
        is Renewal.HELD
    )
    item = store.unmarshal((await ddb.get_item(**store.get_stream(tables, sid)))["Item"])
    assert item["frames_analysed"] == 250 and item["lag_s"] == 0.4 and item["owner"] == "a"


async def test_released_stream_can_be_claimed_at_once(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    a = LeaseTable(ddb, tables, "a", 60)
    lease = await a.claim(sid, 1)
    assert lease is not None
    assert await a.release(lease, StreamStatus.PENDING)
    assert await LeaseTable(ddb, tables, "b", 60).claim(sid, 1) is not None


async def test_fenced_writer_cannot_write_after_losing_the_lease(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    old = await LeaseTable(ddb, tables, "a", 1.5).claim(sid, 1)
    assert old is not None
    await asyncio.sleep(1.6)
    assert await LeaseTable(ddb, tables, "b", 10).claim(sid, 1) is not None
    writer = DefectWriter(ddb, tables, "a", ttl_days=1)
    writer.fence(sid, old.counter)
    writer.submit(defect(sid))
    await writer.flush()
    got = await ddb.query(**store.query_defects(tables, sid, now=time.time(), limit=10, start_key=None))
    assert got["Items"] == [] and writer.dropped == 1


async def test_writer_holding_the_lease_writes_once_per_defect(ddb: Any, tables: store.Tables) -> None:
    sid = await new_stream(ddb, tables)
    lease = await LeaseTable(ddb, tables, "a", 10).claim(sid, 1)
    assert lease is not None
    writer = DefectWriter(ddb, tables, "a", ttl_days=1)
    writer.fence(sid, lease.counter)
    opened = defect(sid)
    writer.submit(opened)
    assert await writer.flush()
    writer.submit(opened.model_copy(update={"end_s": 4.0, "end_at": "2026-11-27T03:00:03.000Z"}))
    assert await writer.flush()
    got = await ddb.query(**store.query_defects(tables, sid, now=time.time(), limit=10, start_key=None))
    items = [store.unmarshal(i) for i in got["Items"]]
    assert len(items) == 1 and items[0]["end_s"] == 4.0


async def test_unreachable_store_keeps_defects_buffered(
    tables: store.Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    async with aws.async_session().client("dynamodb", config=aws.CLIENT_CONFIG) as dead:
        writer = DefectWriter(dead, tables, "a", ttl_days=1)
        writer.fence("s-000000000001", 1)
        writer.submit(defect("s-000000000001"))
        assert not await writer.flush()
        assert writer.buffered == 1 and writer.dropped == 0
