"""Batched decisions of a catch-up: the same outcomes as one at a time, fewer round trips."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from doraforwarder.argocd.detect import Decision, deployment_id
from doraforwarder.argocd.intake import Intake, Job
from doraforwarder.argocd.lanes import Lanes
from doraforwarder.argocd.persist import Pending, commit_batch
from doraforwarder.argocd.state import AppState, load_state
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.config import ArgoCDConfig
from doraforwarder.keys import Keys
from doraforwarder.metrics import Metrics
from doraforwarder.records import DetectedDeployment, DetectedIncident, GitSource
from doraforwarder.testing.argocd_objects import LiveApp

KEYS = Keys("dora-metrics")
CONFIG = ArgoCDConfig()
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class RecordingStage:
    def __init__(self) -> None:
        self.deployments: list[str] = []

    def deployment(self, pipe: Any, deployment: DetectedDeployment) -> None:
        self.deployments.append(deployment.id)
        pipe.rpush("staged", deployment.id)

    def incident(self, pipe: Any, incident: DetectedIncident) -> None:
        raise AssertionError("no incident in these cases")


def baseline(uid: str) -> Any:
    """A decide function: a new baseline when nothing is stored, else nothing to do."""
    def decide_fn(stored: AppState | None) -> Decision:
        if stored is not None:
            return Decision(stored)
        return Decision(AppState(uid=uid), changed=True)
    return decide_fn


def a_deployment(name: str) -> DetectedDeployment:
    revision = "a" * 40
    return DetectedDeployment(
        id=deployment_id(name, revision, NOW), app_namespace="argocd", app_name=name,
        component=name, cluster="prod-east-1", environment="PRODUCTION", result="SUCCESS",
        revision=revision, sources=[GitSource(repo_url="https://github.com/o/r", revision=revision,
                                              path=f"components/{name}")],
        history_id=1, started_at=NOW, deployed_at=NOW, images=[], previous_images=[],
        message="health Healthy")


async def stored(redis: aioredis.Redis, name: str) -> AppState | None:
    return load_state(await redis.get(KEYS.app_state("argocd", name)))


async def test_first_baselines_and_unchanged_apps_in_one_batch(
        redis_client: aioredis.Redis) -> None:
    await redis_client.set(KEYS.app_state("argocd", "known"), AppState(uid="old").dump())
    stage = RecordingStage()
    batch = [Pending("argocd", f"app-{i}", baseline(f"uid-{i}")) for i in range(5)]
    batch.append(Pending("argocd", "known", baseline("new")))
    results = await commit_batch(redis_client, KEYS, CONFIG, batch, stage)
    assert [r.decision.state.uid for r in results if r.decision.state] == [
        "uid-0", "uid-1", "uid-2", "uid-3", "uid-4", "old"]
    for i in range(5):
        state = await stored(redis_client, f"app-{i}")
        assert state is not None and state.uid == f"uid-{i}"
    known = await stored(redis_client, "known")
    assert known is not None and known.uid == "old"
    assert stage.deployments == []


class RacingRedis:
    """Another replica writes ``name``'s state right after this one read it."""

    def __init__(self, redis: aioredis.Redis, name: str, theirs: AppState) -> None:
        self._redis = redis
        self._name = name
        self._theirs = theirs

    async def mget(self, keys: list[str]) -> list[Any]:
        values = await self._redis.mget(keys)
        await self._redis.set(KEYS.app_state("argocd", self._name), self._theirs.dump())
        return list(values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)


async def test_a_lost_set_nx_decides_again_from_what_the_winner_stored(
        redis_client: aioredis.Redis) -> None:
    seen: list[str | None] = []

    def decide_fn(state: AppState | None) -> Decision:
        seen.append(state.uid if state else None)
        if state is None:
            return Decision(AppState(uid="mine"), changed=True)
        return Decision(state.model_copy(update={"last_history_id": 7}), changed=True)

    racing = RacingRedis(redis_client, "raced", AppState(uid="theirs"))
    results = await commit_batch(
        racing, KEYS, CONFIG,  # type: ignore[arg-type]
        [Pending("argocd", "raced", decide_fn), Pending("argocd", "calm", baseline("calm"))],
        RecordingStage())
    raced = await stored(redis_client, "raced")
    assert raced is not None and (raced.uid, raced.last_history_id) == ("theirs", 7)
    assert seen[0] is None and seen[-1] == "theirs"  # the decision was taken again
    assert results[0].decision.state is not None
    assert results[0].decision.state.uid == "theirs"
    calm = await stored(redis_client, "calm")
    assert calm is not None and calm.uid == "calm"


async def test_deployments_take_the_transaction_and_are_staged_once(
        redis_client: aioredis.Redis) -> None:
    stage = RecordingStage()
    deployment = a_deployment("web")

    def deploying(state: AppState | None) -> Decision:
        if state is not None and state.last_history_id == 1:
            return Decision(state)  # already decided: nothing new
        return Decision(AppState(uid="web", last_history_id=1), [deployment], changed=True)

    batch = [Pending("argocd", "web", deploying), Pending("argocd", "db", baseline("db"))]
    first = await commit_batch(redis_client, KEYS, CONFIG, batch, stage)
    again = await commit_batch(redis_client, KEYS, CONFIG, batch, stage)
    assert [d.id for d in first[0].staged] == [deployment.id]
    assert again[0].staged == []
    assert stage.deployments == [deployment.id]
    assert await redis_client.lrange("staged", 0, -1) == [deployment.id]
    web = await stored(redis_client, "web")
    assert web is not None and web.last_history_id == 1


async def test_an_app_twice_in_one_batch_is_refused(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="at most once"):
        await commit_batch(redis_client, KEYS, CONFIG,
                           [Pending("argocd", "a", baseline("1")),
                            Pending("argocd", "a", baseline("2"))], RecordingStage())


# --- lanes ----------------------------------------------------------------------------


async def test_lanes_batch_distinct_keys_and_keep_each_keys_order() -> None:
    batches: list[list[tuple[str, int]]] = []
    release = asyncio.Event()

    async def handle_batch(items: list[tuple[str, int]]) -> None:
        await release.wait()
        batches.append(items)

    async def handle(item: tuple[str, int]) -> None:
        raise AssertionError("batches only")

    lanes: Lanes[tuple[str, int]] = Lanes(1, 100, handle, handle_batch=handle_batch,
                                          key_of=lambda item: item[0], batch_size=3)
    stop = asyncio.Event()
    runner = asyncio.create_task(lanes.run(stop))
    await asyncio.sleep(0)
    await lanes.submit_many([("a", ("a", 1))])
    await asyncio.sleep(0)  # the lane takes ("a", 1) alone and waits on release
    items = [("b", 1), ("c", 1), ("b", 2), ("d", 1), ("e", 1), ("f", 1), ("g", 1)]
    await lanes.submit_many([(key, (key, n)) for key, n in items])
    release.set()
    await lanes.join()
    stop.set()
    await runner
    assert batches == [[("a", 1)], [("b", 1), ("c", 1)], [("b", 2), ("d", 1), ("e", 1)],
                       [("f", 1), ("g", 1)]]


async def test_a_failing_batch_is_decided_one_at_a_time() -> None:
    handled: list[str] = []

    async def handle_batch(items: list[str]) -> None:
        raise RuntimeError("a bug in one decision")

    async def handle(item: str) -> None:
        if item == "bad":
            raise RuntimeError("this one")
        handled.append(item)

    lanes: Lanes[str] = Lanes(1, 100, handle, handle_batch=handle_batch, key_of=str)
    stop = asyncio.Event()
    runner = asyncio.create_task(lanes.run(stop))
    await asyncio.sleep(0)
    await lanes.submit_many([(k, k) for k in ("x", "bad", "y")])
    await lanes.join()
    stop.set()
    await runner
    assert handled == ["x", "y"]


def test_a_list_page_is_handed_over_at_once() -> None:
    handed: list[list[str]] = []

    def one(key: str, job: Job, stop: threading.Event) -> bool:
        raise AssertionError("a page goes over in one hand-over")

    def many(jobs: list[tuple[str, Job]], stop: threading.Event) -> bool:
        handed.append([key for key, _ in jobs])
        return True

    intake = Intake(one, Metrics(), lambda scope, present: None, many)
    scope = WatchScope("argocd")
    stop = threading.Event()
    page = [LiveApp(f"app-{i}").snapshot() for i in range(3)]
    assert intake.listed_page(scope, page, stop, first=True)
    assert intake.listed_page(scope, page, stop, first=False)  # unchanged: nothing handed
    assert handed == [["argocd/app-0", "argocd/app-1", "argocd/app-2"]]
