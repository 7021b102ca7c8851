"""The isolated keyspace of ``run --dry-run``: the configured Redis is left as it was.

A dry run decides, resolves and prints like a real run, so it needs somewhere
to keep app state, dedupe claims, incident fingerprints and its streams. It
keeps them under ``<prefix>:dry-run:<random>`` and deletes them all when it
stops; a later dry run deletes what a crashed one left (a space whose
heartbeat key expired). Nothing is ever read from or written to the real
prefix, so a real run afterwards sees every record as if no dry run happened.
"""

from __future__ import annotations

import asyncio
import secrets

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from doraforwarder.backoff import wait_or_stop
from doraforwarder.keys import Keys
from doraforwarder.logging import get_logger

log = get_logger("daemon")

SEGMENT = "dry-run"
HEARTBEAT_TTL_S = 60
HEARTBEAT_EVERY_S = 20.0


def dry_run_keys(prefix: str) -> Keys:
    """Keys of a fresh, private dry-run space under ``prefix``."""
    return Keys(f"{prefix.rstrip(':')}:{SEGMENT}:{secrets.token_hex(6)}")


class DryRunSpace:
    """Claim, keep alive and finally delete one dry run's keys."""

    def __init__(self, redis: aioredis.Redis, base_prefix: str, keys: Keys) -> None:
        self.redis = redis
        self.base = f"{base_prefix.rstrip(':')}:{SEGMENT}:"
        self.keys = keys
        self.alive_key = f"{keys.prefix}:alive"
        self._task: asyncio.Task[None] | None = None

    async def start(self, stop: asyncio.Event) -> None:
        await self.redis.set(self.alive_key, "1", ex=HEARTBEAT_TTL_S)
        removed = await self.remove_leftovers()
        log.warning("dry run: nothing is sent to DevLake and the configured Redis is left as it "
                    "was; state lives under a private key prefix deleted at stop",
                    prefix=self.keys.prefix, leftovers_removed=removed)
        self._task = asyncio.create_task(self._heartbeat(stop), name="dry-run-heartbeat")

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not await wait_or_stop(stop, HEARTBEAT_EVERY_S):
            try:
                await self.redis.set(self.alive_key, "1", ex=HEARTBEAT_TTL_S)
            except RedisError:
                continue

    async def remove_leftovers(self) -> int:
        """Delete keys of dry runs that stopped without cleaning up; returns how many."""
        stale: list[str] = []
        alive: dict[str, bool] = {}
        async for key in self.redis.scan_iter(match=f"{self.base}*", count=500):
            name = _name(key)
            space = name[len(self.base):].split(":", 1)[0]
            if space not in alive:
                alive[space] = bool(await self.redis.exists(f"{self.base}{space}:alive"))
            if not alive[space]:
                stale.append(name)
        return await self._delete(stale)

    async def close(self) -> None:
        """Delete every key of this dry run (and stop its heartbeat)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        own = [_name(key) async for key in
               self.redis.scan_iter(match=f"{self.keys.prefix}:*", count=500)]
        await self._delete(own)

    async def _delete(self, names: list[str]) -> int:
        for start in range(0, len(names), 500):
            await self.redis.unlink(*names[start:start + 500])
        return len(names)


def _name(key: object) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)
