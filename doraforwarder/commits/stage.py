"""From a detected deployment to outbox entries: resolve commits, build, route.

Detection stages a :class:`~doraforwarder.records.DetectedDeployment` on the
``deployments`` stream in the same Redis transaction as its state change
(:func:`stage_detected`). Resolver workers read that stream with a consumer
group, resolve commits (GitHub look-ups may wait for rate limits), build the
DevLake payload, and in one transaction stage one outbox entry per target and
acknowledge the stream entry. A crash at any point leaves the entry pending;
it is reclaimed and, ids being deterministic, redone as an upsert.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from doraforwarder.backoff import Backoff, wait_or_stop
from doraforwarder.context import AppContext
from doraforwarder.devlake.payloads import build_deployment_payload, unchecked_deployment_body
from doraforwarder.devlake.routing import Router
from doraforwarder.keys import DEPLOYMENTS_GROUP, Keys
from doraforwarder.logging import get_logger
from doraforwarder.outbox import (
    OutboxEntry,
    Target,
    consumer_name,
    dead_fields,
    ensure_group,
    raw_entries,
    read_group_entries,
    stage_dead,
    stage_entries,
)
from doraforwarder.records import DetectedDeployment, ResolvedCommit

FIELD = "deployment"
DRY_RUN_TARGET = Target(kind="connection_name", value="dry-run", team="global")
"""Where ``--dry-run`` shows records when no DevLake target is configured."""

log = get_logger("pipeline")


def stage_detected(pipe: Pipeline, keys: Keys, deployment: DetectedDeployment) -> None:
    """Queue the XADD of ``deployment`` on ``pipe`` (a transaction the caller executes)."""
    pipe.xadd(keys.deployments_stream, {FIELD: deployment.model_dump_json()})


def read_detected(fields: dict[str, str]) -> DetectedDeployment:
    return DetectedDeployment.model_validate_json(fields[FIELD])


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


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
    """

    name = "resolver"

    def __init__(self, context: AppContext, resolver: CommitResolving | None = None, *,
                 consumer: str | None = None, read_block_ms: int = 500,
                 after_resolve: Callable[[DetectedDeployment], Awaitable[None]] | None = None
                 ) -> None:
        self.context = context
        self.keys = context.keys
        self.redis: aioredis.Redis = context.redis
        self.consumer = consumer or consumer_name()
        self.read_block_ms = read_block_ms
        self._resolver = resolver
        self._after_resolve = after_resolve
        """Test hook: runs between resolution and staging (to simulate a crash there)."""
        self.claim_idle_ms = max(1, int(context.settings.delivery.claim_idle.total_seconds()
                                        * 1000))
        devlake = context.settings.integration.devlake
        self.router = Router(devlake) if devlake.enabled else None
        self._told_disabled = False

    async def run(self, stop: asyncio.Event) -> None:
        resolver = self._resolver
        if resolver is None:
            # Imported here: the resolver (issue 4) loads GitHub machinery this
            # module does not otherwise need.
            module = importlib.import_module("doraforwarder.commits.resolve")
            resolver = cast(CommitResolving, module.CommitResolver(self.context))
        await ensure_group(self.redis, self.keys.deployments_stream, DEPLOYMENTS_GROUP)
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
        stream = self.keys.deployments_stream
        claimed = await self.redis.xautoclaim(
            stream, DEPLOYMENTS_GROUP, self.consumer, self.claim_idle_ms, start_id="0-0",
            count=1,
        )
        for entry_id, fields in raw_entries(claimed[1]):
            log.info("reclaimed detected deployment left by another worker", entry=entry_id)
            return entry_id, fields
        answer = await self.redis.xreadgroup(
            DEPLOYMENTS_GROUP, self.consumer, {stream: ">"}, count=1, block=self.read_block_ms,
        )
        entries = read_group_entries(answer)
        return entries[0] if entries else None

    async def _process(self, resolver: CommitResolving, entry_id: str,
                       fields: dict[str, str], stop: asyncio.Event) -> bool:
        """Handle one stream entry; False when it stays pending (to be retried)."""
        try:
            deployment = read_detected(fields)
        except (KeyError, ValidationError) as exc:
            log.error("unreadable detected deployment moved to dead letters", entry=entry_id,
                      error=str(exc))
            await self._finish(entry_id, [], dead=[dead_fields(
                fields, source_id=entry_id, reason=f"unreadable_deployment: {exc}")])
            return True
        targets = self._targets(deployment)
        if not targets:
            await self._finish(entry_id, [])
            return True
        heartbeat = asyncio.create_task(self._keep_fresh(entry_id))
        try:
            commits = await resolver.resolve(deployment, stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("commit resolution failed; the deployment stays queued and is "
                          "retried after delivery.claim_idle", deployment=deployment.id,
                          entry=entry_id)
            return False
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if stop.is_set():
            return True  # maybe partial: leave it pending for the next start
        if self._after_resolve is not None:
            await self._after_resolve(deployment)
        if not commits:
            log.warning("no commits resolved for deployment: nothing sent to DevLake (it "
                        "needs at least one)", deployment=deployment.id, app=deployment.app,
                        revision=deployment.revision)
            await self._finish(entry_id, [])
            return True
        try:
            body = build_deployment_payload(deployment, commits).body()
        except ValidationError as exc:
            log.error("deployment breaks the DevLake contract, moved to dead letters",
                      deployment=deployment.id, error=str(exc))
            raw = unchecked_deployment_body(deployment, commits)
            dead = [
                dead_fields(
                    OutboxEntry(kind="deployment", target=target, record_id=deployment.id,
                                payload=raw).to_fields(),
                    source_id=entry_id, reason=f"invalid_payload: {exc}",
                )
                for target in targets
            ]
            self.context.metrics.dead_lettered.labels("invalid_payload").inc(len(dead))
            await self._finish(entry_id, [], dead=dead)
            return True
        entries = [
            OutboxEntry(kind="deployment", target=target, record_id=deployment.id,
                        payload=body)
            for target in targets
        ]
        await self._finish(entry_id, entries)
        log.info("deployment staged for delivery", deployment=deployment.id,
                 commits=len(commits), targets=[t.key for t in targets])
        return True

    def _targets(self, deployment: DetectedDeployment) -> list[Target]:
        if self.router is not None:
            return self.router.for_component(deployment.component)
        if self.context.dry_run:
            return [DRY_RUN_TARGET]
        if not self._told_disabled:
            self._told_disabled = True
            log.info("integration.devlake is disabled: detected deployments are "
                     "acknowledged without delivery")
        return []

    async def _keep_fresh(self, entry_id: str) -> None:
        """Reset the entry's idle time while it is being worked on."""
        interval = max(self.claim_idle_ms / 3000.0, 0.01)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(RedisError):
                await self.redis.xclaim(self.keys.deployments_stream, DEPLOYMENTS_GROUP,
                                        self.consumer, 0, [entry_id], justid=True)

    async def _finish(self, entry_id: str, entries: list[OutboxEntry],
                      dead: list[dict[str, str]] | None = None) -> None:
        """Stage ``entries`` (and dead letters) and retire the stream entry, atomically."""
        stream = self.keys.deployments_stream
        async with self.redis.pipeline(transaction=True) as pipe:
            stage_entries(pipe, self.keys, entries)
            for fields in dead or []:
                stage_dead(pipe, self.keys, fields)
            pipe.xack(stream, DEPLOYMENTS_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()
