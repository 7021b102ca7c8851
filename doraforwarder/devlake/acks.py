"""Acknowledging delivered outbox entries in batches.

A backlog drained one ``XACK`` + ``XDEL`` transaction per entry spends more
on Redis than on DevLake; :class:`AckBatcher` makes it one per wake-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.devlake.schedule import Held
from doraforwarder.keys import Keys
from doraforwarder.outbox.consuming import ack_delivered_many


class AckBatcher:
    """Acknowledges delivered entries in batches: one transaction per wake-up.

    Workers hand over an entry once DevLake answered 2xx (never before); the
    batcher acknowledges and deletes everything handed over since its last
    round in one ``MULTI XACK XDEL`` (:func:`doraforwarder.outbox.ack_delivered_many`),
    then calls ``on_acked`` so the entries stop being held. Until then they
    stay held (and kept fresh by the heartbeat), so nothing retries them. A
    crash between the 2xx and the acknowledgement means one more delivery of
    the same record after a restart: an upsert, harmless. Only unordered
    entries come here; an ordered entry's key must advance before its
    successor is looked at, so those are acknowledged one by one.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, on_acked: Callable[[list[Held]], None],
                 on_error: Callable[[Exception, Backoff, asyncio.Event], Awaitable[None]],
                 max_batch: int = 500, linger_s: float = 0.02, *, consumer: str) -> None:
        self._redis = redis
        self._keys = keys
        self._consumer = consumer
        """Only entries still pending for this consumer are acknowledged."""
        self._on_acked = on_acked
        self._on_error = on_error
        self._max_batch = max_batch
        self._linger_s = linger_s
        """How long a small batch waits for more: draining a backlog, each wake-up
        otherwise acknowledges the four or five entries the workers finished since
        the last one, and a Redis transaction per handful costs more CPU than the
        deliveries. The delay holds no record back (DevLake already has them)."""
        self._pending: list[Held] = []
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, held: Held) -> None:
        self._pending.append(held)
        self._ready.set()

    def wake(self) -> None:
        """Make :meth:`run` look at ``halt`` (called when halting)."""
        self._ready.set()

    async def run(self, halt: asyncio.Event) -> None:
        """Acknowledge batches until ``halt``; whatever is left then is for :meth:`flush`."""
        backoff = Backoff(0.2, 10.0)
        while not halt.is_set():
            if not self._pending:
                self._ready.clear()
                await self._ready.wait()
                continue
            if len(self._pending) < self._max_batch and self._linger_s > 0:
                await wait_or_stop(halt, self._linger_s)
            try:
                await self._flush_batch()
                backoff.reset()
            except RedisError as exc:
                await self._on_error(exc, backoff, halt)

    async def flush(self) -> None:
        """Acknowledge everything handed over so far (at shutdown; errors propagate)."""
        while self._pending:
            await self._flush_batch()

    async def _flush_batch(self) -> None:
        batch = self._pending[:self._max_batch]
        await ack_delivered_many(self._redis, self._keys, [held.item.id for held in batch],
                                 consumer=self._consumer)
        del self._pending[:len(batch)]
        self._on_acked(batch)
