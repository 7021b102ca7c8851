"""Plain records that cross stage boundaries (and Redis) between the pipeline steps.

``DetectedDeployment`` is what ArgoCD detection decides: everything known about
one sync without any network look-up. Commit resolution turns it into
``ResolvedCommit`` rows; the DevLake payload models (``devlake/payloads.py``)
turn both into the contract. An :class:`Incident` is what a source knows of
an incident; ``devlake/issues.py`` makes it a DevLake issue. Deployment
records are JSON round-trippable so they can wait in Redis streams across
restarts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Result = Literal["SUCCESS", "FAILURE"]
RESOLVED_STATUSES = frozenset({"resolved", "closed"})
"""Incident statuses that mean the incident is over."""
Environment = Literal["PRODUCTION", "STAGING", "TESTING", "DEVELOPMENT"]

MAX_ID_LENGTH = 254
"""DevLake stores deployment ids in ``varchar(255)``: the sources' ids and the targets' copies."""
DIGEST_PREFIX = "sha256-"
"""Starts the digest that stands for an id too long for :data:`MAX_ID_LENGTH`."""


def id_digest(text: str) -> str:
    """The hex SHA-256 of ``text``, for ids that would be too long (lone surrogates kept)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def utc(value: datetime) -> datetime:
    """The same instant in UTC; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GitSource(Record):
    """One gitops source of a sync: the repository and the revision deployed from it."""

    repo_url: str
    revision: str
    path: str = ""
    chart: str = ""
    """Helm chart name for a chart source (then ``revision`` is the chart version)."""


class DetectedDeployment(Record):
    """One deployment decided from ArgoCD, before commit resolution.

    ``id`` is deterministic (built by ``argocd/detect.py`` from component,
    revision and deployment time), so any redelivery is an upsert in DevLake,
    never a second deployment.
    """

    id: str
    app_namespace: str
    app_name: str
    component: str
    cluster: str
    environment: Environment
    result: Result
    revision: str
    """The gitops revision (first source's revision for multi-source apps)."""
    sources: list[GitSource] = Field(default_factory=list)
    history_id: int | None = None
    """None for a failed operation (ArgoCD adds no history entry for those)."""
    started_at: datetime
    deployed_at: datetime
    images: list[str] = Field(default_factory=list)
    previous_images: list[str] = Field(default_factory=list)
    """Images of the previous deployment of this app: the base of commit ranges."""
    message: str = ""
    detected_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("started_at", "deployed_at", "detected_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return utc(value)

    @property
    def app(self) -> str:
        return f"{self.app_namespace}/{self.app_name}"


class ResolvedCommit(Record):
    """A source commit shipped by a deployment (one DevLake deployment commit row)."""

    repo_url: str
    sha: str
    message: str = ""
    author_date: datetime
    url: str | None = None
    ref_name: str | None = None

    @field_validator("author_date")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return utc(value)


@dataclass(frozen=True)
class Incident:
    """An incident as the forwarder knows it, whatever source reported it."""

    incident_id: str
    status: str
    """WebRCA's status as given (``unknown`` when absent)."""
    summary: str
    description: str | None
    severity: str | None
    products: tuple[str, ...]
    created_at: datetime
    updated_at: datetime | None
    last_changed_at: datetime | None
    resolved_at: datetime | None

    @property
    def is_resolved(self) -> bool:
        return self.status.lower() in RESOLVED_STATUSES


IncidentStatus = Literal["open", "resolved"]


class DetectedIncident(Record):
    """A production Application Degraded for longer than ``argocd.incident_after``.

    Emitted twice per Degraded spell, under one ``key``: ``open`` once the
    spell lasted long enough, ``resolved`` (same key, ``resolved_at`` set)
    when the app is Healthy again or deleted. Times come from the Application
    (``status.health.lastTransitionTime``) when ArgoCD records it, else from
    when the watch saw the change.
    """

    key: str
    """``argocd:<namespace>/<app>:<degraded-since epoch>``: stable across restarts and replicas."""
    app_namespace: str
    app_name: str
    component: str
    cluster: str
    environment: Environment
    status: IncidentStatus
    created_at: datetime
    """When the app turned Degraded."""
    resolved_at: datetime | None = None
    """When it was Healthy again, or deleted (``resolved`` only)."""
    resolved_by: Literal["Healthy", "Deleted"] = "Healthy"
    """What ended it (``resolved`` only): the app Healthy again, or the app deleted (gone,
    it serves nothing any more)."""
    title: str
    description: str = ""
    revision: str = ""
    """The gitops revision deployed when the app turned Degraded (context only)."""
    detected_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("created_at", "resolved_at", "detected_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None

    @property
    def app(self) -> str:
        return f"{self.app_namespace}/{self.app_name}"
