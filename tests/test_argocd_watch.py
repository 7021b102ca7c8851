"""ArgoCD source end to end: fake Kubernetes API (official client) + real redis-server.

Every scenario drives :class:`FakeKube` with the writes ArgoCD makes and
asserts the exact records staged on the ``deployments`` stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubernetes.client import CustomObjectsApi
from kubernetes.config import new_client_from_config

from doraforwarder.argocd.detect import dedupe_key, deployment_id
from doraforwarder.argocd.intake import Deleted, Intake
from doraforwarder.argocd.model import parse_time
from doraforwarder.argocd.source import ArgoCDSource
from doraforwarder.argocd.state import load_state
from doraforwarder.argocd.watcher import ApplicationWatcher, WatchScope, WatchTiming
from doraforwarder.config import load_config
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.metrics import Metrics
from doraforwarder.records import DetectedDeployment, GitSource
from doraforwarder.streams import StreamStaging, read_detected
from doraforwarder.testing.argocd_objects import GITOPS_REPO, LiveApp, image, sha
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.redis_server import RedisServer

FAST = WatchTiming(watch_timeout=30, retry_base=0.01, retry_cap=0.05, connect_timeout=2)


class ManualClock:
    def __init__(self, start: datetime = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Running:
    source: ArgoCDSource
    context: AppContext
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def eventually(check: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Harness:
    """One fake API server, one Redis, any number of sources."""

    def __init__(self, kube: FakeKube, redis_server: RedisServer, redis: aioredis.Redis,
                 tmp_path: Path) -> None:
        self.kube = kube
        self.redis_server = redis_server
        self.redis = redis
        self.tmp_path = tmp_path
        self.keys = Keys("dora-metrics")
        self.kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        self.running: list[Running] = []

    def config(self, argocd: str = "") -> Any:
        path = self.tmp_path / f"config-{len(self.running)}.yaml"
        # Defaults only for keys the test does not set: a key written twice is a config error.
        parts = [f"kubeconfig: '{self.kubeconfig}'"]
        parts += [] if "namespaces" in argocd else ["namespaces: [argocd]"]
        parts += [] if "workers" in argocd else ["workers: 4"]
        parts += [argocd] if argocd else []
        path.write_text(
            f"argocd: {{{', '.join(parts)}}}\n"
            f"storage: {{redis: {{address: '{self.redis_server.address}'}}}}\n"
        )
        return load_config(path)

    async def start(self, argocd: str = "", *, clock: Any = None, ready: bool = True,
                    **kwargs: Any) -> Running:
        """Start a source; unless ``ready`` is False, wait for its first list and decisions."""
        client = aioredis.Redis.from_url(self.redis_server.url, decode_responses=True)
        context = AppContext(config=self.config(argocd), redis=client, keys=self.keys)
        options: dict[str, Any] = {"timing": FAST, "sweep_interval": 0.02,
                                   "stage": StreamStaging(self.keys)}
        if clock is not None:
            options["clock"] = clock
        options.update(kwargs)
        source = ArgoCDSource(context, **options)
        stop = asyncio.Event()
        running = Running(source, context, stop, asyncio.create_task(source.run(stop)))
        self.running.append(running)
        if not ready:
            return running
        await eventually(lambda: context.readiness.reasons() == [] and source.watchers
                         and all(w.listed_once.is_set() for w in source.watchers),
                         what="initial list")
        await self.settle(running)
        return running

    async def settle(self, *runs: Running) -> None:
        """Wait until each source handed over every event so far and decided it."""
        target = self.kube.resource_version
        for run in runs or tuple(r for r in self.running if not r.task.done()):
            def caught_up(run: Running = run) -> bool:
                if not run.source.caught_up(target):
                    self.kube.bookmark()
                    return False
                return True
            await eventually(caught_up, what="watch caught up")
            await run.source.drained()

    def apply(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            self.kube.apply(obj)

    async def deployments(self) -> list[DetectedDeployment]:
        entries = await self.redis.xrange(self.keys.deployments_stream)
        return [read_detected(fields) for _, fields in entries]

    async def stop_all(self) -> None:
        for run in self.running:
            if not run.task.done():
                await run.halt()
            await run.context.redis.aclose()


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


def expected(
    app: LiveApp,
    *,
    component: str,
    cluster: str,
    result: str = "SUCCESS",
    images: list[str],
    previous: list[str],
    message: str = "health Healthy",
    entry: dict[str, Any] | None = None,
    scope_cluster: bool = False,
    path: str | None = None,
) -> dict[str, Any]:
    """The record the live path must stage for a history entry of ``app``."""
    entry = entry or app.last_entry
    revision = entry["revision"]
    deployed_at = parse_time(entry["deployedAt"])
    return DetectedDeployment(
        id=deployment_id(component, revision, deployed_at,
                         cluster=cluster if scope_cluster else None),
        app_namespace=app.namespace,
        app_name=app.name,
        component=component,
        cluster=cluster,
        environment="PRODUCTION",
        result=result,  # type: ignore[arg-type]
        revision=revision,
        sources=[GitSource(repo_url=GITOPS_REPO, revision=revision,
                           path=path or f"components/{app.name}/production")],
        history_id=entry["id"],
        started_at=parse_time(entry["deployStartedAt"]),
        deployed_at=deployed_at,
        images=images,
        previous_images=previous,
        message=message,
    ).model_dump(exclude={"detected_at"})


def dumps(records: list[DetectedDeployment]) -> list[dict[str, Any]]:
    return [record.model_dump(exclude={"detected_at"}) for record in records]


# --- scenarios ---------------------------------------------------------------------------


async def test_first_sight_records_a_baseline_and_sends_nothing(harness: Harness) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    await harness.start()
    assert await harness.deployments() == []
    state = load_state(await harness.redis.get(harness.keys.app_state("argocd", "svc")))
    assert state is not None and state.baseline is not None
    assert state.last_history_id == 0
    assert state.baseline.images == [image("svc", "initial")]


async def test_single_sync_is_one_exact_record(harness: Harness) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    run = await harness.start()
    harness.apply(*app.sync(sha("r1"), [image("svc", "r1")]))
    await harness.settle()
    assert dumps(await harness.deployments()) == [
        expected(app, component="svc", cluster="kubernetes.default.svc",
                 images=[image("svc", "r1")], previous=[image("svc", "initial")])
    ]
    metrics = run.context.metrics
    assert metrics.deployments_detected.labels("SUCCESS")._value.get() == 1
    assert run.context.status.watched_namespaces == ["argocd"]


async def test_rapid_syncs_are_each_a_deployment(harness: Harness) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    await harness.start()
    # r1 settles but is still Progressing when r2 lands; r2's entry appears
    # while running, r3 follows at once: r2 never settled.
    harness.apply(*app.sync(sha("r1"), [image("svc", "r1")], health="Progressing"))
    r1 = app.last_entry
    steps = app.sync(sha("r2"), [image("svc", "r2")])
    harness.apply(*steps[:2])
    r2 = app.last_entry
    harness.apply(*app.sync(sha("r3"), [image("svc", "r3")]))
    await harness.settle()
    cluster = "kubernetes.default.svc"
    assert dumps(await harness.deployments()) == [
        expected(app, entry=r1, component="svc", cluster=cluster, images=[image("svc", "r1")],
                 previous=[image("svc", "initial")],
                 message="superseded by a newer sync before it settled"),
        expected(app, entry=r2, component="svc", cluster=cluster, images=[image("svc", "r1")],
                 previous=[image("svc", "r1")],
                 message="superseded by a newer sync before it settled"),
        expected(app, component="svc", cluster=cluster, images=[image("svc", "r3")],
                 previous=[image("svc", "r1")]),
    ]


@pytest.mark.parametrize(
    ("argocd", "final", "result", "message"),
    [
        ("", "Healthy", "SUCCESS", "health Healthy"),
        ("", "Degraded", "FAILURE", "health Degraded"),
        ("health_timeout: 10m", None, "SUCCESS", "health still Progressing after 0:10:00"),
        ("health_timeout: 10m, unsettled_result: FAILURE", None, "FAILURE",
         "health still Progressing after 0:10:00"),
    ],
)
async def test_progressing_waits_for_health(harness: Harness, argocd: str, final: str | None,
                                            result: str, message: str) -> None:
    clock = ManualClock()
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    run = await harness.start(argocd, clock=clock)
    harness.apply(*app.sync(sha("r1"), [image("svc", "r1")], health="Progressing"))
    await harness.settle()
    assert await harness.deployments() == []
    assert run.context.metrics.deployments_pending._value.get() == 1
    if final is not None:
        harness.apply(app.set_health(final))
    else:
        clock.advance(timedelta(minutes=9))
        assert await run.source.recheck_due() == 0
        clock.advance(timedelta(minutes=2))
        await eventually(lambda: run.context.metrics.deployments_pending._value.get() == 0,
                         what="deadline sweep")
    await harness.settle()
    assert dumps(await harness.deployments()) == [
        expected(app, component="svc", cluster="kubernetes.default.svc", result=result,
                 images=[image("svc", "r1")], previous=[image("svc", "initial")], message=message)
    ]


async def test_pending_health_survives_a_restart(harness: Harness) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    first = await harness.start()
    harness.apply(*app.sync(sha("r1"), [image("svc", "r1")], health="Progressing"))
    await harness.settle()
    await first.halt()
    harness.apply(app.set_health("Healthy"))
    await harness.start()
    assert dumps(await harness.deployments()) == [
        expected(app, component="svc", cluster="kubernetes.default.svc",
                 images=[image("svc", "r1")], previous=[image("svc", "initial")])
    ]


async def test_failed_operation_is_a_failure_that_keeps_the_baseline(harness: Harness) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    await harness.start()
    harness.apply(*app.fail(sha("bad"), message="hook failed"))
    failure = app.status["operationState"]
    harness.apply(app.refresh(), app.refresh())  # the same failure seen again is not new
    harness.apply(*app.sync(sha("good"), [image("svc", "good")]))
    await harness.settle()
    records = await harness.deployments()
    finished = parse_time(failure["finishedAt"])
    assert dumps(records[:1]) == [DetectedDeployment(
        id=f"svc:{sha('bad')}:{int(finished.timestamp())}:failed",
        app_namespace="argocd", app_name="svc", component="svc",
        cluster="kubernetes.default.svc", environment="PRODUCTION", result="FAILURE",
        revision=sha("bad"),
        sources=[GitSource(repo_url=GITOPS_REPO, revision=sha("bad"),
                           path="components/svc/production")],
        history_id=None, started_at=parse_time(failure["startedAt"]), deployed_at=finished,
        images=[image("svc", "initial")], previous_images=[image("svc", "initial")],
        message="hook failed",
    ).model_dump(exclude={"detected_at"})]
    assert dumps(records[1:]) == [
        expected(app, component="svc", cluster="kubernetes.default.svc",
                 images=[image("svc", "good")], previous=[image("svc", "initial")])
    ]


@pytest.mark.parametrize("scope", ["component", "cluster"])
async def test_same_revision_on_two_clusters(harness: Harness, scope: str) -> None:
    east = LiveApp("svc-east", path="components/svc/production")
    west = LiveApp("svc-west", path="components/svc/production")
    harness.apply(east.snapshot(), west.snapshot())
    await harness.start(f"known_clusters: [east, west], dedupe_scope: {scope}")
    harness.apply(*east.sync(sha("r1"), [image("svc", "r1")]))
    harness.apply(*west.sync(sha("r1"), [image("svc", "r1")]))
    await harness.settle()
    common = {"component": "svc", "images": [image("svc", "r1")],
              "previous": [image("svc-east", "initial")], "path": "components/svc/production",
              "scope_cluster": scope == "cluster"}
    want = [expected(east, cluster="east", **common)]
    if scope == "cluster":
        want.append(expected(west, cluster="west", **{**common,
                                                      "previous": [image("svc-west", "initial")]}))
    assert dumps(await harness.deployments()) == want


async def test_two_components_from_one_gitops_revision(harness: Harness) -> None:
    apps = [LiveApp("api-east"), LiveApp("ui-east")]
    harness.apply(*(a.snapshot() for a in apps))
    await harness.start("known_clusters: [east]")
    for app in apps:
        harness.apply(*app.sync(sha("shared"), [image(app.name, "shared")]))
    await harness.settle()
    records = await harness.deployments()
    assert sorted(r.id for r in records) == sorted(
        deployment_id(c, sha("shared"), parse_time(a.last_entry["deployedAt"]))
        for c, a in zip(["api", "ui"], apps, strict=True))
    assert len({r.id for r in records}) == 2


async def test_rollback_is_a_new_deployment(harness: Harness) -> None:
    east = LiveApp("svc-east", path="components/svc/production")
    west = LiveApp("svc-west", path="components/svc/production")
    harness.apply(east.snapshot(), west.snapshot())
    await harness.start("known_clusters: [east, west]")
    harness.apply(*east.sync(sha("r1"), [image("svc", "r1")]))
    harness.apply(*east.sync(sha("r2"), [image("svc", "r2")]))
    harness.apply(*east.sync(sha("r1"), [image("svc", "r1")]))  # rollback, same app: new
    await harness.settle()
    assert [r.revision for r in await harness.deployments()] == [sha("r1"), sha("r2"), sha("r1")]
    # Later (dedupe window over), another cluster rolling back to r1 is new too.
    await harness.redis.delete(harness.keys.dedupe(dedupe_key("svc", sha("r1"))))
    harness.apply(*west.sync(sha("r1"), [image("svc", "r1")]))
    await harness.settle()
    records = await harness.deployments()
    assert [(r.app_name, r.revision) for r in records][-1] == ("svc-west", sha("r1"))
    assert len(records) == 4


async def test_restart_catches_up_syncs_made_while_down(harness: Harness) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    first = await harness.start()
    await first.halt()
    harness.apply(*app.sync(sha("r1"), [image("svc", "r1")]))
    r1 = app.last_entry
    harness.apply(*app.sync(sha("r2"), [image("svc", "r2")]))
    await harness.start()
    cluster = "kubernetes.default.svc"
    assert dumps(await harness.deployments()) == [
        expected(app, entry=r1, component="svc", cluster=cluster,
                 images=[image("svc", "initial")], previous=[image("svc", "initial")],
                 message="superseded by a newer sync before it settled"),
        expected(app, component="svc", cluster=cluster, images=[image("svc", "r2")],
                 previous=[image("svc", "initial")]),
    ]


async def test_410_in_the_middle_of_a_burst(harness: Harness) -> None:
    apps = [LiveApp(f"svc{i}") for i in range(5)]
    harness.apply(*(a.snapshot() for a in apps))
    run = await harness.start()
    for app in apps[:2]:
        harness.apply(*app.sync(sha(f"{app.name}-r1"), [image(app.name, "r1")]))
    await harness.settle()
    harness.kube.stop()  # connection refused while the burst goes on
    for app in apps:
        harness.kube.apply_all(app.sync(sha(f"{app.name}-r2"), [image(app.name, "r2")]))
    harness.kube.compact()
    harness.kube.start()
    await harness.settle()
    records = await harness.deployments()
    assert sorted((r.app_name, r.revision) for r in records) == sorted(
        [(a.name, sha(f"{a.name}-r1")) for a in apps[:2]]
        + [(a.name, sha(f"{a.name}-r2")) for a in apps])
    metrics = run.context.metrics
    assert metrics.relists.labels("argocd")._value.get() == 2
    assert metrics.watch_restarts.labels("argocd", "expired")._value.get() == 1


async def test_an_api_server_restart_is_survived_as_on_the_real_server(
        harness: Harness) -> None:
    """As apiextensions-apiserver v0.36.3 restarts: watches cut, 429 while its watch
    cache fills, then 410 for the version the watcher held (later writes elsewhere moved
    etcd's revision on): the watcher waits, lists again, and loses nothing."""
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    run = await harness.start()
    harness.apply(*app.sync(sha("r1"), [image("svc", "r1")]))
    await harness.settle()
    harness.kube.apply(LiveApp("other", "elsewhere").snapshot())
    harness.kube.restart(unready_watches=1)
    harness.apply(*app.sync(sha("r2"), [image("svc", "r2")]))
    await harness.settle()
    assert [r.revision for r in await harness.deployments()] == [sha("r1"), sha("r2")]
    restarts = run.context.metrics.watch_restarts
    assert restarts.labels("argocd", "http 429")._value.get() == 1
    assert restarts.labels("argocd", "expired")._value.get() == 1
    assert run.context.metrics.relists.labels("argocd")._value.get() == 2


async def test_replica_pair_produces_each_deployment_once(harness: Harness) -> None:
    apps = [LiveApp(f"svc{i}") for i in range(6)]
    harness.apply(*(a.snapshot() for a in apps))
    await harness.start()
    await harness.start()
    for round_ in range(3):
        for app in apps:
            harness.kube.apply_all(app.sync(sha(f"{app.name}-{round_}"),
                                            [image(app.name, str(round_))]))
    await harness.settle()
    records = await harness.deployments()
    assert len(records) == 18
    assert len({r.id for r in records}) == 18


async def test_refresh_only_events_cost_no_redis_and_no_api_requests(harness: Harness) -> None:
    apps = [LiveApp(f"svc{i}") for i in range(10)]
    harness.apply(*(a.snapshot() for a in apps))
    run = await harness.start()
    before_redis = await _command_count(harness.redis)
    before_api = dict(harness.kube.requests)
    noop_before = run.context.metrics.events_noop._value.get()
    harness.kube.apply_all([apps[i % 10].refresh() for i in range(1000)])
    await harness.settle(run)
    after_redis = await _command_count(harness.redis)
    # Only our own INFO call shows up (and a client's connection health PING, if one fell due).
    changed = {name: after_redis[name] - before_redis.get(name, 0) for name in after_redis
               if after_redis[name] != before_redis.get(name, 0)}
    assert set(changed) <= {"cmdstat_info", "cmdstat_ping"}, changed
    assert changed["cmdstat_info"] == 1
    assert dict(harness.kube.requests) == before_api
    assert run.context.metrics.events_noop._value.get() - noop_before == 1000
    assert await harness.deployments() == []


async def _command_count(redis: aioredis.Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {k: int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_")}


async def test_faults_are_survived_and_counted(harness: Harness) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    harness.kube.fail_next(2, 500, kind="list")
    harness.kube.fail_next(1, 429, retry_after=0, kind="list")
    run = await harness.start()
    harness.kube.fail_next(1, 0, kind="watch")  # the next watch connection is dropped
    harness.kube.fail_next(1, 503, kind="watch")
    harness.kube.drop_watches()
    harness.apply(*app.sync(sha("r1"), [image("svc", "r1")]))
    await harness.settle()
    assert [r.revision for r in await harness.deployments()] == [sha("r1")]
    restarts = run.context.metrics.watch_restarts
    assert restarts.labels("argocd", "http 500")._value.get() == 2
    assert restarts.labels("argocd", "http 429")._value.get() == 1
    assert restarts.labels("argocd", "http 503")._value.get() == 1


async def test_unwatchable_namespace_makes_readiness_say_which(harness: Harness) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    run = await harness.start(unwatched_grace=0.05)
    harness.kube.stop()
    await eventually(lambda: not run.context.readiness.is_ready("argocd"), what="not ready")
    assert "namespace argocd not watched" in run.context.readiness.reasons()[0]
    harness.kube.start()
    await eventually(lambda: run.context.readiness.is_ready("argocd"), what="ready again")


async def test_deleted_app_keeps_state_for_the_ttl_and_recreation_is_followed(
    harness: Harness,
) -> None:
    app = LiveApp("svc")
    harness.apply(app.snapshot())
    await harness.start("state_ttl: 1h")
    harness.kube.delete("argocd", "svc")
    await harness.settle()
    key = harness.keys.app_state("argocd", "svc")
    assert 0 < await harness.redis.ttl(key) <= 3600
    again = LiveApp("svc")  # a new object (new uid), history starts again at id 0
    again.obj["status"]["history"] = []
    harness.apply(again.snapshot())
    harness.apply(*again.sync(sha("r9"), [image("svc", "r9")]))
    await harness.settle()
    assert await harness.redis.ttl(key) == -1
    records = await harness.deployments()
    assert [(r.revision, r.previous_images) for r in records] == [
        (sha("r9"), [image("svc", "initial")])]


async def test_malformed_objects_are_skipped_and_the_watch_goes_on(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    good = LiveApp("good")
    harness.apply(good.snapshot())
    run = await harness.start()
    bad = LiveApp("bad").snapshot()
    bad["status"]["history"][0]["deployedAt"] = "yesterday"
    harness.apply(bad)
    bad["status"]["reconciledAt"] = "2025-01-01T11:00:00Z"
    harness.apply(bad)  # same problem again: counted once per object, warned once
    bad["status"]["health"]["status"] = "Progressing"
    harness.apply(bad)
    harness.apply(*good.sync(sha("r1"), [image("good", "r1")]))
    await harness.settle()
    assert [r.app_name for r in await harness.deployments()] == ["good"]
    counter = run.context.metrics.malformed_objects.labels("status.history[].deployedAt")
    assert counter._value.get() == 2


async def test_cluster_wide_watch_follows_every_namespace(harness: Harness) -> None:
    apps = [LiveApp("svc", "team-a"), LiveApp("svc", "team-b")]
    harness.apply(*(a.snapshot() for a in apps))
    run = await harness.start('namespaces: ["*"]')
    for app in apps:
        harness.apply(*app.sync(sha(app.namespace), [image("svc", app.namespace)]))
    await harness.settle()
    records = await harness.deployments()
    assert sorted((r.app_namespace, r.revision) for r in records) == [
        ("team-a", sha("team-a")), ("team-b", sha("team-b"))]
    assert run.context.status.watched_namespaces == ["*"]
    assert run.context.status.apps_tracked == 2


# --- lists: page by page, deletions only after a complete list ---------------------------


class RecordingSink:
    """A WatchSink that remembers the calls (and can act between pages)."""

    def __init__(self, on_page: Any = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.on_page = on_page

    def listed_page(self, scope: WatchScope, objects: list[Any], stop: threading.Event, *,
                    first: bool) -> bool:
        self.calls.append(("page", (first, [o["metadata"]["name"] for o in objects])))
        if self.on_page is not None:
            self.on_page(len(self.calls))
        return True

    def listed_done(self, scope: WatchScope, stop: threading.Event) -> bool:
        self.calls.append(("done", scope.label))
        return True

    def event(self, scope: WatchScope, event_type: str, obj: Any, stop: threading.Event) -> bool:
        self.calls.append((event_type, obj["metadata"]["name"]))
        return True


def _watch_until_listed(kube: FakeKube, tmp_path: Path, sink: RecordingSink) -> None:
    client = new_client_from_config(str(kube.write_kubeconfig(tmp_path / "kc")))
    stop = threading.Event()
    timing = WatchTiming(watch_timeout=30, retry_base=0.01, retry_cap=0.05, connect_timeout=2,
                         page_size=2)
    watcher = ApplicationWatcher(CustomObjectsApi(client), WatchScope("argocd"), sink, Metrics(),
                                 stop, timing)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        assert watcher.listed_once.wait(10), "the list never completed"
    finally:
        watcher.interrupt()
        thread.join(10)
        client.close()


def test_a_list_is_handed_over_page_by_page(kube: FakeKube, tmp_path: Path) -> None:
    for i in range(5):
        kube.apply(LiveApp(f"svc{i}").snapshot())
    sink = RecordingSink()
    _watch_until_listed(kube, tmp_path, sink)
    assert sink.calls[:4] == [
        ("page", (True, ["svc0", "svc1"])), ("page", (False, ["svc2", "svc3"])),
        ("page", (False, ["svc4"])), ("done", "argocd")]


def test_a_list_cut_short_starts_again_and_completes_once(kube: FakeKube,
                                                          tmp_path: Path) -> None:
    for i in range(3):
        kube.apply(LiveApp(f"svc{i}").snapshot())

    def expire_the_continue_token(calls: int) -> None:
        if calls == 1:
            kube.fail_next(1, 410, kind="list")

    sink = RecordingSink(expire_the_continue_token)
    _watch_until_listed(kube, tmp_path, sink)
    assert sink.calls[:4] == [
        ("page", (True, ["svc0", "svc1"])),
        ("page", (True, ["svc0", "svc1"])), ("page", (False, ["svc2"])), ("done", "argocd")]


def test_intake_treats_apps_absent_from_a_complete_list_as_deleted() -> None:
    jobs: list[Any] = []
    intake = Intake(lambda key, job, stop: jobs.append(job) or True, Metrics(),
                    lambda scope, present: jobs.append(("listed", sorted(present))))
    scope, stop = WatchScope("argocd"), threading.Event()
    apps = {name: LiveApp(name) for name in ("a", "b", "c")}
    for app in apps.values():
        intake.event(scope, "ADDED", app.snapshot(), stop)
    jobs.clear()
    assert intake.listed_page(scope, [apps["a"].refresh()], stop, first=True)
    # The list failed and started again: its second attempt finds a and b, over two pages.
    assert intake.listed_page(scope, [apps["a"].refresh()], stop, first=True)
    assert intake.listed_page(scope, [apps["b"].refresh()], stop, first=False)
    assert jobs == [], "refreshes and deletions before the list completed"
    assert intake.listed_done(scope, stop)
    assert jobs == [Deleted("argocd", "c"), ("listed", [("argocd", "a"), ("argocd", "b")])]
    assert intake.apps_tracked == 2


def test_intake_passes_the_uid_of_a_deleted_object() -> None:
    jobs: list[Any] = []
    intake = Intake(lambda key, job, stop: jobs.append(job) or True, Metrics(),
                    lambda scope, present: None)
    obj = LiveApp("svc").snapshot()
    obj["metadata"]["uid"] = "one"
    intake.event(WatchScope("argocd"), "DELETED", obj, threading.Event())
    assert jobs == [Deleted("argocd", "svc", uid="one")]


async def test_a_lane_that_fell_behind_judges_each_view_as_of_its_arrival(
    harness: Harness,
) -> None:
    """Redis stalls while a sync's later steps queue up behind another app's decision.

    When the lane catches up the clock is past the sync's settle deadline; the
    queued "Succeeded, not compared yet" view (still the old images) must not
    be taken for a sync that never settled: the newer views right behind it
    show it settled, with the new image.
    """
    clock = ManualClock()
    app, other = LiveApp("svc"), LiveApp("other")
    harness.apply(app.snapshot())
    run = await harness.start("workers: 1, health_timeout: 5m", clock=clock)
    steps = app.sync(sha("r1"), [image("svc", "r1")])
    harness.apply(*steps[:2])  # running, history entry written: pending since now
    await harness.settle()
    await harness.redis.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
    try:
        harness.apply(other.snapshot())  # its first baseline waits on the paused Redis ...
        harness.apply(*steps[2:])  # ... and the rest of the sync queues up behind it
        target = harness.kube.resource_version
        await eventually(lambda: run.source.caught_up(target) or harness.kube.bookmark(),
                         what="every event handed to the lane")
        clock.advance(timedelta(minutes=10))  # the lane catches up after the deadline
    finally:
        await harness.redis.execute_command("CLIENT", "UNPAUSE")
    await harness.settle()
    assert dumps(await harness.deployments()) == [
        expected(app, component="svc", cluster="kubernetes.default.svc",
                 images=[image("svc", "r1")], previous=[image("svc", "initial")])
    ]
