"""The real daemon across a Sentinel failover and a Redis Cluster node restart.

Syncs keep arriving while the failure happens (the failure runs in a thread
and the test waits for its end, not for a guessed duration); afterwards
DevLake must hold every expected record exactly once, the logs must say what
happened and ``/api/v1/status`` must show the new state of Redis.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from doraforwarder.keys import DEPLOYMENTS_GROUP, Keys
from doraforwarder.testing.dora import DoraModel
from doraforwarder.testing.redis_server import ClusterGroup, SentinelGroup
from doraforwarder.testing.world import FakeWorld
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import (
    GLOBAL,
    KEY_PREFIX,
    DaemonProcess,
    Estate,
    base_overrides,
    sent_id,
    verify,
    wait_baselined,
    wait_delivered,
    wait_for,
)

SYNCS = 120
SENTINEL_SECRET = "failover-sentinel-secret"  # a throw-away test server's password


def get(daemon: DaemonProcess, path: str) -> str:
    port = daemon.port()
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return str(answer.read().decode())


def status(daemon: DaemonProcess) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(get(daemon, "/api/v1/status"))
    return body


def redis_status(daemon: DaemonProcess) -> dict[str, Any]:
    found: dict[str, Any] = status(daemon).get("redis") or {}
    return found


def drive(estate: Estate, failure: threading.Thread) -> None:
    """Syncs before, during and after ``failure``; the failure starts a third of the way in."""
    for n in range(SYNCS):
        if n == SYNCS // 3:
            failure.start()
        if n == 2 * SYNCS // 3:
            failure.join(timeout=120)  # the failure is complete before the last third
            assert not failure.is_alive(), "the failure never completed"
        estate.sync(degrade_allowed=False, failures_required=False)
        if n % 10 == 0:
            estate.incident_step()
        time.sleep(0.03)


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(sentinel_password=SENTINEL_SECRET,
                       keep_logs_in=tmp_path / "redis-logs") as group:
        yield group


@pytest.fixture
def cluster() -> Iterator[ClusterGroup]:
    with ClusterGroup() as group:
        yield group


@pytest.mark.timeout(300)  # a failover plus a 120 s delivery wait, on a loaded machine
def test_sentinel_failover_mid_run_loses_nothing(
    world: FakeWorld, daemons: DaemonFactory, clean_env: dict[str, str],
    sentinels: SentinelGroup,
) -> None:
    clean_env["REDIS_SENTINEL_PASSWORD"] = SENTINEL_SECRET
    store = Sentinel(
        [("127.0.0.1", port) for port in sentinels.sentinel_ports],
        sentinel_kwargs={"password": SENTINEL_SECRET},
    ).master_for(sentinels.MASTER_NAME, decode_responses=True, socket_timeout=5)
    estate = Estate(world, seed=11)
    daemon = daemons(base_overrides(storage={"redis": {
        "mode": "sentinel", "key_prefix": KEY_PREFIX,
        "sentinel": {"master": sentinels.MASTER_NAME, "addresses": sentinels.addresses},
    }}))
    daemon.wait_ready()
    wait_baselined(store, estate)
    first_master = sentinels.master_address()
    assert redis_status(daemon)["mode"] == "sentinel"
    promoted: list[str] = []
    failure = threading.Thread(target=lambda: promoted.append(sentinels.kill_master()))
    drive(estate, failure)
    wait_delivered(world, estate, store, timeout=120)
    assert promoted and promoted[0] != first_master
    wait_for(lambda: redis_status(daemon).get("address") == promoted[0], 30,
             lambda: f"status never showed the new master: {redis_status(daemon)}")
    shown = redis_status(daemon)
    assert shown["master_changes"] >= 1
    assert shown["healthy"] is True
    assert daemon.alive, "the daemon died during the failover"
    assert daemon.terminate() == 0
    events = [line for line in daemon.lines() if line.get("event") == "redis master changed"]
    assert events and events[-1]["address"] == promoted[0]
    assert events[-1]["previous"] == first_master
    # ... and listed every Application again to decide each against the new master.
    relisted = [line for line in daemon.lines() if line.get("event") ==
                "listing applications again to decide each against the new redis master"]
    assert len(relisted) == len(events)
    # A failover to a replica that has the data is not a loss (the marker is there).
    assert not any(line.get("event") == "redis lost its data" for line in daemon.lines())
    verify(world, estate, commits="ranges")
    store.close()


@pytest.mark.timeout(300)
def test_cluster_node_restart_mid_run_loses_nothing(
    world: FakeWorld, daemons: DaemonFactory, cluster: ClusterGroup,
) -> None:
    keys = Keys("{" + KEY_PREFIX + "}")
    store = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port)
                                        for n in cluster.nodes], decode_responses=True)
    estate = Estate(world, seed=12)
    daemon = daemons(base_overrides(storage={"redis": {
        "mode": "cluster", "key_prefix": KEY_PREFIX,
        "cluster": {"addresses": cluster.addresses},
    }}))
    daemon.wait_ready()
    wait_baselined(store, estate, keys=keys)  # type: ignore[arg-type]
    node = cluster.node_of_slot_for(keys.outbox_stream)
    assert redis_status(daemon)["address"] == node.address

    def daemon_saw_it_down() -> None:
        wait_for(lambda: redis_status(daemon).get("healthy") is False, 30,
                 lambda: f"status never showed the node down: {redis_status(daemon)}")

    failure = threading.Thread(target=lambda: cluster.restart_node(
        node, kill=True, while_down=daemon_saw_it_down))
    drive(estate, failure)
    wait_delivered(world, estate, store, timeout=120, keys=keys)  # type: ignore[arg-type]
    wait_for(lambda: bool(redis_status(daemon).get("reconnects")), 30,
             lambda: f"status never showed the reconnect: {redis_status(daemon)}")
    assert redis_status(daemon)["healthy"] is True
    assert daemon.alive, "the daemon died while a cluster node restarted"
    assert daemon.terminate() == 0
    assert any(line.get("event") == "redis unreachable" for line in daemon.lines())
    assert any(line.get("event") == "redis reachable again" for line in daemon.lines())
    assert not any(line.get("event") == "redis lost its data" for line in daemon.lines())
    verify(world, estate, commits="ranges")
    store.close()



@pytest.mark.timeout(300)
def test_sentinel_failover_to_an_empty_replica_mid_run(
    world: FakeWorld, daemons: DaemonFactory, clean_env: dict[str, str],
    sentinels: SentinelGroup,
) -> None:
    """The Sentinels promote a replica that restarted without its data, before its first sync.

    DevLake answers 503 from the start of the run to the failover, so what is detected then
    waits in the outbox when the data goes. The daemon reports the loss (log line, both
    counters, status), recreates its consumer groups, lists every Application again (each
    is new to the empty master: a baseline, nothing sent) and delivers the syncs after that.
    What waited when the data went comes back without anyone running ``doraforwarder
    backfill``: the daemon backfills by itself from before the oldest deployment it staged
    and had not seen delivered, under the same ids, so DevLake updates the records it had
    and the dashboard counts each deployment once.
    """
    clean_env["REDIS_SENTINEL_PASSWORD"] = SENTINEL_SECRET
    store = Sentinel(
        [("127.0.0.1", port) for port in sentinels.sentinel_ports],
        sentinel_kwargs={"password": SENTINEL_SECRET},
    ).master_for(sentinels.MASTER_NAME, decode_responses=True, socket_timeout=5)
    estate = Estate(world, seed=23)
    # Every sync of the run after every app's first (baseline) history entry, so that
    # `backfill --since` can name the run's start (ArgoCD times here are the estate's own).
    since = max(play.live.now for play in estate.apps) + timedelta(minutes=1)
    for play in estate.apps:
        play.live.now = since
    daemon = daemons(base_overrides(storage={"redis": {
        "mode": "sentinel", "key_prefix": KEY_PREFIX,
        "sentinel": {"master": sentinels.MASTER_NAME, "addresses": sentinels.addresses},
    }}))
    daemon.wait_ready()
    wait_baselined(store, estate)
    for _ in range(20):
        estate.sync(degrade_allowed=False, failures_required=False)
    wait_delivered(world, estate, store, timeout=90)
    delivered_before = {key: dict(body) for key, body in world.devlake.deployments.items()}
    assert delivered_before

    world.devlake.fail_always(503)
    promoted: list[str] = []

    after_failover: list[int] = []

    def empty_failover() -> None:
        promoted.append(sentinels.fail_over_to_empty_replica())
        after_failover.append(len(estate.expected))  # later syncs come after the relist
        world.devlake.clear_faults()

    drive(estate, threading.Thread(target=empty_failover))
    assert promoted
    wait_for(lambda: (status(daemon).get("redis_data_lost") or {}).get("times", 0) >= 1, 30,
             lambda: f"the loss was never reported: {status(daemon)}")
    wait_for(lambda: redis_status(daemon).get("address") == promoted[0], 30,
             lambda: f"status never showed the new master: {redis_status(daemon)}")
    # Everything arrives, what waited in the outbox when the data went included, and nobody
    # ran `doraforwarder backfill`.
    wait_delivered(world, estate, store, timeout=120)
    wait_for(lambda: (status(daemon).get("redis_loss_backfill") or {}).get("state") == "done",
             30, lambda: f"no backfill after the loss: {status(daemon)}")
    done = status(daemon)["redis_loss_backfill"]
    assert done["staged"] > 0, done
    started = [line for line in daemon.lines()
               if line.get("event") == "backfilling after redis lost its data"]
    # From before what waited for DevLake (ArgoCD's times here are a day behind the clock).
    assert started and "oldest deployment staged" in started[0]["why"], started
    assert any(line.get("event") == "backfilled after redis lost its data"
               and line.get("staged") for line in daemon.lines())

    keys = Keys(KEY_PREFIX)
    groups = {group["name"] for group in store.xinfo_groups(keys.deployments_stream)}
    assert {DEPLOYMENTS_GROUP, "resolvers"} & groups, groups
    assert store.xinfo_groups(keys.outbox_stream), "the delivery group was not recreated"
    shown = redis_status(daemon)
    assert shown["healthy"] is True and shown["master_changes"] >= 1
    metrics = get(daemon, "/metrics")
    for evidence in ("marker", "group"):
        assert re.search(rf'^doraforwarder_redis_data_lost_total{{evidence="{evidence}"}} '
                         r"[1-9]", metrics, re.M), f"no {evidence} loss counted"
    assert get(daemon, "/readyz")

    [hint] = {line["hint"] for line in daemon.lines()
              if line.get("event") == "redis lost its data" and line.get("evidence") == "marker"}
    assert "backfill_on_data_loss" in hint
    verify(world, estate, commits="gitops")
    # Under the same ids: one row per record in DevLake's model ...
    wanted = {sent_id(connection, expected.id) for expected in estate.expected
              for connection in expected.connections
              if world.devlake.deployment(connection, sent_id(connection, expected.id))}
    assert set(world.devlake.cicd_deployments) == wanted
    # ... and the dashboard counts each successful deployment once.
    world.devlake.add_project("global", connections=[GLOBAL])
    numbers = DoraModel(world.devlake, world.github).project("global")
    assert numbers.deployments == len({e.id for e in estate.required() if e.result == "SUCCESS"})

    assert daemon.alive, "the daemon died in the failover to an empty replica"
    assert daemon.terminate() == 0
    events = [line.get("event") for line in daemon.lines()]
    assert "redis lost its data" in events and "redis master changed" in events
    assert ("listing applications again to decide each against the new redis master"
            in events)
    store.close()
