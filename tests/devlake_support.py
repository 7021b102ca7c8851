"""Shared set-up for the DevLake delivery tests: contexts, records, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from doraforwarder.config import LoadedConfig, Secrets, Settings
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.outbox import OutboxEntry, Target, stage_entries
from doraforwarder.records import DetectedDeployment, ResolvedCommit

TOKEN = "devlake-test-token"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_context(redis: aioredis.Redis, devlake: dict[str, Any] | None = None, *,
                 token: str | None = TOKEN, dry_run: bool = False,
                 delivery: dict[str, Any] | None = None, prefix: str = "test") -> AppContext:
    settings = Settings.model_validate({
        "integration": {"devlake": devlake or {"enabled": False}},
        "delivery": {"initial_backoff": "2ms", "max_backoff": "20ms", "claim_idle": "300ms",
                     **(delivery or {})},
    })
    secrets = Secrets(devlake_webhook_token=SecretStr(token) if token else None)
    config = LoadedConfig(settings=settings, secrets=secrets, source="test")
    return AppContext(config=config, redis=redis, keys=Keys(prefix), dry_run=dry_run)


def devlake_section(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "base_url": base_url, "project_id": "1",
            "timeout_seconds": 2, **extra}


def deployment_payload(record_id: str, sha: str = "a" * 40) -> dict[str, Any]:
    started = "2024-05-01T11:00:00+00:00"
    finished = "2024-05-01T12:00:00+00:00"
    return {
        "id": record_id, "startedDate": started, "finishedDate": finished,
        "environment": "PRODUCTION", "result": "SUCCESS", "name": f"deploy {record_id}",
        "deploymentCommits": [{"repoUrl": "https://github.com/org/repo", "commitSha": sha,
                               "startedDate": started, "finishedDate": finished}],
    }


def issue_payload(key: str, status: str = "TODO", title: str = "outage") -> dict[str, Any]:
    body = {"issueKey": key, "title": title, "status": status,
            "originalStatus": status.lower(), "createdDate": "2024-05-01T10:00:00+00:00",
            "type": "INCIDENT"}
    if status == "DONE":
        body["resolutionDate"] = "2024-05-01T11:00:00+00:00"
    return body


GLOBAL = Target(kind="connection_id", value="1")


def deployment_entry(record_id: str, target: Target = GLOBAL) -> OutboxEntry:
    return OutboxEntry(kind="deployment", target=target, record_id=record_id,
                       payload=deployment_payload(record_id))


def issue_entries(key: str, *states: str, close: bool = False,
                  target: Target = GLOBAL) -> list[OutboxEntry]:
    order_key = f"issue:{target.key}:{key}"
    entries = [OutboxEntry(kind="issue", target=target, record_id=key, order_key=order_key,
                           payload=issue_payload(key, state, title=f"{key} {n}"))
               for n, state in enumerate(states)]
    if close:
        entries.append(OutboxEntry(kind="close", target=target, record_id=key,
                                   order_key=order_key, payload={}))
    return entries


async def stage(redis: aioredis.Redis, keys: Keys, entries: list[OutboxEntry]) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        stage_entries(pipe, keys, entries)
        await pipe.execute()


def detected(component: str = "build-service", *, n: int = 1,
             deployed_at: datetime | None = None) -> DetectedDeployment:
    deployed = deployed_at or T0 + timedelta(minutes=n)
    return DetectedDeployment(
        id=f"{component}:rev{n}:{int(deployed.timestamp())}", app_namespace="argocd",
        app_name=f"{component}-prod-east-1", component=component, cluster="prod-east-1",
        environment="PRODUCTION", result="SUCCESS", revision=f"rev{n}",
        started_at=deployed - timedelta(minutes=2), deployed_at=deployed,
    )


def commit(sha: str = "b" * 40, minutes_before: int = 60) -> ResolvedCommit:
    return ResolvedCommit(repo_url="https://github.com/org/service", sha=sha,
                          message="fix things", author_date=T0 - timedelta(minutes=minutes_before),
                          ref_name="main")


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0,
                     interval: float = 0.02, what: str = "condition") -> None:
    """Poll ``check`` until true (no event to await for these), bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


class RunningService:
    """Run a Service in the background of a test; ``await stop()`` ends it."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningService:
        self.task = asyncio.create_task(self.service.run(self.stop_event))
        return self

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            await self.stop()
