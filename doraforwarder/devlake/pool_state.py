"""The state every part of a delivery pool shares, and what they all do with it.

The pool is one object built in layers, one module each, each on the ones
before: this state, then :mod:`~doraforwarder.devlake.intake` (reading and
room), :mod:`~doraforwarder.devlake.ownership` (heartbeat, reclaim, gauges),
:mod:`~doraforwarder.devlake.target_waits` (retries, 429 pauses, refused
targets), :mod:`~doraforwarder.devlake.sending` (the workers) and
:mod:`~doraforwarder.devlake.delivery` (the service's lifecycle). A layer
calls only itself and the layers below, so each reads on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.context import AppContext
from doraforwarder.devlake.acks import AckBatcher
from doraforwarder.devlake.client import (
    Sender,
)
from doraforwarder.devlake.refused import RefusedTarget
from doraforwarder.devlake.routing import (
    Router,
)
from doraforwarder.devlake.schedule import Held, Schedule
from doraforwarder.keys import OUTBOX_GROUP
from doraforwarder.logging import get_logger
from doraforwarder.storage import report_data_lost
from doraforwarder.streams import GroupConsumer, consumer_name

log = get_logger("devlake")


LOST_TOLD_EVERY_S = 10.0
"""At most one warning per this many seconds about entries taken over (the rest: debug)."""


class DeliveryState:
    """The settings, Redis handles, held entries and per-target state of a delivery pool.

Also what acknowledging entries and surviving a Redis error take, since
every layer above needs both.
"""

    def __init__(self, context: AppContext, sender: Sender | None = None, *,
                 consumer: str | None = None, max_held: int = 1000,
                 read_block_s: float = 0.5) -> None:
        self.context = context
        self.settings = context.settings
        self.keys = context.keys
        self.redis: aioredis.Redis = context.redis
        self.consumer = consumer or consumer_name()
        self.max_held = max_held
        self.max_held_bytes = int(self.settings.delivery.max_held_bytes)
        """The stored size of the entries held for delivery (a refused target's apart)."""
        self._size_estimate = 0.0
        """The largest stored size of the entries seen lately (decaying): how many a read
        may bring. The largest rather than the mean, so a read stays within the bound."""
        self._sender = sender
        delivery = self.settings.delivery
        self.initial_backoff = max(delivery.initial_backoff.total_seconds(), 0.001)
        self.max_backoff = max(delivery.max_backoff.total_seconds(), self.initial_backoff)
        self.stream = GroupConsumer(
            self.redis, self.keys.outbox_stream, OUTBOX_GROUP, self.consumer,
            claim_idle_s=delivery.claim_idle.total_seconds(), read_block_s=read_block_s,
        )
        self.recheck = min(self.max_backoff, 1.0)
        self.trust_s = delivery.claim_idle.total_seconds() * 2 / 3
        """How long after Redis last confirmed an entry ours it is sent without asking again.
        The heartbeat confirms every third of the claim-idle time, so a healthy process
        never asks; one that stalled asks, and a send starts at least a third of the
        claim-idle time before anyone may take the entry over."""
        self.lost = 0
        self._lost_told_at = -LOST_TOLD_EVERY_S
        """Entries found taken over by another consumer (this one had stalled)."""
        """How soon a blocked or locked ordered entry is looked at again."""
        self.schedule = Schedule()
        self._acks = self._new_ack_batcher()
        self._room = asyncio.Event()
        devlake = self.settings.integration.devlake
        recheck = devlake.refused_recheck or delivery.max_backoff
        self.refused_recheck = max(recheck.total_seconds(), 0.001)
        self.refused: dict[str, RefusedTarget] = {}
        """Targets DevLake refuses now, by target key."""
        self.refused_cap = delivery.refused_max_held
        """Entries of one refused target held in memory; the surplus is parked in Redis."""
        self.refused_cap_bytes = int(delivery.refused_max_held_bytes)
        """Their stored size (:func:`stored_size`) held in memory, at most; at least one
        entry is held whatever its size, so the recheck has one to send."""
        self.parked: dict[str, int] = {}
        """Target key -> entries parked under its member in Redis (as last seen)."""
        self._waiting_shown: set[str] = set()
        """Targets the waiting gauge shows (set back to 0 once they are gone)."""
        self.awaiting: set[str] = set()
        """Project targets whose ``<project>_deployments`` connection does not exist yet."""
        self._token_envs = _token_envs(devlake)
        self.max_retry_after = max(delivery.max_retry_after.total_seconds(), 0.0)
        """The longest ``Retry-After`` obeyed (``delivery.max_retry_after``)."""
        self.paused: dict[str, float] = {}
        """Target key -> monotonic time before which none of its entries is sent (a 429)."""

    def _new_ack_batcher(self) -> AckBatcher:
        return AckBatcher(self.redis, self.keys, self._acked, self._ack_trouble,
                          consumer=self.consumer)

    def _acked(self, batch: list[Held]) -> None:
        """Entries acknowledged in Redis: stop holding them, make room, wake their keys."""
        for held in batch:
            self.schedule.release(held.item.id)
            entry = held.item.entry
            if entry is not None and entry.order_key is not None:
                self.schedule.wake(entry.order_key)
        self._room.set()

    async def _ack_trouble(self, exc: Exception, backoff: Backoff, halt: asyncio.Event
                           ) -> None:
        await self._redis_trouble("ack", exc, backoff, halt)

    async def _recovered(self, exc: Exception) -> bool:
        """Recreate the outbox's consumer group if ``exc`` is ``NOGROUP``; True if it was."""
        if not await self.stream.recover(exc):
            return False
        report_data_lost(self.context, "group",
                         f"the consumer group {OUTBOX_GROUP} of the outbox stream was missing; "
                         "recreated it")
        return True

    async def _redis_trouble(self, operation: str, exc: Exception, backoff: Backoff,
                             stop: asyncio.Event) -> None:
        if await self._recovered(exc):
            backoff.reset()
            return
        delay = backoff.next_delay()
        self.context.metrics.redis_errors.labels(operation).inc()
        log.warning("redis error in delivery, retrying", operation=operation,
                    error=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 3))
        await wait_or_stop(stop, delay)


def _token_envs(devlake: Any) -> dict[str, str]:
    """Target key -> environment variable of its key (empty when DevLake is off)."""
    try:
        return Router(devlake).token_envs()
    except ValueError:
        return {}
