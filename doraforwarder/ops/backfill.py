"""``doraforwarder backfill``: replay ``status.history`` of current Applications.

ArgoCD keeps the last few syncs of every Application. Backfill turns them into
deployments with exactly the ids the live path gives them
(:func:`doraforwarder.argocd.detect.history_deployments`), so running it
twice, or while the daemon runs, only upserts the same DevLake records.

The same component+revision on several clusters within the dedupe window is
one deployment, as live: the earliest sync wins, unless the live path already
claimed another (its claim is in Redis). Each deployment is staged once (a
Redis set remembers what backfill staged) on the ``deployments`` stream and
goes through the same resolver and delivery as live syncs; backfill runs those
workers itself until the queues drain, cooperating with a running daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from kubernetes.client import CustomObjectsApi
from redis.exceptions import WatchError

from doraforwarder.argocd.detect import deployment_dedupe_key, history_deployments
from doraforwarder.argocd.kube import build_api_client
from doraforwarder.argocd.model import MalformedApplication, parse_application
from doraforwarder.argocd.watcher import GROUP, PLURAL, VERSION
from doraforwarder.commits.stage import DRY_RUN_TARGET, stage_detected
from doraforwarder.config import ArgoCDConfig, LoadedConfig
from doraforwarder.context import AppContext, Service
from doraforwarder.devlake.client import dry_run_line
from doraforwarder.devlake.payloads import build_deployment_payload
from doraforwarder.devlake.routing import Router, endpoint
from doraforwarder.logging import get_logger
from doraforwarder.outbox import OutboxEntry
from doraforwarder.records import DetectedDeployment

log = get_logger("backfill")

Action = Literal["staged", "already staged", "duplicate", "printed", "no commits"]


@dataclass(frozen=True)
class Selection:
    since: datetime
    namespace: str | None = None
    component: str | None = None

    def wants(self, deployment: DetectedDeployment) -> bool:
        return (
            deployment.deployed_at >= self.since
            and (self.namespace is None or deployment.app_namespace == self.namespace)
            and (self.component is None or deployment.component == self.component)
        )


@dataclass(frozen=True)
class Outcome:
    deployment: DetectedDeployment
    action: Action
    detail: str = ""


def list_applications(config: ArgoCDConfig, namespace: str | None) -> Iterator[dict[str, Any]]:
    """Every Application in the watched namespaces (or ``namespace``), page by page."""
    api = CustomObjectsApi(build_api_client(config))
    scopes: Sequence[str] = [namespace] if namespace else config.namespaces
    for scope in scopes:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500, "_request_timeout": 60}
            if token:
                kwargs["_continue"] = token
            if scope == "*":
                answer = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
            else:
                answer = api.list_namespaced_custom_object(GROUP, VERSION, scope, PLURAL, **kwargs)
            page = cast(dict[str, Any], answer)
            yield from page.get("items", [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                break


def candidates(objects: Iterable[dict[str, Any]], config: ArgoCDConfig, selection: Selection,
               now: datetime) -> list[DetectedDeployment]:
    """Pure: the history deployments selected, oldest first."""
    found: list[DetectedDeployment] = []
    for obj in objects:
        try:
            view = parse_application(obj)
        except MalformedApplication as exc:
            log.warning("application skipped", error=str(exc))
            continue
        if not config.all_namespaces and view.namespace not in config.namespaces:
            continue
        found.extend(d for d in history_deployments(view, config, now) if selection.wants(d))
    return sorted(found, key=lambda d: (d.deployed_at, d.app, d.id))


def _claim_time(claim: str) -> datetime | None:
    """When the deployment holding a claim (``"<app> <id>"``) happened, from its id."""
    _, _, deployment_id_ = claim.partition(" ")
    parts = deployment_id_.split(":")
    if len(parts) >= 3 and parts[2].isdigit():
        return datetime.fromtimestamp(int(parts[2]), UTC)
    return None


def dedupe_within_window(deployments: Sequence[DetectedDeployment], config: ArgoCDConfig,
                         live_claims: dict[str, str | None]) -> tuple[
                             list[DetectedDeployment], list[DetectedDeployment]]:
    """Pure: (kept, duplicates), deployments oldest first.

    Another app's deployment of the same scope (component+revision, plus the
    cluster with scope ``cluster``) within ``dedupe_window`` after the claim
    is a duplicate; the same app deploying it again is not (a rollback).
    """
    claims: dict[str, tuple[str, datetime | None]] = {
        key: (claim.partition(" ")[0], _claim_time(claim))
        for key, claim in live_claims.items() if claim
    }
    kept: list[DetectedDeployment] = []
    duplicates: list[DetectedDeployment] = []
    for deployment in deployments:
        key = deployment_dedupe_key(deployment, config)
        holder = claims.get(key)
        if holder is not None:
            app, at = holder
            fresh = at is None or abs(deployment.deployed_at - at) <= config.dedupe_window
            if app != deployment.app and fresh:
                duplicates.append(deployment)
                continue
        kept.append(deployment)
        claims[key] = (deployment.app, deployment.deployed_at)
    return kept, duplicates


class Backfill:
    """Select, dedupe, stage (or print) and drain."""

    def __init__(self, context: AppContext, selection: Selection) -> None:
        self.context = context
        self.selection = selection

    async def plan(self, objects: Iterable[dict[str, Any]]) -> tuple[
            list[DetectedDeployment], list[DetectedDeployment]]:
        config = self.context.settings.argocd
        found = candidates(objects, config, self.selection, datetime.now(UTC))
        keys = sorted({deployment_dedupe_key(d, config) for d in found})
        values = await self.context.redis.mget([self.context.keys.dedupe(k) for k in keys]) \
            if keys else []
        live = {key: str(value) if value is not None else None
                for key, value in zip(keys, values, strict=True)}
        return dedupe_within_window(found, config, live)

    async def stage(self, deployments: Sequence[DetectedDeployment]) -> list[Outcome]:
        """Put each deployment on the ``deployments`` stream once, ever."""
        outcomes: list[Outcome] = []
        for deployment in deployments:
            outcomes.append(Outcome(deployment, await self._stage_once(deployment)))
        return outcomes

    async def _stage_once(self, deployment: DetectedDeployment) -> Action:
        redis, keys = self.context.redis, self.context.keys
        while True:
            async with redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(keys.backfilled)
                    if await pipe.sismember(keys.backfilled, deployment.id):
                        return "already staged"
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.sadd(keys.backfilled, deployment.id)
                    stage_detected(pipe, keys, deployment)
                    await pipe.execute()
                    return "staged"
                except WatchError:
                    continue  # another backfill staged something meanwhile: look again

    async def print_payloads(self, deployments: Sequence[DetectedDeployment],
                             stop: asyncio.Event) -> list[Outcome]:
        """``--dry-run``: resolve and print every payload; write nothing but caches."""
        from doraforwarder.commits.resolve import CommitResolver

        devlake = self.context.settings.integration.devlake
        router = Router(devlake) if devlake.enabled else None
        resolver = CommitResolver(self.context)
        outcomes: list[Outcome] = []
        try:
            for deployment in deployments:
                commits = await resolver.resolve(deployment, stop)
                if not commits:
                    outcomes.append(Outcome(deployment, "no commits"))
                    continue
                body = build_deployment_payload(deployment, commits).body()
                targets = router.for_component(deployment.component) if router \
                    else [DRY_RUN_TARGET]
                for target in targets:
                    entry = OutboxEntry(kind="deployment", target=target,
                                        record_id=deployment.id, payload=body)
                    url = endpoint(devlake.base_url or "http://devlake.invalid",
                                   devlake.api_prefix, target, "deployment")
                    print(dry_run_line(entry, url, body), flush=True)
                outcomes.append(Outcome(deployment, "printed"))
        finally:
            await resolver.aclose()
        return outcomes

    async def drain(self, stop: asyncio.Event, seconds: float) -> bool:
        """Run resolvers and senders until both queues are empty (or ``seconds`` pass)."""
        from doraforwarder.commits.stage import ResolverPool
        from doraforwarder.devlake.delivery import DeliveryPool

        redis, keys = self.context.redis, self.context.keys
        halt = asyncio.Event()
        pools: list[Service] = [ResolverPool(self.context), DeliveryPool(self.context)]
        tasks = [asyncio.create_task(pool.run(halt)) for pool in pools]
        deadline = time.monotonic() + seconds
        drained = False
        try:
            while time.monotonic() < deadline and not stop.is_set():
                waiting = await redis.xlen(keys.deployments_stream) + await redis.xlen(
                    keys.outbox_stream)
                if waiting == 0:
                    drained = True
                    break
                await asyncio.sleep(0.2)
        finally:
            halt.set()
            await asyncio.wait(tasks, timeout=10)
        return drained


def render(outcomes: Sequence[Outcome], duplicates: Sequence[DetectedDeployment]) -> str:
    rows = [(o.deployment, o.action) for o in outcomes]
    rows += [(d, "duplicate") for d in duplicates]
    rows.sort(key=lambda row: (row[0].deployed_at, row[0].app))
    lines = [f"{'deployed (UTC)':<19}  {'component':<20} {'cluster':<16} {'result':<8} "
             f"{'action':<14} id"]
    for deployment, action in rows:
        lines.append(
            f"{deployment.deployed_at:%Y-%m-%d %H:%M:%S}  {deployment.component:<20} "
            f"{deployment.cluster:<16} {deployment.result:<8} {action:<14} {deployment.id}"
        )
    return "\n".join(lines)


def summary(config: LoadedConfig, outcomes: Sequence[Outcome],
            duplicates: Sequence[DetectedDeployment]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    if duplicates:
        counts["duplicate"] = len(duplicates)
    parts = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing"
    return f"backfill from {config.source}: {parts}"
