"""Ordered per key, parallel across keys, bounded: the decision lanes.

Each application hashes to one lane (a bounded ``asyncio.Queue`` drained by
one task), so its events are decided in order while other applications
proceed in parallel. When a lane is full the producer waits: a watch thread
stops reading the API stream until there is room. Nothing is ever dropped
(the reference drops events when its channel is full).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import zlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from doraforwarder.logging import get_logger

log = get_logger("argocd")

T = TypeVar("T")


class Lanes(Generic[T]):
    """``count`` ordered lanes of ``size`` items each, handled by ``handle``."""

    def __init__(
        self,
        count: int,
        size: int,
        handle: Callable[[T], Awaitable[None]],
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        if count < 1 or size < 1:
            raise ValueError("lanes need count >= 1 and size >= 1")
        self._queues: list[asyncio.Queue[T]] = [asyncio.Queue(maxsize=size) for _ in range(count)]
        self._handle = handle
        self._on_depth = on_depth or (lambda depth: None)
        self._depth = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def depth(self) -> int:
        """Items waiting in all lanes (not counting the ones being handled)."""
        return self._depth

    def lane_of(self, key: str) -> int:
        return zlib.crc32(key.encode()) % len(self._queues)

    async def submit(self, key: str, item: T) -> None:
        """Queue ``item`` on ``key``'s lane; waits while that lane is full."""
        await self._queues[self.lane_of(key)].put(item)
        self._changed(+1)

    def submit_from_thread(self, key: str, item: T, stop: threading.Event) -> bool:
        """Blocking :meth:`submit` for a watch thread; False if ``stop`` was set first."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("lanes are not running")
        future = asyncio.run_coroutine_threadsafe(self.submit(key, item), loop)
        while True:
            try:
                future.result(timeout=0.25)
                return True
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    future.cancel()
                    return False

    def _changed(self, delta: int) -> None:
        self._depth += delta
        self._on_depth(self._depth)

    async def run(self, stop: asyncio.Event) -> None:
        """Drain every lane until ``stop`` is set.

        An item being decided when stop comes is abandoned: its transaction ran
        whole or not at all, and the next start decides again from a fresh list.
        """
        self._loop = asyncio.get_running_loop()
        workers = [
            asyncio.create_task(self._drain(queue), name=f"argocd-lane-{index}")
            for index, queue in enumerate(self._queues)
        ]
        try:
            await stop.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _drain(self, queue: asyncio.Queue[T]) -> None:
        while True:
            item = await queue.get()
            self._changed(-1)
            try:
                await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug in one decision must not stall every app of the lane.
                log.exception("decision failed, event skipped", item=repr(item)[:200])
            finally:
                queue.task_done()

    async def join(self) -> None:
        """Wait until every queued item was handled (tests, graceful drain)."""
        for queue in self._queues:
            await queue.join()
