"""GitHub rate limits: read them from every answer, and wait instead of failing.

GitHub counts requests per resource (``core`` for most of the API, ``search``
for the search API, about 30 a minute). Every answer carries
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (epoch seconds); an
exhausted primary limit answers 403 or 429 with ``Remaining: 0``; a secondary
(abuse) limit answers 403 or 429 with ``Retry-After`` seconds. Both mean
"wait", never "this deployment failed".

:class:`RateLimitBoard` is shared by every client of one daemon (its
:class:`~doraforwarder.context.AppContext` owns it), so a limit learnt by one
resolver worker holds the others back too, and the wait gauge shows the
longest wait.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import Gauge

from doraforwarder.backoff import parse_retry_after
from doraforwarder.metrics import Metrics

SECONDARY_DEFAULT_WAIT = 60.0
"""GitHub's advice when a secondary limit gives no ``Retry-After``: wait a minute."""
CLOCK_SLACK = 0.01
"""A block ending within this many seconds is over (sleeps wake a hair early)."""


@dataclass(frozen=True)
class RateLimitInfo:
    resource: str
    remaining: int | None
    reset: float | None
    """Epoch seconds when ``remaining`` refills."""


def resource_of(path: str) -> str:
    """The rate-limit resource a request path counts against."""
    return "search" if path.startswith("/search/") else "core"


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def parse_rate_limit(headers: Mapping[str, str], default_resource: str) -> RateLimitInfo:
    remaining = _number(headers.get("x-ratelimit-remaining"))
    return RateLimitInfo(
        resource=headers.get("x-ratelimit-resource") or default_resource,
        remaining=None if remaining is None else int(remaining),
        reset=_number(headers.get("x-ratelimit-reset")),
    )


@dataclass(frozen=True)
class Throttle:
    """An answer that means "wait, then ask again"."""

    kind: Literal["primary", "secondary"]
    seconds: float | None
    """None: no hint from GitHub (use :data:`SECONDARY_DEFAULT_WAIT`)."""


def throttle_of(
    status: int, headers: Mapping[str, str], body: str, now: float
) -> Throttle | None:
    """Whether a 403/429 answer is a rate limit, and for how long."""
    if status not in (403, 429):
        return None
    retry_after = parse_retry_after(headers.get("retry-after"))
    if retry_after is not None:
        return Throttle("secondary", retry_after)
    info = parse_rate_limit(headers, "core")
    if info.remaining == 0:
        seconds = None if info.reset is None else max(0.0, info.reset - now)
        return Throttle("primary", seconds)
    if status == 429 or "rate limit" in body.lower():
        return Throttle("secondary", None)
    return None


@dataclass
class RateLimitBoard:
    """What one daemon knows about its GitHub rate limits, and who is waiting."""

    remaining_gauge: Gauge
    waiting_gauge: Gauge
    blocked_until: dict[str, float] = field(default_factory=dict)
    """Resource -> epoch seconds before which a request would be refused."""
    announced_unauthenticated: bool = False
    """The "no GITHUB_TOKEN" warning is logged once per daemon, not per worker."""
    _waits: dict[int, tuple[str, float]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.waiting_gauge.set_function(self.seconds_left)

    @classmethod
    def of(cls, metrics: Metrics) -> RateLimitBoard:
        """A new board reporting to ``metrics``' GitHub gauges."""
        return cls(metrics.github_rate_limit_remaining, metrics.github_rate_limit_waiting)

    def observe(self, info: RateLimitInfo, now: float) -> None:
        """Record the rate-limit headers of an answer (every answer has them)."""
        if info.remaining is None:
            return
        self.remaining_gauge.labels(info.resource).set(info.remaining)
        if info.remaining <= 0 and info.reset is not None and info.reset > now:
            self.blocked_until[info.resource] = info.reset
        elif info.remaining > 0:
            self.blocked_until.pop(info.resource, None)

    def block(self, resource: str, until: float) -> None:
        self.blocked_until[resource] = max(until, self.blocked_until.get(resource, 0.0))

    def wait_needed(self, resource: str, now: float) -> float:
        """Seconds to wait before asking ``resource`` again (0: go ahead)."""
        until = self.blocked_until.get(resource)
        if until is None:
            return 0.0
        if until - now <= CLOCK_SLACK:
            self.blocked_until.pop(resource, None)
            return 0.0
        return until - now

    def start_wait(self, resource: str, seconds: float) -> int:
        token = next(self._ids)
        self._waits[token] = (resource, time.time() + seconds)
        return token

    def is_waiting(self, resource: str) -> bool:
        """Someone already waits on ``resource`` (and said so in the log)."""
        return any(waiting == resource for waiting, _ in self._waits.values())

    def end_wait(self, token: int) -> None:
        self._waits.pop(token, None)

    def seconds_left(self) -> float:
        if not self._waits:
            return 0.0
        return max(0.0, max(until for _, until in self._waits.values()) - time.time())
