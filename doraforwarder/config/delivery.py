"""``delivery``: the DevLake sink's workers, retries and memory bounds.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import (
    ByteSize,
    Field,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
)


class DeliveryConfig(Section):
    workers: int = Field(default=4, ge=1, le=128)
    initial_backoff: Duration = timedelta(seconds=1)
    """First retry delay of a DevLake delivery."""
    max_backoff: Duration = timedelta(minutes=5)
    """Longest retry delay of a DevLake delivery; deliveries never give up."""
    claim_idle: Duration = timedelta(seconds=60)
    max_retry_after: Duration = timedelta(minutes=15)
    """Longest wait a DevLake ``Retry-After`` (429) is obeyed for: a peer asking for days
    (``Retry-After: 999999999``) must not park its target until a restart."""
    refused_max_held: int = Field(default=1000, ge=1)
    """Entries of one refused (401/403) target kept in memory; the rest of its backlog
    waits in Redis (parked in the consumer group) until DevLake accepts the target again."""
    refused_max_held_bytes: ByteSize = Field(default=ByteSize(8 * 2**20), ge=1)
    """And at most this much of their stored size (``8MiB``, ``512KiB`` or bytes): with
    ``deployment_commits: range`` one entry may be 100 KB in Redis, and the process grows by
    about 6 times what it holds, so a count alone does not bound memory. One entry is
    always held."""
    max_held_bytes: ByteSize = Field(default=ByteSize(16 * 2**20), ge=1)
    """The stored size of the entries held in memory for delivery (``16MiB``; the process
    grows by about 6 times that: 180 MB RSS in all at 16MiB, bench/held.py); the outbox
    beyond it waits in Redis, read as room frees. A refused target's entries are bounded
    by ``refused_max_held(_bytes)`` instead."""
    resolvers: int = Field(default=2, ge=1, le=64)
    """Workers turning detected deployments into payloads (GitHub look-ups)."""
