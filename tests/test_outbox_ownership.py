"""Who owns an outbox entry, on a real redis-server: only its owner refreshes, acks or locks it.

An entry is a consumer's while it is pending for it in the group. A consumer
that stalled past ``claim_idle`` finds its entries taken over by another; from
then on they are that one's alone. These tests force the takeover (``XCLAIM``
by the other member, as its reclaim does) and check that the stalled one's
heartbeat, acknowledgements, dead letters and order lock leave them be: before
ownership was checked, its heartbeat took them back and both sent them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from doraforwarder import outbox
from doraforwarder.devlake import sending as sending_module
from doraforwarder.devlake.client import Answer
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.outbox import OutboxEntry, StreamItem
from doraforwarder.outbox.ordering import OrderGate, OrderLock, ack_ordered
from doraforwarder.streams import GroupConsumer
from doraforwarder.testing.redis_server import RedisServer
from tests.devlake_support import (
    deployment_entry,
    devlake_section,
    issue_entries,
    make_context,
    stage,
)

KEYS = Keys("t")


def member(redis: aioredis.Redis, name: str) -> GroupConsumer:
    return GroupConsumer(redis, KEYS.outbox_stream, OUTBOX_GROUP, name, claim_idle_s=60)


async def owners(redis: aioredis.Redis) -> dict[str, str]:
    rows = await redis.xpending_range(KEYS.outbox_stream, OUTBOX_GROUP, "-", "+", 100)
    return {str(row["message_id"]): str(row["consumer"]) for row in rows}


async def taken_over(redis: aioredis.Redis, entries: list[object]) -> list[StreamItem]:
    """Staged, read by ``a``, then taken over by ``b`` (as after ``a`` stalled)."""
    await stage(redis, KEYS, entries)  # type: ignore[arg-type]
    a, b = member(redis, "a"), member(redis, "b")
    await a.ensure_group()
    read = await a.read_new(100, block=False)
    ids = [entry_id for entry_id, _ in read]
    await redis.xclaim(KEYS.outbox_stream, OUTBOX_GROUP, "b", 0, ids, justid=True)
    assert set((await owners(redis)).values()) == {"b"}
    del b
    return [StreamItem.parse(entry_id, fields) for entry_id, fields in read]


async def test_the_heartbeat_refreshes_only_what_is_still_ours(
        redis_client: aioredis.Redis) -> None:
    items = await taken_over(redis_client, [deployment_entry("d1"), deployment_entry("d2")])
    a = member(redis_client, "a")
    await stage(redis_client, KEYS, [deployment_entry("d3")])
    [(mine, _)] = await a.read_new(10, block=False)
    assert await a.refresh([*(item.id for item in items), mine]) == {mine}
    assert await owners(redis_client) == {items[0].id: "b", items[1].id: "b", mine: "a"}


async def test_acks_and_dead_letters_leave_another_members_entries_alone(
        redis_client: aioredis.Redis) -> None:
    first, second, issue = await taken_over(
        redis_client, [deployment_entry("d1"), deployment_entry("d2"), *issue_entries("K", "TODO")])
    assert await outbox.ack_delivered_many(redis_client, KEYS, [first.id], consumer="a") == 0
    assert not await outbox.ack_delivered(redis_client, KEYS, second, consumer="a")
    assert not await outbox.ack_delivered(redis_client, KEYS, issue, consumer="a")
    assert await outbox.dead_letter(redis_client, KEYS, second, reason="x", consumer="a") is None
    assert await redis_client.xlen(KEYS.outbox_stream) == 3
    assert await redis_client.xlen(KEYS.dead_stream) == 0
    order = KEYS.delivery_order("issue:connection_id:1:K")
    assert await redis_client.hget(order, "delivered") is None
    # the owner may
    assert await outbox.ack_delivered_many(redis_client, KEYS, [first.id], consumer="b") == 1
    assert await outbox.dead_letter(redis_client, KEYS, second, reason="x", consumer="b")
    assert await ack_ordered(redis_client, KEYS, issue, "issue:connection_id:1:K", 1,
                             consumer="b")
    assert await redis_client.hget(order, "delivered") == "1"
    assert await redis_client.xlen(KEYS.outbox_stream) == 0
    assert await owners(redis_client) == {}


async def test_the_order_lock_is_taken_only_by_the_entrys_owner(
        redis_client: aioredis.Redis) -> None:
    [issue] = await taken_over(redis_client, issue_entries("K", "TODO"))
    key = "issue:connection_id:1:K"
    stalled = OrderLock(redis_client, KEYS, key, "a", ttl_s=10)
    assert await stalled.acquire(issue) == "not_owned"
    assert await redis_client.get(KEYS.delivery_lock(key)) is None
    owner = OrderLock(redis_client, KEYS, key, "b", ttl_s=10)
    assert await owner.acquire(issue) == "locked"
    assert await OrderLock(redis_client, KEYS, key, "b", ttl_s=10).acquire(issue) == "busy"
    await stalled.release()  # another holder's token: the lock stays
    assert await redis_client.get(KEYS.delivery_lock(key)) == owner.token
    await owner.release()
    assert await redis_client.get(KEYS.delivery_lock(key)) is None


async def test_a_stalled_pool_lets_go_of_what_another_took_over(
        redis_client: aioredis.Redis) -> None:
    context = make_context(redis_client, devlake_section("http://127.0.0.1:9"),
                           delivery={"claim_idle": "60s"}, prefix="t")
    pool = DeliveryPool(context, consumer="a")
    await pool.stream.ensure_group()
    await stage(redis_client, KEYS, [deployment_entry(f"d{n}") for n in range(3)])
    await pool._take_in(await pool.stream.read_new(10, block=False))
    ids = list(pool.schedule.held)
    await redis_client.xclaim(KEYS.outbox_stream, OUTBOX_GROUP, "b", 0, ids[:2], justid=True)
    with capture_logs() as logs:
        await pool._heartbeat()
    assert list(pool.schedule.held) == ids[2:] and pool.lost == 2
    # A stall loses many entries at once: one warning says so, the rest are debug lines.
    warnings = [line["event"] for line in logs if line["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith(
        "outbox entries taken over by another consumer"), warnings
    assert await owners(redis_client) == {ids[0]: "b", ids[1]: "b", ids[2]: "a"}
    # A stalled worker (its last confirmation older than the trust window) asks Redis first.
    held = pool.schedule.held[ids[2]]
    held.confirmed = time.monotonic() - pool.trust_s - 1
    await redis_client.xclaim(KEYS.outbox_stream, OUTBOX_GROUP, "b", 0, [ids[2]], justid=True)
    assert not await pool._still_ours(held)


# --- over maxmemory ------------------------------------------------------------------------

@pytest.fixture
def full_redis() -> Iterator[RedisServer]:
    """A redis-server with ``maxmemory`` and ``noeviction`` (what the manifests configure)."""
    with RedisServer(extra_args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]) \
            as server:
        yield server


async def test_draining_scripts_run_over_maxmemory(full_redis: RedisServer) -> None:
    """Refresh, ack, dead letter and order lock still work once Redis refuses new data.

    Redis judges a script by its first write command: these begin with
    ``XCLAIM`` or ``XACK``, which it allows over the limit (they free memory or
    keep it as it is), where a ``MULTI`` or a script starting with ``SET`` is refused.
    """
    redis: aioredis.Redis = aioredis.Redis.from_url(full_redis.url, decode_responses=True)
    try:
        await stage(redis, KEYS, [deployment_entry("d1"), deployment_entry("d2"),
                                  *issue_entries("K", "TODO")])
        a = member(redis, "a")
        await a.ensure_group()
        read = [StreamItem.parse(i, f) for i, f in await a.read_new(10, block=False)]
        await redis.eval("for i = 1, 200000 do redis.call('SET', 'fill:' .. i, "
                         "string.rep('x', 100)) end", 0)
        with pytest.raises(aioredis.ResponseError, match="maxmemory"):
            await redis.set("one-more", "x")
        first, second, issue = read
        assert await a.refresh([item.id for item in read]) == {item.id for item in read}
        key = "issue:connection_id:1:K"
        lock = OrderLock(redis, KEYS, key, "a", ttl_s=10)
        assert await lock.acquire(issue) == "locked"
        assert await outbox.ack_delivered(redis, KEYS, issue, consumer="a")
        await lock.release()
        assert await outbox.ack_delivered_many(redis, KEYS, [first.id], consumer="a") == 1
        assert await outbox.dead_letter(redis, KEYS, second, reason="x", consumer="a")
        assert await redis.xlen(KEYS.outbox_stream) == 0
        assert await redis.xlen(KEYS.dead_stream) == 1
    finally:
        await redis.aclose()


# --- the order check runs under the lock ----------------------------------------------------

class Recorder:
    """A DevLake that accepts everything and notes who sent which issue state."""

    def __init__(self, log: list[str], who: str) -> None:
        self.log, self.who = log, who

    async def deliver(self, entry: OutboxEntry, url: str, body: dict[str, Any] | None
                      ) -> Answer:
        self.log.append(f"{self.who}:{entry.payload['status']}")
        return Answer(200)

    async def aclose(self) -> None:
        return None


async def test_no_older_issue_state_is_sent_after_a_newer_one(
        redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replica A checks the order of TODO; replica B takes TODO and DONE over meanwhile.

    With the check made before the lock, B could lock, send TODO and DONE and
    release before A locked and sent its TODO over DONE. Under the lock (taken
    only while the entry is A's), B cannot send until A is done.
    """
    context = make_context(redis_client, devlake_section("http://127.0.0.1:9"),
                           delivery={"claim_idle": "60s"}, prefix="t")
    pool = DeliveryPool(context, consumer="a")
    await pool.stream.ensure_group()
    await stage(redis_client, KEYS, issue_entries("K", "TODO", "DONE"))
    read = await pool.stream.read_new(10, block=False)
    await pool._take_in(read)
    todo, done = (StreamItem.parse(i, f) for i, f in read)
    key = "issue:connection_id:1:K"
    log: list[str] = []
    real_gate = sending_module.order_gate

    async def gate_then_b_takes_over(redis: aioredis.Redis, keys: Keys, item: StreamItem
                                     ) -> OrderGate:
        verdict = await real_gate(redis, keys, item)
        await redis.xclaim(KEYS.outbox_stream, OUTBOX_GROUP, "b", 0, [todo.id, done.id],
                           justid=True)
        lock = KEYS.delivery_lock(key)
        if await redis.set(lock, "b", nx=True, px=10_000):  # B sends both, in order, locked
            for state in (todo, done):
                assert state.entry is not None and state.seq is not None
                log.append(f"b:{state.entry.payload['status']}")
                assert await ack_ordered(redis, KEYS, state, key, state.seq)
            await redis.delete(lock)
        return verdict

    monkeypatch.setattr(sending_module, "order_gate", gate_then_b_takes_over)
    held = pool.schedule.held[todo.id]
    await pool._attempt(held, Recorder(log, "a"))
    newest = max((n for n, sent in enumerate(log) if sent.endswith("DONE")), default=len(log))
    assert all(not sent.endswith("TODO") for sent in log[newest + 1:]), \
        f"TODO sent after DONE: {log}"
    # A's send does not count as delivered: the entry is B's now, B acknowledges it.
    assert await redis_client.hget(KEYS.delivery_order(key), "delivered") is None
    assert await owners(redis_client) == {todo.id: "b", done.id: "b"}


async def test_a_requeued_older_state_is_not_sent_over_a_newer_one(
        redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """TODO was dead-lettered; A checks DONE (nothing earlier is outstanding: ready); an
    operator's ``outbox requeue`` of TODO lands; B reads TODO and checks it (nothing
    delivered yet: ready) while A sends DONE.

    With each check made before its lock, B then locks and sends TODO over
    DONE. Under the lock, B either finds A's lock (and checks again later) or
    checks after A acknowledged DONE: TODO is obsolete and dropped unsent.
    """
    context_a = make_context(redis_client, devlake_section("http://127.0.0.1:9"),
                             delivery={"claim_idle": "60s"}, prefix="t")
    context_b = make_context(redis_client, devlake_section("http://127.0.0.1:9"),
                             delivery={"claim_idle": "60s"}, prefix="t")
    a, b = DeliveryPool(context_a, consumer="a"), DeliveryPool(context_b, consumer="b")
    await a.stream.ensure_group()
    await stage(redis_client, KEYS, issue_entries("K", "TODO", "DONE"))
    read = await a.stream.read_new(10, block=False)
    await a._take_in(read)
    todo, done = (StreamItem.parse(i, f) for i, f in read)
    dead_id = await outbox.dead_letter(redis_client, KEYS, todo, reason="x", consumer="a")
    assert dead_id is not None
    a.schedule.release(todo.id)
    log: list[str] = []
    real_gate = sending_module.order_gate
    b_checked, a_finished = asyncio.Event(), asyncio.Event()
    b_attempt: asyncio.Task[None] | None = None

    async def interleaved(redis: aioredis.Redis, keys: Keys, item: StreamItem) -> OrderGate:
        nonlocal b_attempt
        verdict = await real_gate(redis, keys, item)
        if item.id == done.id and b_attempt is None:      # A's check of DONE
            await outbox.requeue(redis, KEYS, dead_id)
            await b._take_in(await b.stream.read_new(10, block=False))
            [requeued] = list(b.schedule.held.values())
            b_attempt = asyncio.create_task(b._attempt(requeued, Recorder(log, "b")))
            checked = asyncio.create_task(b_checked.wait())
            await asyncio.wait([b_attempt, checked], return_when=asyncio.FIRST_COMPLETED)
            checked.cancel()
        elif item.id != done.id and not b_checked.is_set():  # B's check of TODO
            b_checked.set()
            await a_finished.wait()
        return verdict

    monkeypatch.setattr(sending_module, "order_gate", interleaved)
    await a._attempt(a.schedule.held[done.id], Recorder(log, "a"))
    a_finished.set()
    assert b_attempt is not None
    await asyncio.wait_for(b_attempt, 10)
    for held in list(b.schedule.held.values()):       # B checks again (it found A's lock)
        await b._attempt(held, Recorder(log, "b"))
    assert log == ["a:DONE"], f"an older state was sent over a newer one: {log}"
    assert await redis_client.xlen(KEYS.outbox_stream) == 0
    assert await redis_client.hget(KEYS.delivery_order("issue:connection_id:1:K"),
                                   "delivered") == "2"
