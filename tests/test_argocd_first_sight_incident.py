"""An app first seen mid-sync and Degraded for long opens its incident at once (issue 19, 9).

The decision holds an incident and no deployment, on an app without stored
state: the quick paths (one app, and a batch) once wrote the baseline with
``SET NX`` and dropped the incident, so DevLake heard of it only when it
resolved. Real redis-server, real detection.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from doraforwarder.argocd.detect import decide
from doraforwarder.argocd.model import parse_time
from doraforwarder.argocd.parse import parse_application
from doraforwarder.argocd.persist import Pending, commit_batch, commit_decision
from doraforwarder.argocd.state import load_state
from doraforwarder.config import ArgoCDConfig
from doraforwarder.keys import Keys
from doraforwarder.records import DetectedDeployment, DetectedIncident
from doraforwarder.testing.argocd_objects import LiveApp, image, sha

KEYS = Keys("first-sight")
ON = ArgoCDConfig(namespaces=["argocd"], failures_as_incidents=True)


class RecordingStage:
    def __init__(self) -> None:
        self.incidents: list[DetectedIncident] = []

    def deployment(self, pipe: Any, deployment: DetectedDeployment) -> None:
        pipe.rpush("staged", deployment.id)

    def incident(self, pipe: Any, incident: DetectedIncident) -> None:
        self.incidents.append(incident)
        pipe.rpush("staged", incident.key)


def degraded_mid_sync() -> Any:
    """Degraded for an hour, a sync running: decided ten minutes after its last write."""
    app = LiveApp("svc")
    app.refresh()
    app.set_health("Degraded", record_transition=True)
    app.advance(timedelta(hours=1))
    running = app.sync(sha("r1"), [image("svc", "r1")], health="Degraded")[1]
    now = parse_time(running["status"]["reconciledAt"]) + timedelta(minutes=10)
    view = parse_application(running)
    return lambda stored: decide(view, stored, ON, now)


@pytest.mark.parametrize("batched", [False, True], ids=["one", "batch"])
async def test_an_incident_opened_at_first_sight_is_staged(
        redis_client: aioredis.Redis, batched: bool) -> None:
    decide_fn = degraded_mid_sync()
    decision = decide_fn(None)
    assert len(decision.incidents) == 1 and not decision.deployments  # the case itself
    stage = RecordingStage()
    if batched:
        (committed,) = await commit_batch(redis_client, KEYS, ON,
                                          [Pending("argocd", "svc", decide_fn)], stage)
    else:
        committed = await commit_decision(redis_client, KEYS, ON, "argocd", "svc", decide_fn,
                                          stage)
    assert [i.status for i in stage.incidents] == ["open"]
    assert await redis_client.lrange("staged", 0, -1) == [stage.incidents[0].key]
    assert committed.decision.incidents == stage.incidents
    state = load_state(await redis_client.get(KEYS.app_state("argocd", "svc")))
    assert state is not None and state.degraded is not None and state.degraded.opened
