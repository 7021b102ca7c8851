"""Durable delivery: the outbox stream, its entries, and how producers stage them.

Producers (deployment resolution, the WebRCA poller) never send anything
themselves: they stage outbox entries into the same Redis transaction
(``MULTI``/``EXEC`` pipeline) as the state change that produced them, so a
crash can neither lose a record nor produce it twice.

The contract producers rely on
------------------------------

``stage_entries(pipe, keys, entries)`` queues commands on ``pipe``, which must
be a transaction pipeline the caller executes (``redis.pipeline(transaction=True)``,
optionally after ``WATCH``). Nothing is written before ``EXEC``; everything is
written at ``EXEC``. Per entry:

- ``order_key is None`` (deployments): one ``XADD`` to ``keys.outbox_stream``.
  Entries are independent; two entries for the same (target, record id) are
  harmless, DevLake upserts.
- ``order_key`` set (issues: ``f"issue:{target.key}:{issue_key}"``): one
  ``EVAL`` that gives the entry the next sequence number of its order key
  (``HINCRBY keys.delivery_order(order_key) staged``), adds it to the stream
  with that number, and indexes its stream id in the sorted set
  ``keys.delivery_queue(order_key)``. Entries of one order key are delivered
  strictly in staging order: an entry is sent only once every entry staged
  before it under the same key was delivered, dead-lettered or dropped. A
  ``kind="close"`` entry staged after the ``kind="issue"`` upsert with the same
  order key is therefore sent only after DevLake accepted the upsert.
- An entry whose sequence number is not above the last *delivered* one of its
  order key (``delivered`` in the same hash) is obsolete and dropped without
  sending: a requeued old state never overwrites a newer one.

Stream fields: ``entry`` (the :class:`OutboxEntry` JSON) and, for ordered
entries, ``seq``. Dead letters (``keys.dead_stream``) keep both plus
``outbox_id``, ``reason``, ``status``, ``body`` (truncated) and ``failed_at``,
so ``doraforwarder outbox requeue`` can put them back exactly as they were.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio.client import Pipeline

from doraforwarder.keys import OUTBOX_GROUP, Keys

TargetKind = Literal["connection_id", "connection_name", "project_name"]
RecordKind = Literal["deployment", "issue", "close"]

BODY_LIMIT = 2000
"""Characters of a DevLake answer kept in a dead letter."""


class Target(BaseModel):
    """Where a record goes in DevLake: a webhook connection (by id or name) or a project."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TargetKind
    value: str
    team: str = "global"
    """``global`` or the team name; for logs and metrics only."""

    @property
    def key(self) -> str:
        """Identity of the destination: two teams naming the same target share it."""
        return f"{self.kind}:{self.value}"


class OutboxEntry(BaseModel):
    """One (record, target) delivery job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RecordKind
    target: Target
    record_id: str
    """Deployment id or issue key: DevLake's upsert key within the target."""
    payload: dict[str, Any]
    """The DevLake JSON body, already validated against the contract models."""
    order_key: str | None = None
    """Entries with the same order key are delivered in enqueue order (issues)."""
    enqueued_at: float = Field(default_factory=time.time)

    def to_fields(self) -> dict[str, str]:
        return {"entry": self.model_dump_json()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> OutboxEntry:
        return cls.model_validate_json(fields["entry"])


# --- Lua: the steps that must be atomic and need a value computed in Redis ----

_STAGE_ORDERED = """
local seq = redis.call('HINCRBY', KEYS[2], 'staged', 1)
local id = redis.call('XADD', KEYS[1], '*', 'entry', ARGV[1], 'seq', tostring(seq))
redis.call('ZADD', KEYS[3], seq, id)
return id
"""
"""KEYS: outbox stream, order hash, order queue. ARGV: entry JSON."""

_ACK_ORDERED = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local removed = redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
local seq = tonumber(ARGV[3])
local delivered = tonumber(redis.call('HGET', KEYS[2], 'delivered') or '0')
if seq > delivered then
  redis.call('HSET', KEYS[2], 'delivered', seq)
end
return removed
"""
"""KEYS: outbox stream, order hash, order queue. ARGV: group, entry id, seq."""

_REQUEUE = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local id
if ARGV[3] ~= '' then
  id = redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2], 'seq', ARGV[3])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]), id)
else
  id = redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2])
end
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""
"""KEYS: dead stream, outbox stream, order queue. ARGV: dead id, entry JSON, seq or ''."""


def stage_entries(pipe: Pipeline, keys: Keys, entries: Iterable[OutboxEntry]) -> None:
    """Queue the staging of ``entries`` on ``pipe`` (a transaction the caller executes).

    See the module docstring for what is written and the ordering it buys.
    """
    for entry in entries:
        if entry.order_key is None:
            pipe.xadd(keys.outbox_stream, entry.to_fields())  # type: ignore[arg-type]
        else:
            pipe.eval(
                _STAGE_ORDERED,
                3,
                keys.outbox_stream,
                keys.delivery_order(entry.order_key),
                keys.delivery_queue(entry.order_key),
                entry.model_dump_json(),
            )


def consumer_name() -> str:
    """A consumer-group member name unique per process.

    A restarted process must not inherit a dead one's entries implicitly:
    they are reclaimed explicitly after ``delivery.claim_idle``.
    """
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# --- Reading entries back -----------------------------------------------------


@dataclass
class StreamItem:
    """An outbox (or dead-letter) stream entry as read from Redis."""

    id: str
    fields: dict[str, str]
    entry: OutboxEntry | None = None
    """None when the ``entry`` field is missing or not a valid :class:`OutboxEntry`."""
    error: str | None = None
    """Why ``entry`` could not be read."""
    seq: int | None = None

    @classmethod
    def parse(cls, entry_id: str, fields: Mapping[str, str]) -> StreamItem:
        item = cls(id=entry_id, fields=dict(fields))
        try:
            item.entry = OutboxEntry.from_fields(fields)
        except KeyError:
            item.error = "the stream entry has no 'entry' field"
        except ValidationError as exc:
            item.error = f"the stream entry is not a valid outbox entry: {_first_error(exc)}"
        seq = fields.get("seq")
        if seq is not None and seq.isdigit():
            item.seq = int(seq)
        return item

    @property
    def ordered(self) -> bool:
        return self.entry is not None and self.entry.order_key is not None \
            and self.seq is not None

    @property
    def age_seconds(self) -> float:
        """Seconds since the stream id's timestamp (when it entered this stream)."""
        millis = int(self.id.split("-", 1)[0])
        return max(0.0, time.time() - millis / 1000.0)


RawEntries = list[tuple[str, dict[str, str]]]


def raw_entries(raw: Any) -> RawEntries:
    """Typed view of ``XRANGE``/``XAUTOCLAIM`` entries (decoded client); skips deleted ones."""
    return [(str(entry_id), dict(fields)) for entry_id, fields in raw or [] if fields is not None]


def read_group_entries(raw: Any) -> RawEntries:
    """Typed view of an ``XREADGROUP`` answer over one or more streams."""
    entries: RawEntries = []
    for _stream, stream_entries in raw or []:
        entries.extend(raw_entries(stream_entries))
    return entries


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {error['msg']}" if location else str(error["msg"])


async def ensure_group(redis: aioredis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if missing; reads start at the beginning."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except aioredis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def ack_delivered(redis: aioredis.Redis, keys: Keys, item: StreamItem,
                        group: str = OUTBOX_GROUP) -> bool:
    """Acknowledge and delete a delivered (or obsolete) entry; advance its order key.

    Returns False when the entry was already gone (another worker finished it).
    """
    entry = item.entry
    if item.ordered and entry is not None and entry.order_key is not None:
        removed = await redis.eval(
            _ACK_ORDERED,
            3,
            keys.outbox_stream,
            keys.delivery_order(entry.order_key),
            keys.delivery_queue(entry.order_key),
            group,
            item.id,
            str(item.seq),
        )
        return bool(removed)
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


def dead_fields(fields: Mapping[str, str], *, source_id: str, reason: str,
                status: int | None = None, body: str = "") -> dict[str, str]:
    """The dead-letter stream fields for an entry refused for good."""
    dead = {key: value for key, value in fields.items() if key in ("entry", "seq")}
    if "entry" not in dead:
        dead["raw"] = repr(dict(fields))[:BODY_LIMIT]
    dead.update(
        outbox_id=source_id,
        reason=reason,
        status="" if status is None else str(status),
        body=body[:BODY_LIMIT],
        failed_at=f"{time.time():.3f}",
    )
    return dead


def stage_dead(pipe: Pipeline, keys: Keys, fields: Mapping[str, str]) -> None:
    """Queue the XADD of a dead letter (built by :func:`dead_fields`) on ``pipe``."""
    pipe.xadd(keys.dead_stream, dict(fields))  # type: ignore[arg-type]


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


# --- Ordering -----------------------------------------------------------------

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


# --- Inspection and repair (``doraforwarder outbox``) -------------------------


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
    """The first ``count`` entries of ``stream`` (all when None), oldest first."""
    raw = await redis.xrange(stream, "-", "+", count=count)
    return [StreamItem.parse(entry_id, fields) for entry_id, fields in raw_entries(raw)]


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
    new_id = await redis.eval(
        _REQUEUE,
        3,
        keys.dead_stream,
        keys.outbox_stream,
        keys.delivery_queue(order_key) if order_key and item.seq is not None
        else keys.delivery_queue("-"),
        dead_id,
        item.fields["entry"],
        str(item.seq) if order_key and item.seq is not None else "",
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
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xack(keys.outbox_stream, OUTBOX_GROUP, entry_id)
            pipe.xdel(keys.outbox_stream, entry_id)
            if item.entry is not None and item.entry.order_key is not None:
                pipe.zrem(keys.delivery_queue(item.entry.order_key), entry_id)
            await pipe.execute()
        return "outbox"
    if await redis.xdel(keys.dead_stream, entry_id):
        return "dead"
    raise RepairError(f"no outbox entry or dead letter with id {entry_id}")
