"""Redis at ``maxmemory`` with ``noeviction`` (what the manifests configure).

A full Redis refuses every command that may grow memory and every command
queued inside ``MULTI``; it still runs reads and the commands that free
memory or keep it as it is (``XACK``, ``XDEL``, ``XCLAIM``, ``DEL``) outside
``MULTI``, and scripts whose first write is one of those. Draining the
outbox is what frees memory, so it must work over the limit: a delivery pool
started on a full Redis (its group exists) delivers, acknowledges and
dead-letters everything. Detections and resolutions add data: a full Redis
refuses them, and they are taken again once memory frees, never dropped.
Real redis-server, the strict fake DevLake over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from doraforwarder import outbox
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.keys import OUTBOX_GROUP
from doraforwarder.outbox import OutboxEntry
from doraforwarder.streams import ensure_group
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.redis_server import RedisServer
from tests.devlake_support import (
    TOKEN,
    RunningService,
    deployment_entry,
    devlake_section,
    eventually,
    issue_entries,
    make_context,
    stage,
)

DEPLOYMENTS = 40


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=TOKEN, connections={1: "global"}) as fake:
        yield fake


@pytest.fixture
def full_server() -> Iterator[RedisServer]:
    with RedisServer(extra_args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]) \
            as server:
        yield server


@pytest.fixture
async def redis(full_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client: aioredis.Redis = aioredis.Redis.from_url(full_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def fill(redis: aioredis.Redis) -> None:
    """Take Redis past maxmemory (one script: it may run past the limit once started)."""
    await redis.eval("for i = 1, 100000 do redis.call('SET', 'fill:' .. i, "
                     "string.rep('x', 100)) end", 0)
    with pytest.raises(aioredis.ResponseError, match="maxmemory"):
        await redis.set("one-more", "x")


async def free(redis: aioredis.Redis) -> None:
    """Let memory go again (DEL is allowed over the limit)."""
    keys = [key async for key in redis.scan_iter(match="fill:*", count=10_000)]
    for start in range(0, len(keys), 10_000):
        await redis.delete(*keys[start:start + 10_000])


def invalid_entry() -> OutboxEntry:
    """A deployment that breaks DevLake's contract: dead-lettered without a request."""
    entry = deployment_entry("broken")
    return entry.model_copy(update={"payload": {**entry.payload, "deploymentCommits": []}})


async def test_a_pool_started_on_a_full_redis_drains_the_outbox(
    redis: aioredis.Redis, devlake: FakeDevLake
) -> None:
    context = make_context(redis, devlake_section(devlake.url))
    keys = context.keys
    deployments = [deployment_entry(f"svc:{n}") for n in range(DEPLOYMENTS)]
    await stage(redis, keys, [*deployments, *issue_entries("INC-1", "TODO", "DONE", close=True),
                              invalid_entry()])
    await ensure_group(redis, keys.outbox_stream, OUTBOX_GROUP)  # an earlier run made it
    await fill(redis)
    async with RunningService(DeliveryPool(context, read_block_s=0.05)) as running:
        async def drained() -> bool:
            return await redis.xlen(keys.outbox_stream) == 0

        await eventually(drained, what="the outbox drained over maxmemory")
        assert running.task is not None and not running.task.done()
    assert devlake.deployment_ids(1) == {f"svc:{n}" for n in range(DEPLOYMENTS)}
    sequence = [(p.kind, p.body and p.body["status"]) for p in devlake.accepted()
                if p.record_id == "INC-1"]
    assert sequence == [("issue", "TODO"), ("issue", "DONE"), ("close", None)]
    assert await redis.xlen(keys.dead_stream) == 1
    summary = await redis.xpending(keys.outbox_stream, OUTBOX_GROUP)
    assert summary["pending"] == 0
    with pytest.raises(aioredis.ResponseError, match="maxmemory"):
        await redis.set("one-more", "x")  # still full: the drain ran over the limit


async def test_an_operator_drops_and_requeues_on_a_full_redis(redis: aioredis.Redis) -> None:
    """``doraforwarder outbox drop`` and ``requeue`` are how one makes room by hand."""
    context = make_context(redis)
    keys = context.keys
    await stage(redis, keys, [deployment_entry("a"), *issue_entries("INC-1", "TODO")])
    await ensure_group(redis, keys.outbox_stream, OUTBOX_GROUP)
    items = await outbox.read_stream(redis, keys.outbox_stream)
    dead_id = await outbox.dead_letter(redis, keys, items[0], reason="test")
    await fill(redis)
    assert await outbox.drop(redis, keys, items[1].id) == "outbox"  # the ordered one
    assert await redis.zcard(keys.delivery_queue("issue:connection_id:1:INC-1")) == 0
    new_id = await outbox.requeue(redis, keys, str(dead_id))
    assert [item.id for item in await outbox.read_stream(redis, keys.outbox_stream)] == [new_id]
    assert await redis.xlen(keys.dead_stream) == 0
