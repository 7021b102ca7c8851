"""Redis loses its data (FLUSHALL, a restart without persistence): say so, and keep going.

The consumer groups exist only because the daemon created them; a Redis that
lost its data answers ``NOGROUP`` to every read. The delivery pool recreates
what is missing and delivers what is staged afterwards; the loss is shown in
a log line, a metric and the status, and the outbox-age gauge keeps telling
the truth even while the group cannot be recreated. Real redis-server, the
strict fake DevLake over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from doraforwarder.commands.status import read_status, render
from doraforwarder.context import AppContext
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.keys import OUTBOX_GROUP
from doraforwarder.storage import RedisWatch
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.redis_server import RedisServer
from tests.devlake_support import (
    TOKEN,
    RunningService,
    deployment_entry,
    devlake_section,
    eventually,
    make_context,
    stage,
)


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=TOKEN, connections={1: "global"}) as fake:
        yield fake


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of this test's own: its maxmemory is changed."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def own_client(own_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client: aioredis.Redis = aioredis.Redis.from_url(own_server.url, decode_responses=True)
    yield client
    await client.aclose()


def lost(context: AppContext, evidence: str) -> float:
    value = context.metrics.registry.get_sample_value(
        "doraforwarder_redis_data_lost_total", {"evidence": evidence})
    return value or 0.0


def ids(prefix: str, count: int) -> set[str]:
    return {f"{prefix}:{n}" for n in range(count)}


async def stage_ids(redis: aioredis.Redis, context: AppContext, prefix: str, count: int
                    ) -> None:
    await stage(redis, context.keys, [deployment_entry(i) for i in sorted(ids(prefix, count))])


async def test_entries_staged_after_a_flushall_are_delivered_and_the_loss_is_shown(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    watch = RedisWatch(context, interval=0.02)
    async with RunningService(watch), RunningService(DeliveryPool(context, read_block_s=0.05)):
        await stage_ids(redis_client, context, "before", 3)
        await eventually(lambda: devlake.deployment_ids(1) == ids("before", 3),
                         what="the first entries delivered")
        await eventually(lambda: redis_client.exists(context.keys.redis_marker),
                         what="the marker written")
        marker_seen = await redis_client.get(context.keys.redis_marker)
        assert context.status.snapshot()["redis_data_lost"] is None
        await eventually(lambda: watch._epoch is not None, what="the marker seen by the watch")

        await redis_client.flushall()
        await stage_ids(redis_client, context, "after", 3)
        await eventually(lambda: devlake.deployment_ids(1) == ids("before", 3) | ids("after", 3),
                         what="the entries staged after the loss delivered")
        await eventually(lambda: lost(context, "marker") == 1, what="the marker's evidence")
        assert lost(context, "group") == 1
        shown = context.status.snapshot()["redis_data_lost"]
        assert shown is not None and shown["evidence"] in ("group", "marker")
        assert shown["times"] == 2
        assert await redis_client.get(context.keys.redis_marker) != marker_seen
        offline = await read_status(aioredis.Redis.from_url(
            _url_of(redis_client), decode_responses=True), context.keys)
        assert offline["redis_data"]["lost_at"] is not None
        assert offline["redis_data"]["detected_by"]
        # Still going: a later entry is delivered too, and nothing is reported twice.
        await stage_ids(redis_client, context, "later", 2)
        await eventually(lambda: ids("later", 2) <= devlake.deployment_ids(1),
                         what="a later entry delivered")
        assert lost(context, "marker") == 1 and lost(context, "group") == 1


def _url_of(client: aioredis.Redis) -> str:
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


async def test_a_first_start_on_an_empty_redis_is_not_a_loss(redis_client: aioredis.Redis
                                                             ) -> None:
    context = make_context(redis_client)
    watch = RedisWatch(context)
    await watch.check()
    await watch.check()
    assert lost(context, "marker") == 0
    status = await read_status(aioredis.Redis.from_url(_url_of(redis_client),
                                                       decode_responses=True), context.keys)
    assert status["redis_data"]["kept_since"] is not None
    assert status["redis_data"]["lost_at"] is None
    assert f"kept since {status['redis_data']['kept_since']}" in render({**status, "redis": "x"})


async def test_a_second_replica_learns_of_the_loss_from_the_new_marker(
    redis_client: aioredis.Redis
) -> None:
    first = RedisWatch(make_context(redis_client))
    second = RedisWatch(make_context(redis_client))
    await first.check()
    await second.check()
    await redis_client.flushall()
    await first.check()  # finds the marker gone and writes a new one
    await second.check()  # finds a marker with another epoch
    assert lost(first.context, "marker") == 1
    assert lost(second.context, "marker") == 1


async def test_the_outbox_age_gauge_moves_while_the_group_cannot_be_recreated(
    own_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    """A full Redis refuses XGROUP CREATE: the group stays missing, the gauge still works."""
    context = make_context(own_client, devlake_section(devlake.url))
    pool = DeliveryPool(context, read_block_s=0.05)
    async with RunningService(pool):
        await eventually(lambda: own_client.exists(context.keys.outbox_stream),
                         what="the pool started")
        await own_client.flushall()
        entry = deployment_entry("old")
        await own_client.xadd(context.keys.outbox_stream, entry.to_fields(), id="1000-0")
        await own_client.config_set("maxmemory", "1")  # far below what is used: full
        await eventually(lambda: context.status.outbox_oldest_age_seconds > 3600,
                         what="the gauge showing the waiting entry's age")
        assert context.metrics.registry.get_sample_value(
            "doraforwarder_outbox_oldest_age_seconds") == pytest.approx(
                context.status.outbox_oldest_age_seconds)
        groups = await own_client.xinfo_groups(context.keys.outbox_stream)
        assert groups == []  # refused while full
        await own_client.config_set("maxmemory", "0")
        await eventually(lambda: devlake.deployment_ids(1) == {"old"},
                         what="delivered once memory frees")
    assert [g["name"] for g in await own_client.xinfo_groups(
        context.keys.outbox_stream)] == [OUTBOX_GROUP]


async def test_the_watch_hands_the_last_marker_look_to_the_loss_backfill(
    redis_client: aioredis.Redis
) -> None:
    """Both replicas learn of the loss and are told when they last saw the data kept; queues
    emptied by the loss never count as delivered (the ledger keeps what waited)."""
    first, second = RedisWatch(make_context(redis_client)), RedisWatch(make_context(redis_client))
    told: dict[str, list[datetime | None]] = {"first": [], "second": []}
    first.on_data_lost.append(told["first"].append)
    second.on_data_lost.append(told["second"].append)
    for watch in (first, second, first, second):  # the second look sees the same epoch
        await watch.check()
    seen = first.marker_seen_at
    assert seen is not None and second.marker_seen_at is not None
    waited = datetime(2026, 1, 1, tzinfo=UTC)
    first.context.unconfirmed.staged("waiting", waited)
    await stage_ids(redis_client, first.context, "queued", 1)
    await first.check()  # the queue is not empty: what waits stays unconfirmed
    assert first.context.unconfirmed.oldest() == waited
    later_seen = first.marker_seen_at
    assert later_seen is not None and later_seen >= seen

    await redis_client.flushall()
    await first.check()  # the queues are empty now, but because the data went
    await second.check()
    assert told["first"] == [later_seen] and len(told["second"]) == 1
    assert first.context.unconfirmed.oldest() == waited
    await first.check()  # Redis keeps its data again, and the queues are empty: delivered
    assert first.context.unconfirmed.oldest() is None
    assert told["first"] == [later_seen]


async def test_the_watch_reads_the_queues_only_while_something_is_unconfirmed(
    redis_client: aioredis.Redis
) -> None:
    """An idle daemon's look at Redis costs no queue lengths: only a staged deployment not yet
    seen delivered needs them (to settle it)."""
    watch = RedisWatch(make_context(redis_client))
    await watch.check()
    before = await _xlen_calls(redis_client)
    await watch.check()
    assert await _xlen_calls(redis_client) == before
    watch.context.unconfirmed.staged("waiting", datetime(2026, 1, 1, tzinfo=UTC))
    await watch.check()
    assert await _xlen_calls(redis_client) == before + 2
    assert watch.context.unconfirmed.oldest() is None  # the queues were empty: settled


async def _xlen_calls(redis_client: aioredis.Redis) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_xlen", {}).get("calls", 0))
