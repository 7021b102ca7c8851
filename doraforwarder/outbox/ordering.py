"""Per-order-key delivery order: entries of one key go out strictly in staging order.

An ordered entry gets the next sequence number of its order key
(``HINCRBY staged``) when staged, and its stream id is indexed in a sorted set
scored by that number. It may be sent once no entry staged before it is still
outstanding; an entry whose number is not above the last *delivered* one is
obsolete and dropped unsent, so a requeued old state never overwrites a newer
one. The steps that need a value computed in Redis run as Lua scripts,
registered once and called by SHA (``EVALSHA``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.outbox.entries import StreamItem
from doraforwarder.storage import LuaScript

STAGE_ORDERED = LuaScript("""
local seq = redis.call('HINCRBY', KEYS[2], 'staged', 1)
local id = redis.call('XADD', KEYS[1], '*', 'entry', ARGV[1], 'seq', tostring(seq))
redis.call('ZADD', KEYS[3], seq, id)
return id
""")
"""KEYS: outbox stream, order hash, order queue. ARGV: entry JSON."""

ACK_ORDERED = LuaScript("""
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local removed = redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
local seq = tonumber(ARGV[3])
local delivered = tonumber(redis.call('HGET', KEYS[2], 'delivered') or '0')
if seq > delivered then
  redis.call('HSET', KEYS[2], 'delivered', seq)
end
return removed
""")
"""KEYS: outbox stream, order hash, order queue. ARGV: group, entry id, seq."""


def stage_ordered(pipe: Pipeline, keys: Keys, order_key: str, entry_json: str) -> None:
    """Queue the staging of one ordered entry on ``pipe`` (a transaction)."""
    STAGE_ORDERED.queue(
        pipe, [keys.outbox_stream, keys.delivery_order(order_key), keys.delivery_queue(order_key)],
        [entry_json],
    )


async def ack_ordered(redis: aioredis.Redis, keys: Keys, item: StreamItem, order_key: str,
                      seq: int, group: str = OUTBOX_GROUP) -> bool:
    """Acknowledge and delete an ordered entry and advance its key; False if already gone."""
    removed = await ACK_ORDERED.run(
        redis, [keys.outbox_stream, keys.delivery_order(order_key), keys.delivery_queue(order_key)],
        [group, item.id, str(seq)],
    )
    return bool(removed)


Gate = Literal["ready", "blocked", "obsolete"]


@dataclass(frozen=True)
class OrderGate:
    verdict: Gate
    waiting_for: str | None = None
    """Outbox id of the earlier entry this one waits for (``blocked``)."""
    delivered: int = 0


async def order_gate(redis: aioredis.Redis, keys: Keys, item: StreamItem) -> OrderGate:
    """May ``item`` (an ordered entry) be sent now?

    ``obsolete`` when a state staged at or after it was already delivered;
    ``blocked`` while an entry staged before it is still outstanding. Index
    members whose stream entry no longer exists (removed by hand) are cleaned
    up here so they cannot block their key forever.
    """
    entry = item.entry
    if entry is None or entry.order_key is None or item.seq is None:
        return OrderGate("ready")
    order, queue = keys.delivery_order(entry.order_key), keys.delivery_queue(entry.order_key)
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hget(order, "delivered")
            pipe.zrangebyscore(queue, "-inf", f"({item.seq}", start=0, num=1)
            delivered_raw, earlier = await pipe.execute()
        delivered = int(delivered_raw or 0)
        if item.seq <= delivered:
            return OrderGate("obsolete", delivered=delivered)
        if not earlier:
            return OrderGate("ready", delivered=delivered)
        if await redis.xrange(keys.outbox_stream, earlier[0], earlier[0]):
            return OrderGate("blocked", waiting_for=earlier[0], delivered=delivered)
        await redis.zrem(queue, earlier[0])
