"""The delivery queue: one lane per target, in order, with one bound over all of them.

Messages to one target go one at a time in order (an opened before its closed); targets are
independent. The queue is bounded (``max_queue`` messages over all targets): when full, the
oldest waiting message is dropped, and handed to ``drop`` (which counts and logs it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from worker.notify.delivery import Delivery


@dataclass(eq=False)
class _Lane:
    """The messages for one target, sent in order by one task."""

    key: tuple[str, str]  # (kind, target)
    queue: deque[Delivery] = field(default_factory=deque)
    current: Delivery | None = None  # being attempted (or waiting for its next attempt)
    task: asyncio.Task[None] | None = None


class Lanes:
    """Per-target ordered delivery tasks on the running event loop.

    ``deliver`` sends one delivery (with its retries); ``drop`` is told of each delivery that
    will never be (or no longer be) attempted, and why (``"queue full"``, ``"stopped"``).
    """

    def __init__(
        self,
        *,
        max_queue: int,
        deliver: Callable[[Delivery], Awaitable[None]],
        drop: Callable[[Delivery, str], None],
    ) -> None:
        self.max_queue = max(1, max_queue)
        self._deliver, self._drop = deliver, drop
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._queued = 0
        self._closed = False

    def put(self, delivery: Delivery) -> None:
        """Queue ``delivery`` behind the others to its target (event-loop thread only)."""
        if self._closed:
            self._drop(delivery, "stopped")
            return
        key = (delivery.kind, delivery.target)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
        lane.queue.append(delivery)
        self._queued += 1
        if self._queued > self.max_queue:
            oldest = min(
                (lane for lane in self._lanes.values() if lane.queue), key=lambda ln: ln.queue[0].seq
            )
            self._queued -= 1
            self._drop(oldest.queue.popleft(), "queue full")
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._run(lane))

    @property
    def pending(self) -> int:
        """Deliveries waiting, plus the lanes busy with one."""
        busy = sum(1 for lane in self._lanes.values() if lane.task is not None)
        return self._queued + busy

    async def wait(self, deadline: float, clock: Callable[[], float]) -> None:
        """Until every lane is empty, or ``clock()`` reaches ``deadline``."""
        while True:
            tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
            left = deadline - clock()
            if not tasks or left <= 0:
                return
            await asyncio.wait(tasks, timeout=left)

    async def close(self) -> None:
        """Drop what is waiting, cancel what is being delivered (dropped too), take no more."""
        self._closed = True
        for lane in self._lanes.values():
            while lane.queue:
                self._queued -= 1
                self._drop(lane.queue.popleft(), "stopped")
            if lane.task is not None:
                lane.task.cancel()
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, lane: _Lane) -> None:
        try:
            while lane.queue:
                lane.current = lane.queue.popleft()
                self._queued -= 1
                await self._deliver(lane.current)
                lane.current = None
        finally:
            if lane.current is not None:  # cancelled by close() mid-delivery
                self._drop(lane.current, "stopped")
                lane.current = None
            lane.task = None
            if not lane.queue and self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]  # per-stream webhooks come and go: do not keep idle lanes
