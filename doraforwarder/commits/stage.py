"""The resolver stage: from a detected deployment to outbox entries.

Detection stages a :class:`~doraforwarder.records.DetectedDeployment` on the
``deployments`` stream in the same Redis transaction as its state change
(:func:`doraforwarder.streams.stage_detected`). Resolver workers read that
stream with a consumer group, resolve commits (GitHub look-ups may wait for
rate limits), let the planner (``devlake/plan.py``) turn the deployment into
entries, and in one transaction stage them and acknowledge the stream entry.
A crash at any point leaves the entry pending; it is reclaimed and, ids being
deterministic, redone as an upsert.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.commits.images import TagMatcher
from doraforwarder.commits.plan import is_git_sha, no_commit_reason
from doraforwarder.commits.resolve import CommitResolver
from doraforwarder.context import AppContext
from doraforwarder.devlake.plan import DeploymentPlan, Planner
from doraforwarder.keys import DEPLOYMENTS_GROUP, Keys
from doraforwarder.logging import get_logger
from doraforwarder.outbox.entries import dead_fields
from doraforwarder.outbox.staging import stage_dead, stage_entries
from doraforwarder.records import DetectedDeployment, DetectedIncident, ResolvedCommit
from doraforwarder.storage import report_data_lost
from doraforwarder.streams import GroupConsumer, consumer_name, read_detected, stage_detected

log = get_logger("pipeline")


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


class PipelineStaging:
    """The daemon's :class:`~doraforwarder.streams.StageDetected`.

    A deployment goes onto the ``deployments`` stream (commits are resolved
    later, by the pool below); an ArgoCD incident needs no look-up, so it is
    planned at once and its outbox entries are staged on the caller's
    transaction, with the state change that marks it emitted.
    """

    def __init__(self, keys: Keys, planner: Planner) -> None:
        self.keys = keys
        self.planner = planner

    def deployment(self, pipe: Pipeline, deployment: DetectedDeployment) -> None:
        stage_detected(pipe, self.keys, deployment)

    def incident(self, pipe: Pipeline, incident: DetectedIncident) -> None:
        entries = self.planner.plan_detected_incident(incident)
        stage_entries(pipe, self.keys, entries)
        if entries:
            log.info("argocd incident staged for delivery", incident=incident.key,
                     status=incident.status, app=incident.app,
                     targets=[e.target.key for e in entries])


class CommitResolving(Protocol):
    """What the resolver pool needs from ``doraforwarder.commits.resolve.CommitResolver``."""

    async def resolve(self, deployment: DetectedDeployment, stop: asyncio.Event
                      ) -> list[ResolvedCommit]: ...

    async def aclose(self) -> None: ...


class ResolverPool:
    """``delivery.resolvers`` workers turning detected deployments into outbox entries.

    Each worker takes one stream entry at a time: first an entry a crashed
    worker left pending for longer than ``delivery.claim_idle``
    (``XAUTOCLAIM``), else a new one (``XREADGROUP``). While it resolves, the
    entry's idle time is refreshed so a slow resolution (a GitHub rate-limit
    wait) is not mistaken for a crash. A failure leaves the entry pending for
    a later reclaim; nothing is acknowledged before its outbox entries exist.

    Only the entry's owner stages it: right before the staging transaction
    the entry is refreshed if, and only if, it is still pending for this
    worker (:meth:`~doraforwarder.streams.GroupConsumer.refresh`), which also
    gives the transaction a whole ``claim_idle`` before anyone may take it
    over. A worker that stalled past ``claim_idle`` meanwhile (its entry
    reclaimed by another) stages nothing, so the deployment is not put in the
    outbox twice.
    """

    name = "resolver"

    def __init__(self, context: AppContext, resolver: CommitResolving | None = None, *,
                 planner: Planner | None = None, consumer: str | None = None,
                 read_block_s: float = 0.5,
                 after_resolve: Callable[[DetectedDeployment], Awaitable[None]] | None = None
                 ) -> None:
        self.context = context
        self.keys = context.keys
        self.redis: aioredis.Redis = context.redis
        self.consumer = consumer or consumer_name()
        self.stream = GroupConsumer(
            self.redis, self.keys.deployments_stream, DEPLOYMENTS_GROUP, self.consumer,
            claim_idle_s=context.settings.delivery.claim_idle.total_seconds(),
            read_block_s=read_block_s,
        )
        self._resolver = resolver
        self._after_resolve = after_resolve
        """Test hook: runs between resolution and staging (to simulate a crash there)."""
        self.planner = planner or Planner.from_settings(context.settings, context.dry_run)
        self.matcher = TagMatcher(context.settings.github.tag_patterns)
        self._told_disabled = False
        self.lost = 0
        """Entries found taken over by another worker before they were staged."""

    async def run(self, stop: asyncio.Event) -> None:
        resolver = self._resolver
        if resolver is None:
            resolver = CommitResolver(self.context)
        await self.stream.ensure_group()
        workers = self.context.settings.delivery.resolvers
        log.info("resolvers started", workers=workers, consumer=self.consumer)
        # Workers watch ``halt``, not ``stop``: on a crash of one of them the
        # others are told to finish rather than cancelled mid-transaction.
        halt = asyncio.Event()
        relay = asyncio.create_task(_relay(stop, halt))
        tasks = [
            *(asyncio.create_task(self._work(resolver, halt), name=f"resolver-{n}")
              for n in range(workers)),
            asyncio.create_task(self._gauge(halt), name="resolver:gauge"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        finally:
            halt.set()
            relay.cancel()
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            if self._resolver is None:
                await resolver.aclose()

    async def _gauge(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(RedisError):
                depth = await self.redis.xlen(self.keys.deployments_stream)
                self.context.metrics.resolve_queue_depth.set(depth)
            if await wait_or_stop(stop, 1.0):
                return

    async def _work(self, resolver: CommitResolving, stop: asyncio.Event) -> None:
        backoff = Backoff(0.2, 30.0)
        while not stop.is_set():
            try:
                taken = await self._take()
                if taken is None:
                    continue
                entry_id, fields = taken
                done = await self._process(resolver, entry_id, fields, stop)
            except RedisError as exc:
                self.context.metrics.redis_errors.labels("resolve").inc()
                if await self.stream.recover(exc):
                    report_data_lost(self.context, "group",
                                     f"the consumer group {DEPLOYMENTS_GROUP} of the deployments "
                                     "stream was missing; recreated it")
                    continue
                delay = backoff.next_delay()
                log.warning("redis error in resolver, retrying",
                            error=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 3))
                await wait_or_stop(stop, delay)
                continue
            if done:
                backoff.reset()
            else:
                await wait_or_stop(stop, backoff.next_delay())

    async def _take(self) -> tuple[str, dict[str, str]] | None:
        taken, reclaimed = await self.stream.take_one()
        if taken is not None and reclaimed:
            log.info("reclaimed detected deployment left by another worker", entry=taken[0])
        return taken

    async def _process(self, resolver: CommitResolving, entry_id: str,
                       fields: dict[str, str], stop: asyncio.Event) -> bool:
        """Handle one stream entry; False when it stays pending (to be retried)."""
        try:
            deployment = read_detected(fields)
        except (KeyError, ValidationError) as exc:
            log.error("unreadable detected deployment moved to dead letters", entry=entry_id,
                      error=str(exc))
            await self._finish(entry_id, dead=[dead_fields(
                fields, source_id=entry_id, reason=f"unreadable_deployment: {exc}")])
            return True
        if not self._wanted(deployment):
            await self._finish(entry_id)
            return True
        try:
            async with self.stream.kept_fresh(entry_id):
                commits = await resolver.resolve(deployment, stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("commit resolution failed; the deployment stays queued and is "
                          "retried after delivery.claim_idle", deployment=deployment.id,
                          entry=entry_id)
            return False
        if stop.is_set():
            return True  # maybe partial: leave it pending for the next start
        if self._after_resolve is not None:
            await self._after_resolve(deployment)
        if not commits:
            registry = self.context.settings.registry
            reason = no_commit_reason(deployment, self.matcher, labels=registry.enabled,
                                      skip_images=registry.skip_images)
            self.context.metrics.deployments_without_commits.labels(reason).inc()
            log.error("deployment has nothing DevLake accepts as a commit: moved to dead "
                      "letters (replay it once its sources are fixed)", deployment=deployment.id,
                      app=deployment.app, revision=deployment.revision, reason=reason)
            plan = self.planner.plan_without_commits(deployment, reason, source_id=entry_id)
            await self._finish(entry_id, plan)
            return True
        if not any(is_git_sha(c.sha) for c in commits):
            self.context.metrics.deployments_without_commits.labels("no_git_commit").inc()
            log.info("deployment sent with chart versions only: DevLake computes no lead "
                     "time for it", deployment=deployment.id, app=deployment.app)
        plan = self.planner.plan_deployment(deployment, commits, source_id=entry_id)
        if plan.error is not None:
            log.error("deployment breaks the DevLake contract, moved to dead letters",
                      deployment=deployment.id, error=plan.error)
            self.context.metrics.dead_lettered.labels("invalid_payload").inc(len(plan.dead))
        await self._finish(entry_id, plan)
        if plan.error is None:
            log.info("deployment staged for delivery", deployment=deployment.id,
                     commits=len(commits), targets=[t.key for t in plan.targets])
        return True

    def _wanted(self, deployment: DetectedDeployment) -> bool:
        """Does the deployment go anywhere? (Says once when DevLake is off.)"""
        if self.planner.deployment_targets(deployment):
            return True
        if not self.planner.active and not self._told_disabled:
            self._told_disabled = True
            log.info("integration.devlake is disabled: detected deployments are "
                     "acknowledged without delivery")
        return False

    async def _finish(self, entry_id: str, plan: DeploymentPlan | None = None,
                      dead: list[dict[str, str]] | None = None) -> None:
        """Stage the plan's entries (or dead letters) and retire the stream entry, atomically.

        Nothing happens if the entry is no longer this worker's.
        """
        if entry_id not in await self.stream.refresh([entry_id]):
            self.lost += 1
            log.info("detected deployment taken over by another resolver while this one "
                     "stalled; leaving it to that one", entry=entry_id, consumer=self.consumer)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            if plan is not None:
                self.planner.stage(pipe, self.keys, [plan])
            for fields in dead or []:
                stage_dead(pipe, self.keys, fields)
            self.stream.retire(pipe, entry_id)
            await pipe.execute()
