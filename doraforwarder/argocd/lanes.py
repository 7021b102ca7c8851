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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

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
        *,
        handle_batch: Callable[[list[T]], Awaitable[None]] | None = None,
        key_of: Callable[[T], str] | None = None,
        batch_size: int = 100,
    ) -> None:
        """``handle_batch`` (with ``key_of``), when given, takes what a lane has queued
        in one call: up to ``batch_size`` items of distinct keys, in queue order."""
        if count < 1 or size < 1 or batch_size < 1:
            raise ValueError("lanes need count >= 1, size >= 1 and batch_size >= 1")
        if (handle_batch is None) != (key_of is None):
            raise ValueError("handle_batch needs key_of")
        self._handle_batch = handle_batch
        self._key_of = key_of
        self._batch_size = batch_size
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

    async def submit_many(self, items: list[tuple[str, T]]) -> None:
        """:meth:`submit` each ``(key, item)`` in order (one hand-over for a list page)."""
        for key, item in items:
            await self.submit(key, item)

    def submit_from_thread(self, key: str, item: T, stop: threading.Event) -> bool:
        """Blocking :meth:`submit` for a watch thread; False if ``stop`` was set first."""
        return self._from_thread(self.submit(key, item), stop)

    def submit_many_from_thread(self, items: list[tuple[str, T]], stop: threading.Event) -> bool:
        """Blocking :meth:`submit_many` for a watch thread; False if ``stop`` was set first.

        One cross-thread hand-over for the whole list, instead of one per item:
        what the catch-up of thousands of apps spends its time on otherwise.
        """
        return self._from_thread(self.submit_many(items), stop)

    def _from_thread(self, coroutine: Coroutine[Any, Any, None], stop: threading.Event) -> bool:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("lanes are not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
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
        if self._handle_batch is not None:
            await self._drain_batches(queue)
        while True:
            item = await queue.get()
            self._changed(-1)
            try:
                await self._handle_one(item)
            finally:
                queue.task_done()

    async def _drain_batches(self, queue: asyncio.Queue[T]) -> None:
        """Take what is queued, up to a batch of distinct keys; a repeated key starts the next.

        An app's second event depends on what its first wrote, so it never
        shares a batch with it; order within a key is kept.
        """
        assert self._handle_batch is not None and self._key_of is not None
        carry: list[T] = []
        while True:
            if carry:
                first = carry.pop()
            else:
                first = await queue.get()
                self._changed(-1)
            batch: list[T] = [first]
            seen = {self._key_of(first)}
            while len(batch) < self._batch_size and not queue.empty():
                item = queue.get_nowait()
                self._changed(-1)
                key = self._key_of(item)
                if key in seen:
                    carry.append(item)
                    break
                seen.add(key)
                batch.append(item)
            try:
                await self._handle_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad decision must not lose the others of its batch: one at a time.
                for item in batch:
                    await self._handle_one(item)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _handle_one(self, item: T) -> None:
        """Decide one item; a bug in one decision must not stall every app of the lane."""
        try:
            await self._handle(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("decision failed, event skipped", item=repr(item)[:200])

    async def join(self) -> None:
        """Wait until every queued item was handled (tests, graceful drain)."""
        for queue in self._queues:
            await queue.join()
