"""A Redis lease so that only one replica polls WebRCA at a time.

``SET key owner NX PX ttl`` takes it; the holder renews it while it works
and gives it back with a compare-and-delete script, so a holder whose lease
already expired can never delete (or extend) the lease of the next one.
"""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """One lease key; ``owner`` is random per instance, so restarts never inherit it."""

    def __init__(self, redis: aioredis.Redis, key: str, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError("lease ttl must be positive")
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.owner = secrets.token_hex(16)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        return bool(await self.redis.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """Extend the lease; False when it is no longer ours."""
        result = await self.redis.eval(_RENEW, 1, self.key, self.owner, str(self.ttl_ms))
        return bool(result)

    async def release(self) -> bool:
        """Give the lease back if it is still ours."""
        result = await self.redis.eval(_RELEASE, 1, self.key, self.owner)
        return bool(result)

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return str(value) if value is not None else None
