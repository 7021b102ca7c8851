"""Finishing outbox entries: acknowledge what DevLake accepted, dead-letter what it refused."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.outbox.entries import StreamItem, dead_fields
from doraforwarder.outbox.ordering import OWNED, ack_ordered
from doraforwarder.outbox.staging import stage_dead
from doraforwarder.storage import LuaScript
from doraforwarder.streams import ack_owned

DEAD_OWNED = LuaScript(OWNED + """
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return false
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[3])
end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
""")
"""KEYS: outbox stream, dead stream, order queue (the stream when none). ARGV: group,
member, entry id, '1' when ordered, dead-letter fields (flat). The dead id, or false when
the entry is not the member's. ``XACK`` first, so it runs over ``maxmemory`` (the dead
letter takes about the room the outbox entry frees)."""


async def ack_delivered(redis: aioredis.Redis, keys: Keys, item: StreamItem,
                        group: str = OUTBOX_GROUP, *, consumer: str | None = None) -> bool:
    """Acknowledge and delete a delivered (or obsolete) entry; advance its order key.

    With ``consumer`` (the delivery path always gives it), only if the entry
    is still pending for that consumer: one another consumer took over is
    that one's to finish. Without it (operator tools), unchecked. Returns
    False when the entry was already gone or is another consumer's.
    """
    entry = item.entry
    if item.ordered and entry is not None and entry.order_key is not None \
            and item.seq is not None:
        return await ack_ordered(redis, keys, item, entry.order_key, item.seq, group,
                                 consumer=consumer)
    if consumer is not None:
        deleted, _ = await ack_owned(redis, keys.outbox_stream, group, consumer, [item.id])
        return deleted > 0
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(keys.outbox_stream, group, item.id)
        pipe.xdel(keys.outbox_stream, item.id)
        _, removed = await pipe.execute()
    return bool(removed)


async def ack_delivered_many(redis: aioredis.Redis, keys: Keys, entry_ids: Sequence[str],
                             group: str = OUTBOX_GROUP, *, consumer: str | None = None) -> int:
    """Acknowledge and delete delivered *unordered* entries in one transaction.

    One ``MULTI XACK XDEL EXEC`` for a whole batch: with ``appendfsync
    always`` that is one fsync instead of one per entry, which is what makes
    draining a backlog fast. Ordered entries must go through
    :func:`ack_delivered` (their order key has to advance with them).
    Returns how many entries were still there. With ``consumer``, only the
    entries still pending for it, in one script (no ``MULTI``).
    """
    if not entry_ids:
        return 0
    if consumer is not None:
        deleted, _ = await ack_owned(redis, keys.outbox_stream, group, consumer, entry_ids)
        return deleted
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(keys.outbox_stream, group, *entry_ids)
        pipe.xdel(keys.outbox_stream, *entry_ids)
        _, removed = await pipe.execute()
    return int(removed)


async def dead_letter(redis: aioredis.Redis, keys: Keys, item: StreamItem, *, reason: str,
                      status: int | None = None, body: str = "",
                      group: str = OUTBOX_GROUP, consumer: str | None = None) -> str | None:
    """Move an outbox entry to the dead letters in one transaction; returns the dead id.

    With ``consumer``, only if the entry is still pending for it (one script);
    None when it is another consumer's (or gone): that one decides.
    """
    fields = dead_fields(item.fields, source_id=item.id, reason=reason, status=status, body=body)
    if consumer is not None:
        order_queue = (keys.delivery_queue(item.entry.order_key)
                       if item.entry is not None and item.entry.order_key is not None else "")
        flat = [part for pair in fields.items() for part in pair]
        dead_id = await DEAD_OWNED.run(
            redis, [keys.outbox_stream, keys.dead_stream, order_queue or keys.outbox_stream],
            [group, consumer, item.id, "1" if order_queue else "0", *flat])
        return str(dead_id) if dead_id else None
    async with redis.pipeline(transaction=True) as pipe:
        stage_dead(pipe, keys, fields)
        pipe.xack(keys.outbox_stream, group, item.id)
        pipe.xdel(keys.outbox_stream, item.id)
        if item.entry is not None and item.entry.order_key is not None:
            pipe.zrem(keys.delivery_queue(item.entry.order_key), item.id)
        results = await pipe.execute()
    return str(results[0])
