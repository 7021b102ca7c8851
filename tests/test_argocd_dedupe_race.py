"""Two replicas (or two clusters' apps) claiming one rollout at the same moment, on real Redis.

Whether the same component+revision synced to two clusters is one deployment
or two is decided by the dedupe claim, and only the ``WATCH`` on the claim's
key keeps two writers from both finding it free: this test forces the race
(the other cluster's app commits between this one's read of the claim and its
``EXEC``) and fails if that ``WATCH`` is removed from
:func:`doraforwarder.argocd.persist.commit_decision`.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from doraforwarder.argocd.detect import Decision, decide
from doraforwarder.argocd.parse import parse_application
from doraforwarder.argocd.persist import Committed, commit_decision
from doraforwarder.argocd.state import AppState
from doraforwarder.config import ArgoCDConfig
from doraforwarder.keys import Keys
from doraforwarder.records import DetectedDeployment, DetectedIncident
from doraforwarder.streams import read_detected
from doraforwarder.testing.argocd_objects import LiveApp, image, sha
from doraforwarder.testing.redis_server import RedisServer

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CONFIG = ArgoCDConfig(namespaces=["argocd"], known_clusters=["east", "west"])
KEYS = Keys("dora-metrics")


def synced(name: str) -> Decision:
    """The decision of ``name`` (one cluster's app of component svc) syncing revision r1."""
    app = LiveApp(name, path="components/svc/production")
    state: AppState | None = None
    decision = None
    for obj in [app.snapshot(), *app.sync(sha("r1"), [image("svc", "r1")])]:
        decision = decide(parse_application(obj), state, CONFIG, NOW)
        state = decision.state
    assert decision is not None and len(decision.deployments) == 1
    return decision


class Staging:
    """Stages onto the real deployments stream; ``before_first`` runs inside the first
    transaction, after the dedupe claim was read and before ``EXEC``."""

    def __init__(self, before_first: Any = None) -> None:
        self.before_first = before_first

    def deployment(self, pipe: Pipeline, deployment: DetectedDeployment) -> None:
        hook, self.before_first = self.before_first, None
        if hook is not None:
            hook()
        pipe.xadd(KEYS.deployments_stream, {"deployment": deployment.model_dump_json()})

    def incident(self, pipe: Pipeline, incident: DetectedIncident) -> None:
        raise AssertionError("no incident expected")


async def commit(url: str, name: str, decision: Decision, stage: Staging) -> Committed:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return await commit_decision(client, KEYS, CONFIG, "argocd", name,
                                     lambda _stored: decision, stage)
    finally:
        await client.aclose()


async def test_a_claim_taken_between_read_and_exec_makes_the_rollout_one_deployment(
    redis_server: RedisServer, redis_client: aioredis.Redis,
) -> None:
    east, west = synced("svc-east"), synced("svc-west")

    def west_commits_now() -> None:
        """The west app (another replica) commits its claim while east's EXEC is pending."""
        thread = threading.Thread(target=asyncio.run, args=(
            commit(redis_server.url, "svc-west", west, Staging()),))
        thread.start()
        thread.join(10)
        assert not thread.is_alive()

    committed = await commit(redis_server.url, "svc-east", east, Staging(west_commits_now))

    staged = [read_detected(fields) for _, fields in
              await redis_client.xrange(KEYS.deployments_stream)]
    assert [d.app_name for d in staged] == ["svc-west"], \
        "one rollout on two clusters must be one deployment"
    assert committed.conflicts == 1 and committed.staged == []
    assert committed.dedupe_reasons and "duplicate of argocd/svc-west" in " ".join(
        committed.dedupe_reasons)
    # east's own state still advanced (its sync is recorded, just not sent twice)
    assert await redis_client.get(KEYS.app_state("argocd", "svc-east")) is not None
