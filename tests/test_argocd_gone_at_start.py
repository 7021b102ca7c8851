"""Applications deleted while no process watched them: marked deleted after the first list.

The real :class:`ArgoCDSource` against the fake Kubernetes API and a real
redis-server: a first source stores the apps' state and stops, apps are
deleted meanwhile, a new source starts. Its first *complete* list decides
which stored apps are gone, within the namespaces it watches only, through
the deletion path of the live watch (incident resolution included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from doraforwarder.argocd.detect import mark_deleted
from doraforwarder.argocd.ids import incident_key
from doraforwarder.argocd.intake import Deleted
from doraforwarder.argocd.model import parse_time
from doraforwarder.argocd.persist import commit_decision
from doraforwarder.argocd.state import AppState, DegradedSpell, load_state
from doraforwarder.argocd.vanished import find_gone, stored_alive
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.commits.stage import PipelineStaging
from doraforwarder.config import ArgoCDConfig, DevLakeConfig
from doraforwarder.devlake.plan import Planner
from doraforwarder.keys import Keys
from doraforwarder.outbox import OutboxEntry
from doraforwarder.outbox.admin import read_stream
from doraforwarder.records import DetectedIncident
from doraforwarder.streams import StreamStaging
from doraforwarder.testing.argocd_objects import LiveApp
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.redis_server import RedisServer
from tests.devlake_support import devlake_section
from tests.test_argocd_watch import FAST, Harness, ManualClock, Running, eventually

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


async def stored(harness: Harness, namespace: str, name: str) -> AppState | None:
    return load_state(await harness.redis.get(harness.keys.app_state(namespace, name)))


async def ttl(harness: Harness, namespace: str, name: str) -> int:
    return int(await harness.redis.ttl(harness.keys.app_state(namespace, name)))


async def outbox(harness: Harness) -> list[OutboxEntry]:
    items = await read_stream(harness.redis, harness.keys.outbox_stream)
    return [item.entry for item in items if item.entry is not None]


# --- pure rules ----------------------------------------------------------------------------

T = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "alive"), [
    (None, False),                                        # expired between SCAN and MGET
    ("{not json", False),                                 # unreadable: left as the live path does
    (AppState(uid="u").dump(), True),
    (AppState(uid="u", deleted_at=T).dump(), False),      # already marked deleted: skipped
], ids=["expired", "corrupt", "live", "deleted"])
def test_which_stored_states_can_be_gone(raw: str | None, alive: bool) -> None:
    assert stored_alive(raw) is alive


@pytest.mark.parametrize(("prefix", "namespace"), [
    ("dora-metrics", "argocd"), ("{dora-metrics}", "argocd"), ("odd[1]*?", "team-a"),
])
async def test_state_keys_are_scanned_per_namespace_with_literal_prefixes(
    redis_client: aioredis.Redis, prefix: str, namespace: str
) -> None:
    keys = Keys(prefix)
    names = [(namespace, "a"), (namespace, "b"), ("other", "a"), (namespace + "x", "c")]
    for app in names:
        await redis_client.set(keys.app_state(*app), AppState().dump())
    await redis_client.set(Keys("odd11").app_state(namespace, "z"), "{}")  # a glob would match
    await redis_client.set(keys.dedupe(f"{namespace}/a"), "x")

    async def gone(scope: WatchScope, present: set[tuple[str, str]]) -> list[tuple[str, str]]:
        return sorted([app async for batch in find_gone(redis_client, keys, scope, present,
                                                        lambda ns, n: False, batch=1)
                       for app in batch])

    assert await gone(WatchScope(namespace), set()) == [(namespace, "a"), (namespace, "b")]
    assert await gone(WatchScope(namespace), {(namespace, "a")}) == [(namespace, "b")]
    assert await gone(WatchScope(None), set()) == sorted(names)
    assert all(keys.parse_app_state(keys.app_state(*app)) == app for app in names)


# --- (a) deleted while stopped ---------------------------------------------------------------


async def test_an_app_deleted_while_stopped_is_marked_deleted_at_the_next_start(
    harness: Harness,
) -> None:
    clock = ManualClock()
    apps = {name: LiveApp(name) for name in ("gone", "kept", "earlier")}
    harness.apply(*(app.snapshot() for app in apps.values()))
    first = await harness.start("state_ttl: 1h", clock=clock)
    harness.kube.delete("argocd", "earlier")  # seen by the live watch: already marked
    await harness.settle(first)
    earlier = await stored(harness, "argocd", "earlier")
    assert earlier is not None and earlier.deleted_at == clock.now
    await first.halt()

    harness.kube.delete("argocd", "gone")
    clock.advance(timedelta(minutes=30))
    with capture_logs() as logs:
        second = await harness.start("state_ttl: 1h", clock=clock)

    state = await stored(harness, "argocd", "gone")
    assert state is not None and state.deleted_at == clock.now
    assert 0 < await ttl(harness, "argocd", "gone") <= 3600
    kept = await stored(harness, "argocd", "kept")
    assert kept is not None and kept.deleted_at is None
    assert await ttl(harness, "argocd", "kept") == -1
    again = await stored(harness, "argocd", "earlier")
    assert again == earlier, "an app already marked deleted is left as it is"
    assert second.source.found_gone == {"argocd": 1}
    lines = [line for line in logs if line["event"] == "applications deleted while not watched"]
    assert [(line["log_level"], line["namespace"], line["count"]) for line in lines] == [
        ("info", "argocd", 1)]


async def seed_open_incident(harness: Harness, devlake: FakeDevLake, app: LiveApp,
                             clock: ManualClock) -> tuple[str, datetime]:
    """Run a source until ``app`` is Degraded with its incident open, then stop it."""
    harness.apply(app.snapshot())
    run = await harness.start(INCIDENTS, clock=clock, stage=staging(harness, devlake))
    degraded = app.set_health("Degraded", record_transition=True)
    since = parse_time(degraded["status"]["health"]["lastTransitionTime"])
    clock.now = since
    harness.apply(degraded)
    await harness.settle(run)
    clock.advance(timedelta(minutes=6))
    assert await run.source.recheck_due() == 1
    await harness.settle(run)
    key = incident_key(app.namespace, app.name, since)
    assert [(e.record_id, e.payload["status"]) for e in await outbox(harness)] == [(key, "TODO")]
    await run.halt()
    return key, since


def staging(harness: Harness, devlake: FakeDevLake) -> PipelineStaging:
    planner = Planner(DevLakeConfig.model_validate(devlake_section(devlake.url)))
    return PipelineStaging(harness.keys, planner)


async def test_replicas_starting_together_resolve_the_open_incident_of_a_gone_app_once(
    harness: Harness, devlake: FakeDevLake,
) -> None:
    app = LiveApp("svc")
    clock = ManualClock(app.now)
    key, since = await seed_open_incident(harness, devlake, app, clock)

    harness.kube.delete("argocd", "svc")
    clock.now = since + timedelta(hours=2)
    restarted = clock.now
    runs = await asyncio.gather(*(
        harness.start(INCIDENTS, clock=clock, stage=staging(harness, devlake))
        for _ in range(2)))

    entries = await outbox(harness)
    assert [(e.kind, e.record_id, e.payload["status"]) for e in entries] == [
        ("issue", key, "TODO"), ("issue", key, "DONE")]
    opened, resolved = entries[0].payload, entries[1].payload
    assert entries[0].order_key == entries[1].order_key
    assert resolved["issueKey"] == opened["issueKey"] == key
    assert resolved["originalStatus"] == "Deleted"
    assert resolved["createdDate"] == opened["createdDate"] == since.isoformat()
    assert resolved["resolutionDate"] == restarted.isoformat()
    state = await stored(harness, "argocd", "svc")
    assert state is not None and state.deleted_at == restarted
    assert state.degraded is not None and state.degraded.resolved_at == restarted
    assert 0 < await ttl(harness, "argocd", "svc") <= 3600
    assert all(set(run.source.found_gone) == {"argocd"} for run in runs)
    assert sum(run.source.found_gone["argocd"] for run in runs) >= 1

    for run in runs:
        await run.halt()
    clock.advance(timedelta(minutes=10))
    third = await harness.start(INCIDENTS, clock=clock, stage=staging(harness, devlake))
    assert third.source.found_gone == {"argocd": 0}, "marked deleted: not gone again"
    assert len(await outbox(harness)) == 2


async def test_a_replica_committing_first_makes_the_other_deletion_a_no_op(
    redis_server: RedisServer, redis_client: aioredis.Redis,
) -> None:
    """The race itself, forced: B commits between A's WATCH and A's EXEC."""
    keys = Keys("dora-metrics")
    since = T - timedelta(hours=1)
    spell = DegradedSpell(since=since, opened=True, component="svc", cluster="east",
                          environment="PRODUCTION")
    await redis_client.set(keys.app_state("argocd", "svc"), AppState(uid="u", degraded=spell).dump())
    config = ArgoCDConfig.model_validate({"failures_as_incidents": True})

    def stage_incident(pipe: Pipeline, incident: DetectedIncident) -> None:
        pipe.rpush("test:incidents", f"{incident.key} {incident.status}")

    stage = StreamStaging(keys, incidents=stage_incident)

    async def commit(decide: Any) -> Any:
        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            return await commit_decision(client, keys, config, "argocd", "svc", decide, stage)
        finally:
            await client.aclose()

    def replica_b(stored_state: AppState | None) -> Any:
        return mark_deleted(stored_state, T, namespace="argocd", name="svc")

    calls = 0

    def replica_a(stored_state: AppState | None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # A's transaction read the state under WATCH: B commits now
            thread = threading.Thread(target=asyncio.run, args=(commit(replica_b),))
            thread.start()
            thread.join(10)
        return mark_deleted(stored_state, T + timedelta(seconds=1), namespace="argocd",
                            name="svc")

    committed = await commit(replica_a)
    assert committed.conflicts == 1 and not committed.decision.changed
    assert committed.decision.incidents == []
    assert await redis_client.lrange("test:incidents", 0, -1) == [
        f"{incident_key('argocd', 'svc', since)} resolved"]
    state = load_state(await redis_client.get(keys.app_state("argocd", "svc")))
    assert state is not None and state.deleted_at == T  # B's


# --- (b) namespaces this process does not watch ---------------------------------------------


@pytest.mark.parametrize(("watched", "gone"), [
    ("[argocd]", {("argocd", "x")}),
    ('["*"]', {("argocd", "x"), ("team-b", "svc")}),
], ids=["one namespace", "every namespace"])
async def test_apps_of_namespaces_not_watched_are_left_alone(
    harness: Harness, watched: str, gone: set[tuple[str, str]],
) -> None:
    apps = [LiveApp("x"), LiveApp("y"), LiveApp("svc", "team-b")]
    harness.apply(*(app.snapshot() for app in apps))
    first = await harness.start("namespaces: [argocd, team-b], state_ttl: 1h")
    await first.halt()
    harness.kube.delete("argocd", "x")
    harness.kube.delete("team-b", "svc")  # gone too, but maybe another daemon's to decide
    second = await harness.start(f"namespaces: {watched}, state_ttl: 1h")

    for app in apps:
        state = await stored(harness, app.namespace, app.name)
        assert state is not None
        deleted = (app.namespace, app.name) in gone
        assert (state.deleted_at is not None) is deleted, app.name
        assert (await ttl(harness, app.namespace, app.name) > 0) is deleted, app.name
    expected = {"argocd": 1} if watched == "[argocd]" else {"*": 2}
    assert second.source.found_gone == expected


# --- (c) only a complete list decides ------------------------------------------------------


@pytest.mark.parametrize("status", [500, 410], ids=["error mid-list", "410 mid-list"])
async def test_a_first_list_failing_midway_deletes_nothing_until_one_completes(
    harness: Harness, status: int,
) -> None:
    apps = [LiveApp(name) for name in ("a", "b", "x")]
    harness.apply(*(app.snapshot() for app in apps))
    first = await harness.start("state_ttl: 1h")
    await first.halt()
    harness.kube.delete("argocd", "x")

    # One app per page: "a" on the first, "b" on the second. The second page fails,
    # twice, each time held until the test has looked.
    holds = [harness.kube.hold_next(status, kind="continue"),
             harness.kube.hold_next(500, kind="continue")]
    run = await harness.start("state_ttl: 1h", ready=False,
                              timing=dataclasses.replace(FAST, page_size=1))

    async def nothing_deleted() -> None:
        await run.source.drained()  # what the first page handed over is decided
        for name in ("a", "b", "x"):
            state = await stored(harness, "argocd", name)
            assert state is not None and state.deleted_at is None, name
        assert run.source.found_gone == {}
        assert not run.context.readiness.is_ready("argocd")

    for count, hold in enumerate(holds, start=1):
        await eventually(lambda count=count: harness.kube.requests["held"] == count,
                         what=f"list {count} stopped on its second page")
        await nothing_deleted()
        hold.release()

    await eventually(lambda: run.context.readiness.is_ready("argocd"), what="a complete list")
    await harness.settle(run)
    x = await stored(harness, "argocd", "x")
    assert x is not None and x.deleted_at is not None
    for name in ("a", "b"):
        state = await stored(harness, "argocd", name)
        assert state is not None and state.deleted_at is None, name
    assert run.source.found_gone == {"argocd": 1}
    assert run.context.metrics.relists.labels("argocd")._value.get() == 1


# --- apps met after the list are alive ------------------------------------------------------


async def test_an_app_met_after_the_first_list_is_not_taken_for_gone(harness: Harness) -> None:
    """The scan runs beside the watch: a state the watch wrote after the list is alive."""
    run: Running = await harness.start("state_ttl: 1h")
    harness.apply(LiveApp("late").snapshot())  # created after the list: not in it
    await harness.settle(run)
    assert await stored(harness, "argocd", "late") is not None

    source = run.source
    await source._forget_vanished(WatchScope("argocd"), present=set())  # the race, replayed
    assert source.found_gone["argocd"] == 0
    assert source._lanes is not None
    # Queued before the app was met, decided after: the lane skips it too.
    await source._lanes.submit("argocd/late", Deleted("argocd", "late", unless_seen=True))
    await source.drained()
    late = await stored(harness, "argocd", "late")
    assert late is not None and late.deleted_at is None
    assert await ttl(harness, "argocd", "late") == -1


async def test_a_scan_redis_cuts_short_is_taken_again_and_counted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = LiveApp("gone")
    harness.apply(app.snapshot())
    first = await harness.start("state_ttl: 1h")
    await first.halt()
    harness.kube.delete("argocd", "gone")
    scan = aioredis.Redis.scan
    failures = [RedisConnectionError("injected: connection reset")]

    async def flaky_scan(self: aioredis.Redis, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await scan(self, *args, **kwargs)

    monkeypatch.setattr(aioredis.Redis, "scan", flaky_scan)
    with capture_logs() as logs:
        run = await harness.start("state_ttl: 1h")
    state = await stored(harness, "argocd", "gone")
    assert state is not None and state.deleted_at is not None
    assert run.context.metrics.redis_errors.labels("argocd_scan")._value.get() == 1
    assert run.source.found_gone == {"argocd": 1}
    assert [line["namespace"] for line in logs
            if line["event"].startswith("redis unavailable, scan")] == ["argocd"]
