"""Capped exponential backoff with full jitter, and waits that stop on shutdown.

Shared by every retry loop (watches, Redis, GitHub, WebRCA, DevLake delivery)
so they all behave the same: the n-th consecutive failure waits a random time
in ``[0, min(cap, base * 2**n)]`` (AWS "full jitter"), which spreads replicas
and workers apart after a common outage.
"""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class Backoff:
    """Delays for consecutive failures; :meth:`reset` after a success."""

    def __init__(self, base: float = 1.0, cap: float = 300.0, jitter: bool = True) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.failures = 0

    def ceiling(self, failures: int | None = None) -> float:
        """The upper bound of the delay after ``failures`` failures (default: so far)."""
        n = self.failures if failures is None else failures
        return float(min(self.cap, self.base * (2.0 ** min(n, 62))))

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before retrying."""
        ceiling = self.ceiling()
        self.failures += 1
        return random.uniform(0, ceiling) if self.jitter else ceiling

    def reset(self) -> None:
        self.failures = 0


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first. Returns True when stopping."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def thread_wait_or_stop(stop: threading.Event, seconds: float) -> bool:
    """The same for code running in a thread (the Kubernetes client is synchronous)."""
    return stop.wait(max(0.0, seconds))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; None if unusable.

    One parser for every client (DevLake, GitHub, WebRCA, the Kubernetes API),
    so they all honour the same forms.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
