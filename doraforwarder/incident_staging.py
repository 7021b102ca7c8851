"""Staging incidents exactly once: what every incident source shares.

An incident source (the WebRCA poller, the Alertmanager receiver) hands a
planner (``devlake.plan.Planner``) its incidents and stages, in one
``MULTI``/``EXEC``, the outbox entries of those whose fingerprint (what
DevLake is told, and where) changed, together with the new fingerprints and
whatever state of its own the source keeps. The transaction ``WATCH``es the
fingerprints and the source's own keys, so a crash can neither lose a change
nor stage it twice, two replicas never stage the same change, and a restart
sends nothing already sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from doraforwarder.keys import Keys
from doraforwarder.records import Incident

STAGE_ATTEMPTS = 10
"""Optimistic-lock retries of one transaction (a peer or a lease renewal can collide)."""


class PlannedIncident(Protocol):
    """What the staging needs to know of a planned incident."""

    @property
    def incident(self) -> Incident: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def target_keys(self) -> list[str]: ...


Plan = TypeVar("Plan", bound=PlannedIncident)


class IncidentStager(Protocol):
    """Queues the outbox entries of planned incidents on a transaction (the planner)."""

    def stage(self, pipe: Pipeline, keys: Keys, plans: Iterable[Any]) -> None: ...


class IncidentPlanning(Protocol[Plan]):
    """Turns incidents into staged outbox entries (``devlake.plan.Planner``, handed in)."""

    @property
    def active(self) -> bool:
        """False when incidents have nowhere to go."""
        ...

    def plan_incident(self, incident: Incident, component: str | None) -> Plan:
        """Raises ``pydantic.ValidationError`` when the incident breaks the contract."""
        ...

    def stage(self, pipe: Pipeline, keys: Keys, plans: Iterable[Plan]) -> None: ...


@dataclass
class Batch:
    """What a source wants staged, decided after ``WATCH`` from what it read."""

    plans: Sequence[PlannedIncident]
    writes: Callable[[Pipeline], None] | None = None
    """The source's own state, queued inside the transaction (None: nothing)."""


@dataclass(frozen=True)
class Staged:
    changed: list[PlannedIncident]
    previous: dict[str, str | None]
    """The fingerprint each changed incident had before (None: new)."""


async def stage_incidents(redis: aioredis.Redis, keys: Keys, planner: IncidentStager,
                          prepare: Callable[[Pipeline], Awaitable[Batch]],
                          watch: Sequence[str] = ()) -> Staged:
    """Stage the plans ``prepare`` returns whose fingerprints changed, in one transaction.

    ``prepare`` runs after ``WATCH`` (on the pipeline in immediate mode: it
    may read ``watch``ed keys and raise to abandon); it is run again when a
    watched key changed meanwhile. Raises RedisError after
    :data:`STAGE_ATTEMPTS` collisions.
    """
    for _ in range(STAGE_ATTEMPTS):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(keys.incident_fingerprints, *watch)
                batch = await prepare(pipe)
                plans = list({p.incident.incident_id: p for p in batch.plans}.values())
                ids = [p.incident.incident_id for p in plans]
                stored = await pipe.hmget(keys.incident_fingerprints, ids) if ids else []
                changed = [p for p, old in zip(plans, stored, strict=True)
                           if old != p.fingerprint]
                if not changed and batch.writes is None:
                    return Staged([], {})
                pipe.multi()  # type: ignore[no-untyped-call]
                planner.stage(pipe, keys, changed)
                if changed:
                    pipe.hset(keys.incident_fingerprints,
                              mapping={p.incident.incident_id: p.fingerprint for p in changed})
                if batch.writes is not None:
                    batch.writes(pipe)
                await pipe.execute()
            except WatchError:
                continue
        previous = {i: (old.decode() if isinstance(old, bytes) else old)
                    for i, old in zip(ids, stored, strict=True)}
        return Staged(changed, previous)
    raise RedisError("incident fingerprints kept changing under this transaction")
