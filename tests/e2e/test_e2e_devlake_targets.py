"""DevLake as DevLake really is, through the real ``doraforwarder run`` process.

The three target kinds (connection id, connection name, project name) through
config-ui's ``/api/rest`` and the backend's ``/rest``, each target with its own
key (``token_env``), and one wrongly scoped key: its target's records wait,
the refusal is named in the log and the status, and a restart with the right
key delivers everything exactly once.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from doraforwarder.devlake.target_ids import target_deployment_id
from doraforwarder.keys import Keys
from doraforwarder.testing.world import FakeWorld
from tests.e2e.harness import (
    CONNECTIONS,
    KEY_PREFIX,
    DaemonProcess,
    Estate,
    base_overrides,
    no_secrets,
    pipeline_idle,
    wait_baselined,
    wait_for,
)

WIDE_KEY = "admin-wide-key-0000"
PROJECT = "Release"
PROJECT_CONNECTION = max(CONNECTIONS) + 1
"""The id the fake gives the connection the project route creates."""
TEAMS: list[dict[str, Any]] = [
    {"name": "team-a", "project_id": "2", "token_env": "TEAM_A_KEY",
     "argocd_components": ["svc00"], "webrca_products": ["rhtap"]},
    {"name": "team-c", "connection_name": "team-c", "token_env": "TEAM_C_KEY",
     "argocd_components": ["svc00"]},
    {"name": "release", "project_name": PROJECT, "token_env": "RELEASE_KEY",
     "argocd_components": ["svc01"], "webrca_products": ["konflux"]},
]
WHERE = {"svc00": {1, 2, 4}, "svc01": {1, PROJECT_CONNECTION}}
TEAM_OF = {2: "team-a", 4: "team-c", PROJECT_CONNECTION: "release"}
"""Each team connection's team: its copy of a deployment is sent as ``<id>@<team>``."""


def sent_id(connection: int, record: str) -> str:
    return target_deployment_id(record, TEAM_OF.get(connection))

Start = Callable[[str, dict[str, str]], DaemonProcess]


@pytest.fixture
def start(world: FakeWorld, tmp_path: Path, clean_env: dict[str, str]) -> Iterator[Start]:
    world.devlake.add_api_key(WIDE_KEY, "/plugins/webhook/.*")
    world.devlake.add_project(PROJECT)
    started: list[DaemonProcess] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir()

    def run(prefix: str, keys: dict[str, str]) -> DaemonProcess:
        overrides = base_overrides(integration={"devlake": {
            "teams": TEAMS, "timeout_seconds": 5, "api_prefix": prefix,
            "refused_recheck": "200ms"}})
        config = world.write_config(overrides, name=f"daemon-{len(started)}.yaml")
        env = {**clean_env, **world.environment(), **keys}
        daemon = DaemonProcess(config, env, log_dir, f"daemon-{len(started)}")
        started.append(daemon)
        return daemon.start()

    yield run
    for daemon in started:
        daemon.ensure_stopped()
    no_secrets(world, started)
    secrets = [world.devlake.connection_key(n) for n in CONNECTIONS] + [WIDE_KEY]
    for daemon in started:
        for path in daemon.logs:
            data = path.read_text(errors="replace") if path.exists() else ""
            assert not [s for s in secrets if s in data], f"a key leaked into {path.name}"


def good_keys(world: FakeWorld) -> dict[str, str]:
    return {"TEAM_A_KEY": world.devlake.connection_key(2), "TEAM_C_KEY": WIDE_KEY,
            "RELEASE_KEY": WIDE_KEY}


def play(world: FakeWorld, estate: Estate, syncs: int) -> list[tuple[str, str]]:
    """``syncs`` successful syncs; (component, deployment id) of each."""
    done = []
    for _ in range(syncs):
        expected = estate.sync(fail_allowed=False, degrade_allowed=False)
        done.append((expected.component, expected.id))
    return done


def arrived(world: FakeWorld, deployments: list[tuple[str, str]]) -> list[str]:
    """What DevLake does not hold yet."""
    return [f"{conn}/{record}" for component, record in deployments
            for conn in sorted(WHERE[component])
            if world.devlake.deployment(conn, sent_id(conn, record)) is None]


def assert_exactly_once(world: FakeWorld, deployments: list[tuple[str, str]]) -> None:
    posted = Counter((p.connection_id, p.record_id) for p in world.devlake.accepted("deployment"))
    wanted = Counter((conn, sent_id(conn, record)) for component, record in deployments
                     for conn in WHERE[component])
    assert posted == wanted
    for connection in (*CONNECTIONS, PROJECT_CONNECTION):
        held = world.devlake.deployment_ids(connection)
        assert held == {sent_id(connection, r) for c, r in deployments
                        if connection in WHERE[c]}, connection


def status(daemon: DaemonProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port()}/api/v1/status",
                                timeout=5) as answer:
        return dict(json.load(answer))


@pytest.mark.parametrize("prefix", ["/api/rest", "/rest"])
def test_three_target_kinds_with_their_own_keys(world: FakeWorld, store: redis.Redis,
                                                start: Start, prefix: str) -> None:
    estate = Estate(world, seed=7, apps=8)
    daemon = start(prefix, good_keys(world))
    daemon.wait_ready()
    wait_baselined(store, estate)
    world.webrca.add_incident("ITN-1", products=["konflux"], summary="before any deployment")
    wait_for(lambda: any(p.kind == "issue" and p.status == 404 for p in world.devlake.posts()),
             20, lambda: "the project's incident was never tried")
    deployments = play(world, estate, 12)
    world.webrca.add_incident("ITN-2", products=["rhtap"], summary="team-a outage")
    wait_for(lambda: not arrived(world, deployments), 30,
             lambda: f"missing: {arrived(world, deployments)}")
    wait_for(lambda: world.devlake.issue(PROJECT_CONNECTION, "ITN-1") is not None, 30,
             lambda: "the project's incident never reached Release_deployments")
    wait_for(lambda: world.devlake.issue(2, "ITN-2") is not None, 30,
             lambda: "team-a's incident never arrived")
    wait_for(lambda: pipeline_idle(store), 20, lambda: "the outbox never drained")
    assert daemon.terminate() == 0
    assert_exactly_once(world, deployments)
    assert world.devlake.connection_id(f"{PROJECT}_deployments") == PROJECT_CONNECTION
    assert all(p.path.startswith(f"{prefix}/plugins/webhook/") for p in world.devlake.posts())
    by_connection = {p.connection_id: p.authorization for p in world.devlake.accepted()}
    assert by_connection[2] == f"Bearer {world.devlake.connection_key(2)}"
    assert by_connection[4] == by_connection[PROJECT_CONNECTION] == f"Bearer {WIDE_KEY}"
    assert world.devlake.posts(status=400) == []
    assert not [p for p in world.devlake.posts(status=403)]


def test_a_wrongly_scoped_key_waits_and_a_restart_delivers_it_once(
    world: FakeWorld, store: redis.Redis, start: Start,
) -> None:
    estate = Estate(world, seed=8, apps=8)
    keys = good_keys(world) | {"TEAM_C_KEY": world.devlake.connection_key(4)}  # not by-name
    daemon = start("/api/rest", keys)
    daemon.wait_ready()
    wait_baselined(store, estate)
    deployments = play(world, estate, 10)
    for_team_c = [(c, r) for c, r in deployments if c == "svc00"]
    assert for_team_c, "the seed gave team-c nothing to wait for"

    def others_missing() -> list[str]:
        return [m for m in arrived(world, deployments) if not m.startswith("4/")]

    wait_for(lambda: not others_missing(), 30, lambda: f"missing: {others_missing()}")
    wait_for(lambda: "connection_name:team-c" in status(daemon)["devlake_targets"], 10,
             lambda: "the refusal never reached the status")
    refused = status(daemon)["devlake_targets"]["connection_name:team-c"]
    assert refused["cause"] == "scope"
    assert "/plugins/webhook/connections/by-name/team-c/deployments" in refused["reason"]
    assert daemon.ready(), "a refused target must not make the daemon unready"
    assert world.devlake.deployment_ids(4) == set()
    assert daemon.terminate() == 0
    lines = [line for line in daemon.lines()
             if str(line.get("event", "")).startswith("DevLake refuses target")]
    assert len(lines) == 1, lines
    assert lines[0]["event"].startswith(
        "DevLake refuses target connection_name:team-c: the API key's scope does not cover "
        "/plugins/webhook/connections/by-name/team-c/deployments")
    assert lines[0]["token_env"] == "TEAM_C_KEY"
    assert store.xlen(Keys(KEY_PREFIX).outbox_stream) == len(for_team_c)  # nothing lost

    fixed = start("/api/rest", good_keys(world))
    fixed.wait_ready()
    wait_for(lambda: not arrived(world, deployments), 30,
             lambda: f"missing after the restart: {arrived(world, deployments)}")
    wait_for(lambda: pipeline_idle(store), 20, lambda: "the outbox never drained")
    assert fixed.terminate() == 0
    assert_exactly_once(world, deployments)
