"""Redis loses its data or fills up under the running daemon process (issue 19, #1 and #2).

- ``FLUSHALL`` mid-run, and a restart of a Redis without persistence: the
  consumer groups, application states and fingerprints are gone. The daemon
  says so (log line, metric, ``/api/v1/status``, ``doraforwarder status``),
  stays ready, and what is detected afterwards reaches DevLake. What the loss
  took cannot come back: each application's first sync after it is its new
  baseline (first sight), so only the syncs after that are expected.
- Redis full (``maxmemory`` with ``noeviction``): the outbox still drains
  (acknowledgements are commands Redis runs over the limit), and a sync
  detected meanwhile is refused by Redis, retried, and delivered once memory
  frees.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from doraforwarder.keys import Keys
from doraforwarder.testing.world import FakeWorld
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import (
    CONNECTIONS,
    KEY_PREFIX,
    DaemonProcess,
    Estate,
    base_overrides,
    verify,
    wait_baselined,
    wait_delivered,
    wait_for,
)

APPS = 12


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeWorld]:
    """The suite's world; ``indirect`` parameter False: Redis without persistence."""
    appendonly = bool(getattr(request, "param", True))
    with FakeWorld(tmp_path / "world", redis_appendonly=appendonly,
                   connections=CONNECTIONS) as world:
        yield world


def get(daemon: DaemonProcess, path: str) -> tuple[int, str]:
    port = daemon.port()
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return int(answer.status), answer.read().decode()


def syncs(estate: Estate, count: int) -> None:
    for _ in range(count):
        estate.sync(fail_allowed=False, degrade_allowed=False)
        time.sleep(0.03)


def start(world: FakeWorld, store: redis.Redis, daemons: DaemonFactory
          ) -> tuple[Estate, DaemonProcess]:
    estate = Estate(world, seed=19, apps=APPS)
    daemon = daemons(base_overrides())
    daemon.wait_ready()
    wait_baselined(store, estate)
    syncs(estate, 10)
    wait_delivered(world, estate, store)
    return estate, daemon


def after_the_loss(world: FakeWorld, store: redis.Redis, estate: Estate,
                   daemon: DaemonProcess) -> None:
    """Every app syncs once (its new baseline), then random syncs must all arrive."""
    for play in estate.apps:
        estate.sync(fail_allowed=False, degrade_allowed=False, play=play)
    for expected in estate.expected:
        expected.required = False  # before the loss (delivered) or a new baseline's sync
    wait_baselined(store, estate)
    syncs(estate, 15)
    wait_delivered(world, estate, store, timeout=90)
    verify(world, estate, commits="gitops")

    assert daemon.alive, "the daemon died when Redis lost its data"
    status, _ = get(daemon, "/readyz")
    assert status == 200
    _, body = get(daemon, "/api/v1/status")
    lost = json.loads(body)["redis_data_lost"]
    assert lost is not None and lost["times"] >= 1, body
    _, metrics = get(daemon, "/metrics")
    assert lost_count(metrics, "group") >= 1 and lost_count(metrics, "marker") >= 1, metrics
    assert any(line.get("event") == "redis lost its data" for line in daemon.lines())
    offline = subprocess.run(
        [sys.executable, "-m", "doraforwarder", "status", "--config", str(daemon.config)],
        env=daemon.env, capture_output=True, text=True, timeout=60, check=True)
    assert "redis data:       LOST at" in offline.stdout, offline.stdout
    assert daemon.terminate() == 0


def lost_count(metrics: str, evidence: str) -> float:
    """The value of ``doraforwarder_redis_data_lost_total{evidence=...}`` on /metrics."""
    found = re.search(rf'^doraforwarder_redis_data_lost_total{{evidence="{evidence}"}} (\S+)$',
                      metrics, re.M)
    assert found is not None, f"no data-lost counter for {evidence}"
    return float(found[1])


def test_flushall_mid_run_is_reported_and_later_records_arrive(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    estate, daemon = start(world, store, daemons)
    store.flushall()
    after_the_loss(world, store, estate, daemon)


@pytest.mark.parametrize("world", [False], indirect=True, ids=["no-persistence"])
def test_a_restart_without_persistence_is_reported_and_later_records_arrive(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    assert world.redis is not None
    estate, daemon = start(world, store, daemons)
    world.redis.restart()
    after_the_loss(world, store, estate, daemon)


def test_a_full_redis_drains_the_outbox_and_keeps_refused_detections(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    """DevLake down, entries wait; Redis fills; the daemon restarts; DevLake back: the outbox
    drains though Redis is still full; syncs detected while full are refused, retried (again
    after the restart: ArgoCD's list shows them), and arrive once it is not."""
    estate, daemon = start(world, store, daemons)
    keys = Keys(KEY_PREFIX)
    world.devlake.fail_always(503)
    syncs(estate, 8)
    wait_for(lambda: _resolved(store, keys) and store.xlen(keys.outbox_stream) > 0, 60,
             lambda: "the syncs never reached the outbox")
    store.config_set("maxmemory", "1")  # far below what is used: every write that grows is refused
    try:
        refused_before = _refused_writes(daemon)
        syncs(estate, 5)
        wait_for(lambda: _refused_writes(daemon) > refused_before, 30,
                 lambda: "no detection was refused by the full Redis")
        # A restart on the full Redis: the workers start (their groups exist) and drain.
        assert daemon.terminate() == 0
        daemon.start()
        daemon.wait_ready(timeout=60)
        world.devlake.clear_faults()
        wait_for(lambda: store.xlen(keys.outbox_stream) == 0, 60,
                 lambda: f"the outbox did not drain over maxmemory "
                         f"({store.xlen(keys.outbox_stream)} left)")
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            store.set("probe", "x")  # still full: the drain ran over the limit
        assert estate.expected[-1].id not in world.devlake.deployment_ids(1)
    finally:
        store.config_set("maxmemory", "0")
    wait_delivered(world, estate, store, timeout=90)
    verify(world, estate, commits="ranges")
    assert daemon.alive
    assert daemon.terminate() == 0


def _resolved(store: redis.Redis, keys: Keys) -> bool:
    """Every detected deployment turned into outbox entries (nothing pending or unread)."""
    groups = store.xinfo_groups(keys.deployments_stream)
    return all(not group["pending"] and not group.get("lag") for group in groups)


def _refused_writes(daemon: DaemonProcess) -> int:
    lines: list[dict[str, Any]] = daemon.lines()
    return sum(1 for line in lines if "maxmemory" in str(line.get("error", "")))
