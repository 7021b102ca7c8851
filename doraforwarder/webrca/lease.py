"""A Redis lease so that only one replica polls WebRCA at a time.

It is redis-py's :class:`~redis.asyncio.lock.Lock` (``SET NX PX`` to take it,
registered Lua scripts to extend and release it by token), so a holder whose
lease already expired can never delete or extend the lease of the next one.
This class only adds the vocabulary the poller speaks: a non-blocking
``acquire``, ``renew`` and ``release`` that answer False instead of raising
when the lease is not (or no longer) ours, and the owner token, which the
poller's staging transaction compares with the key.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError


class RedisLease:
    """One lease key; ``owner`` is random per instance, so restarts never inherit it."""

    def __init__(self, redis: aioredis.Redis, key: str, ttl: timedelta) -> None:
        if ttl <= timedelta(0):
            raise ValueError("lease ttl must be positive")
        self.redis = redis
        self.key = key
        self.ttl = ttl
        self.owner = secrets.token_hex(16)
        # thread_local=False: the renewal task and the poll share the token.
        self._lock = Lock(redis, key, timeout=ttl.total_seconds(), thread_local=False)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (never waits)."""
        return bool(await self._lock.acquire(blocking=False, token=self.owner))

    async def renew(self) -> bool:
        """Reset the lease to its full TTL; False when it is no longer ours."""
        try:
            await self._lock.reacquire()
        except LockError:  # expired and gone, taken by another replica, or never ours
            return False
        return True

    async def release(self) -> bool:
        """Give the lease back if it is still ours."""
        try:
            await self._lock.release()
        except LockError:
            return False
        return True

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return str(value) if value is not None else None
