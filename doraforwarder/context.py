"""What every part of a running daemon shares: configuration, Redis, metrics, health.

Sources and workers receive one :class:`AppContext`; nothing reaches for
globals, so tests can run several daemons side by side.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from doraforwarder.commits.ratelimit import RateLimitBoard
from doraforwarder.config import LoadedConfig, Settings
from doraforwarder.inventory import Inventory
from doraforwarder.keys import Keys
from doraforwarder.metrics import Metrics


class Readiness:
    """Named conditions that must all hold for ``/readyz`` to answer 200.

    A part of the daemon registers its condition as not ready when it starts
    and flips it as it learns (Redis answers, the watch runs, DevLake accepts
    the token). Each reason is a short sentence an operator can act on.
    """

    def __init__(self) -> None:
        self._reasons: dict[str, str | None] = {}

    def require(self, name: str, reason: str) -> None:
        """Declare a condition that is not met yet."""
        self._reasons.setdefault(name, reason)

    def ready(self, name: str) -> None:
        self._reasons[name] = None

    def not_ready(self, name: str, reason: str) -> None:
        self._reasons[name] = reason

    def forget(self, name: str) -> None:
        self._reasons.pop(name, None)

    def is_ready(self, name: str | None = None) -> bool:
        if name is not None:
            return self._reasons.get(name) is None
        return all(reason is None for reason in self._reasons.values())

    def reasons(self) -> list[str]:
        return [f"{name}: {reason}" for name, reason in sorted(self._reasons.items()) if reason]


@dataclass
class StatusBoard:
    """In-memory facts shown by ``GET /api/v1/status``; parts update their own fields."""

    watched_namespaces: list[str] = field(default_factory=list)
    apps_tracked: int = 0
    apps_by_environment: dict[str, int] = field(default_factory=dict)
    """Watched Applications per DORA environment they are classified in."""
    recent_deployments: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))
    outbox_depth: int = 0
    dead_letters: int = 0
    last_webrca_poll: dict[str, Any] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    """Source name -> running | starting | stopped | error text."""
    redis: dict[str, Any] | None = None
    """Topology, current master or node, last error and reconnects (see storage.RedisWatch)."""
    devlake_targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """DevLake targets whose entries wait (refused key, connection not created yet), by key."""

    def snapshot(self) -> dict[str, Any]:
        return {
            "watched_namespaces": list(self.watched_namespaces),
            "apps_tracked": self.apps_tracked,
            "apps_by_environment": dict(self.apps_by_environment),
            "last_deployments": list(self.recent_deployments),
            "outbox_depth": self.outbox_depth,
            "dead_letters": self.dead_letters,
            "last_webrca_poll": self.last_webrca_poll,
            "sources": dict(self.sources),
            **({"redis": dict(self.redis)} if self.redis is not None else {}),
            "devlake_targets": {key: dict(value) for key, value in self.devlake_targets.items()},
        }


@dataclass
class AppContext:
    """Shared handles of one daemon instance."""

    config: LoadedConfig
    redis: aioredis.Redis
    keys: Keys
    metrics: Metrics = field(default_factory=Metrics)
    readiness: Readiness = field(default_factory=Readiness)
    status: StatusBoard = field(default_factory=StatusBoard)
    dry_run: bool = False
    """Print payloads as JSON lines instead of sending them to DevLake."""
    started_at: float = field(default_factory=time.time)
    inventory: Inventory = field(default_factory=Inventory)
    """What the ArgoCD watch last saw of each Application (served by the inventory API)."""
    github_rate_limits: RateLimitBoard = field(init=False)
    """GitHub's rate limits as this daemon learnt them, shared by all its GitHub clients."""

    def __post_init__(self) -> None:
        self.github_rate_limits = RateLimitBoard.of(self.metrics)

    @property
    def settings(self) -> Settings:
        return self.config.settings


class Service(Protocol):
    """A long-running part of the daemon (a source or a pool of workers).

    ``run`` returns when ``stop`` is set, leaving unfinished work safely in
    Redis (the outbox or a stream) for the next start.
    """

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...
