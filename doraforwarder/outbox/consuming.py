"""Finishing outbox entries: acknowledge what DevLake accepted, dead-letter what it refused."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.outbox.entries import StreamItem, dead_fields
from doraforwarder.outbox.ordering import ack_ordered
from doraforwarder.outbox.staging import stage_dead


async def ack_delivered(redis: aioredis.Redis, keys: Keys, item: StreamItem,
                        group: str = OUTBOX_GROUP) -> bool:
    """Acknowledge and delete a delivered (or obsolete) entry; advance its order key.

    Returns False when the entry was already gone (another worker finished it).
    """
    entry = item.entry
    if item.ordered and entry is not None and entry.order_key is not None \
            and item.seq is not None:
        return await ack_ordered(redis, keys, item, entry.order_key, item.seq, group)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(keys.outbox_stream, group, item.id)
        pipe.xdel(keys.outbox_stream, item.id)
        _, removed = await pipe.execute()
    return bool(removed)


async def ack_delivered_many(redis: aioredis.Redis, keys: Keys, entry_ids: Sequence[str],
                             group: str = OUTBOX_GROUP) -> int:
    """Acknowledge and delete delivered *unordered* entries in one transaction.

    One ``MULTI XACK XDEL EXEC`` for a whole batch: with ``appendfsync
    always`` that is one fsync instead of one per entry, which is what makes
    draining a backlog fast. Ordered entries must go through
    :func:`ack_delivered` (their order key has to advance with them).
    Returns how many entries were still there.
    """
    if not entry_ids:
        return 0
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(keys.outbox_stream, group, *entry_ids)
        pipe.xdel(keys.outbox_stream, *entry_ids)
        _, removed = await pipe.execute()
    return int(removed)


async def dead_letter(redis: aioredis.Redis, keys: Keys, item: StreamItem, *, reason: str,
                      status: int | None = None, body: str = "",
                      group: str = OUTBOX_GROUP) -> str:
    """Move an outbox entry to the dead letters in one transaction; returns the dead id."""
    fields = dead_fields(item.fields, source_id=item.id, reason=reason, status=status, body=body)
    async with redis.pipeline(transaction=True) as pipe:
        stage_dead(pipe, keys, fields)
        pipe.xack(keys.outbox_stream, group, item.id)
        pipe.xdel(keys.outbox_stream, item.id)
        if item.entry is not None and item.entry.order_key is not None:
            pipe.zrem(keys.delivery_queue(item.entry.order_key), item.id)
        results = await pipe.execute()
    return str(results[0])
