"""Switching from the reference (redhat-appstudio/dora-metrics) on its Redis: nothing counted twice.

The reference keeps its keys under the same ``key_prefix``: :func:`reference_keys` writes one
of each kind, with the values and TTLs its storage code writes (``pkg/storage/redis.go`` at
653fbcd), checked against what its binary wrote in a side-by-side run
(``tests/fixtures/reference-redis.json``, loaded too). A real redis-server pre-loaded with them is read without error by ``status``,
``outbox`` and ``backfill``, none of them is changed, and what the reference already sent
(its ``devlake-revision:<revision>:<component>`` marks) is never sent again: not by
``backfill``, and not by the live path when a rollout it began goes on after the switch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from doraforwarder.argocd.detect import Decision
from doraforwarder.argocd.ids import deployment_id
from doraforwarder.argocd.persist import commit_decision
from doraforwarder.argocd.reference_marks import (
    MARK_TTL,
    ReferenceMark,
    mark_from_pttl,
    sent_by_reference,
)
from doraforwarder.argocd.state import AppState
from doraforwarder.config import ArgoCDConfig
from doraforwarder.keys import Keys
from doraforwarder.records import DetectedDeployment, GitSource
from doraforwarder.streams import StreamStaging, read_detected
from doraforwarder.testing.argocd_objects import LiveApp, sha
from doraforwarder.testing.world import FakeWorld
from tests.conftest import ROOT

NOW = datetime(2026, 8, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MONTH_S = int(MARK_TTL.total_seconds())


def detected(*, app: str = "svc-east", revision: str = "r1", at: datetime = NOW,
             failed: bool = False, sources: int = 1) -> DetectedDeployment:
    cluster = app.rsplit("-", 1)[1]
    return DetectedDeployment(
        id=deployment_id("svc", revision, at, failed=failed), app_namespace="argocd",
        app_name=app, component="svc", cluster=cluster, environment="PRODUCTION",
        result="FAILURE" if failed else "SUCCESS", revision=revision,
        sources=[GitSource(repo_url=f"https://github.com/o/r{n}", revision=revision)
                 for n in range(sources)],
        history_id=None if failed else 3, started_at=at - timedelta(minutes=1), deployed_at=at)


# --- pure: what a mark says -------------------------------------------------------------


@pytest.mark.parametrize(("pttl", "expected"), [
    (-2, None),                                          # no key
    (-1, ReferenceMark("r1", None)),                     # persisted by hand: undated
    (MONTH_S * 1000, ReferenceMark("r1", NOW)),          # written just now
    (MONTH_S * 1000 - 3_600_000, ReferenceMark("r1", NOW - timedelta(hours=1))),
    (MONTH_S * 2000, ReferenceMark("r1", NOW)),          # longer than 30 days: taken as now
])
def test_mark_from_pttl(pttl: int, expected: ReferenceMark | None) -> None:
    assert mark_from_pttl("r1", pttl, NOW) == expected


MARK = ReferenceMark("r1", NOW)
COMPONENT = ArgoCDConfig.model_validate({})
CLUSTER = ArgoCDConfig.model_validate({"dedupe_scope": "cluster"})


@pytest.mark.parametrize(("deployment", "mark", "config", "sent"), [
    (detected(at=NOW - DAY), MARK, COMPONENT, True),      # before the mark: it handled it
    (detected(at=NOW), MARK, COMPONENT, True),
    (detected(app="svc-west", at=NOW + timedelta(hours=23)), MARK, COMPONENT, True),  # rollout
    (detected(app="svc-west", at=NOW + timedelta(hours=25)), MARK, COMPONENT, False),  # window
    (detected(app="svc-west", at=NOW + timedelta(hours=1)), MARK, CLUSTER, False),  # own cluster
    (detected(app="svc-west", at=NOW - timedelta(hours=1)), MARK, CLUSTER, True),
    (detected(revision="r2"), MARK, COMPONENT, False),    # another revision
    (detected(), None, COMPONENT, False),                 # no mark
    (detected(at=NOW + 40 * DAY), ReferenceMark("r1", None), COMPONENT, True),  # undated
    (detected(failed=True), MARK, COMPONENT, False),      # it never sends failures
    (detected(sources=2), MARK, COMPONENT, False),        # multi-source: it keys "" only
], ids=["before", "at", "rollout", "after-window", "scope-cluster", "scope-cluster-before",
        "other-revision", "no-mark", "undated", "failed", "multi-source"])
def test_sent_by_reference(deployment: DetectedDeployment, mark: ReferenceMark | None,
                           config: ArgoCDConfig, sent: bool) -> None:
    assert sent_by_reference(deployment, mark, config) is sent


# --- the reference's keys, as its storage code writes them ------------------------------


def reference_keys(prefix: str, marks: dict[tuple[str, str], datetime], now: datetime
                   ) -> list[tuple[str, str, int]]:
    """(key, value, TTL seconds) of one key of each kind the reference writes.

    ``marks``: (revision, component) -> when the reference sent that deployment.
    """
    record = {
        "application_name": "svc-prod-east", "namespace": "argocd", "component_name": "svc",
        "cluster_name": "prod-east", "revision": sha("ref"),
        "images": ["quay.io/example/svc:abc1234"], "commit_history": [sha("ref")],
        "deployed_at": "2026-08-20T11:00:00Z", "environment": "PRODUCTION", "health": "",
        "timestamp": "0001-01-01T00:00:00Z",
    }
    keys = [
        (f"{prefix}:deployment:svc-prod-east:prod-east", json.dumps(record), MONTH_S),
        (f"{prefix}:processed:{sha('ref')}:svc-prod-east:prod-east", "processed", MONTH_S),
        (f"{prefix}:devlake:{sha('ref')}:svc", "processed", MONTH_S),
        (f"{prefix}:lock:processing:svc-prod-east:prod-east:{sha('ref')}", "locked", 300),
        (f"{prefix}:cache:repo:{sha('ref')}", json.dumps("https://github.com/o/svc"), 3600),
    ]
    for (revision, component), sent_at in marks.items():
        ttl = MONTH_S - int((now - sent_at).total_seconds())
        keys.append((f"{prefix}:devlake-revision:{revision}:{component}", "sent", ttl))
    return keys


CAPTURED = ROOT / "tests" / "fixtures" / "reference-redis.json"
"""What the real reference binary wrote in a side-by-side run (its own revisions)."""


def captured_keys() -> list[tuple[str, str, int]]:
    return [(k["key"], k["value"], k["ttl"]) for k in json.loads(CAPTURED.read_text())["keys"]]


def load(client: redis.Redis, keys: list[tuple[str, str, int]]) -> dict[str, str]:
    for key, value, ttl in keys:
        client.set(key, value, ex=ttl)
    return {key: value for key, value, _ in keys}


def test_captured_keys_are_the_kinds_and_formats_written_here() -> None:
    """The keys written by hand below have the names, values and TTLs the binary writes."""
    now = datetime.now(UTC)
    by_kind = {key.split(":")[1]: (value, ttl) for key, value, ttl in captured_keys()}
    ours = {key.split(":")[1]: (value, ttl) for key, value, ttl in
            reference_keys("dora-metrics", {("r", "c"): now}, now)}
    assert set(by_kind) <= set(ours)
    for kind, (value, ttl) in by_kind.items():
        assert abs(ttl - ours[kind][1]) < 3600, kind
        if kind == "deployment":
            assert list(json.loads(value)) == list(json.loads(ours[kind][0]))
        else:
            assert value == ours[kind][0], kind


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path) as w:
        yield w


def run_command(world: FakeWorld, config: Path, env: dict[str, str],
                *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doraforwarder", *args, "--config", str(config),
         "--log-format", "json"],
        capture_output=True, text=True, timeout=120, env={**env, **world.environment()},
    )


def test_backfill_leaves_out_what_the_reference_sent_and_reads_its_keys(
        world: FakeWorld, clean_env: dict[str, str]) -> None:
    """East synced r1 then r2, west r1 ten minutes after east. The reference sent east's r1
    (its mark) and lost r2 (DevLake was down: no mark). Backfill sends r2 only; west's r1
    is the reference's deployment too (the same rollout)."""
    assert world.redis is not None
    now = datetime.now(UTC).replace(microsecond=0)
    gitops = world.github.add_repo("example/gitops", 4, start=now - 2 * DAY)
    svc = world.github.add_repo("example/svc", 4, start=now - 2 * DAY)
    start = now - timedelta(hours=3)
    apps = {name: LiveApp(name, revision=gitops[0], start=start, step=timedelta(minutes=step),
                          images=[f"quay.io/example/svc:{svc[0]}"])
            for name, step in (("svc-prod-east", 1), ("svc-prod-west", 5))}
    apps["svc-prod-east"].sync(gitops[1], [f"quay.io/example/svc:{svc[1]}"])
    apps["svc-prod-west"].sync(gitops[1], [f"quay.io/example/svc:{svc[1]}"])
    apps["svc-prod-east"].sync(gitops[2], [f"quay.io/example/svc:{svc[2]}"])
    for app in apps.values():
        world.kube.apply(app.snapshot())
    east_r1 = apps["svc-prod-east"].status["history"][1]
    sent_at = datetime.fromisoformat(east_r1["deployedAt"]) + timedelta(seconds=5)
    client = redis.Redis.from_url(world.redis.url, decode_responses=True)
    preloaded = load(client, reference_keys("dora-metrics", {(gitops[1], "svc"): sent_at}, now)
                     + captured_keys())
    config = world.write_config({"argocd": {"known_clusters": ["prod-east", "prod-west"]},
                                 "webrca": {"enabled": False}})

    for command in (["status"], ["outbox", "stats"], ["outbox", "list"], ["outbox", "dead"]):
        result = run_command(world, config, clean_env, *command)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr and "WRONGTYPE" not in result.stderr

    since = (start - timedelta(minutes=1)).isoformat()
    result = run_command(world, config, clean_env, "backfill", "--since", since, "--wait", "60")
    assert result.returncode == 0, result.stderr + result.stdout
    east_r2 = apps["svc-prod-east"].status["history"][2]
    expected = deployment_id("svc", gitops[2],
                             datetime.fromisoformat(east_r2["deployedAt"]))
    assert world.devlake.deployment_ids(1) == {expected}
    lines = [line for line in result.stdout.splitlines() if gitops[1] in line]
    assert len(lines) == 2 and all("by reference" in line for line in lines), result.stdout
    assert "2 already sent by the reference" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("{")], (
        "the logs go to stderr: stdout is the report")

    # None of the reference's keys was changed or deleted.
    assert {key: client.get(key) for key in preloaded} == preloaded
    again = run_command(world, config, clean_env, "backfill", "--since", since, "--wait", "60")
    assert again.returncode == 0 and "1 already staged" in again.stdout, again.stdout
    assert len(world.devlake.accepted("deployment")) == 1


# --- the live path: a rollout the reference began ------------------------------------------


async def decide_one(redis_client: aioredis.Redis, config: ArgoCDConfig,
                     deployment: DetectedDeployment) -> tuple[list[str], list[str]]:
    """Commit a decision holding ``deployment``: (ids staged, dedupe reasons)."""
    keys = Keys("dora-metrics")

    def decide(stored: AppState | None) -> Decision:
        return Decision(state=AppState(uid=deployment.app), deployments=[deployment],
                        changed=True)

    committed = await commit_decision(redis_client, keys, config, deployment.app_namespace,
                                      deployment.app_name, decide, StreamStaging(keys))
    entries = await redis_client.xrange(keys.deployments_stream)
    staged = [read_detected(fields).id for _, fields in entries]
    assert staged == [d.id for d in committed.staged]
    return staged, committed.dedupe_reasons


async def mark(redis_client: aioredis.Redis, revision: str, sent_at: datetime) -> None:
    now = datetime.now(UTC)
    for key, value, ttl in reference_keys("dora-metrics", {(revision, "svc"): sent_at}, now):
        await redis_client.set(key, value, ex=ttl)


async def test_live_rollout_begun_by_the_reference_is_not_sent_again(
        redis_client: aioredis.Redis) -> None:
    now = datetime.now(UTC)
    await mark(redis_client, "r1", now - timedelta(hours=2))
    west = detected(app="svc-west", revision="r1", at=now - timedelta(minutes=1))
    staged, reasons = await decide_one(redis_client, COMPONENT, west)
    assert staged == []
    assert reasons == [f"{west.id}: duplicate of reference r1 (dedupe scope svc:r1)"]


@pytest.mark.parametrize(("config", "sent_hours_ago", "revision", "failed"), [
    (COMPONENT, 30, "r1", False),     # the mark is older than the dedupe window
    (CLUSTER, 2, "r1", False),        # one deployment per cluster: west's is its own
    (COMPONENT, 2, "r2", False),      # the reference sent another revision
    (COMPONENT, 2, "r1", True),       # a failed sync: the reference sends none
], ids=["old-mark", "scope-cluster", "other-revision", "failed"])
async def test_live_deployments_the_reference_did_not_send_are_sent(
        redis_client: aioredis.Redis, config: ArgoCDConfig, sent_hours_ago: int,
        revision: str, failed: bool) -> None:
    now = datetime.now(UTC)
    await mark(redis_client, "r1", now - timedelta(hours=sent_hours_ago))
    west = detected(app="svc-west", revision=revision, at=now - timedelta(minutes=1),
                    failed=failed)
    staged, reasons = await decide_one(redis_client, config, west)
    assert staged == [west.id] and reasons == []


def test_reference_key_names_are_none_of_ours() -> None:
    """The reference's key kinds never collide with a key doraforwarder writes."""
    keys = Keys("p")
    ours: list[Any] = [keys.app_state("ns", "a"), keys.dedupe("c:r"), keys.deployments_stream,
                       keys.outbox_stream, keys.dead_stream, keys.delivery_order("o"),
                       keys.delivery_lock("o"), keys.delivery_queue("o"),
                       keys.github_repo_of_sha("a"), keys.github_commit("r", "a"),
                       keys.github_etag("u"), keys.resolved_commits("d"),
                       keys.incident_fingerprints, keys.webrca_lease, keys.webrca_last_poll,
                       keys.backfilled, keys.lock("webrca")]
    theirs = ("deployment", "processed", "devlake", "devlake-revision", "cache")
    for key in ours:
        kind = key.split(":")[1]
        assert kind not in theirs, key
        assert not key.startswith("p:lock:processing:"), key
