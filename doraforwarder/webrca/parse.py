"""WebRCA's incident JSON read into plain :class:`~doraforwarder.records.Incident` records.

Pure functions over plain data, tested with tables: which items are well
formed, and which incidents the configuration wants. What DevLake is told
about an incident is decided on the DevLake side (``devlake/issues.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from doraforwarder.records import Incident, utc

UNKNOWN_STATUS = "unknown"


class MalformedIncident(ValueError):
    """An item of an incident page that cannot be read.

    ``what`` is a short, stable label for metrics (``missing_incident_id``,
    ``bad_date``...); the message says where and why, for the log.
    """

    def __init__(self, what: str, message: str, incident_id: str | None = None) -> None:
        super().__init__(message)
        self.what = what
        self.incident_id = incident_id


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


