"""The Alertmanager receiver: a notification in, its incident changes staged exactly once.

The HTTP handler (``server.py``) reads and parses the body and hands the
notification here. Each subject (alert or group) has its latest episode in
Redis; the decision (:func:`~doraforwarder.alertmanager.episodes.decide`)
and the staging run inside one transaction of the shared incident staging
(:func:`~doraforwarder.incident_staging.stage_incidents`), which ``WATCH``es
the subjects' keys and the fingerprints: Alertmanager's retries and repeats,
two replicas receiving from an HA pair, and restarts neither lose an
incident nor stage it twice. The subject ``WATCH`` is not covered by the
fingerprints one: two updates of a group that leave what DevLake is told
unchanged (an alert joining an open episode) write no fingerprint, and without
it the later ``EXEC`` would overwrite the alerts the other one recorded
(``tests/test_alertmanager_subject_race.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError
from redis.asyncio.client import Pipeline

from doraforwarder.alertmanager.episodes import Episode, decide, observations, to_incident
from doraforwarder.alertmanager.matchers import parse_matchers
from doraforwarder.alertmanager.webhook import Notification
from doraforwarder.context import AppContext
from doraforwarder.incident_staging import Batch, PlannedIncident, stage_incidents
from doraforwarder.keys import Keys
from doraforwarder.logging import get_logger
from doraforwarder.records import Incident

log = get_logger("alertmanager")


class AlertPlanning(Protocol):
    """Incidents filed under a component into outbox entries (``devlake.plan.Planner``)."""

    @property
    def active(self) -> bool: ...

    def plan_component_incident(self, incident: Incident, component: str | None,
                                url: str | None = None) -> Any: ...

    def stage(self, pipe: Pipeline, keys: Keys, plans: Any) -> None: ...


@dataclass(frozen=True)
class Received:
    """What one notification did."""

    alerts: int
    incidents: int
    """Alerts that are incidents (matched ``alertmanager.matchers``)."""
    staged: int
    """Incident upserts staged for DevLake (new or changed)."""


class AlertReceiver:
    """Turns notifications into staged incidents; one per daemon, shared by requests."""

    def __init__(self, context: AppContext, planner: AlertPlanning) -> None:
        self.context = context
        self.settings = context.settings.alertmanager
        self.planner = planner
        self.matchers = parse_matchers(self.settings.matchers)

    async def receive(self, notification: Notification) -> Received:
        """Stage what ``notification`` changes; RedisError when Redis fails (answer 503)."""
        settings = self.settings
        keys = self.context.keys
        seen = observations(notification, self.matchers, settings.incident_key)
        incidents = sum(len(o.alerts) for o in seen)
        if not seen:
            return Received(len(notification.alerts), 0, 0)
        subject_keys = [keys.alertmanager_subject(o.subject) for o in seen]
        ttl = max(1, int(settings.state_ttl.total_seconds()))

        async def prepare(pipe: Pipeline) -> Batch:
            stored = await pipe.mget(subject_keys)
            plans: list[PlannedIncident] = []
            states: dict[str, str] = {}
            for key, observation, text in zip(subject_keys, seen, stored, strict=True):
                state = Episode.from_json(text) if text else None
                episode, changes = decide(state, observation, settings.incident_key)
                component = observation.labels.get(settings.component_label) or None
                for change in changes:
                    incident = to_incident(change, settings.title)
                    try:
                        plans.append(self.planner.plan_component_incident(
                            incident, component, observation.url or None))
                    except ValidationError as exc:
                        log.error("alert breaks the DevLake issue contract; not forwarded",
                                  incident_id=incident.incident_id,
                                  detail=str(exc).replace("\n", "; "))
                if episode is not None:
                    states[key] = episode.to_json()

            resolved = [p.incident.incident_id for p in plans if p.incident.is_resolved]

            def writes(pipe: Pipeline) -> None:
                for key, value in states.items():
                    pipe.set(key, value, ex=ttl)
                if resolved:
                    # A resolved episode is final: its subject's state answers every later
                    # notification of it, so its fingerprint need not stay (the hash holds
                    # open alert incidents only, however many alerts come and go).
                    pipe.hdel(keys.incident_fingerprints, *resolved)

            return Batch(plans, writes if states else None)

        staged = await stage_incidents(self.context.redis, keys, self.planner, prepare,
                                       watch=subject_keys)
        self.context.metrics.alertmanager_incidents_staged.inc(len(staged.changed))
        for plan in staged.changed:
            log.info("incident staged for devlake", source="alertmanager",
                     incident_id=plan.incident.incident_id, status=plan.incident.status,
                     targets=plan.target_keys,
                     new=staged.previous.get(plan.incident.incident_id) is None)
        return Received(len(notification.alerts), incidents, len(staged.changed))
