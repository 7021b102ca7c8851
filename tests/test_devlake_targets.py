"""Per-target keys and refused targets, against the strict fake DevLake and a real Redis.

Each target's entries are posted with that target's key (``token_env``); a
target DevLake refuses waits in the outbox, named once in the log, the status
and a metric, while the other targets' entries arrive. Incidents for a project
wait for the connection its first deployment creates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from structlog.testing import capture_logs

from doraforwarder.config import LoadedConfig, Secrets, Settings
from doraforwarder.context import AppContext
from doraforwarder.devlake.client import Answer, refusal
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.keys import Keys
from doraforwarder.outbox import Target
from doraforwarder.testing.fake_devlake import FakeDevLake
from tests.devlake_support import (
    RunningService,
    deployment_entry,
    eventually,
    issue_entries,
    stage,
)

GLOBAL = Target(kind="connection_id", value="1")
BUILD = Target(kind="connection_name", value="team-build", team="build")
OPS = Target(kind="connection_id", value="7", team="ops")
RELEASE = Target(kind="project_name", value="Release", team="release")


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=None, connections={1: "global", 6: "team-build", 7: "ops"},
                     projects=["Release"]) as fake:
        fake.add_api_key("admin-wide-key", "/plugins/webhook/.*")
        yield fake


def context_with_keys(redis: aioredis.Redis, base_url: str, keys: dict[str, str | None],
                      prefix: str = "/api/rest") -> AppContext:
    settings = Settings.model_validate({
        "integration": {"devlake": {
            "enabled": True, "base_url": base_url, "project_id": "1", "timeout_seconds": 2,
            "api_prefix": prefix, "refused_recheck": "100ms",
            "teams": [
                {"name": "build", "connection_name": "team-build", "token_env": "BUILD_KEY"},
                {"name": "ops", "project_id": "7", "token_env": "OPS_KEY"},
                {"name": "release", "project_name": "Release", "token_env": "RELEASE_KEY"},
            ]}},
        "delivery": {"initial_backoff": "2ms", "max_backoff": "20ms", "claim_idle": "300ms"},
    })
    secret = {name: SecretStr(value) if value else None for name, value in keys.items()}
    secrets = Secrets(devlake_webhook_token=secret.get("DEVLAKE_WEBHOOK_TOKEN"),
                      devlake_keys=secret)
    config = LoadedConfig(settings=settings, secrets=secrets, source="test")
    return AppContext(config=config, redis=redis, keys=Keys("test"))


async def outbox_length(redis: aioredis.Redis, context: AppContext) -> int:
    return int(await redis.xlen(context.keys.outbox_stream))


def gauge(context: AppContext, target: str, cause: str) -> float | None:
    return context.metrics.registry.get_sample_value(
        "doraforwarder_devlake_target_refused", {"target": target, "cause": cause})


@pytest.mark.parametrize("prefix", ["/api/rest", "/rest"])
async def test_each_target_is_posted_with_its_own_key(redis_client: aioredis.Redis,
                                                      devlake: FakeDevLake, prefix: str) -> None:
    keys = {"DEVLAKE_WEBHOOK_TOKEN": devlake.connection_key(1),
            "BUILD_KEY": "admin-wide-key", "OPS_KEY": devlake.connection_key(7),
            "RELEASE_KEY": "admin-wide-key"}
    context = context_with_keys(redis_client, devlake.url, keys, prefix)
    entries = [deployment_entry(f"svc:{n}", target)
               for n in range(2) for target in (GLOBAL, BUILD, OPS, RELEASE)]
    await stage(redis_client, context.keys, entries)
    async with RunningService(DeliveryPool(context)):
        await eventually(lambda: len(devlake.accepted("deployment")) == 8, what="all arrive")
        await eventually(lambda: _empty(redis_client, context), what="outbox drained")
    project_connection = devlake.project_connection("Release")
    assert project_connection is not None
    for connection in (1, 6, 7, project_connection):
        assert devlake.deployment_ids(connection) == {"svc:0", "svc:1"}
    by_connection = {p.connection_id: p.authorization for p in devlake.accepted()}
    assert by_connection[1] == f"Bearer {devlake.connection_key(1)}"
    assert by_connection[7] == f"Bearer {devlake.connection_key(7)}"
    assert by_connection[6] == by_connection[project_connection] == "Bearer admin-wide-key"
    assert all(p.path.startswith(prefix + "/plugins/webhook/") for p in devlake.posts())


async def _empty(redis: aioredis.Redis, context: AppContext) -> bool:
    return await outbox_length(redis, context) == 0


async def _length_is(redis: aioredis.Redis, context: AppContext, length: int) -> bool:
    return await outbox_length(redis, context) == length


async def test_a_wrongly_scoped_key_blocks_only_its_target(redis_client: aioredis.Redis,
                                                           devlake: FakeDevLake) -> None:
    # The build team holds connection 7's key: it does not cover team-build's by-name routes.
    keys = {"DEVLAKE_WEBHOOK_TOKEN": devlake.connection_key(1),
            "BUILD_KEY": devlake.connection_key(7), "OPS_KEY": devlake.connection_key(7),
            "RELEASE_KEY": "admin-wide-key"}
    context = context_with_keys(redis_client, devlake.url, keys)
    entries = [deployment_entry(f"svc:{n}", target)
               for n in range(20) for target in (GLOBAL, BUILD, OPS)]
    await stage(redis_client, context.keys, entries)
    pool = DeliveryPool(context)
    with capture_logs() as logs:
        async with RunningService(pool):
            await eventually(lambda: len(devlake.accepted("deployment")) == 40,
                             what="global and ops arrive")
            await eventually(lambda: len(devlake.posts(status=403)) >= 3,
                             what="a few rechecks of the refused target")
            await eventually(lambda: _length_is(redis_client, context, 20),
                             what="build's entries wait, all kept")
            status = context.status.snapshot()["devlake_targets"]
            assert set(status) == {"connection_name:team-build"}
            assert status["connection_name:team-build"]["cause"] == "scope"
            assert gauge(context, "connection_name:team-build", "scope") == 1
    refusals = [e for e in logs if str(e["event"]).startswith("DevLake refuses target")]
    assert len(refusals) == 1
    assert refusals[0]["event"] == (
        "DevLake refuses target connection_name:team-build: the API key's scope does not "
        "cover /plugins/webhook/connections/by-name/team-build/deployments; use a key whose "
        "allowed path covers /plugins/webhook/.* or set token_env for this team")
    assert refusals[0]["token_env"] == "BUILD_KEY"
    assert not any(devlake.connection_key(7) in str(e) for e in logs)
    # One recheck per interval, never one request per entry and attempt.
    assert len(devlake.posts(status=403)) < 20
    assert devlake.deployment_ids(6) == set()

    # The operator sets the right key and restarts: everything waiting arrives, once.
    # (Connection 6's own key would not do either: it never covers the by-name routes.)
    keys["BUILD_KEY"] = "admin-wide-key"
    fixed = context_with_keys(redis_client, devlake.url, keys)
    async with RunningService(DeliveryPool(fixed)):
        await eventually(lambda: _empty(redis_client, fixed), what="build's entries arrive")
    assert devlake.deployment_ids(6) == {f"svc:{n}" for n in range(20)}
    accepted = [p.record_id for p in devlake.accepted("deployment") if p.connection_id == 6]
    assert sorted(accepted) == sorted(f"svc:{n}" for n in range(20))
    assert len(devlake.accepted("deployment")) == 60


async def test_incidents_for_a_project_wait_for_its_first_deployment(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    keys = {"DEVLAKE_WEBHOOK_TOKEN": "admin-wide-key", "BUILD_KEY": "admin-wide-key",
            "OPS_KEY": "admin-wide-key", "RELEASE_KEY": "admin-wide-key"}
    context = context_with_keys(redis_client, devlake.url, keys)
    await stage(redis_client, context.keys, issue_entries("INC-1", "TODO", "DONE", close=True,
                                                          target=RELEASE))
    with capture_logs() as logs:
        async with RunningService(DeliveryPool(context)):
            await eventually(lambda: len(devlake.posts(status=404)) >= 3, what="404 waits")
            assert context.status.devlake_targets["project_name:Release"]["state"] == \
                "awaiting_connection"
            assert await redis_client.xlen(context.keys.dead_stream) == 0
            await stage(redis_client, context.keys, [deployment_entry("rel:1", RELEASE)])
            await eventually(lambda: _empty(redis_client, context), what="incident arrives")
    connection = devlake.connection_id("Release_deployments")
    assert connection is not None
    issue = devlake.issue(connection, "INC-1")
    assert issue is not None and issue["status"] == "DONE" and issue.get("closed")
    assert "project_name:Release" not in context.status.devlake_targets
    waits = [e for e in logs if "wait: DevLake has no connection" in str(e["event"])]
    assert len(waits) == 1
    retries = context.metrics.registry.get_sample_value(
        "doraforwarder_delivery_retries_total", {"reason": "awaiting_connection"})
    assert retries is not None and retries >= 3


REFUSALS: list[tuple[int, dict[str, Any], str, str]] = [
    (401, {"success": False, "message": "token is missing"}, "missing_key",
     "no API key was sent: set K (or K_FILE)"),
    (401, {"success": False, "message": "token is not present or malformed"}, "malformed_key",
     "cannot read the API key in K"),
    (403, {"success": False, "message": "api key is invalid"}, "invalid_key",
     "DevLake does not know the API key in K"),
    (403, {"success": False, "message": "api key has expired"}, "expired_key",
     "the API key in K has expired"),
    (403, {"success": False, "message": "path doesn't match api key's scope"}, "scope",
     "the API key's scope does not cover /p; use a key whose allowed path covers"),
    (403, {"message": "forbidden by proxy"}, "refused", "HTTP 403: forbidden by proxy"),
    # DevLake main (420e494b) with AUTH_ENABLED=true: a valid key's user is lost (seen on the
    # real server; apache/devlake#8913)
    (401, {"message": "unauthorized", "success": False}, "auth_enabled",
     "DevLake runs with AUTH_ENABLED=true"),
]


@pytest.mark.parametrize(("status", "body", "cause", "text"), REFUSALS,
                         ids=[r[2] for r in REFUSALS])
def test_refusal_causes_from_devlakes_messages(status: int, body: dict[str, Any], cause: str,
                                               text: str) -> None:
    import json

    found = refusal(Answer(status, body=json.dumps(body)))
    assert found.cause == cause
    assert text in found.explain("/p", "K")
