"""``doraforwarder backfill``: replay ``status.history`` of current Applications.

ArgoCD keeps the last few syncs of every Application. Backfill turns them into
deployments with exactly the ids the live path gives them
(:func:`doraforwarder.argocd.deployment_records.history_deployments`), so running it
twice, or while the daemon runs, only upserts the same DevLake records.

The same component+revision on several clusters within the dedupe window is
one deployment, as live: the earliest sync wins, unless the live path already
claimed another (its claim is in Redis). Each deployment is staged once (a
Redis set remembers what backfill staged) on the ``deployments`` stream and
goes through the same resolver and delivery as live syncs; backfill runs those
workers itself until the queues drain, cooperating with a running daemon.

After a switch from the reference, what it already sent is left out (its
``devlake-revision`` marks under the same prefix, read by
:mod:`~doraforwarder.argocd.reference_marks`): listed as ``by reference``, never
staged.

``--dry-run`` reads the live dedupe claims but writes nothing under the real
prefix: its resolver keeps the GitHub caches (commits, compares, searches,
ETags, resolved lists) in a private :class:`~doraforwarder.dryrun.DryRunSpace`,
deleted when it ends, like ``run --dry-run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes.client import CustomObjectsApi
from redis.exceptions import RedisError, WatchError

from doraforwarder.argocd.dedupe import apply_dedupe
from doraforwarder.argocd.deployment_records import history_deployments
from doraforwarder.argocd.detect import deployment_dedupe_key
from doraforwarder.argocd.ids import claim_deployed_at
from doraforwarder.argocd.kube import build_api_client
from doraforwarder.argocd.listing import iter_applications
from doraforwarder.argocd.model import MalformedApplication
from doraforwarder.argocd.parse import parse_application
from doraforwarder.argocd.reference_marks import (
    ReferenceMark,
    mark_from_pttl,
    may_be_marked,
    sent_by_reference,
)
from doraforwarder.commits.resolve import CommitResolver
from doraforwarder.commits.stage import ResolverPool
from doraforwarder.config import ArgoCDConfig, LoadedConfig
from doraforwarder.context import AppContext, Service
from doraforwarder.devlake.client import dry_run_line
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.devlake.plan import Planner
from doraforwarder.devlake.routing import endpoint
from doraforwarder.dryrun import DryRunSpace, dry_run_keys
from doraforwarder.logging import get_logger
from doraforwarder.records import DetectedDeployment
from doraforwarder.streams import stage_detected

log = get_logger("backfill")

Action = Literal["staged", "already staged", "duplicate", "by reference", "printed", "no commits"]


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
    yield from iter_applications(api, [namespace] if namespace else config.namespaces)


def history_selection(objects: Iterable[dict[str, Any]], config: ArgoCDConfig, selection: Selection,
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


def dedupe_within_window(deployments: Sequence[DetectedDeployment], config: ArgoCDConfig,
                         live_claims: Mapping[str, str | None]) -> tuple[
                             list[DetectedDeployment], list[DetectedDeployment]]:
    """Pure: (kept, duplicates), deployments oldest first.

    The live rule (:func:`~doraforwarder.argocd.dedupe.apply_dedupe`) replayed
    over history: a claim lives ``dedupe_window`` (in Redis its TTL does that;
    here a claim further than the window from the deployment is let go), and
    another app's deployment of the same scope while the claim lives is a
    duplicate; the same app deploying it again is not (a rollback).
    """
    holders = {key: claim for key, claim in live_claims.items() if claim}
    kept: list[DetectedDeployment] = []
    duplicates: list[DetectedDeployment] = []
    for deployment in deployments:
        key = deployment_dedupe_key(deployment, config)
        claim = holders.get(key)
        if claim is not None:
            at = claim_deployed_at(claim)
            if at is not None and abs(deployment.deployed_at - at) > config.dedupe_window:
                del holders[key]
        outcome = apply_dedupe([deployment], {key: holders.get(key)}, config)
        if outcome.kept:
            kept.append(deployment)
            holders.update(outcome.claims)
        else:
            duplicates.append(deployment)
    return kept, duplicates


class Backfill:
    """Select, dedupe, stage (or print) and drain."""

    def __init__(self, context: AppContext, selection: Selection) -> None:
        self.context = context
        self.selection = selection
        self.by_reference: set[str] = set()
        """Ids of the deployments the reference already sent (after :meth:`plan`)."""

    async def plan(self, objects: Iterable[dict[str, Any]]) -> tuple[
            list[DetectedDeployment], list[DetectedDeployment]]:
        config = self.context.settings.argocd
        found = history_selection(objects, config, self.selection, datetime.now(UTC))
        keys = sorted({deployment_dedupe_key(d, config) for d in found})
        values = await self.context.redis.mget([self.context.keys.dedupe(k) for k in keys]) \
            if keys else []
        live = {key: str(value) if value is not None else None
                for key, value in zip(keys, values, strict=True)}
        marks = await self._reference_marks(found)
        self.by_reference = {d.id for d in found
                             if sent_by_reference(d, marks.get(d.id), config)}
        kept, duplicates = dedupe_within_window(
            [d for d in found if d.id not in self.by_reference], config, live)
        return kept, sorted(duplicates + [d for d in found if d.id in self.by_reference],
                            key=lambda d: (d.deployed_at, d.app, d.id))

    async def _reference_marks(self, found: Sequence[DetectedDeployment]
                               ) -> dict[str, ReferenceMark | None]:
        """The reference's ``devlake-revision`` mark of each deployment it could have sent."""
        candidates = [d for d in found if may_be_marked(d)]
        if not candidates:
            return {}
        keys = self.context.keys
        async with self.context.redis.pipeline(transaction=False) as pipe:
            for deployment in candidates:
                pipe.pttl(keys.reference_revision_sent(deployment.revision, deployment.component))
            answers = await pipe.execute()
        now = datetime.now(UTC)
        return {d.id: mark_from_pttl(d.revision, int(pttl), now)
                for d, pttl in zip(candidates, answers, strict=True)}

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
        """``--dry-run``: resolve and print every payload; the real keyspace is left as it was.

        The resolver's caches go to a private dry-run space (deleted at the
        end, or by a later dry run if this one is killed), never the real prefix.
        """
        devlake = self.context.settings.integration.devlake
        planner = Planner.from_settings(self.context.settings, dry_run=True)
        prefix = self.context.keys.prefix
        space = DryRunSpace(self.context.redis, prefix, dry_run_keys(prefix))
        await space.start(stop)
        resolver = CommitResolver(dataclasses.replace(self.context, keys=space.keys))
        outcomes: list[Outcome] = []
        try:
            for deployment in deployments:
                commits = await resolver.resolve(deployment, stop)
                if not commits:
                    outcomes.append(Outcome(deployment, "no commits"))
                    continue
                plan = planner.plan_deployment(deployment, commits)
                if plan.error is not None:
                    raise ValueError(f"{deployment.id} breaks the DevLake contract: "
                                     f"{plan.error}")
                for entry in plan.entries:
                    url = endpoint(devlake.base_url or "http://devlake.invalid",
                                   devlake.api_prefix, entry.target, "deployment")
                    print(dry_run_line(entry, url, entry.payload), flush=True)
                outcomes.append(Outcome(deployment, "printed"))
        finally:
            await resolver.aclose()
            with contextlib.suppress(RedisError):  # Redis gone: a later dry run cleans up
                await space.close()
        return outcomes

    async def drain(self, stop: asyncio.Event, seconds: float) -> bool:
        """Run resolvers and senders until both queues are empty (or ``seconds`` pass)."""
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


def render(outcomes: Sequence[Outcome], duplicates: Sequence[DetectedDeployment],
           by_reference: Set[str] = frozenset()) -> str:
    rows = [(o.deployment, o.action) for o in outcomes]
    rows += [(d, "by reference" if d.id in by_reference else "duplicate") for d in duplicates]
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
            duplicates: Sequence[DetectedDeployment], by_reference: Set[str] = frozenset()) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    sent = sum(1 for d in duplicates if d.id in by_reference)
    if len(duplicates) > sent:
        counts["duplicate"] = len(duplicates) - sent
    if sent:
        counts["already sent by the reference"] = sent
    parts = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing"
    return f"backfill from {config.source}: {parts}"
