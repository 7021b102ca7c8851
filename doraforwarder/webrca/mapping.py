"""WebRCA incidents as DevLake issues: pure functions over plain data.

Everything the poller decides lives here, so it can be tested with tables:
which items are well formed, which incidents the configuration wants, what
DevLake is told about each, and the fingerprint that says whether DevLake
already knows it.

The fingerprint covers what DevLake shows (status, resolution time, title,
severity, description, component, url) and where it goes, but never
``updated_at``: WebRCA's background jobs bump it without any real change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from doraforwarder.devlake.payloads import IssuePayload, IssueStatus
from doraforwarder.records import utc

RESOLVED_STATUSES = frozenset({"resolved", "closed"})
IN_PROGRESS_STATUSES = frozenset({"investigating", "monitoring", "identified"})
UNKNOWN_STATUS = "unknown"

ResolutionSource = Literal["resolved_at", "last_changed_at", "updated_at"]


class MalformedIncident(ValueError):
    """An item of an incident page that cannot be read.

    ``what`` is a short, stable label for metrics (``missing_incident_id``,
    ``bad_date``...); the message says where and why, for the log.
    """

    def __init__(self, what: str, message: str, incident_id: str | None = None) -> None:
        super().__init__(message)
        self.what = what
        self.incident_id = incident_id


@dataclass(frozen=True)
class Incident:
    """The fields of a WebRCA incident the forwarder uses, typed and checked."""

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


def parse_time(value: Any, field: str, incident_id: str | None = None) -> datetime | None:
    """An ISO 8601 time in UTC; None when absent or empty.

    WebRCA is written in Go, whose times can carry nanoseconds; Python keeps
    microseconds, which is finer than anything DevLake stores.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedIncident("bad_date", f"{field} is not a string: {value!r}", incident_id)
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        raise MalformedIncident(
            "bad_date", f"{field} is not an ISO 8601 time: {value!r}", incident_id
        ) from None


def _optional_text(item: Mapping[str, Any], field: str, incident_id: str) -> str | None:
    value = item.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise MalformedIncident(f"bad_{field}", f"{field} is not a string: {value!r}", incident_id)


def _products(value: Any, incident_id: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(p, str) for p in value):
        return tuple(p for p in value if p)
    raise MalformedIncident(
        "bad_products", f"products is not a list of strings: {value!r}", incident_id
    )


def parse_incident(item: Any) -> Incident:
    """Check one item of an incident page; raises :class:`MalformedIncident`."""
    if not isinstance(item, Mapping):
        raise MalformedIncident("not_an_object", f"item is not an object: {type(item).__name__}")
    raw_id = item.get("incident_id")
    if not isinstance(raw_id, str) or not raw_id.strip():
        raise MalformedIncident("missing_incident_id", "item has no incident_id")
    incident_id = raw_id.strip()
    created_at = parse_time(item.get("created_at"), "created_at", incident_id)
    if created_at is None:
        raise MalformedIncident("missing_created_at", "item has no created_at", incident_id)
    status = _optional_text(item, "status", incident_id) or UNKNOWN_STATUS
    return Incident(
        incident_id=incident_id,
        status=status,
        summary=_optional_text(item, "summary", incident_id) or "",
        description=_optional_text(item, "description", incident_id),
        severity=_optional_text(item, "severity", incident_id),
        products=_products(item.get("products"), incident_id),
        created_at=created_at,
        updated_at=parse_time(item.get("updated_at"), "updated_at", incident_id),
        last_changed_at=parse_time(item.get("last_changed_at"), "last_changed_at", incident_id),
        resolved_at=parse_time(item.get("resolved_at"), "resolved_at", incident_id),
    )


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
    candidates: tuple[tuple[datetime | None, ResolutionSource], ...] = (
        (incident.resolved_at, "resolved_at"),
        (incident.last_changed_at, "last_changed_at"),
        (incident.updated_at, "updated_at"),
    )
    for when, source in candidates:
        if when is not None:
            return max(when, incident.created_at), source
    return None


def wanted_product(incident_products: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The product an incident is filed under, or None when it is not wanted.

    With ``wanted`` empty every incident is wanted and filed under its first
    product; otherwise under the first configured product it touches.
    Product names are compared exactly, as the team routing does.
    """
    if not wanted:
        return incident_products[0] if incident_products else ""
    touched = set(incident_products)
    return next((product for product in wanted if product in touched), None)


def is_wanted(incident: Incident, wanted: Sequence[str]) -> bool:
    return wanted_product(incident.products, wanted) is not None


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
