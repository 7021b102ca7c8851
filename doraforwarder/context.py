"""What every part of a running daemon shares: configuration, Redis, metrics, health.

Sources and workers receive one :class:`AppContext`; nothing reaches for
globals, so tests can run several daemons side by side.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis

from doraforwarder.commits.ratelimit import RateLimitBoard
from doraforwarder.config import LoadedConfig, Settings
from doraforwarder.inventory import Inventory
from doraforwarder.keys import Keys
from doraforwarder.logging import get_logger
from doraforwarder.loss_window import Unconfirmed
from doraforwarder.metrics import Metrics

log = get_logger("daemon")


STARTUP_CONDITIONS = frozenset({"argocd"})
"""Conditions that hold the daemon out of its Service only until they are first met
(the first complete list of Applications): later trouble shows in status, not here."""
GRACE_CONDITIONS = frozenset({"redis"})
"""Conditions that block readiness once unmet for longer than ``server.ready_grace``."""
ESSENTIAL_CONDITIONS = frozenset({"config"})
"""Conditions that block readiness whenever unmet: the process cannot work at all."""


class Readiness:
    """Named conditions, and which of them ``/readyz`` answers 503 for.

    The daemon serves nothing but its probes and metrics, so readiness only
    says whether this process can work: it is not ready while starting (a
    :data:`STARTUP_CONDITIONS` never met yet), when Redis has been unreachable
    for longer than the grace period, or when an :data:`ESSENTIAL_CONDITIONS`
    fails. Every other condition (WebRCA's token, DevLake refusing a key) is
    advisory: listed by :meth:`reasons` and in ``/api/v1/status``, never a 503,
    so an outside outage neither hides the metrics that show it nor blocks
    node drains. Each reason is a short sentence an operator can act on.
    """

    def __init__(self, grace_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_seconds = grace_seconds
        self._clock = clock
        self._reasons: dict[str, str | None] = {}
        self._unmet_since: dict[str, float] = {}
        self._met_once: set[str] = set()

    def require(self, name: str, reason: str) -> None:
        """Declare a condition that is not met yet."""
        if name not in self._reasons:
            self.not_ready(name, reason)

    def ready(self, name: str) -> None:
        self._reasons[name] = None
        self._unmet_since.pop(name, None)
        self._met_once.add(name)

    def not_ready(self, name: str, reason: str) -> None:
        self._reasons[name] = reason
        self._unmet_since.setdefault(name, self._clock())

    def forget(self, name: str) -> str | None:
        """Drop a condition; returns why it was unmet (None if it was met or never declared)."""
        self._unmet_since.pop(name, None)
        return self._reasons.pop(name, None)

    def is_ready(self, name: str | None = None) -> bool:
        """With a name: whether that condition is declared and met. Without: ``/readyz`` is 200.

        A name never declared (or forgotten) is not ready: a caller waiting on a
        condition before its owner declared it must keep waiting, not pass.
        """
        if name is not None:
            return name in self._reasons and self._reasons[name] is None
        return not self.blocking_reasons()

    def reasons(self) -> list[str]:
        """Every unmet condition, blocking or advisory."""
        return [f"{name}: {reason}" for name, reason in sorted(self._reasons.items()) if reason]

    def _blocks(self, name: str) -> bool:
        if name in ESSENTIAL_CONDITIONS:
            return True
        if name in STARTUP_CONDITIONS:
            return name not in self._met_once
        if name in GRACE_CONDITIONS:
            if name not in self._met_once:
                return True
            since = self._unmet_since.get(name, self._clock())
            return self._clock() - since >= self.grace_seconds
        return False

    def blocking_reasons(self) -> list[str]:
        """The unmet conditions that make ``/readyz`` answer 503."""
        return [f"{name}: {reason}" for name, reason in sorted(self._reasons.items())
                if reason and self._blocks(name)]

    def advisory_reasons(self) -> list[str]:
        """Unmet conditions that do not take the daemon out of its Service."""
        return [f"{name}: {reason}" for name, reason in sorted(self._reasons.items())
                if reason and not self._blocks(name)]


@dataclass
class DependencyState:
    """What the daemon last learnt of one dependency."""

    up: bool | None = None
    """None until the first exchange."""
    since: float | None = None
    """Unix time of the last change between up and down."""
    last_error: str | None = None
    last_success: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": "unknown" if self.up is None else ("up" if self.up else "down"),
            "since": _iso(self.since),
            "last_error": self.last_error,
            "last_success": _iso(self.last_success),
        }


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


class Dependencies:
    """Up/down of Redis, Kubernetes, DevLake, GitHub and WebRCA, for status and logs.

    Fed by :meth:`Metrics.mark_success` / :meth:`Metrics.mark_failure` (which
    also set the ``doraforwarder_dependency_*`` gauges), so every client that
    reports to the metrics reports here too. A change is logged once, with its
    cause; a repeated failure with the same cause is not logged again.
    """

    def __init__(self) -> None:
        self._states: dict[str, DependencyState] = {}

    def expect(self, name: str) -> None:
        """List a dependency the configuration uses, before any exchange with it."""
        self._states.setdefault(name, DependencyState())

    def record(self, name: str, ok: bool, error: str = "") -> None:
        state = self._states.setdefault(name, DependencyState())
        now = time.time()
        if ok:
            state.last_success = now
            if state.up is not True:
                if state.up is False:
                    log.info("dependency up again", dependency=name,
                                down_for_s=round(now - (state.since or now), 1))
                state.up, state.since = True, now
            return
        cause = error or "failed"
        if state.up is not False or cause != state.last_error:
            log.warning("dependency down", dependency=name, cause=cause)
        if state.up is not False:
            state.since = now
        state.up, state.last_error = False, cause

    def state(self, name: str) -> DependencyState:
        return self._states.get(name, DependencyState())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: state.as_dict() for name, state in sorted(self._states.items())}


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
    outbox_oldest_age_seconds: float = 0.0
    redis: dict[str, Any] | None = None
    """Topology, current master or node, last error and reconnects (see storage.RedisWatch)."""
    devlake_targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """DevLake targets whose entries wait (refused key, connection not created yet), by key."""
    redis_data_lost: dict[str, Any] | None = None
    """The last time this process found Redis had lost its data (see storage.report_data_lost)."""
    redis_loss_backfill: dict[str, Any] | None = None
    """The backfill this process ran after the last loss (see ops.loss_backfill)."""
    alertmanager: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``last_accepted`` and ``last_refused`` notification of this process (server.py)."""

    def snapshot(self) -> dict[str, Any]:
        return {
            "watched_namespaces": list(self.watched_namespaces),
            "apps_tracked": self.apps_tracked,
            "apps_by_environment": dict(self.apps_by_environment),
            "last_deployments": list(self.recent_deployments),
            "outbox_depth": self.outbox_depth,
            "outbox_oldest_age_seconds": round(self.outbox_oldest_age_seconds, 3),
            "dead_letters": self.dead_letters,
            "last_webrca_poll": self.last_webrca_poll,
            "sources": dict(self.sources),
            **({"redis": dict(self.redis)} if self.redis is not None else {}),
            "devlake_targets": {key: dict(value) for key, value in self.devlake_targets.items()},
            "redis_data_lost": dict(self.redis_data_lost) if self.redis_data_lost else None,
            "redis_loss_backfill": (dict(self.redis_loss_backfill)
                                    if self.redis_loss_backfill else None),
            **({"alertmanager": {key: dict(value) for key, value in self.alertmanager.items()}}
               if self.alertmanager else {}),
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
    dependencies: Dependencies = field(default_factory=Dependencies)
    dry_run: bool = False
    """Print payloads as JSON lines instead of sending them to DevLake."""
    started_at: float = field(default_factory=time.time)
    inventory: Inventory = field(default_factory=Inventory)
    unconfirmed: Unconfirmed = field(default_factory=Unconfirmed)
    """Deployments this process staged and has not seen delivered (for the backfill after a
    Redis data loss, see loss_window)."""
    """What the ArgoCD watch last saw of each Application (served by the inventory API)."""
    github_rate_limits: RateLimitBoard = field(init=False)
    """GitHub's rate limits as this daemon learnt them, shared by all its GitHub clients."""

    def __post_init__(self) -> None:
        self.github_rate_limits = RateLimitBoard.of(self.metrics)
        self.readiness.grace_seconds = self.settings.server.ready_grace.total_seconds()
        self.metrics.on_dependency = self.dependencies.record
        for name in expected_dependencies(self.settings, self.dry_run):
            self.dependencies.expect(name)

    @property
    def settings(self) -> Settings:
        return self.config.settings


def expected_dependencies(settings: Settings, dry_run: bool = False) -> list[str]:
    """The dependencies this configuration talks to (listed in status from the start)."""
    names = ["redis"]
    if settings.argocd.enabled:
        names += ["kubernetes", "github"]
    if settings.webrca.enabled:
        names.append("webrca")
    if settings.integration.devlake.enabled and not dry_run:
        names.append("devlake")
    return names


class Service(Protocol):
    """A long-running part of the daemon (a source or a pool of workers).

    ``run`` returns when ``stop`` is set, leaving unfinished work safely in
    Redis (the outbox or a stream) for the next start.
    """

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...
