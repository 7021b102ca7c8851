"""A Degraded production app deleted while its incident is open, end to end.

The real :class:`ArgoCDSource` watches the fake Kubernetes API and commits
through a real redis-server with the daemon's staging (incidents planned
into the outbox in the decision's transaction); the outbox is then
delivered to the fake DevLake and the DORA model reads the time to restore
the dashboard would show.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from doraforwarder.argocd.ids import incident_key
from doraforwarder.argocd.model import parse_time
from doraforwarder.argocd.state import load_state
from doraforwarder.commits.stage import PipelineStaging
from doraforwarder.config import DevLakeConfig
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.devlake.plan import Planner
from doraforwarder.outbox import OutboxEntry
from doraforwarder.outbox.admin import read_stream
from doraforwarder.testing.argocd_objects import LiveApp
from doraforwarder.testing.dora import DoraModel
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.redis_server import RedisServer
from tests.devlake_support import RunningService, devlake_section, eventually, make_context
from tests.test_argocd_watch import Harness, ManualClock

INCIDENTS = "failures_as_incidents: true, incident_after: 5m, state_ttl: 1h"


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


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=None, connections={1: "global"}) as fake:
        fake.add_project("global", connections=[1])
        yield fake


async def outbox(harness: Harness) -> list[OutboxEntry]:
    items = await read_stream(harness.redis, harness.keys.outbox_stream)
    return [item.entry for item in items if item.entry is not None]


@pytest.mark.parametrize("gap", [False, True], ids=["deleted event", "absent after a 410"])
async def test_deleting_a_degraded_app_resolves_its_open_incident(
    harness: Harness, devlake: FakeDevLake, gap: bool
) -> None:
    app = LiveApp("svc")
    clock = ManualClock(app.now)
    harness.apply(app.snapshot())
    planner = Planner(DevLakeConfig.model_validate(devlake_section(devlake.url)))
    run = await harness.start(INCIDENTS, clock=clock,
                              stage=PipelineStaging(harness.keys, planner))

    degraded = app.set_health("Degraded", record_transition=True)
    since = parse_time(degraded["status"]["health"]["lastTransitionTime"])
    clock.now = since
    harness.apply(degraded)
    await harness.settle()
    assert await outbox(harness) == []  # not Degraded for incident_after yet
    clock.advance(timedelta(minutes=6))
    assert await run.source.recheck_due() == 1
    await harness.settle()
    key = incident_key("argocd", "svc", since)
    assert [(e.record_id, e.payload["status"]) for e in await outbox(harness)] == [(key, "TODO")]

    clock.now = since + timedelta(minutes=47, seconds=30)
    deleted_at = clock.now
    if gap:  # deleted while the watch was away: only the re-list tells
        harness.kube.stop()
        harness.kube.delete("argocd", "svc")
        harness.kube.compact()
        harness.kube.start()
    else:
        harness.kube.delete("argocd", "svc")
    await harness.settle()
    if gap:
        assert run.context.metrics.relists.labels("argocd")._value.get() == 2
    entries = await outbox(harness)
    assert [(e.kind, e.record_id, e.payload["status"]) for e in entries] == [
        ("issue", key, "TODO"), ("issue", key, "DONE")]
    assert entries[0].order_key == entries[1].order_key  # delivered in that order
    resolved = entries[1].payload
    assert resolved["issueKey"] == entries[0].payload["issueKey"] == key
    assert resolved["originalStatus"] == "Deleted"
    assert resolved["createdDate"] == entries[0].payload["createdDate"] == since.isoformat()
    assert resolved["resolutionDate"] == deleted_at.isoformat()
    assert resolved["component"] == "svc" and "deleted at" in resolved["description"]

    state_key = harness.keys.app_state("argocd", "svc")
    state = load_state(await harness.redis.get(state_key))
    assert state is not None and state.deleted_at == deleted_at
    assert state.degraded is not None and state.degraded.resolved_at == deleted_at
    assert 0 < await harness.redis.ttl(state_key) <= 3600

    context = make_context(harness.redis, devlake_section(devlake.url), token=None,
                           prefix=harness.keys.prefix)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: (devlake.issue(1, key) or {}).get("status") == "DONE",
                         what="the resolved issue in DevLake")
    numbers = DoraModel(devlake).project("global")
    assert numbers.incidents == 1 and numbers.time_to_restore_minutes == 47
