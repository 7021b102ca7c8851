"""Redis loses its data or fills up under the running daemon process (issue 19, #1 and #2).

- ``FLUSHALL`` mid-run, and a restart of a Redis without persistence: the
  consumer groups, application states and fingerprints are gone. The daemon
  says so (log line, metric, ``/api/v1/status``, ``doraforwarder status``),
  stays ready, and backfills by itself: each application's first sync after
  the loss (its new baseline, first sight: the live path sends nothing) comes
  back from ArgoCD's history under its id, so every sync reaches DevLake, once
  in its model, without anyone running ``doraforwarder backfill``.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from doraforwarder.keys import Keys
from doraforwarder.testing.dora import DoraModel
from doraforwarder.testing.world import FakeWorld
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import (
    CONNECTIONS,
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


def start(world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
          overrides: dict[str, Any] | None = None) -> tuple[Estate, DaemonProcess]:
    estate = Estate(world, seed=19, apps=APPS)
    # ArgoCD's times are the wall clock's here, as in production: the backfill after the
    # loss starts from when this process last saw Redis keep its data.
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    for play in estate.apps:
        play.live.now = max(play.live.now, now)
    daemon = daemons(base_overrides(**(overrides or {})))
    daemon.wait_ready()
    wait_baselined(store, estate)
    syncs(estate, 10)
    wait_delivered(world, estate, store)
    return estate, daemon


def waiting_for_devlake(world: FakeWorld, store: redis.Redis, estate: Estate) -> None:
    """DevLake answers 503 while the apps sync: the records wait in the outbox when the
    data goes (what the loss takes)."""
    world.devlake.fail_always(503)
    syncs(estate, 10)
    keys = Keys(KEY_PREFIX)

    def resolved() -> bool:
        groups = store.xinfo_groups(keys.deployments_stream)
        return bool(store.xlen(keys.outbox_stream)) and not any(
            group["pending"] or group.get("lag") for group in groups)

    wait_for(resolved, 30, lambda: "the syncs never reached the outbox")


def after_the_loss(world: FakeWorld, store: redis.Redis, estate: Estate,
                   daemon: DaemonProcess) -> None:
    """DevLake answers again; every app syncs once (its new baseline), then random syncs:
    all of them must arrive, and those that waited in the outbox when the data went too."""
    world.devlake.clear_faults()
    for play in estate.apps:  # each app's new baseline: the live path sends nothing
        estate.sync(fail_allowed=False, degrade_allowed=False, play=play)
    wait_baselined(store, estate)
    syncs(estate, 15)
    # Every sync, the baselines included, without anyone running `doraforwarder backfill`.
    wait_delivered(world, estate, store, timeout=90)
    wait_for(lambda: (status_of(daemon).get("redis_loss_backfill") or {}).get("state")
             == "done", 30, lambda: f"no backfill after the loss: {status_of(daemon)}")
    verify(world, estate, commits="gitops")
    # One row per record in DevLake's model, and the dashboard counts each deployment once.
    wanted = {sent_id(connection, expected.id) for expected in estate.expected
              for connection in expected.connections}
    assert set(world.devlake.cicd_deployments) == wanted
    world.devlake.add_project("global", connections=[GLOBAL])
    numbers = DoraModel(world.devlake, world.github).project("global")
    assert numbers.deployments == len({e.id for e in estate.required()
                                       if e.result == "SUCCESS" and GLOBAL in e.connections})
    done = status_of(daemon)["redis_loss_backfill"]
    assert done["staged"] > 0, done
    ended = [line for line in daemon.lines()
             if line.get("event") == "backfilled after redis lost its data"]
    assert ended and ended[-1]["staged"] == done["staged"] and ended[-1]["why"], ended
    assert any(line.get("event") == "backfilling after redis lost its data"
               for line in daemon.lines())

    assert daemon.alive, "the daemon died when Redis lost its data"
    status, _ = get(daemon, "/readyz")
    assert status == 200
    _, body = get(daemon, "/api/v1/status")
    lost = json.loads(body)["redis_data_lost"]
    assert lost is not None and lost["times"] >= 1, body
    _, metrics = get(daemon, "/metrics")
    assert lost_count(metrics, "group") >= 1 and lost_count(metrics, "marker") >= 1, metrics
    assert re.search(r'^doraforwarder_redis_loss_backfills_total{outcome="done"} [1-9]',
                     metrics, re.M), "the backfill after the loss is not counted"
    assert any(line.get("event") == "redis lost its data" for line in daemon.lines())
    offline = subprocess.run(
        [sys.executable, "-m", "doraforwarder", "status", "--config", str(daemon.config)],
        env=daemon.env, capture_output=True, text=True, timeout=60, check=True)
    assert "redis data:       LOST at" in offline.stdout, offline.stdout
    assert daemon.terminate() == 0


def status_of(daemon: DaemonProcess) -> dict[str, Any]:
    _, body = get(daemon, "/api/v1/status")
    answer: dict[str, Any] = json.loads(body)
    return answer


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
    waiting_for_devlake(world, store, estate)
    store.flushall()
    after_the_loss(world, store, estate, daemon)


@pytest.mark.parametrize("world", [False], indirect=True, ids=["no-persistence"])
def test_a_restart_without_persistence_is_reported_and_later_records_arrive(
    world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
) -> None:
    assert world.redis is not None
    estate, daemon = start(world, store, daemons)
    waiting_for_devlake(world, store, estate)
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
