"""A relist after a Redis master change decides every Application again.

A failover can lose a detection the previous master acknowledged (state,
dedupe claim and stream entry went in one transaction, and all three are
absent from the new master). The Application did not change, so the watch
sends nothing and the intake's fingerprints would skip it on a plain list:
only :meth:`ArgoCDSource.relist` finds the sync again, from its history.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from doraforwarder.argocd.intake import Intake, Observed
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.context import AppContext
from doraforwarder.daemon import build_services
from doraforwarder.keys import Keys
from doraforwarder.metrics import Metrics
from doraforwarder.ops.loss_backfill import LossBackfill
from doraforwarder.storage import RedisWatch
from doraforwarder.testing.argocd_objects import LiveApp, image, sha
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.redis_server import RedisServer
from tests.test_argocd_watch import Harness, dumps, eventually


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


@pytest.fixture
async def harness(kube: FakeKube, redis_server: RedisServer, redis_client: aioredis.Redis,
                  tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(kube, redis_server, redis_client, tmp_path)
    try:
        yield h
    finally:
        await h.stop_all()


async def test_a_relist_detects_again_a_sync_whose_detection_redis_lost(
        harness: Harness) -> None:
    apps = [LiveApp("svc"), LiveApp("other")]
    harness.apply(*(app.snapshot() for app in apps))
    run = await harness.start()
    state_key = harness.keys.app_state("argocd", "svc")
    before_sync = await harness.redis.get(state_key)
    harness.apply(*apps[0].sync(sha("r1"), [image("svc", "r1")]))
    await harness.settle()
    detected = dumps(await harness.deployments())
    assert len(detected) == 1
    # What a failover to a replica that never received the detection leaves behind.
    claims = [key async for key in harness.redis.scan_iter(match=harness.keys.dedupe("*"))]
    assert claims
    await harness.redis.delete(harness.keys.deployments_stream, *claims)
    await harness.redis.set(state_key, before_sync)
    relists = run.context.metrics.relists.labels("argocd")

    async def relisted(times: float) -> None:
        await eventually(lambda: relists._value.get() >= times, what="a new list")
        await harness.settle(run)

    listed = relists._value.get()
    run.source.relist()
    await relisted(listed + 1)
    assert dumps(await harness.deployments()) == detected
    assert run.context.metrics.watch_restarts.labels("argocd", "relist")._value.get() >= 1
    assert all(watcher.failing_since is None for watcher in run.source.watchers)
    # A relist over states Redis kept decides to nothing.
    run.source.relist()
    await relisted(listed + 2)
    assert dumps(await harness.deployments()) == detected


def test_the_intake_hands_every_object_of_the_next_list_over_once() -> None:
    jobs: list[Any] = []
    intake = Intake(lambda key, job, stop: jobs.append(job) or True, Metrics(),
                    lambda scope, present: None)
    scope, other, stop = WatchScope("argocd"), WatchScope("team"), threading.Event()
    app = LiveApp("svc")
    intake.event(scope, "ADDED", app.snapshot(), stop)
    jobs.clear()

    def listed() -> list[str]:
        jobs.clear()
        assert intake.listed_page(scope, [app.refresh()], stop, first=True)
        assert intake.listed_done(scope, stop)
        return [job.key for job in jobs if isinstance(job, Observed)]

    assert listed() == []  # unchanged: skipped
    intake.decide_all_next_list(other)
    assert listed() == []  # another scope's relist
    intake.decide_all_next_list(scope)
    assert listed() == ["argocd/svc"]
    assert listed() == []  # once


def test_the_daemon_relists_on_a_master_change(harness: Harness) -> None:
    config = harness.config()
    context = AppContext(config=config, redis=harness.redis, keys=Keys("dora-metrics"))
    services = build_services(context)
    watch = next(s for s in services if isinstance(s, RedisWatch))
    source = next(s for s in services if s.name == "argocd")
    assert watch.on_master_change == [source.relist]  # type: ignore[attr-defined]


def test_the_daemon_relists_and_backfills_when_the_marker_shows_a_loss(harness: Harness) -> None:
    """A loss leaves every app without state: the relist gives each its baseline at once (not
    at its next event, which may be a sync the live path would then not send), and the
    loss backfill sends ArgoCD's kept history from before the loss."""
    config = harness.config()
    context = AppContext(config=config, redis=harness.redis, keys=Keys("dora-metrics"))
    services = build_services(context)
    watch = next(s for s in services if isinstance(s, RedisWatch))
    source = next(s for s in services if s.name == "argocd")
    autofill = next(s for s in services if isinstance(s, LossBackfill))
    relisted: list[bool] = []
    source.relist = lambda: relisted.append(True)  # type: ignore[attr-defined]
    watch._lost()
    assert relisted == [True]
    assert watch.on_data_lost[-1] == autofill.trigger
    assert (context.status.redis_loss_backfill or {}).get("state") == "waiting"
    # Off, or in a dry run: neither.
    off = AppContext(config=config.model_copy(update={"settings": config.settings.model_copy(
        update={"storage": config.settings.storage.model_copy(update={
            "redis": config.settings.storage.redis.model_copy(
                update={"backfill_on_data_loss": False})})})}),
        redis=harness.redis, keys=Keys("dora-metrics"))
    for context in (off, AppContext(config=config, redis=harness.redis,
                                    keys=Keys("dora-metrics"), dry_run=True)):
        services = build_services(context)
        assert not any(isinstance(s, LossBackfill) for s in services)
        assert next(s for s in services if isinstance(s, RedisWatch)).on_data_lost == []
