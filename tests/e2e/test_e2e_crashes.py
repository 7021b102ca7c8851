"""Scenarios 3, 4 and 5: the daemon killed, Redis restarted, two replicas at once.

Deployment ids are deterministic and every state change commits together
with its outbox entries, so none of these may lose a record or invent one.
A redelivery under the same id is an upsert in DevLake, which is allowed.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import redis

from doraforwarder.argocd.detect import decide
from doraforwarder.argocd.parse import parse_application
from doraforwarder.config import ArgoCDConfig
from doraforwarder.testing.argocd_objects import LiveApp, image, sha
from doraforwarder.testing.world import FakeWorld
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import Estate, base_overrides, verify, wait_baselined, wait_delivered

SYNCS = 200


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    rng = random.Random(3)
    estate = Estate(world, seed=3)
    daemon = daemons(base_overrides())
    daemon.wait_ready()
    wait_baselined(store, estate)
    kills = sorted(rng.sample(range(10, SYNCS - 10), 6))
    for n in range(SYNCS):
        if n in kills:
            daemon.kill()
            time.sleep(rng.uniform(0.0, 0.5))  # down for a random while, syncs keep coming
            daemon.start()
        estate.sync(degrade_allowed=False, failures_required=False)
        if n % 10 == 0:
            estate.incident_step()
            estate.refresh_some(10)
        time.sleep(0.05)
    wait_delivered(world, estate, store, timeout=100)
    assert daemon.terminate() == 0
    assert daemon.starts == len(kills) + 1
    verify(world, estate, commits="ranges")


def test_redis_restart_mid_run_loses_nothing(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    assert world.redis is not None
    estate = Estate(world, seed=4)
    daemon = daemons(base_overrides())
    daemon.wait_ready()
    wait_baselined(store, estate)
    for n in range(SYNCS // 2):
        if n == 40:
            world.redis.restart(kill=True)  # AOF with fsync always: nothing acknowledged is lost
        if n == 70:
            world.redis.restart()
        estate.sync(degrade_allowed=False, failures_required=False)
        if n % 10 == 0:
            estate.incident_step()
        time.sleep(0.04)
    wait_delivered(world, estate, store, timeout=60)
    assert daemon.alive, "the daemon died when Redis restarted"
    # AOF kept everything: a restart is not a loss (the marker is still there).
    assert not any(line.get("event") == "redis lost its data" for line in daemon.lines())
    assert daemon.terminate() == 0
    verify(world, estate, commits="ranges")


def test_two_replicas_deliver_each_deployment_once(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    """Ids, targets, dates and results; commit contents are checked by the xfail below."""
    estate = Estate(world, seed=5)
    first = daemons(base_overrides(), name="replica-a")
    second = daemons(base_overrides(), name="replica-b")
    first.wait_ready()
    second.wait_ready()
    wait_baselined(store, estate)
    for n in range(SYNCS):
        estate.sync(degrade_allowed=False)
        if n % 20 == 0:
            estate.incident_step()
        if n % 10 == 0:
            time.sleep(0.05)
    wait_delivered(world, estate, store)
    assert first.terminate() == 0
    assert second.terminate() == 0
    verify(world, estate, commits="gitops")
    posts: dict[tuple[int | None, str | None], int] = {}
    for post in world.devlake.accepted("deployment"):
        key = (post.connection_id, post.record_id)
        posts[key] = posts.get(key, 0) + 1
    twice = sorted(f"{conn}/{rid}" for (conn, rid), count in posts.items() if count > 1)
    assert not twice, f"deployments delivered more than once: {twice}"
    detected = [str(line.get("id")) for daemon in (first, second) for line in daemon.lines()
                if line.get("event") == "deployment detected"]
    repeated = sorted({i for i in detected if detected.count(i) > 1})
    assert not repeated, f"deployments detected by both replicas: {repeated}"
    assert len(detected) == len(estate.expected)


def test_a_lagging_replica_never_decides_from_a_stale_view() -> None:
    """Replica A has seen sync 2 start; replica B, behind, decides its settled view of sync 1."""
    config = ArgoCDConfig(known_clusters=["prod-east-1"])
    now = datetime(2025, 1, 2, tzinfo=UTC)
    app = LiveApp("svc-prod-east-1", images=[image("svc", "a")])
    state = decide(parse_application(app.snapshot()), None, config, now).state
    sync_1 = app.sync(sha("rev1"), [image("svc", "b")])
    stale_view = parse_application(sync_1[-1])  # what replica B still works on
    for write in sync_1:  # replica A, ahead, decides sync 1 ...
        decision = decide(parse_application(write), state, config, now)
        state = decision.state if decision.changed else state
    sync_2 = app.sync(sha("rev2"), [image("svc", "c")])
    state = decide(parse_application(sync_2[1]), state, config, now).state  # ... and sees sync 2
    assert state is not None and [p.history_id for p in state.pending] == [2]

    lagging = decide(stale_view, state, config, now)

    assert lagging.deployments == [], "sync 2 emitted from a view that does not show it settled"
    assert lagging.state is not None and lagging.state.baseline is not None
    assert lagging.state.baseline.images == [image("svc", "b")]
