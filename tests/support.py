"""What many test modules need besides fixtures and media (tests/media/): the one `Defect` factory,
the one wait helper (in a blocking and an asyncio flavour), the `avmon up` command line, and the
mark for tests that need the ffmpeg CLI."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.models import Defect, DefectType, defect_id_for

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

# Wall-clock time of media time 0 in made-up defects (start_at / end_at follow start_s / end_s).
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def wall_clock(t_s: float) -> str:
    """``t_s`` seconds after :data:`EPOCH` as the ISO-8601 text records carry, to the ms."""
    return (EPOCH + timedelta(seconds=t_s)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_defect(
    type_: DefectType = DefectType.BLACK,
    start_s: float = 1.0,
    end_s: float | None = None,
    *,
    stream_id: str = "stream-1",
    key: str = "",
    worker_id: str = "w1",
    severity: str = "critical",
    **fields: Any,
) -> Defect:
    """A defect record as a worker writes one: its id from type, start and ``key`` (the worker's
    own rule), its wall-clock times ``start_s`` / ``end_s`` after :data:`EPOCH` unless ``fields``
    give them; ``fields``: any other :class:`Defect` field (``metrics``, ``monitor_overloaded``)."""
    fields.setdefault("start_at", wall_clock(start_s))
    fields.setdefault("end_at", None if end_s is None else wall_clock(end_s))
    return Defect(
        stream_id=stream_id,
        defect_id=defect_id_for(type_.value, start_s, key),
        type=type_,
        start_s=start_s,
        end_s=end_s,
        severity=severity,
        worker_id=worker_id,
        **fields,
    )


def _timed_out(timeout_s: float, what: str) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def wait_for(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.25, what: str = "") -> Any:
    """Call ``predicate`` every ``interval_s`` until it returns something true, and return that;
    AssertionError after ``timeout_s`` (naming ``what``). Blocks the calling thread."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what or str(predicate))
        time.sleep(interval_s)


async def wait_for_async(
    predicate: Callable[[], Any], timeout_s: float = 5.0, interval_s: float = 0.01, what: str = ""
) -> Any:
    """:func:`wait_for` inside an event loop: sleeps with ``asyncio.sleep`` so the loop runs
    meanwhile; ``predicate`` may be a coroutine function (its result is awaited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what or str(predicate))
        await asyncio.sleep(interval_s)


def avmon_up(port: int, aws_port: int, workers: int = 1) -> list[str]:
    """The command line of ``avmon up`` with this interpreter, on these ports."""
    return [
        sys.executable, "-m", "avmon", "up",
        "--workers", str(workers), "--port", str(port), "--aws-port", str(aws_port),
    ]  # fmt: skip
