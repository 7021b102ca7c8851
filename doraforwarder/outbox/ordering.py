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

import uuid
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

OWNED = """
local function owned(stream, group, member, id)
  if member == '' then
    return true
  end
  local found = redis.call('XPENDING', stream, group, id, id, 1)
  return found[1] ~= nil and found[1][2] == member
end
"""
"""Lua: is ``id`` pending for ``member`` in ``group`` (an empty member: nobody checks)."""

ACK_ORDERED = LuaScript(OWNED + """
if not owned(KEYS[1], ARGV[1], ARGV[4], ARGV[2]) then
  return -1
end
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
"""KEYS: outbox stream, order hash, order queue. ARGV: group, entry id, seq, member
(``''``: unchecked). -1 when the entry is not the member's: another member took it over
and it alone may acknowledge it and advance the key. ``XACK`` is the first write, so the
script runs over ``maxmemory``."""

LOCK_OWNED = LuaScript(OWNED + """
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return -1
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], '0', ARGV[3], 'JUSTID')
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[5]) then
  return 1
end
return 0
""")
"""KEYS: outbox stream, lock key. ARGV: group, member, entry id, token, ttl ms.
1: locked (and the entry refreshed); 0: another holder has the key's lock; -1: the entry
is not the member's. The ``XCLAIM`` refresh is the first write, so Redis runs the script
(and its small, short-lived ``SET``) over ``maxmemory`` too."""

UNLOCK = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")
"""KEYS: lock key. ARGV: token. Deletes the lock only if this holder still has it."""


def stage_ordered(pipe: Pipeline, keys: Keys, order_key: str, entry_json: str) -> None:
    """Queue the staging of one ordered entry on ``pipe`` (a transaction)."""
    STAGE_ORDERED.queue(
        pipe, [keys.outbox_stream, keys.delivery_order(order_key), keys.delivery_queue(order_key)],
        [entry_json],
    )


async def ack_ordered(redis: aioredis.Redis, keys: Keys, item: StreamItem, order_key: str,
                      seq: int, group: str = OUTBOX_GROUP, *, consumer: str | None = None
                      ) -> bool:
    """Acknowledge and delete an ordered entry and advance its key.

    With ``consumer``, only if the entry is still pending for it. False if
    the entry was already gone or is another consumer's.
    """
    removed = await ACK_ORDERED.run(
        redis, [keys.outbox_stream, keys.delivery_order(order_key), keys.delivery_queue(order_key)],
        [group, item.id, str(seq), consumer or ""],
    )
    return int(removed) > 0


Locked = Literal["locked", "busy", "not_owned"]


@dataclass
class OrderLock:
    """The short per-order-key lock an ordered entry is sent under, taken only by its owner.

    Taking it checks, in the same script, that the entry is still pending for
    ``consumer`` (and refreshes it): a consumer that lost the entry to
    another cannot lock its key, so the order check made under the lock and
    the send after it are the owner's alone. Released by token, so an expired
    lock another holder took since is left alone.
    """

    redis: aioredis.Redis
    keys: Keys
    order_key: str
    consumer: str
    ttl_s: float
    group: str = OUTBOX_GROUP
    token: str = ""

    async def acquire(self, item: StreamItem) -> Locked:
        self.token = uuid.uuid4().hex
        answer = int(await LOCK_OWNED.run(
            self.redis, [self.keys.outbox_stream, self.keys.delivery_lock(self.order_key)],
            [self.group, self.consumer, item.id, self.token,
             str(max(1, int(self.ttl_s * 1000)))]))
        return "locked" if answer == 1 else "busy" if answer == 0 else "not_owned"

    async def release(self) -> None:
        await UNLOCK.run(self.redis, [self.keys.delivery_lock(self.order_key)], [self.token])


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
