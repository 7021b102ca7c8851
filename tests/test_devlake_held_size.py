"""The entries held in memory for delivery are bounded by size, not only by count.

With ``deployment_commits: range`` one outbox entry may be 100 KB in Redis
(about 3.7 times that held), so 1,000 held entries measured 367 MiB. While
DevLake is down, a backlog of big entries is read only as far as
``delivery.max_held_bytes`` allows; the rest waits in Redis and every entry
arrives once DevLake is back. Real redis-server, the strict fake DevLake.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.devlake.schedule import stored_size
from doraforwarder.outbox import OutboxEntry, StreamItem
from doraforwarder.testing.fake_devlake import FakeDevLake
from tests.devlake_support import (
    TOKEN,
    RunningService,
    deployment_entry,
    devlake_section,
    eventually,
    make_context,
    stage,
)

ENTRIES = 60
FIT = 5
"""Entries the size bound holds: far fewer than the count bound (1000)."""


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=TOKEN, connections={1: "global"}) as fake:
        yield fake


def big_entry(record_id: str, rows: int = 100) -> OutboxEntry:
    entry = deployment_entry(record_id)
    row = entry.payload["deploymentCommits"][0]
    payload = {**entry.payload,
               "deploymentCommits": [{**row, "commitSha": f"{n:040x}"} for n in range(rows)]}
    return entry.model_copy(update={"payload": payload})


class WatchedPool(DeliveryPool):
    """Records the largest stored size it held at once."""

    peak_bytes = 0
    peak = 0

    def _hold(self, item: StreamItem) -> None:
        super()._hold(item)
        self.peak_bytes = max(self.peak_bytes, self._held_size())
        self.peak = max(self.peak, self._held_count())


async def test_a_backlog_of_big_entries_is_held_up_to_the_size_bound(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    entries = [big_entry(f"svc:{n}") for n in range(ENTRIES)]
    size = max(stored_size(entry.to_fields()) for entry in entries)
    context = make_context(redis_client, devlake_section(devlake.url),
                           delivery={"max_held_bytes": FIT * size})
    await stage(redis_client, context.keys, entries)
    devlake.fail_always(503)
    pool = WatchedPool(context, read_block_s=0.05)
    async with RunningService(pool):
        await eventually(lambda: len(devlake.posts(status=503)) >= 3 * FIT,
                         what="several rounds of failed attempts")
        assert 1 <= pool.peak <= FIT
        assert pool.peak_bytes <= FIT * size
        devlake.clear_faults()
        await eventually(lambda: len(devlake.deployment_ids(1)) == ENTRIES, timeout=30,
                         what="every entry delivered once DevLake is back")
    assert pool.peak <= FIT and pool.peak_bytes <= FIT * size
    accepted = sorted(p.record_id for p in devlake.accepted("deployment"))
    assert accepted == sorted(f"svc:{n}" for n in range(ENTRIES))  # each once
