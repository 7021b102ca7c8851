"""Records into outbox entries: the one place that decides what DevLake is sent, and where.

Every producer (the resolver stage, the WebRCA poller, backfill) hands its
records to a :class:`Planner`, which routes them (``devlake/routing.py``),
builds and checks the contract payload once per target, and says which
records become dead letters because they break the contract. Where records
go when DevLake is off is decided here too (:func:`planning_router`).

Entries are built target by target (:meth:`Planner._deployment_entry`,
:meth:`Planner._issue_entries`), so a difference between targets (its own
URL kind, its own API key) is added in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis.asyncio.client import Pipeline

from doraforwarder.config import DevLakeConfig, Settings
from doraforwarder.devlake.issues import (
    build_detected_issue_payload,
    build_issue_payload,
    fingerprint,
)
from doraforwarder.devlake.payloads import (
    MAX_DEPLOYMENT_COMMITS,
    CommitRows,
    IssuePayload,
    build_deployment_payload,
    unchecked_deployment_body,
)
from doraforwarder.devlake.routing import Router, Target
from doraforwarder.devlake.target_ids import target_deployment_id
from doraforwarder.keys import Keys
from doraforwarder.logging import get_logger
from doraforwarder.outbox.entries import OutboxEntry, dead_fields
from doraforwarder.outbox.staging import stage_dead, stage_entries
from doraforwarder.records import DetectedDeployment, DetectedIncident, Incident, ResolvedCommit

DRY_RUN_TARGET = Target(kind="connection_name", value="dry-run", team="global")
"""Where ``--dry-run`` shows records when no DevLake target is configured."""


def planning_router(devlake: DevLakeConfig, dry_run: bool) -> Router | None:
    """Where records go; None when DevLake is off and this is no dry run.

    A dry run with DevLake off routes as configured when targets are
    configured, else to :data:`DRY_RUN_TARGET` (plus the configured teams),
    so the payloads are shown anyway.
    """
    if devlake.enabled:
        return Router(devlake)
    if not dry_run:
        return None
    try:
        return Router(devlake)
    except ValueError:
        placeholder = DevLakeConfig(enabled=False, connection_name=DRY_RUN_TARGET.value,
                                    teams=devlake.teams)
        return Router(placeholder)


log = get_logger(__name__)


@dataclass(frozen=True)
class DeploymentPlan:
    """What one resolved deployment becomes: entries to stage, or dead letters."""

    deployment: DetectedDeployment
    targets: list[Target]
    entries: list[OutboxEntry] = field(default_factory=list)
    dead: list[dict[str, str]] = field(default_factory=list)
    """Dead-letter fields (one per target) when the payload breaks the contract."""
    error: str | None = None


@dataclass(frozen=True)
class IncidentPlan:
    """What one incident becomes, with the fingerprint of what DevLake is told."""

    incident: Incident
    targets: list[Target]
    entries: list[OutboxEntry]
    fingerprint: str

    @property
    def incident_id(self) -> str:
        return self.incident.incident_id

    @property
    def target_keys(self) -> list[str]:
        return [target.key for target in self.targets]


class Planner:
    """Routes records and builds their outbox entries (pure, apart from :meth:`stage`)."""

    def __init__(self, devlake: DevLakeConfig, *, dry_run: bool = False,
                 incident_url: str = "{incident_id}", close_resolved: bool = False) -> None:
        self.router = planning_router(devlake, dry_run)
        self.commit_rows: CommitRows = devlake.deployment_commits
        self.incident_url = incident_url
        self.close_resolved = close_resolved

    @classmethod
    def from_settings(cls, settings: Settings, dry_run: bool) -> Planner:
        return cls(settings.integration.devlake, dry_run=dry_run,
                   incident_url=settings.webrca.incident_url,
                   close_resolved=settings.webrca.close_resolved)

    @property
    def active(self) -> bool:
        """False when records have nowhere to go (DevLake off, no dry run)."""
        return self.router is not None

    # --- deployments ---------------------------------------------------------------
    def deployment_targets(self, deployment: DetectedDeployment) -> list[Target]:
        return self.router.for_component(deployment.component) if self.router else []

    def plan_deployment(self, deployment: DetectedDeployment, commits: Sequence[ResolvedCommit],
                        source_id: str = "") -> DeploymentPlan:
        """Entries for each target; dead letters (from ``source_id``) if the contract fails.

        Every target gets the same body but for its id: the global target
        the deployment's id, each team target its own copy
        (:meth:`target_id`), because DevLake's dashboard joins incident links
        to deployments by id across projects. A deployment without commits is
        refused by DevLake: see :meth:`plan_without_commits`.
        """
        targets = self.deployment_targets(deployment)
        if len(commits) > MAX_DEPLOYMENT_COMMITS:
            log.warning("more commit rows than DevLake stores for one deployment: the oldest "
                        "left out (heads kept)", deployment=deployment.id, rows=len(commits),
                        kept=MAX_DEPLOYMENT_COMMITS)
        try:
            body = build_deployment_payload(deployment, commits, self.commit_rows).body()
        except ValidationError as exc:
            return self._dead_plan(deployment, targets, commits, source_id,
                                   f"invalid_payload: {exc}")
        entries = [self._deployment_entry(target, deployment, body) for target in targets]
        return DeploymentPlan(deployment, targets, entries)

    def plan_without_commits(self, deployment: DetectedDeployment, reason: str,
                             source_id: str = "") -> DeploymentPlan:
        """Dead letters (one per target) for a deployment with nothing to send as a commit.

        DevLake requires at least one deployment commit; such a deployment is
        kept where an operator sees it, with ``reason``, never dropped.
        """
        targets = self.deployment_targets(deployment)
        return self._dead_plan(deployment, targets, [], source_id,
                               f"no_commits: {reason}")

    def _dead_plan(self, deployment: DetectedDeployment, targets: list[Target],
                   commits: Sequence[ResolvedCommit], source_id: str,
                   reason: str) -> DeploymentPlan:
        raw = unchecked_deployment_body(deployment, commits, self.commit_rows)
        dead = [
            dead_fields(self._deployment_entry(target, deployment, raw).to_fields(),
                        source_id=source_id, reason=reason)
            for target in targets
        ]
        return DeploymentPlan(deployment, targets, dead=dead, error=reason)

    def target_id(self, target: Target, deployment_id: str) -> str:
        """The id ``target``'s copy of a deployment is sent under (see
        :func:`~doraforwarder.devlake.target_ids.target_deployment_id`): the global target's
        is the deployment's own id, a team target's names the team."""
        is_global = self.router is None or target.key == self.router.global_target.key
        return target_deployment_id(deployment_id, None if is_global else target.team)

    def _deployment_entry(self, target: Target, deployment: DetectedDeployment,
                          body: dict[str, Any]) -> OutboxEntry:
        record_id = self.target_id(target, deployment.id)
        return OutboxEntry(kind="deployment", target=target, record_id=record_id,
                           payload={**body, "id": record_id})

    # --- incidents -------------------------------------------------------------------
    def plan_incident(self, incident: Incident, component: str | None) -> IncidentPlan:
        """Entries for each target of ``incident`` (raises ValidationError: the contract fails)."""
        payload = build_issue_payload(incident, component, self.incident_url)
        targets = self.router.for_products(incident.products) if self.router else []
        return self._incident_plan(incident, payload, targets)

    def plan_component_incident(self, incident: Incident, component: str | None,
                                url: str | None = None) -> IncidentPlan:
        """Entries of an incident filed under a component (an Alertmanager alert).

        Routed as a deployment of ``component`` is (the global target and the
        teams whose ``argocd_components`` hold it; no component: the global
        target), so it lands in the projects whose change failure rate it
        belongs to. Raises ValidationError when the contract fails.
        """
        payload = build_issue_payload(incident, component, "{incident_id}")
        payload = payload.model_copy(update={"url": url or None})
        targets = self.router.for_component(component or "") if self.router else []
        return self._incident_plan(incident, payload, targets)

    def _incident_plan(self, incident: Incident, payload: IssuePayload,
                       targets: list[Target]) -> IncidentPlan:
        """The issue entries of ``payload`` for each target, and what they fingerprint."""
        body = payload.body()
        entries = [e for target in targets
                   for e in self._issue_entries(target, incident.incident_id, body,
                                                resolved=incident.is_resolved)]
        return IncidentPlan(incident, targets, entries,
                            fingerprint(incident, payload, [t.key for t in targets]))

    def plan_detected_incident(self, incident: DetectedIncident) -> list[OutboxEntry]:
        """Entries of an ArgoCD incident: one issue upsert per target of its component.

        The targets are a deployment's (the global target and the teams whose
        ``argocd_components`` hold the component), so the incident lands in
        the projects whose change failure rate it belongs to. A project target
        takes it through the connection its project route creates
        (``<projectName>_deployments``, by name), as a WebRCA incident. The
        issue key is the incident's stable key: its open and resolved upserts
        (and any redelivery) update one issue; ``webrca.close_resolved`` adds the
        close call after the resolved one, as for every other incident source.
        """
        targets = self.router.for_component(incident.component) if self.router else []
        body = build_detected_issue_payload(incident).body()
        return [entry for target in targets
                for entry in self._issue_entries(target, incident.key, body,
                                                 resolved=incident.status == "resolved")]

    def _issue_entries(self, target: Target, incident_id: str, body: dict[str, Any], *,
                       resolved: bool) -> list[OutboxEntry]:
        """The upsert, then (resolved, when enabled) the close call, in one order key."""
        order_key = f"issue:{target.key}:{incident_id}"
        entries = [OutboxEntry(kind="issue", target=target, record_id=incident_id,
                               payload=body, order_key=order_key)]
        if self.close_resolved and resolved:
            entries.append(OutboxEntry(kind="close", target=target, record_id=incident_id,
                                       payload={}, order_key=order_key))
        return entries

    # --- staging ---------------------------------------------------------------------
    def stage(self, pipe: Pipeline, keys: Keys,
              plans: Iterable[DeploymentPlan | IncidentPlan]) -> None:
        """Queue the entries and dead letters of ``plans`` on ``pipe`` (a transaction)."""
        for plan in plans:
            stage_entries(pipe, keys, plan.entries)
            if isinstance(plan, DeploymentPlan):
                for fields in plan.dead:
                    stage_dead(pipe, keys, fields)
