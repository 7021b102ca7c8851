"""The delivery pool's parts on their own: the Schedule (pure asyncio) and the AckBatcher."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from doraforwarder import outbox
from doraforwarder.backoff import Backoff
from doraforwarder.devlake.acks import AckBatcher
from doraforwarder.devlake.schedule import Held, Schedule
from doraforwarder.keys import OUTBOX_GROUP, Keys
from doraforwarder.outbox import StreamItem, Target
from doraforwarder.testing.redis_server import RedisServer
from tests.devlake_support import GLOBAL, deployment_entry, eventually, stage


def held(entry_id: str) -> Held:
    item = StreamItem.parse(entry_id, deployment_entry(entry_id).to_fields())
    return Held(item=item, backoff=Backoff(0.001, 0.01))


async def settle() -> None:
    """Let every ready task run (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def take_ids(schedule: Schedule, count: int) -> list[str]:
    taken = [await schedule.take() for _ in range(count)]
    return [h.item.id for h in taken if h is not None]


# --- Schedule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("puts", "expected"),
    [
        ([("1-0", 0.0), ("2-0", 0.0), ("3-0", 0.0)], ["1-0", "2-0", "3-0"]),
        ([("1-0", 0.03), ("2-0", 0.0)], ["2-0", "1-0"]),
        ([("1-0", 0.06), ("2-0", 0.03), ("3-0", 0.0)], ["3-0", "2-0", "1-0"]),
        # putting again reschedules: the earlier place is forgotten, nothing is taken twice
        ([("1-0", 0.0), ("2-0", 0.0), ("1-0", 0.03)], ["2-0", "1-0"]),
        ([("1-0", 0.03), ("1-0", 0.0), ("2-0", 0.0)], ["1-0", "2-0"]),
    ],
)
async def test_take_returns_due_entries_in_order(puts: list[tuple[str, float]],
                                                 expected: list[str]) -> None:
    schedule = Schedule()
    entries: dict[str, Held] = {}
    for entry_id, delay in puts:
        schedule.put(entries.setdefault(entry_id, held(entry_id)), delay)
    assert await asyncio.wait_for(take_ids(schedule, len(expected)), 5) == expected
    waiting = asyncio.create_task(schedule.take())
    await settle()
    assert not waiting.done()  # a rescheduled entry left no second copy behind
    schedule.close()
    assert await waiting is None


async def test_one_put_hands_the_entry_to_exactly_one_waiting_worker() -> None:
    schedule = Schedule()
    workers = [asyncio.create_task(schedule.take()) for _ in range(16)]
    await settle()
    schedule.put(held("1-0"))
    await settle()
    done = [w for w in workers if w.done()]
    assert len(done) == 1
    taken = done[0].result()
    assert taken is not None and taken.item.id == "1-0"
    schedule.close()
    assert [await w for w in workers if w is not done[0]] == [None] * 15
    assert await schedule.take() is None


async def test_wake_makes_parked_entries_due_now() -> None:
    schedule = Schedule()
    schedule.park(held("2-0"), "issue:a", recheck=60)
    schedule.park(held("3-0"), "issue:b", recheck=60)
    waiting = asyncio.create_task(schedule.take())
    await settle()
    assert not waiting.done()
    schedule.wake("issue:a")
    taken = await asyncio.wait_for(waiting, 5)
    assert taken is not None and taken.item.id == "2-0"
    schedule.wake("issue:a")  # nothing parked any more: harmless
    assert len(schedule) == 2  # still held until released
    schedule.close()


async def test_release_forgets_a_waiting_entry() -> None:
    schedule = Schedule()
    schedule.put(held("1-0"))
    schedule.put(held("2-0"), 0.01)
    schedule.release("1-0")
    schedule.release("2-0")
    schedule.put(held("3-0"))
    assert await asyncio.wait_for(take_ids(schedule, 1), 5) == ["3-0"]
    assert "1-0" not in schedule and "3-0" in schedule
    waiting = asyncio.create_task(schedule.take())
    await asyncio.wait({waiting}, timeout=0.05)  # 2-0's timer fires and finds it released
    assert not waiting.done()
    schedule.close()
    assert await waiting is None


def held_for(entry_id: str, target: Target) -> Held:
    item = StreamItem.parse(entry_id, deployment_entry(entry_id, target).to_fields())
    return Held(item=item, backoff=Backoff(0.001, 0.01))


async def test_entries_are_counted_per_target_and_forgotten_without_a_trace() -> None:
    schedule = Schedule()
    other = Target(kind="connection_name", value="team-build", team="build")
    schedule.put(held("1-0"))
    schedule.park(held_for("2-0", other), "refused:x", recheck=60)
    schedule.park(held_for("3-0", other), "refused:x", recheck=60)
    schedule.put(schedule.held["2-0"])  # back again: not counted twice
    assert (schedule.count(GLOBAL.key), schedule.count(other.key)) == (1, 2)
    assert sorted(h.item.id for h in schedule.waiting_of(other.key)) == ["2-0", "3-0"]
    schedule.release("3-0")  # parked in Redis, say
    schedule.release("3-0")  # twice: harmless
    assert (schedule.count(GLOBAL.key), schedule.count(other.key)) == (1, 1)
    schedule.wake("refused:x")  # 3-0 is gone for good: only 2-0 comes back
    assert await asyncio.wait_for(take_ids(schedule, 2), 5) == ["1-0", "2-0"]
    assert "3-0" not in schedule
    schedule.close()


async def test_an_entry_handed_to_a_cancelled_worker_goes_back() -> None:
    schedule = Schedule()
    worker = asyncio.create_task(schedule.take())
    await settle()
    schedule.put(held("1-0"))  # handed to the waiting worker ...
    worker.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert await asyncio.wait_for(take_ids(schedule, 1), 5) == ["1-0"]


# --- AckBatcher ---------------------------------------------------------------------------

KEYS = Keys("acks")


async def read_held(redis: aioredis.Redis, count: int) -> list[Held]:
    await stage(redis, KEYS, [deployment_entry(f"svc:{n}") for n in range(count)])
    await outbox.ensure_group(redis, KEYS.outbox_stream, OUTBOX_GROUP)
    answer = await redis.xreadgroup(OUTBOX_GROUP, "me", {KEYS.outbox_stream: ">"}, count=count)
    return [Held(item=StreamItem.parse(entry_id, fields), backoff=Backoff(0.001, 0.01))
            for entry_id, fields in outbox.read_group_entries(answer)]


async def xack_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_xack", {}).get("calls", 0))


async def no_error(exc: Exception, backoff: Backoff, halt: asyncio.Event) -> None:
    raise AssertionError(f"unexpected Redis error: {exc}")


async def test_everything_handed_over_is_acknowledged_in_one_transaction(redis_client) -> None:
    batch = await read_held(redis_client, 20)
    acked: list[list[str]] = []
    batcher = AckBatcher(redis_client, KEYS, lambda done: acked.append(
        [h.item.id for h in done]), no_error, consumer="me")
    for entry in batch:
        batcher.add(entry)
    before = await xack_calls(redis_client)
    halt = asyncio.Event()
    runner = asyncio.create_task(batcher.run(halt))
    await eventually(lambda: bool(acked), what="the batch acknowledged")
    assert acked == [[h.item.id for h in batch]]
    assert await xack_calls(redis_client) - before == 1
    assert await redis_client.xlen(KEYS.outbox_stream) == 0
    assert (await redis_client.xpending(KEYS.outbox_stream, OUTBOX_GROUP))["pending"] == 0
    halt.set()
    batcher.wake()
    await asyncio.wait_for(runner, 5)


async def test_flush_acknowledges_what_is_left_after_halting(redis_client) -> None:
    batch = await read_held(redis_client, 7)
    acked: list[Held] = []
    batcher = AckBatcher(redis_client, KEYS, acked.extend, no_error, max_batch=3,
                         consumer="me")
    halt = asyncio.Event()
    halt.set()
    await asyncio.wait_for(batcher.run(halt), 5)  # halted: acknowledges nothing itself
    for entry in batch:
        batcher.add(entry)
    await batcher.flush()
    assert [h.item.id for h in acked] == [h.item.id for h in batch]
    assert len(batcher) == 0
    assert await redis_client.xlen(KEYS.outbox_stream) == 0


async def test_the_batch_acknowledges_only_what_is_still_ours(redis_client) -> None:
    """Entries another consumer took over are handed back as done, but left pending for it."""
    batch = await read_held(redis_client, 4)
    theirs = [h.item.id for h in batch[:2]]
    await redis_client.xclaim(KEYS.outbox_stream, OUTBOX_GROUP, "other", 0, theirs, justid=True)
    acked: list[Held] = []
    batcher = AckBatcher(redis_client, KEYS, acked.extend, no_error, consumer="me")
    for entry in batch:
        batcher.add(entry)
    await batcher.flush()
    assert [h.item.id for h in acked] == [h.item.id for h in batch]  # none held any more
    assert await redis_client.xlen(KEYS.outbox_stream) == 2
    rows = await redis_client.xpending_range(KEYS.outbox_stream, OUTBOX_GROUP, "-", "+", 10)
    assert {str(r["message_id"]): str(r["consumer"]) for r in rows} == dict.fromkeys(
        theirs, "other")


async def test_a_redis_outage_delays_acknowledgements_and_loses_none(
    durable_redis_server: RedisServer,
) -> None:
    redis: aioredis.Redis = aioredis.Redis.from_url(durable_redis_server.url,
                                                    decode_responses=True)
    try:
        batch = await read_held(redis, 5)
        errors: list[str] = []
        acked: list[Held] = []

        async def on_error(exc: Exception, backoff: Backoff, halt: asyncio.Event) -> None:
            errors.append(type(exc).__name__)
            await asyncio.sleep(0.01)

        batcher = AckBatcher(redis, KEYS, acked.extend, on_error, consumer="me")
        durable_redis_server.stop()
        for entry in batch:
            batcher.add(entry)
        halt = asyncio.Event()
        runner = asyncio.create_task(batcher.run(halt))
        await eventually(lambda: bool(errors), what="a failed acknowledgement")
        assert not acked and len(batcher) == 5  # still held, to be acknowledged later
        await asyncio.to_thread(durable_redis_server.start)
        await eventually(lambda: len(acked) == 5, what="acknowledged after the outage")
        assert await redis.xlen(KEYS.outbox_stream) == 0
        halt.set()
        batcher.wake()
        await asyncio.wait_for(runner, 5)
    finally:
        await redis.aclose()
