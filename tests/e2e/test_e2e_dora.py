"""The DORA dashboard's numbers through the real ``doraforwarder run`` process."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from doraforwarder.keys import Keys
from doraforwarder.testing.world import FakeWorld
from tests.dora_scenario import CONNECTIONS, TRUTH, Estate, overrides
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import wait_for
from tests.test_dora_dashboard import numbers


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    with FakeWorld(tmp_path / "world", redis_appendonly=True, connections=CONNECTIONS) as world:
        yield world


def test_dashboard_numbers_from_the_real_process(world: FakeWorld, store: redis.Redis,
                                                 daemons: DaemonFactory) -> None:
    estate = Estate(world)
    daemon = daemons(overrides("head"))
    daemon.wait_ready()
    keys = Keys("dora-metrics")
    wait_for(lambda: all(store.exists(keys.app_state("argocd", name)) for name in estate.apps),
             30, lambda: "apps not baselined")
    estate.play()
    wait_for(lambda: bool(estate.argocd_issue_keys()), 60, lambda: "no ArgoCD incident")
    estate.recover()
    wait_for(estate.delivered, 60, lambda: "records missing in DevLake")
    assert daemon.terminate() == 0
    for project, truth in TRUTH.items():
        assert numbers(world, project) == truth, project
