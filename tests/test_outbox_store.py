"""The outbox contract producers rely on: atomic staging, sequence numbers, repair."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from doraforwarder import outbox
from doraforwarder.keys import Keys
from doraforwarder.outbox import OutboxEntry, StreamItem, stage_entries
from tests.devlake_support import deployment_entry, issue_entries, stage

KEYS = Keys("t")


async def test_staging_happens_only_at_exec_and_with_the_callers_state(redis_client) -> None:
    async with redis_client.pipeline(transaction=True) as pipe:
        pipe.set("t:state", "advanced")
        stage_entries(pipe, KEYS, [deployment_entry("d1"), *issue_entries("K", "TODO")])
        assert await redis_client.xlen(KEYS.outbox_stream) == 0
        await pipe.execute()
    assert await redis_client.get("t:state") == "advanced"
    items = await outbox.read_stream(redis_client, KEYS.outbox_stream)
    assert [(i.entry.kind, i.seq) for i in items] == [("deployment", None), ("issue", 1)]


async def test_a_failed_watch_stages_nothing(redis_client) -> None:
    other: aioredis.Redis = aioredis.Redis(connection_pool=redis_client.connection_pool)
    async with redis_client.pipeline(transaction=True) as pipe:
        await pipe.watch("t:state")
        await other.set("t:state", "changed by someone else")
        pipe.multi()
        stage_entries(pipe, KEYS, issue_entries("K", "TODO"))
        with pytest.raises(aioredis.WatchError):
            await pipe.execute()
    assert await redis_client.xlen(KEYS.outbox_stream) == 0
    assert await redis_client.hget(KEYS.delivery_order("issue:connection_id:1:K"),
                                   "staged") is None


async def test_sequence_numbers_per_order_key_and_the_gate(redis_client) -> None:
    await stage(redis_client, KEYS, issue_entries("K", "TODO", "DONE", close=True))
    await stage(redis_client, KEYS, issue_entries("L", "TODO"))
    items = await outbox.read_stream(redis_client, KEYS.outbox_stream)
    assert [(i.entry.record_id, i.seq) for i in items] == [("K", 1), ("K", 2), ("K", 3),
                                                           ("L", 1)]
    gates = [(await outbox.order_gate(redis_client, KEYS, i)).verdict for i in items]
    assert gates == ["ready", "blocked", "blocked", "ready"]
    await outbox.ensure_group(redis_client, KEYS.outbox_stream, "delivery")
    assert await outbox.ack_delivered(redis_client, KEYS, items[0])
    assert not await outbox.ack_delivered(redis_client, KEYS, items[0])  # already gone
    assert (await outbox.order_gate(redis_client, KEYS, items[1])).verdict == "ready"
    # An entry removed by hand no longer blocks its key.
    await redis_client.xdel(KEYS.outbox_stream, items[1].id)
    assert (await outbox.order_gate(redis_client, KEYS, items[2])).verdict == "ready"
    # A requeued older state is obsolete once a later one was delivered.
    await outbox.ack_delivered(redis_client, KEYS, items[2])
    assert (await outbox.order_gate(redis_client, KEYS, items[1])).verdict == "obsolete"


async def test_dead_letter_requeue_and_drop(redis_client) -> None:
    await outbox.ensure_group(redis_client, KEYS.outbox_stream, "delivery")
    await stage(redis_client, KEYS, [*issue_entries("K", "TODO"), deployment_entry("d1")])
    issue, deployment = await outbox.read_stream(redis_client, KEYS.outbox_stream)
    dead_id = await outbox.dead_letter(redis_client, KEYS, issue, reason="rejected: x",
                                       status=400, body="b" * 5000)
    dead = (await outbox.read_stream(redis_client, KEYS.dead_stream))[0]
    assert dead.id == dead_id and dead.seq == 1 and len(dead.fields["body"]) == 2000
    assert dead.fields["outbox_id"] == issue.id and dead.fields["status"] == "400"
    new_id = await outbox.requeue(redis_client, KEYS, dead_id)
    requeued = (await redis_client.xrange(KEYS.outbox_stream, new_id, new_id))[0][1]
    assert requeued["seq"] == "1" and OutboxEntry.from_fields(requeued) == issue.entry
    assert await redis_client.zscore(KEYS.delivery_queue("issue:connection_id:1:K"),
                                     new_id) == 1
    with pytest.raises(outbox.RepairError, match="no dead letter"):
        await outbox.requeue(redis_client, KEYS, dead_id)
    assert await outbox.drop(redis_client, KEYS, new_id) == "outbox"
    assert await redis_client.zcard(KEYS.delivery_queue("issue:connection_id:1:K")) == 0
    dead_again = await outbox.dead_letter(redis_client, KEYS, deployment, reason="x")
    assert await outbox.drop(redis_client, KEYS, dead_again) == "dead"
    with pytest.raises(outbox.RepairError):
        await outbox.drop(redis_client, KEYS, "1-1")


def test_unreadable_entries_are_reported_not_raised() -> None:
    item = StreamItem.parse("1-1", {"entry": "{not json"})
    assert item.entry is None and "not a valid outbox entry" in (item.error or "")
    assert StreamItem.parse("1-2", {}).error == "the stream entry has no 'entry' field"
