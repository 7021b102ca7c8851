"""From a detected deployment to outbox entries: resolve commits, build, route.

Detection stages a :class:`~doraforwarder.records.DetectedDeployment` on the
``deployments`` stream in the same Redis transaction as its state change
(:func:`stage_detected`). Resolver workers read that stream with a consumer
group, resolve commits (GitHub look-ups may wait for rate limits), build the
DevLake payload, and in one transaction stage one outbox entry per target and
acknowledge the stream entry. A crash at any point leaves the entry pending;
it is reclaimed and, ids being deterministic, redone as an upsert.
"""

from __future__ import annotations

import asyncio

from redis.asyncio.client import Pipeline

from doraforwarder.context import AppContext
from doraforwarder.records import DetectedDeployment
from doraforwarder.store import Keys

FIELD = "deployment"


def stage_detected(pipe: Pipeline, keys: Keys, deployment: DetectedDeployment) -> None:
    """Queue the XADD of ``deployment`` on ``pipe`` (a transaction the caller executes)."""
    pipe.xadd(keys.deployments_stream, {FIELD: deployment.model_dump_json()})


def read_detected(fields: dict[str, str]) -> DetectedDeployment:
    return DetectedDeployment.model_validate_json(fields[FIELD])


class ResolverPool:
    """Placeholder until issue 4/5 land: consumes nothing."""

    name = "resolver"

    def __init__(self, context: AppContext) -> None:
        self.context = context

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
