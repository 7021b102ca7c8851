"""``run --dry-run`` leaves the configured Redis exactly as it found it.

Dry run against a real redis-server with real state in it (app baselines, a
waiting outbox entry), while a sync happens and incidents are open: every
key and value is the same afterwards, and a real run on the same Redis then
delivers every record (the sync, the incidents, the waiting entry).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from doraforwarder.daemon import Daemon
from doraforwarder.dryrun import DryRunSpace, dry_run_keys
from doraforwarder.keys import Keys
from doraforwarder.testing.argocd_objects import LiveApp
from doraforwarder.testing.world import FakeWorld
from tests.devlake_support import deployment_entry, eventually, stage

START = datetime.now(UTC) - timedelta(hours=2)
PREFIX = "dora-metrics"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path, redis_appendonly=False) as w:
        yield w


@pytest.fixture
async def redis(world: FakeWorld) -> AsyncIterator[aioredis.Redis]:
    assert world.redis is not None
    client: aioredis.Redis = aioredis.Redis.from_url(world.redis.url)
    yield client
    await client.aclose()


async def snapshot(redis: aioredis.Redis) -> dict[bytes, bytes | None]:
    """Every key with its serialized value (DUMP covers streams and their groups)."""
    return {key: await redis.dump(key) async for key in redis.scan_iter(count=1000)}


async def run_until(daemon: Daemon, done: Callable[[], object], what: str) -> None:
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: daemon.context.status.apps_tracked > 0, 30, what="first list")
        await eventually(done, 60, what=what)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_dry_run_changes_nothing_and_a_real_run_then_delivers_everything(
    world: FakeWorld, redis: aioredis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    gitops = world.github.add_repo("example/gitops", 4, start=START - timedelta(days=3))
    svc = world.github.add_repo("example/svc", 4, start=START - timedelta(days=3))
    app = LiveApp("svc-prod", revision=gitops[0], start=START, step=timedelta(minutes=1),
                  images=[f"quay.io/example/svc:{svc[0]}"])
    world.kube.apply(app.snapshot())
    config = world.config({"webrca": {"products": []}})

    # A real run records the app's baseline, then stops: real state in Redis.
    baseline = Daemon(world.config({"webrca": {"enabled": False}}))
    real = Keys(PREFIX)

    async def has_baseline() -> bool:
        return bool(await redis.exists(real.app_state("argocd", "svc-prod")))

    await run_until(baseline, has_baseline, "baseline")
    await stage(redis, real, [deployment_entry("waiting:1")])
    world.webrca.add_incident("ITN-2025-00001")
    before = await snapshot(redis)

    # The dry run sees the sync and the incident, and prints them.
    dry = Daemon(config, dry_run=True)
    printed: list[dict[str, object]] = []

    def seen(kind: str) -> bool:
        out = capsys.readouterr().out
        printed.extend(json.loads(line) for line in out.splitlines()
                       if line.startswith("{"))
        return any(line.get("kind") == kind for line in printed)

    task = asyncio.create_task(dry.run())
    try:
        await eventually(lambda: dry.context.status.apps_tracked > 0, 30, what="first list")
        for step in app.sync(gitops[1], [f"quay.io/example/svc:{svc[1]}"]):
            world.kube.apply(step)
        await eventually(lambda: seen("deployment"), 60, what="dry-run deployment")
        await eventually(lambda: seen("issue"), 60, what="dry-run incident")
    finally:
        dry.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert not any(line.get("record_id") == "waiting:1" for line in printed)
    assert world.devlake.accepted() == []
    assert await snapshot(redis) == before

    # A real run on the same Redis delivers every record.
    dry_ids = {line["record_id"] for line in printed if line.get("kind") == "deployment"}
    real_run = Daemon(config)
    await run_until(
        real_run,
        lambda: {"waiting:1", *dry_ids} <= world.devlake.deployment_ids(1)
        and world.devlake.issue(1, "ITN-2025-00001") is not None,
        "every record delivered",
    )
    assert len(dry_ids) == 1


async def test_a_later_dry_run_removes_what_a_crashed_one_left(redis: aioredis.Redis) -> None:
    crashed = dry_run_keys(PREFIX)
    await redis.set(crashed.app_state("argocd", "a"), "{}")
    await redis.xadd(crashed.outbox_stream, {"entry": "{}"})
    running = DryRunSpace(redis, PREFIX, dry_run_keys(PREFIX))
    await redis.set(running.alive_key, "1", ex=60)
    await redis.set(running.keys.dedupe("x"), "y")
    real = Keys(PREFIX)
    await redis.set(real.app_state("argocd", "a"), "{}")
    fresh = DryRunSpace(redis, PREFIX, dry_run_keys(PREFIX))
    stop = asyncio.Event()
    await fresh.start(stop)
    left = {key.decode() async for key in redis.scan_iter()}
    assert not any(key.startswith(crashed.prefix) for key in left)
    assert running.keys.dedupe("x") in left  # another dry run still alive: kept
    assert real.app_state("argocd", "a") in left
    stop.set()
    await fresh.close()
    left = {key.decode() async for key in redis.scan_iter()}
    assert not any(key.startswith(fresh.keys.prefix) for key in left)
    assert real.app_state("argocd", "a") in left
