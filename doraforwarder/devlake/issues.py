"""Incidents as DevLake issues: the payload, the status mapping and the fingerprint.

Pure functions over plain :class:`~doraforwarder.records.Incident` records,
whatever source detected them, so they can be tested with tables.

The fingerprint covers what DevLake shows (status, resolution time, title,
severity, description, component, url) and where it goes, but never
``updated_at``: WebRCA's background jobs bump it without any real change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from doraforwarder.devlake.payloads import IssuePayload, IssueStatus
from doraforwarder.records import RESOLVED_STATUSES, DetectedIncident, Incident

IN_PROGRESS_STATUSES = frozenset({"investigating", "monitoring", "identified"})

ResolutionSource = Literal["resolved_at", "last_changed_at", "updated_at"]


def issue_status(webrca_status: str) -> IssueStatus:
    """DevLake's three statuses from WebRCA's many."""
    status = webrca_status.lower()
    if status in RESOLVED_STATUSES:
        return "DONE"
    if status in IN_PROGRESS_STATUSES:
        return "IN_PROGRESS"
    return "TODO"


def resolution(incident: Incident) -> tuple[datetime, ResolutionSource] | None:
    """When a resolved incident was resolved, and which field said so.

    ``resolved_at`` first, then ``last_changed_at``, then ``updated_at`` as a
    last resort (background jobs bump it). Never before creation, which
    DevLake would reject. None while the incident is open.
    """
    if not incident.is_resolved:
        return None
    fields: tuple[tuple[datetime | None, ResolutionSource], ...] = (
        (incident.resolved_at, "resolved_at"),
        (incident.last_changed_at, "last_changed_at"),
        (incident.updated_at, "updated_at"),
    )
    for when, source in fields:
        if when is not None:
            return max(when, incident.created_at), source
    return None


def build_issue_payload(incident: Incident, component: str | None,
                        incident_url: str) -> IssuePayload:
    """The DevLake issue for ``incident`` (raises ValidationError if the contract fails)."""
    resolved = resolution(incident)
    return IssuePayload(
        issue_key=incident.incident_id,
        title=incident.summary.strip() or incident.incident_id,
        description=incident.description,
        type="INCIDENT",
        status=issue_status(incident.status),
        original_status=incident.status,
        created_date=incident.created_at,
        resolution_date=resolved[0] if resolved else None,
        severity=incident.severity,
        component=component or None,
        url=incident_url.format(incident_id=incident.incident_id),
    )


def build_detected_issue_payload(incident: DetectedIncident) -> IssuePayload:
    """The DevLake issue of an ArgoCD incident (an app Degraded for too long).

    ``createdDate`` is when the app turned Degraded, so DevLake links the
    incident to the latest production deployment finished before it;
    resolved: ``DONE`` with ``resolutionDate`` (when it was Healthy again, or
    deleted: ``originalStatus`` says which), which both recovery metrics need.
    """
    resolved = incident.status == "resolved" and incident.resolved_at is not None
    return IssuePayload(
        issue_key=incident.key,
        title=incident.title,
        description=incident.description or None,
        type="INCIDENT",
        status="DONE" if resolved else "TODO",
        original_status=incident.resolved_by if resolved else "Degraded",
        created_date=incident.created_at,
        resolution_date=(max(incident.resolved_at, incident.created_at)
                         if resolved and incident.resolved_at is not None else None),
        component=incident.component or None,
    )


def fingerprint(incident: Incident, payload: IssuePayload, target_keys: Iterable[str]) -> str:
    """A digest of what DevLake was told about ``incident`` and where.

    A resolution time taken from ``updated_at`` (the last-resort fallback) is
    left out: that field moves without real changes, so once a resolved
    incident is sent, bumps of ``updated_at`` must not send it again.
    Targets are included, so routing a product to a new team sends the
    incident there too.
    """
    body = payload.body()
    resolved = resolution(incident)
    if resolved is not None and resolved[1] == "updated_at":
        body["resolutionDate"] = "(updated_at)"
    body["_targets"] = sorted(target_keys)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
