"""One decision, one Redis transaction: state advance + dedupe claims + staged records.

Optimistic concurrency makes replicas safe without locks: the app state key
and the dedupe keys are WATCHed, the stored state is read *after* the WATCH,
the pure decision runs, and MULTI/EXEC writes everything or nothing. If
another replica wrote any of those keys meanwhile, EXEC fails with
``WatchError`` and the decision is taken again from what that replica stored,
so each deployment is produced exactly once, under one id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from doraforwarder.argocd.dedupe import apply_dedupe
from doraforwarder.argocd.detect import Decision, deployment_dedupe_key
from doraforwarder.argocd.reference_marks import (
    mark_from_pttl,
    may_be_marked,
    reference_claim,
    sent_by_reference,
)
from doraforwarder.argocd.state import AppState, CorruptState, load_state
from doraforwarder.config import ArgoCDConfig
from doraforwarder.keys import Keys
from doraforwarder.logging import get_logger
from doraforwarder.records import DetectedDeployment
from doraforwarder.streams import StageDetected

log = get_logger("argocd")

Decide = Callable[[AppState | None], Decision]


@dataclass(frozen=True)
class Committed:
    decision: Decision
    staged: list[DetectedDeployment] = field(default_factory=list)
    """Deployments written to the ``deployments`` stream (after dedupe)."""
    dedupe_reasons: list[str] = field(default_factory=list)
    conflicts: int = 0
    """How many times another writer won the race and the decision was retaken."""


async def commit_decision(
    redis: aioredis.Redis,
    keys: Keys,
    config: ArgoCDConfig,
    namespace: str,
    name: str,
    decide: Decide,
    stage: StageDetected,
) -> Committed:
    """Load the stored state, decide, and write the outcome atomically; retry on races.

    ``stage`` queues each kept deployment and each incident of the decision
    on the same transaction as the state that records them (the daemon hands
    in its staging): a retried decision restages them, a committed one never.
    """
    state_key = keys.app_state(namespace, name)
    quick = await _commit_without_transaction(redis, state_key, config, namespace, name, decide)
    if quick is not None:
        return quick
    conflicts = 0
    while True:
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(state_key)
                raw = await pipe.get(state_key)
                try:
                    stored = load_state(raw)
                except CorruptState as exc:
                    log.warning(
                        "stored state unreadable, starting a new baseline",
                        app=f"{namespace}/{name}",
                        key=state_key,
                        error=str(exc),
                    )
                    stored = None
                decision = decide(stored)
                if not decision.changed and not decision.deployments and not decision.incidents:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return Committed(decision, conflicts=conflicts)
                staged: list[DetectedDeployment] = []
                claims: dict[str, str] = {}
                reasons: list[str] = []
                if decision.deployments:
                    scope_keys = sorted(
                        {deployment_dedupe_key(d, config) for d in decision.deployments}
                    )
                    redis_keys = [keys.dedupe(k) for k in scope_keys]
                    await pipe.watch(*redis_keys)
                    values = await pipe.mget(redis_keys)
                    holders = await _with_reference_marks(
                        pipe, keys, config, decision.deployments, _holders(scope_keys, values)
                    )
                    outcome = apply_dedupe(decision.deployments, holders, config)
                    staged, claims, reasons = outcome.kept, outcome.claims, outcome.reasons
                pipe.multi()  # type: ignore[no-untyped-call]
                _stage_state(pipe, state_key, decision.state, config.state_ttl)
                window = max(1, int(config.dedupe_window.total_seconds()))
                for scope_key, value in claims.items():
                    pipe.set(keys.dedupe(scope_key), value, ex=window)
                for deployment in staged:
                    stage.deployment(pipe, deployment)
                for incident in decision.incidents:
                    stage.incident(pipe, incident)
                await pipe.execute()
                return Committed(decision, staged, reasons, conflicts)
            except WatchError:
                conflicts += 1
                continue


async def _commit_without_transaction(
    redis: aioredis.Redis,
    state_key: str,
    config: ArgoCDConfig,
    namespace: str,
    name: str,
    decide: Decide,
) -> Committed | None:
    """The two common cases in one or two round trips instead of a transaction's four.

    Nothing to write (most events after a restart's list): a plain read
    decides it, as the transaction would have (it too writes nothing). A first
    baseline (every app at the first start): ``SET NX`` writes it only if the
    key is still absent, which is what WATCH would have checked. Anything else
    (deployments, incidents, dedupe claims, a stored state to replace), or a lost NX
    race, returns None: the transaction decides again from what it reads.
    """
    raw = await redis.get(state_key)
    try:
        stored = load_state(raw)
    except CorruptState:
        return None  # the transaction logs it and starts a new baseline
    decision = decide(stored)
    if not decision.changed and not decision.deployments and not decision.incidents:
        return Committed(decision)
    state = decision.state
    if raw is not None or state is None or decision.deployments or decision.incidents:
        return None  # incidents too: an app first seen Degraded may open one at once
    ttl = max(1, int(config.state_ttl.total_seconds())) if state.deleted_at is not None else None
    if await redis.set(state_key, state.dump(), nx=True, ex=ttl):
        return Committed(decision)
    return None


def _stage_state(
    pipe: aioredis.client.Pipeline, key: str, state: AppState | None, ttl: timedelta
) -> None:
    if state is None:
        pipe.delete(key)
    elif state.deleted_at is not None:
        pipe.set(key, state.dump(), ex=max(1, int(ttl.total_seconds())))
    else:
        pipe.set(key, state.dump())


async def _with_reference_marks(
    pipe: aioredis.client.Pipeline,
    keys: Keys,
    config: ArgoCDConfig,
    deployments: list[DetectedDeployment],
    holders: dict[str, str | None],
) -> dict[str, str | None]:
    """``holders`` plus a claim for each unclaimed scope whose deployment the reference sent.

    After a switch from the reference, the rest of a rollout it began (the same revision
    reaching more clusters within ``dedupe_window``) is the deployment it already sent,
    not a second one. Its marks are read, never WATCHed: the stopped reference writes no
    more of them. One ``PTTL`` per unclaimed deployment, on decisions with deployments only.
    """
    result = dict(holders)
    now = datetime.now(UTC)
    for deployment in deployments:
        scope = deployment_dedupe_key(deployment, config)
        if result.get(scope) is not None or not may_be_marked(deployment):
            continue
        pttl = await pipe.pttl(keys.reference_revision_sent(deployment.revision,
                                                            deployment.component))
        mark = mark_from_pttl(deployment.revision, int(pttl), now)
        if sent_by_reference(deployment, mark, config):
            result[scope] = reference_claim(deployment.revision)
    return result


def _holders(scope_keys: list[str], values: list[bytes | str | None]) -> dict[str, str | None]:
    return {
        key: value.decode() if isinstance(value, bytes) else value
        for key, value in zip(scope_keys, values, strict=True)
    }


@dataclass(frozen=True)
class Pending:
    """One app's decision waiting in a batch: where its state lives and how to decide."""

    namespace: str
    name: str
    decide: Decide


async def commit_batch(
    redis: aioredis.Redis,
    keys: Keys,
    config: ArgoCDConfig,
    batch: list[Pending],
    stage: StageDetected,
) -> list[Committed]:
    """:func:`commit_decision` for several distinct apps in two round trips, not 2 per app.

    The same cases and rules as the quick path of :func:`commit_decision`,
    taken for the whole batch at once: one ``MGET`` reads every stored state
    (all keys share the daemon's hash tag), the decisions that write nothing
    end there, one pipeline of ``SET NX`` writes the first baselines, and
    everything else (deployments, incidents, a stored state to replace, an
    unreadable state, a lost ``SET NX``) takes the full transaction of
    :func:`commit_decision`, which decides again from what it reads. The apps
    must be distinct: a second event of one app depends on what the first
    wrote. Results come in the order of ``batch``.
    """
    if len({(p.namespace, p.name) for p in batch}) != len(batch):
        raise ValueError("a batch holds each app at most once")
    state_keys = [keys.app_state(p.namespace, p.name) for p in batch]
    raws: list[bytes | str | None] = await redis.mget(state_keys) if batch else []
    results: list[Committed | None] = [None] * len(batch)
    baselines: list[tuple[int, Decision]] = []
    async with redis.pipeline(transaction=False) as pipe:
        for index, (pending, raw) in enumerate(zip(batch, raws, strict=True)):
            try:
                stored = load_state(raw)
            except CorruptState:
                continue  # the transaction logs it and starts a new baseline
            decision = pending.decide(stored)
            if not decision.changed and not decision.deployments and not decision.incidents:
                results[index] = Committed(decision)
                continue
            state = decision.state
            if raw is not None or state is None or decision.deployments or decision.incidents:
                continue
            ttl = (max(1, int(config.state_ttl.total_seconds()))
                   if state.deleted_at is not None else None)
            pipe.set(state_keys[index], state.dump(), nx=True, ex=ttl)
            baselines.append((index, decision))
        if baselines:
            written = await pipe.execute()
            for (index, decision), ok in zip(baselines, written, strict=True):
                if ok:
                    results[index] = Committed(decision)
    committed: list[Committed] = []
    for pending, result in zip(batch, results, strict=True):
        if result is None:
            result = await commit_decision(redis, keys, config, pending.namespace, pending.name,
                                           pending.decide, stage)
        committed.append(result)
    return committed
