"""The daemon's own backfill after Redis lost its data (ops.loss_backfill), two replicas at once.

Both replicas of a deployment find the loss (the marker gone, or written again
by the other) and both backfill the same window: each deployment is staged
once on the ``deployments`` stream anyway (the ``backfilled`` set under
``WATCH``), the other replica counting it ``already staged``. Real redis-server
and the fake API server; the same history as ``tests/test_backfill.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from doraforwarder.config import load_config
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.loss_window import MARGIN
from doraforwarder.ops.loss_backfill import LossBackfill
from doraforwarder.records import DetectedDeployment
from doraforwarder.streams import DEPLOYMENT_FIELD
from doraforwarder.testing.world import FakeWorld
from tests.devlake_support import RunningService, eventually, make_context
from tests.test_backfill import START, History, config_for


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path) as w:
        yield w


def replica(world: FakeWorld, config: Path) -> AppContext:
    loaded = load_config(config)
    settings = loaded.settings.storage.redis
    return AppContext(config=loaded, redis=aioredis.Redis.from_url(
        f"redis://{settings.address}/0", decode_responses=True), keys=Keys(settings.keyspace))


async def test_two_replicas_backfilling_after_the_same_loss_stage_each_deployment_once(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = History(world)
    for name, value in world.environment().items():
        monkeypatch.setenv(name, value)
    config = config_for(world)
    first, second = replica(world, config), replica(world, config)
    try:
        counts = await asyncio.gather(
            LossBackfill(first).backfill(START, "a test"),
            LossBackfill(second).backfill(START, "a test"))
        expected = history.expected_ids(START)
        assert None not in counts and sum(c or 0 for c in counts) == len(expected), counts
        entries = await first.redis.xrange(first.keys.deployments_stream)
        staged = [DetectedDeployment.model_validate_json(fields[DEPLOYMENT_FIELD]).id
                  for _, fields in entries]
        assert sorted(staged) == sorted(expected)  # once each, whoever staged it
        shown = [first.status.redis_loss_backfill, second.status.redis_loss_backfill]
        assert all(s is not None and s["state"] == "done" for s in shown), shown
        assert sum(s["already_staged"] for s in shown if s) == len(expected), shown
    finally:
        await first.redis.aclose()
        await second.redis.aclose()


class Recorder(LossBackfill):
    """Records each backfill instead of running it; the first one waits to be let go."""

    def __init__(self, context: AppContext) -> None:
        super().__init__(context, settle=0)
        self.calls: list[datetime] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def backfill(self, since: datetime, why: str) -> int | None:
        self.calls.append(since)
        self.started.set()
        await self.release.wait()
        return 0


async def test_a_loss_found_during_a_backfill_runs_one_more_from_the_earliest_time(
    redis_client: aioredis.Redis
) -> None:
    service = Recorder(make_context(redis_client))
    now = datetime.now(UTC)
    async with RunningService(service):
        service.trigger(now - timedelta(minutes=1))
        await asyncio.wait_for(service.started.wait(), 5)
        service.trigger(now - timedelta(minutes=30))  # two more losses while it runs:
        service.trigger(now - timedelta(minutes=10))  # one more run, from the earliest
        shown = service.context.status.redis_loss_backfill
        assert shown is not None and shown["state"] == "waiting", shown
        service.release.set()
        await eventually(lambda: len(service.calls) == 2, what="the second backfill")
        await asyncio.sleep(0.05)  # nothing else was asked: no third run
        assert service.calls == [now - timedelta(minutes=1) - MARGIN,
                                 now - timedelta(minutes=30) - MARGIN]
