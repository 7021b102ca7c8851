"""Scenarios 1 and 2: a busy estate, then the same with every fault we can inject.

200 syncs across 50 applications, 3 namespaces, 4 clusters and 3 teams,
plus incidents, through the real ``doraforwarder run`` process. DevLake must
end up with every expected deployment once in each right connection, with
its commits, dates and result, and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from doraforwarder.testing.world import FakeWorld
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import Estate, base_overrides, verify, wait_baselined, wait_delivered

SYNCS = 200


def test_200_syncs_arrive_exactly_once_in_each_right_connection(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    estate = Estate(world, seed=1)
    daemon = daemons(base_overrides())
    daemon.wait_ready()
    wait_baselined(store, estate)
    for n in range(SYNCS):
        estate.sync()
        if n % 10 == 0:
            estate.refresh_some(20)
        if n % 25 == 0:
            estate.incident_step()
            time.sleep(0.05)  # pacing the workload, not waiting for the daemon
    wait_delivered(world, estate, store)
    assert daemon.terminate() == 0
    verify(world, estate)
    assert len(estate.required()) == SYNCS
    assert world.devlake.posts(status=400) == [], "DevLake refused a record"


def test_faults_throughout_lose_and_invent_nothing(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    """Watches dropped every few seconds, two 410 Expired, API server 500s, DevLake
    answering 503 for a long stretch and refusing connections for another, GitHub's
    rate limit exhausted once, and an API server restart as the real one restarts (watches
    answered 429 while its cache fills, then 410 for the versions held)."""
    estate = Estate(world, seed=2)
    daemon = daemons(base_overrides())
    daemon.wait_ready()
    wait_baselined(store, estate)
    kube, devlake, github = world.kube, world.devlake, world.github

    def expire_history() -> None:
        kube.compact()
        kube.drop_watches()

    faults: dict[int, Callable[[], object]] = {
        20: lambda: devlake.fail_always(503),              # a long stretch of 503s...
        40: lambda: kube.fail_next(3, 500, kind="watch"),
        50: expire_history,  # 410 Expired #1
        60: lambda: github.exhaust("core", reset_in=2.0),
        80: lambda: devlake.clear_faults(),                # ...until here
        90: lambda: kube.fail_next(2, 500, kind="list"),
        100: lambda: devlake.stop(),                       # connection refused...
        120: expire_history,  # 410 Expired #2 (+ list 500s)
        140: lambda: devlake.start(),                      # ...until here
        150: lambda: kube.fail_next(2, 0, kind="watch"),   # dropped connections
        170: lambda: kube.restart(unready_watches=3),       # as a real API server restarts
    }
    last_drop = time.monotonic()
    for n in range(SYNCS):
        if n in faults:
            faults[n]()
        if time.monotonic() - last_drop > 2.0:
            kube.drop_watches()
            last_drop = time.monotonic()
        estate.sync(degrade_allowed=False, failures_required=False)
        if n % 10 == 0:
            estate.refresh_some(20)
        if n % 25 == 0:
            estate.incident_step()
        time.sleep(0.04)  # ~8 s of workload so the faults overlap it
    wait_delivered(world, estate, store, timeout=90)
    assert daemon.alive, "the daemon died under faults"
    assert daemon.terminate() == 0
    verify(world, estate, commits="ranges")
    assert world.devlake.posts(status=400) == [], "DevLake refused a record"
    # Every fault was really met by the daemon.
    restarts = [line for line in daemon.lines() if line.get("event") == "watch restarting"]
    assert sum(line.get("reason") == "expired" for line in restarts) >= 2, "410s not exercised"
    assert any(line.get("reason") == "http 429" for line in restarts), "restart not met"
    assert kube.requests["faulted"] == 7, "API server faults not all served"
    assert devlake.posts(status=503), "DevLake's 503 stretch was never met"
    assert github.count(status=403) >= 1, "GitHub's exhausted rate limit was never met"
