"""Inspection and repair of the outbox and dead letters (``doraforwarder outbox``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import redis.asyncio as aioredis

from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.outbox.entries import StreamItem, redis_seconds
from doraforwarder.storage import LuaScript
from doraforwarder.streams import ensure_group, raw_entries

_REQUEUE = LuaScript("""
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
redis.call('XDEL', KEYS[1], ARGV[1])
local id
if ARGV[3] ~= '' then
  id = redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2], 'seq', ARGV[3])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]), id)
else
  id = redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2])
end
return id
""")
"""KEYS: dead stream, outbox stream, order queue. ARGV: dead id, entry JSON, seq or ''.
``XDEL`` is the first write, so Redis runs it over ``maxmemory`` too (it judges a script by
its first write); the entry moves, it takes about the room it frees."""

_DROP = LuaScript("""
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local removed = redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return removed
""")
"""KEYS: outbox stream, order queue (the stream when none). ARGV: group, entry id, '1' when
ordered. One script rather than ``MULTI`` (which Redis refuses over ``maxmemory``): an
operator dropping entries from a full Redis must be able to."""


@dataclass
class OutboxStats:
    outbox: int
    pending: int
    dead: int
    oldest_age_seconds: float | None
    consumers: dict[str, int] = field(default_factory=dict)
    """Consumer name -> entries it holds (read, not yet acknowledged)."""
    by_target: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    dead_by_reason: dict[str, int] = field(default_factory=dict)


async def read_stream(redis: aioredis.Redis, stream: str, count: int | None = None
                      ) -> list[StreamItem]:
    """The first ``count`` entries of ``stream`` (all when None), oldest first.

    Each item carries Redis's ``TIME`` of the read, so its age is measured on
    the clock that stamped its id.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.xrange(stream, "-", "+", count=count)
        now, raw = await pipe.execute()
    read_at = redis_seconds(now)
    items = [StreamItem.parse(entry_id, fields) for entry_id, fields in raw_entries(raw)]
    for item in items:
        item.read_at = read_at
    return items


async def outbox_stats(redis: aioredis.Redis, keys: Keys, scan_limit: int = 100_000
                       ) -> OutboxStats:
    """Counts for operators; breakdowns cover the first ``scan_limit`` entries."""
    outbox_items = await read_stream(redis, keys.outbox_stream, scan_limit)
    dead_items = await read_stream(redis, keys.dead_stream, scan_limit)
    stats = OutboxStats(
        outbox=await redis.xlen(keys.outbox_stream),
        pending=0,
        dead=await redis.xlen(keys.dead_stream),
        oldest_age_seconds=outbox_items[0].age_seconds if outbox_items else None,
    )
    try:
        summary = await redis.xpending(keys.outbox_stream, OUTBOX_GROUP)
    except aioredis.ResponseError:  # no group yet: nothing was ever read
        summary = {"pending": 0, "consumers": []}
    stats.pending = int(summary["pending"])
    stats.consumers = {c["name"]: int(c["pending"]) for c in summary["consumers"]}
    for item in outbox_items:
        target = item.entry.target.key if item.entry else "(unreadable)"
        kind = item.entry.kind if item.entry else "(unreadable)"
        stats.by_target[target] = stats.by_target.get(target, 0) + 1
        stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
    for item in dead_items:
        reason = item.fields.get("reason", "").split(":", 1)[0] or "(none)"
        stats.dead_by_reason[reason] = stats.dead_by_reason.get(reason, 0) + 1
    return stats


class RepairError(Exception):
    """An operator's repair request that cannot be done (unknown id, unreadable entry)."""


async def requeue(redis: aioredis.Redis, keys: Keys, dead_id: str) -> str:
    """Move one dead letter back to the outbox, as it was staged; returns the new outbox id."""
    found = raw_entries(await redis.xrange(keys.dead_stream, dead_id, dead_id))
    if not found:
        raise RepairError(f"no dead letter with id {dead_id}")
    item = StreamItem.parse(dead_id, found[0][1])
    if item.entry is None:
        raise RepairError(f"dead letter {dead_id} cannot be requeued: {item.error}")
    order_key = item.entry.order_key
    ordered = order_key is not None and item.seq is not None
    new_id = await _REQUEUE.run(
        redis,
        [keys.dead_stream, keys.outbox_stream,
         keys.delivery_queue(order_key if order_key and ordered else "-")],
        [dead_id, item.fields["entry"], str(item.seq) if ordered else ""],
    )
    if not new_id:
        raise RepairError(f"dead letter {dead_id} was removed meanwhile")
    return str(new_id)


async def requeue_all(redis: aioredis.Redis, keys: Keys) -> tuple[list[tuple[str, str]],
                                                                    list[str]]:
    """Requeue every dead letter, oldest first: (dead id, new id) pairs and errors."""
    moved: list[tuple[str, str]] = []
    errors: list[str] = []
    for item in await read_stream(redis, keys.dead_stream):
        try:
            moved.append((item.id, await requeue(redis, keys, item.id)))
        except RepairError as exc:
            errors.append(str(exc))
    return moved, errors


async def drop(redis: aioredis.Redis, keys: Keys, entry_id: str) -> Literal["outbox", "dead"]:
    """Delete an outbox entry or a dead letter for good; says which stream held it."""
    found = raw_entries(await redis.xrange(keys.outbox_stream, entry_id, entry_id))
    if found:
        await ensure_group(redis, keys.outbox_stream, OUTBOX_GROUP)
        item = StreamItem.parse(entry_id, found[0][1])
        order_key = item.entry.order_key if item.entry is not None else None
        await _DROP.run(redis, [keys.outbox_stream, keys.delivery_queue(order_key)
                                if order_key is not None else keys.outbox_stream],
                        [OUTBOX_GROUP, entry_id, "1" if order_key is not None else "0"])
        return "outbox"
    if await redis.xdel(keys.dead_stream, entry_id):
        return "dead"
    raise RepairError(f"no outbox entry or dead letter with id {entry_id}")
