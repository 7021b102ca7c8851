"""One sentence for a Redis failure, telling a refused password from an unreachable server.

A wrong ``REDIS_PASSWORD`` reported as "cannot reach Redis" sends the operator
to check the network; Redis answered, and refused the credentials. Neither
sentence ever holds the password (only the masked address).
"""

from __future__ import annotations

from redis.exceptions import AuthenticationError

from doraforwarder.config import RedisConfig, url_passwords


def redis_failure(exc: BaseException, config: RedisConfig) -> str:
    """What went wrong talking to ``config``'s Redis, for one stderr line or a check."""
    where = config.display_url()
    if isinstance(exc, AuthenticationError) or "NOAUTH" in str(exc) \
            or "WRONGPASS" in str(exc):
        if config.password or url_passwords(config.url or ""):
            return (f"Redis at {where} refused the password (authentication failed): check "
                    "REDIS_PASSWORD (or storage.redis.password / username)")
        return (f"Redis at {where} requires a password (authentication failed): set "
                "REDIS_PASSWORD")
    return f"cannot reach Redis at {where}: {type(exc).__name__}"
