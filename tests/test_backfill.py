"""``doraforwarder backfill``: history replayed with the live ids, once, whatever is re-run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from doraforwarder.argocd.detect import deployment_id
from doraforwarder.config import ArgoCDConfig
from doraforwarder.ops.backfill import dedupe_within_window
from doraforwarder.records import DetectedDeployment
from doraforwarder.testing.argocd_objects import LiveApp
from doraforwarder.testing.world import FakeWorld

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CLUSTERS = ["prod-east", "prod-west"]


def run_backfill(world: FakeWorld, config: Path, env: dict[str, str],
                 *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doraforwarder", "backfill", "--config", str(config),
         "--log-format", "json", "--wait", "60", *args],
        capture_output=True, text=True, timeout=120, env={**env, **world.environment()},
    )


class History:
    """Three apps with a few syncs each, pushed to the fake API server in their final state."""

    def __init__(self, world: FakeWorld) -> None:
        github = world.github
        self.gitops = github.add_repo("example/gitops", 8, start=START - timedelta(days=30))
        self.svc = github.add_repo("example/svc", 10, start=START - timedelta(days=30))
        self.apps: dict[str, LiveApp] = {}
        for name, offset in (("svc-prod-east", 0), ("svc-prod-west", 10), ("api-prod-east", 0)):
            self.apps[name] = LiveApp(name, revision=self.gitops[0],
                                      start=START + timedelta(minutes=offset),
                                      step=timedelta(minutes=1),
                                      images=[f"quay.io/example/svc:{self.svc[1]}"])
        # Before --since: excluded. Then syncs after it; west follows east on revision 2.
        self.sync("svc-prod-east", 1, 2)
        self.sync("svc-prod-east", 2, 4)
        self.sync("svc-prod-west", 2, 4)
        self.sync("api-prod-east", 2, 5)
        self.sync("api-prod-east", 3, 6)
        for app in self.apps.values():
            world.kube.apply(app.snapshot())

    def sync(self, app: str, revision: int, image: int) -> None:
        self.apps[app].sync(self.gitops[revision], [f"quay.io/example/svc:{self.svc[image]}"])

    def expected_ids(self, since: datetime) -> set[str]:
        """Entries since ``since``; another app's later copy of a component+revision is one."""
        candidates = []
        for name, app in self.apps.items():
            component = name.rsplit("-prod-", 1)[0]
            for entry in app.status["history"]:
                deployed = datetime.fromisoformat(entry["deployedAt"].replace("Z", "+00:00"))
                if deployed >= since:
                    candidates.append((deployed, name, component, entry["revision"]))
        first: dict[tuple[str, str], tuple[str, datetime]] = {}
        ids = set()
        for deployed, name, component, revision in sorted(candidates):
            holder = first.get((component, revision))
            if holder and holder[0] != name and deployed - holder[1] <= timedelta(hours=24):
                continue
            first[(component, revision)] = (name, deployed)
            ids.add(deployment_id(component, revision, deployed))
        return ids


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path) as w:
        yield w


def config_for(world: FakeWorld) -> Path:
    return world.write_config({"argocd": {"known_clusters": CLUSTERS},
                               "webrca": {"enabled": False}})


def test_backfill_sends_history_once_with_live_ids(world: FakeWorld,
                                                   clean_env: dict[str, str]) -> None:
    history = History(world)
    config = config_for(world)
    since = START + timedelta(seconds=30)
    first = run_backfill(world, config, clean_env, "--since", since.isoformat())
    assert first.returncode == 0, first.stderr + first.stdout
    expected = history.expected_ids(since)
    assert len(expected) == 5
    assert world.devlake.deployment_ids(1) == expected
    assert "duplicate" in first.stdout and "staged" in first.stdout
    # Progress on stderr (the README's claim), the report on stdout.
    assert re.search(r"backfill: \d+/\d+ applications done, 5 records staged", first.stderr), \
        first.stderr
    posts = len(world.devlake.accepted("deployment"))
    second = run_backfill(world, config, clean_env, "--since", since.isoformat())
    assert second.returncode == 0, second.stderr
    assert "5 already staged, 1 duplicate" in second.stdout
    assert len(world.devlake.accepted("deployment")) == posts
    for deployment in world.devlake.accepted("deployment"):
        assert deployment.body["deploymentCommits"], deployment.body
    for secret in world.secrets:
        assert secret not in first.stdout + first.stderr + second.stdout + second.stderr


def test_filters_and_dry_run(world: FakeWorld, clean_env: dict[str, str]) -> None:
    history = History(world)
    config = config_for(world)
    result = run_backfill(world, config, clean_env, "--since", "2025-06-01",
                          "--component", "api", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["payload"]["id"] for line in lines} == {
        i for i in history.expected_ids(START - timedelta(days=1)) if i.startswith("api:")}
    assert all(line["kind"] == "deployment" for line in lines)
    assert world.devlake.accepted() == []
    none = run_backfill(world, config, clean_env, "--since", "2025-06-01",
                        "--namespace", "elsewhere")
    assert none.returncode == 0 and "nothing" in none.stdout


def snapshot(world: FakeWorld) -> dict[bytes, bytes | None]:
    """Every key of the real Redis with its serialized value (DUMP covers every type)."""
    assert world.redis is not None
    client = redis.Redis.from_url(world.redis.url)
    try:
        return {key: client.dump(key) for key in client.scan_iter(count=1000)}
    finally:
        client.close()


def test_dry_run_leaves_the_real_redis_as_it_was(world: FakeWorld,
                                                clean_env: dict[str, str]) -> None:
    history = History(world)
    config = config_for(world)
    # Real state first: a real backfill of one component leaves claims, streams and caches.
    real = run_backfill(world, config, clean_env, "--since", "2025-06-01", "--component", "api")
    assert real.returncode == 0, real.stderr + real.stdout
    before = snapshot(world)
    assert any(key.startswith(b"dora-metrics:gh:") for key in before), sorted(before)
    world.github.reset_requests()

    dry = run_backfill(world, config, clean_env, "--since", "2025-06-01", "--dry-run")
    assert dry.returncode == 0, dry.stderr + dry.stdout
    lines = [json.loads(line) for line in dry.stdout.splitlines()]
    assert {line["payload"]["id"] for line in lines} == history.expected_ids(
        START - timedelta(days=1))
    assert all(line["kind"] == "deployment" for line in lines)
    assert world.github.count() > 0  # it resolved through GitHub: there was something to cache
    assert snapshot(world) == before
    assert world.devlake.deployment_ids(1) == {
        i for i in history.expected_ids(START - timedelta(days=1)) if i.startswith("api:")}


def test_bad_since_is_a_usage_error(world: FakeWorld, clean_env: dict[str, str]) -> None:
    result = run_backfill(world, config_for(world), clean_env, "--since", "last tuesday")
    assert result.returncode == 2 and "is not a date" in result.stderr


def detected(app: str, component: str, revision: str, minute: int) -> DetectedDeployment:
    at = START + timedelta(minutes=minute)
    return DetectedDeployment(
        id=deployment_id(component, revision, at), app_namespace="argocd", app_name=app,
        component=component, cluster=app.rsplit("-", 1)[-1], environment="PRODUCTION",
        result="SUCCESS", revision=revision, started_at=at, deployed_at=at, history_id=1,
    )


A, B = "a" * 40, "b" * 40
DEDUPE_CASES: list[tuple[str, list[DetectedDeployment], dict[str, Any], list[int]]] = [
    ("two clusters, same revision, close together: first wins",
     [detected("svc-east", "svc", A, 0), detected("svc-west", "svc", A, 5)], {}, [0]),
    ("two clusters, same revision, beyond the window: both",
     [detected("svc-east", "svc", A, 0), detected("svc-west", "svc", A, 60 * 25)], {}, [0, 1]),
    ("same app redeploys the revision (rollback): both",
     [detected("svc-east", "svc", A, 0), detected("svc-east", "svc", A, 30)], {}, [0, 1]),
    ("different revisions: both",
     [detected("svc-east", "svc", A, 0), detected("svc-west", "svc", B, 1)], {}, [0, 1]),
    ("different components, same revision: both",
     [detected("svc-east", "svc", A, 0), detected("api-east", "api", A, 1)], {}, [0, 1]),
    ("live claim of another app within the window: duplicate",
     [detected("svc-west", "svc", A, 5)],
     {"svc:" + A: "argocd/svc-east " + deployment_id("svc", A, START)}, []),
    ("live claim of the same app: kept (same id upserts)",
     [detected("svc-east", "svc", A, 0)],
     {"svc:" + A: "argocd/svc-east " + deployment_id("svc", A, START)}, [0]),
]


@pytest.mark.parametrize(("case", "deployments", "claims", "kept"), DEDUPE_CASES,
                         ids=[c[0] for c in DEDUPE_CASES])
def test_dedupe_within_window(case: str, deployments: list[DetectedDeployment],
                              claims: dict[str, Any], kept: list[int]) -> None:
    config = ArgoCDConfig()
    from doraforwarder.argocd.detect import deployment_dedupe_key

    live: dict[str, str | None] = {deployment_dedupe_key(d, config): None for d in deployments}
    live.update(claims)
    result, duplicates = dedupe_within_window(deployments, config, live)
    assert [deployments.index(d) for d in result] == kept
    assert len(result) + len(duplicates) == len(deployments)
