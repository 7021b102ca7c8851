"""The Redis client, built from ``storage.redis``.

Everything durable (app state, dedupe claims, streams, the outbox, incident
fingerprints) lives in Redis; this module is the one place that turns the
configuration into a client.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from doraforwarder.config import RedisConfig


def connect(config: RedisConfig) -> aioredis.Redis:
    """An asyncio client; it connects lazily, so a down Redis is not an error here.

    Callers see connection errors on first use and retry with
    :mod:`doraforwarder.backoff`; the daemon reports not-ready meanwhile.
    """
    client: aioredis.Redis = aioredis.Redis.from_url(
        config.connection_url(),
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return client
