"""The real daemon across a Sentinel failover and a Redis Cluster node restart.

Syncs keep arriving while the failure happens (the failure runs in a thread
and the test waits for its end, not for a guessed duration); afterwards
DevLake must hold every expected record exactly once, the logs must say what
happened and ``/api/v1/status`` must show the new state of Redis.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from doraforwarder.keys import Keys
from doraforwarder.testing.redis_server import ClusterGroup, SentinelGroup
from doraforwarder.testing.world import FakeWorld
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import (
    KEY_PREFIX,
    DaemonProcess,
    Estate,
    base_overrides,
    verify,
    wait_baselined,
    wait_delivered,
    wait_for,
)

SYNCS = 120
SENTINEL_SECRET = "failover-sentinel-secret"  # a throw-away test server's password


def status(daemon: DaemonProcess) -> dict[str, Any]:
    port = daemon.port()
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=5) as answer:
        body: dict[str, Any] = json.loads(answer.read())
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

